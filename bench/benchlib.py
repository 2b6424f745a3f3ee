"""What every benchmark shares: targets, the processes under test, their CPU and memory, verdicts.

* Targets on 127.0.0.1 only: :class:`Nginx` (Debian nginx-light, one worker, several listen
  ports, ``return 200 "ok"``, access log ``$msec $uri``) and :class:`DelayServer`
  (bench/delay_server.py in its own process: answers after exactly N ms).
* The exporter as a real process (:class:`Daemon`: ``python -m availability_exporter``), or
  in-process on the daemon's own classes (:func:`run_in_process`: ``Exporter`` with a
  recording wrapper around ``Prober.probe``), and blackbox_exporter (:class:`Blackbox`, driven
  through ``/probe`` on the exporter's own schedule by :func:`drive_blackbox`).
* CPU from ``/proc/PID/stat`` (utime + stime, all threads), memory from ``/proc/PID/status``.
* :class:`Report`: the figures as a table, one verdict line per goal, optionally JSON.

Every wait here is bounded in time; every loop in count.  Each benchmark is one script in this
directory and imports this module by name (the script's directory is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gzip
import http.client
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NGINX_BIN = "/usr/sbin/nginx"
BLACKBOX_BIN = "/usr/bin/prometheus-blackbox-exporter"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
# The exporter's default in-flight cap; the blackbox driver keeps the same one.
CONCURRENCY = 1000
START_TIMEOUT = 20.0


# -- the machine ------------------------------------------------------------------------------

def which(path: str) -> str | None:
    """The binary at ``path``, else the same name on PATH, else None."""
    if os.access(path, os.X_OK):
        return path
    return shutil.which(Path(path).name)


def require_binary(path: str, env: str) -> str | None:
    """The binary, or None when absent and the benchmark should skip that part.

    With ``env`` (e.g. REQUIRE_NGINX) set to 1, a missing binary is an error instead.
    """
    found = which(path)
    if found is None and os.environ.get(env) == "1":
        raise SystemExit(f"{path} is required ({env}=1) but is not installed")
    return found


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, Python and package versions, the reference binaries' versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages: dict[str, str] = {}
    for name in ("availability-exporter", "httpx", "httpcore", "anyio", "h11", "uvloop",
                 "prometheus-client", "uvicorn", "pyyaml"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "absent"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "packages": packages,
        "nginx": _version([NGINX_BIN, "-v"]),
        "blackbox": _version([BLACKBOX_BIN, "--version"]),
        "loadavg": os.getloadavg()[0],
    }


def _version(argv: list[str]) -> str:
    binary = which(argv[0])
    if binary is None:
        return "absent"
    try:
        done = subprocess.run([binary, *argv[1:]], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "unknown"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``port`` accepts a connection; raises when ``deadline`` passes or ``proc`` dies."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port}")


# -- /proc ------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


# -- figures ----------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    """p50 / p99 / max of a set of values, with how many there were."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99),
                   max(values) if values else 0.0)

    def ms(self) -> str:
        return f"{self.p50 * 1000:.2f} / {self.p99 * 1000:.2f} / {self.max * 1000:.2f}"

    def as_dict(self, scale: float = 1.0) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50 * scale, "p99": self.p99 * scale,
                "max": self.max * scale}


@dataclass(slots=True)
class Verdict:
    goal: str
    met: bool
    detail: str

    def line(self) -> str:
        return f"{self.goal}: {'MET' if self.met else 'NOT MET'} ({self.detail})"


@dataclass(slots=True)
class Report:
    """A benchmark's output: tables, verdict lines, and the same figures as JSON."""

    title: str
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, caption: str, headers: list[str], rows: list[list[str]]) -> None:
        self.tables.append((caption, headers, rows))

    def verdict(self, goal: str, met: bool, detail: str) -> None:
        self.verdicts.append(Verdict(goal, met, detail))

    def check(self, name: str, ok: bool) -> None:
        """A correctness fact (not a timing): the smoke tests assert these."""
        self.checks[name] = ok

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        load = os.getloadavg()
        out = [f"== {self.title} ==",
               f"({os.cpu_count()} CPUs; load average now {load[0]:.2f}, 5 min {load[1]:.2f}: "
               "other work on the machine shares the cores with the measurement)"]
        for caption, headers, rows in self.tables:
            out.append("")
            if caption:
                out.append(caption)
            widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                      for i, h in enumerate(headers)]
            out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
            out.append("  ".join("-" * w for w in widths))
            for row in rows:
                out.append("  ".join(
                    (c.ljust(w) if i == 0 else c.rjust(w))
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ))
        for text in self.notes:
            out.append(f"note: {text}")
        if self.checks:
            failed = [name for name, ok in self.checks.items() if not ok]
            out.append("")
            out.append("correctness: " + ("all checks passed" if not failed
                                          else "FAILED: " + ", ".join(failed)))
        out.append("")
        out.extend(v.line() for v in self.verdicts)
        return "\n".join(out) + "\n"

    def emit(self, json_path: Path | None) -> None:
        sys.stdout.write(self.render())
        sys.stdout.flush()
        if json_path is not None:
            json_path.write_text(json.dumps({
                "title": self.title,
                "figures": self.figures,
                "checks": self.checks,
                "verdicts": [{"goal": v.goal, "met": v.met, "detail": v.detail}
                             for v in self.verdicts],
                "notes": self.notes,
                "machine": machine_info(),
            }, indent=2, default=str))


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep configs and logs here (default: a temp dir, removed)")
    return parser


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="availability-bench-") as tmp:
        yield Path(tmp)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def mb(value: float) -> str:
    """Bytes as decimal megabytes, the unit the goals are written in."""
    return f"{value / 1e6:,.1f} MB"


# -- config files -----------------------------------------------------------------------------

def endpoint_name(index: int) -> str:
    return f"e{index:05d}"


def write_endpoints(path: Path, urls: Sequence[str]) -> list[str]:
    """An endpoints file (one flow mapping per line, fast to write); returns the names."""
    names = [endpoint_name(i) for i in range(len(urls))]
    with path.open("w") as out:
        for name, url in zip(names, urls, strict=True):
            out.write(f"- {{name: {name}, url: '{url}'}}\n")
    return names


# -- targets ----------------------------------------------------------------------------------

class Nginx:
    """Debian nginx-light in the foreground with its own prefix, one worker, ``ports`` ports."""

    def __init__(self, directory: Path, ports: int = 8) -> None:
        self.binary = which(NGINX_BIN)
        if self.binary is None:
            raise FileNotFoundError(NGINX_BIN)
        self.prefix = directory / "nginx"
        self.ports = free_ports(ports)
        self.access_log = self.prefix / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        assert self.binary is not None
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        # Plain markers, not string.Template: nginx's own variables start with "$".
        template = (BENCH / "nginx.conf.tmpl").read_text()
        conf = self.prefix / "nginx.conf"
        conf.write_text(template.replace("@PREFIX@", str(self.prefix)).replace(
            "@LISTEN@",
            "".join(f"        listen {HOST}:{p} backlog=4096;\n" for p in self.ports).rstrip(),
        ))
        error_log = self.prefix / "error.log"
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(error_log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        try:
            for port in self.ports:
                wait_for_port(port, deadline, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = error_log.read_text()[-2000:] if error_log.exists() else ""
            self.__exit__(None, None, None)
            raise RuntimeError(f"nginx did not start: {exc}\n{tail}") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def urls(self, count: int) -> list[str]:
        """One URL (and so one access-log path, see :meth:`path`) per endpoint."""
        return [f"http://{HOST}:{self.ports[i % len(self.ports)]}{self.path(i)}"
                for i in range(count)]

    @staticmethod
    def path(index: int) -> str:
        return f"/e/{index}"

    def arrivals(self) -> list[tuple[float, str]]:
        """(wall time, path) of every request so far (logged unbuffered, one line each)."""
        out: list[tuple[float, str]] = []
        if not self.access_log.exists():
            return out
        for line in self.access_log.read_text().splitlines():
            stamp, _, uri = line.partition(" ")
            with contextlib.suppress(ValueError):
                out.append((float(stamp), uri))
        return out

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class DelayServer:
    """bench/delay_server.py as a separate process; see its docstring."""

    def __init__(self, ports: int = 4, loop: str = "uvloop") -> None:
        self.port_count = ports
        self.loop = loop
        self.ports: list[int] = []
        self.control = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "delay_server.py"), "--ports", str(self.port_count),
             "--loop", self.loop],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = _readline_within(self.proc.stdout, START_TIMEOUT)
        if not line:
            self.__exit__(None, None, None)
            raise RuntimeError("the delay server did not start")
        info = json.loads(line)
        self.ports = list(info["ports"])
        self.control = int(info["control"])
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def url(self, index: int, delay_ms: float) -> str:
        port = self.ports[index % len(self.ports)]
        return f"http://{HOST}:{port}{self.path(index, delay_ms)}"

    @staticmethod
    def path(index: int, delay_ms: float) -> str:
        """The path endpoint ``index`` requests, as :meth:`arrivals` reports it."""
        return f"/d/{delay_ms:g}/{endpoint_name(index)}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{HOST}:{self.control}{path}", timeout=30) as r:
            return json.loads(r.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/__stats")
        return result

    def reset(self) -> None:
        self._get("/__reset")

    def arrivals(self) -> list[tuple[float, str]]:
        return [(float(t), str(p)) for t, p in self._get("/__arrivals")]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def _readline_within(stream: io.BufferedReader | Any, timeout: float) -> bytes:
    """One line from a pipe, or b"" if none arrives within ``timeout``."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def slot_check(times: Sequence[list[float]], *, cycles: int, interval: float, step: float,
               slack: float = 0.25) -> tuple[list[int], list[float]]:
    """Per cycle: how many endpoints were probed exactly once in it; and every probe's lag.

    ``times[i]`` are the moments endpoint ``i`` (in config order) was probed.  The scheduler
    anchors every start to its tick: endpoint ``i`` of cycle ``k`` is due at
    ``t0 + k * interval + i * step``.  Its k-th probe must fall in ``[due, due + interval)``
    and the next one after that slot; a missed cycle, or two probes in one cycle, shifts the
    ranks and fails the check.  ``t0`` is not visible from outside, so it is estimated as the
    earliest ``first probe - i * step`` (minus ``slack`` for the estimate); lags are measured
    from that estimate, so they are a hair (the best probe's own delay) too small.
    """
    firsts = [ts[0] - i * step for i, ts in enumerate(times) if ts]
    if not firsts:
        return [0] * cycles, []
    t0 = min(firsts)
    origin = t0 - slack
    hits = [0] * cycles
    lags: list[float] = []
    for i, ts in enumerate(times):
        for k in range(min(len(ts), cycles)):
            lags.append(ts[k] - (t0 + k * interval + i * step))
        for k in range(cycles):
            low = origin + k * interval + i * step
            if (len(ts) > k and low <= ts[k] < low + interval
                    and (len(ts) == k + 1 or ts[k + 1] >= low + interval)):
                hits[k] += 1
    return hits, lags


def coverage(arrivals: Sequence[tuple[float, str]], paths: Sequence[str], *, cycles: int,
             interval: float) -> list[int]:
    """Per cycle: endpoints whose requests reached the target exactly once in it.

    ``paths`` are the endpoints' request paths in config order (of this process's shard);
    ``arrivals`` the target's log.  See :func:`slot_check`.
    """
    from availability_exporter.scheduler import spread_window

    index = {path: i for i, path in enumerate(paths)}
    times: list[list[float]] = [[] for _ in paths]
    for stamp, path in arrivals:
        i = index.get(path)
        if i is not None:
            times[i].append(stamp)
    for ts in times:
        ts.sort()
    count = len(paths)
    step = spread_window(count, interval) / count if count else 0.0
    hits, _ = slot_check(times, cycles=cycles, interval=interval, step=step)
    return hits


# -- the exporter as a process ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scrape:
    status: int
    body: bytes  # decompressed
    wire_bytes: int
    seconds: float


def scrape(port: int, *, use_gzip: bool = True, timeout: float = 60.0,
           path: str = "/metrics", decompress: bool = True) -> Scrape:
    """GET /metrics as Prometheus does (gzip unless told otherwise), timed to the last byte.

    With ``decompress=False`` the body is returned as it came over the wire (a loop that only
    times scrapes need not spend ~0.1 s of CPU per 10k-endpoint body inflating it).
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    headers = {"Accept-Encoding": "gzip"} if use_gzip else {}
    try:
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        seconds = time.perf_counter() - began
        encoded = response.getheader("Content-Encoding") == "gzip"
    finally:
        conn.close()
    body = gzip.decompress(raw) if encoded and decompress else raw
    return Scrape(response.status, body, len(raw), seconds)


# The exposition always begins with a "# HELP" line, so every sample line follows a newline:
# anchoring on "\n" + the metric name (not "^" under re.M) gives the pattern a literal prefix,
# which re finds with a fast substring search instead of trying every position of ~33 MB.

def endpoint_values(body: bytes, metric: str, extra: str = "") -> dict[str, float]:
    """``endpoint`` label -> value for one per-endpoint series of ``metric``.

    ``extra`` selects one more label (e.g. ``result="up"``); the exporter renders labels in the
    order endpoint, domain, extra.
    """
    tail = ("," + re.escape(extra)) if extra else ""
    pattern = re.compile(
        (r"\n" + re.escape(metric) + r'\{endpoint="([^"]*)",domain="[^"]*"' + tail
         + r"\} (\S+)").encode(),
    )
    return {name.decode(): float(value) for name, value in pattern.findall(body)}


def plain_value(body: bytes, metric: str) -> float | None:
    """The value of an unlabelled sample (the registry part, at the end of the body)."""
    key = b"\n" + metric.encode() + b" "
    at = body.rfind(key)
    if at < 0:
        return None
    start = at + len(key)
    end = body.find(b"\n", start)
    return float(body[start:end if end >= 0 else len(body)].split(b" ", 1)[0])


_WATCHED = re.compile(
    rb"\n(availability_probe_duration_seconds_sum|availability_probe_duration_seconds_count"
    rb'|availability_probes_total)\{endpoint="([^"]*)",domain="[^"]*"(?:,result="([a-z]+)")?'
    rb"\} (\S+)"
)


@dataclass(slots=True)
class WatchedSeries:
    """The per-endpoint series a :class:`CycleWatcher` needs, from one pass over a scrape."""

    sums: dict[str, float]  # availability_probe_duration_seconds_sum
    counts: dict[str, float]  # availability_probe_duration_seconds_count
    states: dict[str, dict[str, float]]  # availability_probes_total by result

    @classmethod
    def parse(cls, body: bytes) -> WatchedSeries:
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        states: dict[str, dict[str, float]] = {"up": {}, "degraded": {}, "down": {}}
        by_metric = {b"availability_probe_duration_seconds_sum": sums,
                     b"availability_probe_duration_seconds_count": counts}
        for metric, name, result, value in _WATCHED.findall(body):
            target = by_metric.get(metric)
            if target is None:
                target = states.setdefault(result.decode(), {})
            target[name.decode()] = float(value)
        return cls(sums, counts, states)


class Daemon:
    """``python -m availability_exporter CONFIG ...`` with its cycles, CPU and memory observed."""

    def __init__(self, config: Path, *, interval: float, directory: Path,
                 extra: Sequence[str] = (), label: str = "exporter") -> None:
        self.config = config
        self.interval = interval
        self.extra = list(extra)
        self.port = free_ports(1)[0]
        self.stderr_path = directory / f"{label}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0  # wall clock
        self.cycle_ends: list[float] = []  # wall clock of each "---" line
        self.stdout_lines = 0
        self.stop_seconds = 0.0  # SIGTERM to exit
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "availability_exporter", str(self.config),
                "-f", f"{self.interval:g}", "--web.listen-address", f"{HOST}:{self.port}",
                *self.extra]

    def __enter__(self) -> Self:
        stderr = self.stderr_path.open("wb")
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(self.argv(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=stderr)
        stderr.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.stdout_lines += 1
                if line.strip() == b"---":
                    self.cycle_ends.append(time.time())
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        began = time.monotonic()
        code = stop(self.proc)
        self.stop_seconds = time.monotonic() - began
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None
        return code

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def cycles(self) -> int:
        with self._cond:
            return len(self.cycle_ends)

    def wait_cycles(self, count: int, timeout: float) -> bool:
        """Until ``count`` cycles have completed (True) or ``timeout`` passed / exit (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.cycle_ends) < count:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None
                                 and not (self._reader and self._reader.is_alive())):
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_for_port(self.port, time.monotonic() + timeout, self.proc)

    def scrape(self, *, use_gzip: bool = True) -> Scrape:
        return scrape(self.port, use_gzip=use_gzip)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stderr_tail(self, chars: int = 2000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# How long CycleWatcher.observe waits for the gzip scrape to show the cycle it observes.
FRESH_WAIT = 3.0
FRESH_RETRY = 0.02


@dataclass(slots=True)
class CycleSample:
    """What one scrape right after a cycle's report line says about that cycle."""

    cycle: int
    wall: float
    cpu: float
    lag: float
    cycle_seconds: float
    missed: float
    durations: list[float]  # one per endpoint probed once in this cycle
    endpoints: int
    # Endpoints whose probe count rose by exactly one since the previous scrape, so that their
    # duration is known.  Fewer when a cycle overran and the next one had already begun.
    attributed: int
    states: dict[str, int]
    scrape_seconds: float  # the first scrape after the report line
    # False when even after FRESH_WAIT the per-endpoint series did not yet show this cycle;
    # the sample then uses the last scrape as it was (a cycle's durations may be missing).
    fresh: bool = True
    scrapes: int = 1  # how many scrapes it took
    waited: float = 0.0  # seconds from the first scrape until the one used had answered

    @property
    def counts_ok(self) -> bool:
        return self.endpoints > 0 and self.attributed == self.endpoints


class CycleWatcher:
    """Scrapes a daemon right after each cycle and derives that cycle's per-probe latencies.

    Each endpoint is probed once per cycle, so the change of its
    ``availability_probe_duration_seconds_sum`` between two such scrapes is exactly that
    probe's duration as the exporter measured it.

    A gzip scrape (the one made here, as Prometheus does) serves the per-endpoint series as
    compressed after the last completed cycle (``metrics.GzipSnapshot``), and the daemon prints
    a report line only once that copy is rebuilt, so the first scrape normally shows the cycle.
    As a guard (a daemon that reported first would silently lose a cycle's samples),
    :meth:`observe` scrapes again, every FRESH_RETRY s for at most FRESH_WAIT s, until every
    endpoint's probe count shows the cycle, and says so when it gave up.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.prev_sum: dict[str, float] = {}
        self.prev_count: dict[str, float] = {}
        self.prev_states: dict[str, dict[str, float]] = {}
        self.prev_cycle_sum = 0.0
        self.samples: list[CycleSample] = []
        self.notes: list[str] = []  # observations that settled for a stale scrape

    @property
    def endpoints(self) -> int:
        """How many endpoints the last scrape showed (this process's shard)."""
        return len(self.prev_count)

    def _behind(self, counts: dict[str, float], completed: int) -> int:
        """Endpoints whose probe count does not show ``completed`` cycles yet.

        After ``completed`` cycles every endpoint has been probed at least that often (a cycle
        under way may add one more), and more often than at the previous look (which also holds
        for counts that did not start at zero, taken over from a state file).
        """
        prev = self.prev_count
        return sum(1 for name, total in counts.items()
                   if total < completed or total <= prev.get(name, -1.0))

    def observe(self, cycle: int) -> CycleSample:
        """Observe cycle ``cycle`` (0-based): call it once ``cycle + 1`` report lines are out."""
        wall = time.time()
        cpu = self.daemon.cpu()
        began = time.monotonic()
        result = self.daemon.scrape(use_gzip=True)
        first_seconds = result.seconds
        scrapes = 1
        while True:
            body = result.body
            series = WatchedSeries.parse(body)
            # Live in every scrape; fewer than expected would mean the caller counts otherwise.
            live = plain_value(body, "availability_exporter_cycles_total")
            completed = cycle + 1 if live is None else min(cycle + 1, int(live))
            behind = self._behind(series.counts, completed)
            fresh = behind == 0
            if fresh or time.monotonic() - began >= FRESH_WAIT:
                break
            time.sleep(FRESH_RETRY)
            result = self.daemon.scrape(use_gzip=True)
            scrapes += 1
        waited = time.monotonic() - began
        if not fresh:
            note = (f"cycle {cycle}: after {waited:.1f} s and {scrapes} scrapes the gzip "
                    f"scrape still showed {behind:,} of {len(series.counts):,} endpoints "
                    f"without their probe of cycle {completed} (1-based); used it as it was")
            self.notes.append(note)
            print(f"CycleWatcher: {note}", file=sys.stderr, flush=True)
        sums, counts, states = series.sums, series.counts, series.states
        durations: list[float] = []
        for name, total in counts.items():
            if total - self.prev_count.get(name, 0.0) == 1.0:
                durations.append(sums[name] - self.prev_sum.get(name, 0.0))
        state_delta = {
            s: sum(1 for name, v in values.items()
                   if v - self.prev_states.get(s, {}).get(name, 0.0) >= 1.0)
            for s, values in states.items()
        }
        cycle_sum = plain_value(body, "availability_exporter_cycle_duration_seconds_sum") or 0.0
        sample = CycleSample(
            cycle=cycle, wall=wall, cpu=cpu,
            lag=plain_value(body, "availability_exporter_cycle_lag_seconds") or 0.0,
            cycle_seconds=cycle_sum - self.prev_cycle_sum,
            missed=plain_value(body, "availability_exporter_cycles_missed_total") or 0.0,
            durations=durations, endpoints=len(counts), attributed=len(durations),
            states=state_delta,
            scrape_seconds=first_seconds,
            fresh=fresh, scrapes=scrapes, waited=waited,
        )
        self.prev_sum, self.prev_count, self.prev_cycle_sum = sums, counts, cycle_sum
        self.prev_states = states
        self.samples.append(sample)
        return sample


# -- the exporter in-process ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProbeRecord:
    cycle: int  # this endpoint's how-manieth probe (each endpoint is probed once per cycle)
    index: int
    dispatched: float  # loop time when the probe really started (slot held)
    duration: float
    state: str
    reason: str | None


class RecordColumns:
    """ProbeRecords kept as arrays while the loop runs.

    A list of objects would be scanned by every full garbage collection of the process under
    test and lengthen exactly the pauses being measured; arrays of numbers are not tracked.
    """

    STATES: tuple[str, ...] = ("up", "degraded", "down")

    def __init__(self) -> None:
        self.cycle = array.array("i")
        self.index = array.array("i")
        self.dispatched = array.array("d")
        self.duration = array.array("d")
        self.state = bytearray()
        self.reason = bytearray()

    def append(self, cycle: int, index: int, dispatched: float, duration: float, state: str,
               reason: str | None) -> None:
        from availability_exporter.model import REASONS

        self.cycle.append(cycle)
        self.index.append(index)
        self.dispatched.append(dispatched)
        self.duration.append(duration)
        self.state.append(self.STATES.index(state))
        self.reason.append(0 if reason is None else REASONS.index(reason) + 1)

    def records(self) -> list[ProbeRecord]:
        from availability_exporter.model import REASONS

        return [
            ProbeRecord(c, i, t, d, self.STATES[st], None if rs == 0 else REASONS[rs - 1])
            for c, i, t, d, st, rs in zip(self.cycle, self.index, self.dispatched,
                                          self.duration, self.state, self.reason, strict=True)
        ]


@dataclass(slots=True)
class InProcessRun:
    records: list[ProbeRecord]
    endpoints: int
    cycles: int  # completed (reported) cycles
    interval: float
    step: float  # seconds between two probe starts within a cycle
    cpu_seconds: float
    wall_seconds: float

    def _times(self) -> list[list[float]]:
        times: list[list[float]] = [[] for _ in range(self.endpoints)]
        for r in sorted(self.records, key=lambda r: r.dispatched):
            times[r.index].append(r.dispatched)
        return times

    def dispatch_lags(self) -> list[float]:
        """How late each probe started against its place in the tick-anchored spread."""
        _, lags = slot_check(self._times(), cycles=self.cycles, interval=self.interval,
                             step=self.step)
        return lags

    def per_cycle(self) -> list[int]:
        """Per completed cycle: endpoints probed exactly once in it (see slot_check)."""
        hits, _ = slot_check(self._times(), cycles=self.cycles, interval=self.interval,
                             step=self.step)
        return hits

    def measured(self) -> list[ProbeRecord]:
        """The probes of completed cycles (a cycle in flight at the stop is left out)."""
        return [r for r in self.records if r.cycle < self.cycles]


def run_in_process(config: Path, *, interval: float, cycles: int,
                   extra: Sequence[str] = ()) -> InProcessRun:
    """Run the daemon's ``Exporter`` (no web server) for ``cycles`` cycles in this process.

    The scheduler, prober, stats and metric rendering are the daemon's own objects; an
    observer on its scheduler keeps every ProbeResult.  uvloop as in the daemon.
    """
    from availability_exporter.config import Endpoint
    from availability_exporter.daemon import Exporter
    from availability_exporter.model import ProbeResult
    from availability_exporter.scheduler import Observer, spread_window
    from availability_exporter.settings import load_settings

    settings = load_settings([str(config), "-f", f"{interval:g}", *extra])
    records = RecordColumns()
    done: list[int] = []
    count: dict[str, int] = {}

    async def main() -> None:
        exporter = Exporter(settings, out=io.StringIO())
        index_of: dict[str, int] = {}
        probed: dict[int, int] = {}

        def on_result(endpoint: Endpoint, result: ProbeResult, started: float) -> None:
            if not index_of:
                index_of.update({s.endpoint.name: i for i, s in enumerate(exporter.stats)})
                count["endpoints"] = len(index_of)
            index = index_of[endpoint.name]
            rank = probed.get(index, 0)
            probed[index] = rank + 1
            records.append(rank, index, started, result.duration, result.state.value,
                           result.reason)

        def on_cycle_end(k: int) -> None:
            done.append(k)
            if len(done) >= cycles:
                exporter.stop.set()

        exporter.scheduler.observers.append(Observer(on_result, on_cycle_end))
        await exporter.run(web=None)

    cpu0, wall0 = time.process_time(), time.monotonic()
    _run_loop(main())
    endpoints = count.get("endpoints", 0)
    step = spread_window(endpoints, interval) / endpoints if endpoints else 0.0
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return InProcessRun(records.records(), endpoints, len(done), interval, step, cpu, wall)


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- blackbox_exporter ------------------------------------------------------------------------

BLACKBOX_CONFIG = string.Template("""\
modules:
  http_2xx:
    prober: http
    timeout: ${timeout}s
    http:
      method: GET
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
""")


class Blackbox:
    """Debian prometheus-blackbox-exporter with module http_2xx, on a free local port."""

    def __init__(self, directory: Path, *, timeout: float) -> None:
        self.binary = which(BLACKBOX_BIN)
        if self.binary is None:
            raise FileNotFoundError(BLACKBOX_BIN)
        self.config = directory / "blackbox.yml"
        self.config.write_text(BLACKBOX_CONFIG.substitute(timeout=f"{timeout:g}"))
        self.port = free_ports(1)[0]
        self.log = directory / "blackbox.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        assert self.binary is not None
        log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}",
             f"--web.listen-address={HOST}:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        try:
            wait_for_port(self.port, time.monotonic() + START_TIMEOUT, self.proc)
        except (RuntimeError, TimeoutError):
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@dataclass(frozen=True, slots=True)
class BlackboxProbe:
    cycle: int
    index: int
    dispatched: float
    duration: float | None  # probe_duration_seconds as blackbox reports it
    success: bool


@dataclass(slots=True)
class DriveResult:
    probes: list[BlackboxProbe]
    cycle_ends: list[float]  # wall clock
    cpu_at_cycle_end: list[float]  # blackbox's CPU seconds when each cycle's probes were done
    step: float

    def durations(self, cycles: range | None = None) -> list[float]:
        return [p.duration for p in self.probes
                if p.duration is not None and (cycles is None or p.cycle in cycles)]


class _KeepAliveClient:
    """A minimal HTTP/1.1 GET client over kept-alive connections: cheap for the driver."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> bytes:
        for attempt in range(2):
            fresh = not self.idle
            reader, writer = (self.idle.pop() if self.idle
                              else await asyncio.open_connection(HOST, self.port))
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                body = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                writer.close()
                if fresh or attempt:
                    raise
                continue  # an idle connection the server had closed: once more, fresh
            self.idle.append((reader, writer))
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length: int | None = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        if length is None:
            raise ValueError("a response without a length")
        return await reader.readexactly(length)
    parts: list[bytes] = []
    for _ in range(100_000):
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    raise ValueError("too many chunks")


_DURATION = re.compile(rb"^probe_duration_seconds (\S+)$", re.M)
_SUCCESS = re.compile(rb"^probe_success (\S+)$", re.M)


def drive_blackbox(blackbox: Blackbox, targets: Sequence[str], *, interval: float,
                   cycles: int, timeout: float,
                   on_cycle: Callable[[int], None] | None = None) -> DriveResult:
    """Call blackbox's /probe for every target once per cycle, on the exporter's schedule.

    The same spread of starts (``spread_window``) and the same in-flight cap as the exporter,
    so both see the same instantaneous probe rate.  Runs its own event loop (uvloop).
    """
    from availability_exporter.scheduler import spread_window

    count = len(targets)
    window = spread_window(count, interval) if count > 1 else 0.0
    step = window / count if count else 0.0
    paths = [f"/probe?module=http_2xx&target={quote(t, safe='')}" for t in targets]
    result = DriveResult([], [], [], step)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        client = _KeepAliveClient(blackbox.port)
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(cycle: int, index: int) -> None:
            async with slots:
                dispatched = loop.time()
                try:
                    body = await client.get(paths[index])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.probes.append(BlackboxProbe(cycle, index, dispatched, None, False))
                    return
            duration = _DURATION.search(body)
            success = _SUCCESS.search(body)
            result.probes.append(BlackboxProbe(
                cycle, index, dispatched, float(duration.group(1)) if duration else None,
                success is not None and success.group(1) == b"1",
            ))

        async def cycle(k: int, tick: float) -> None:
            tasks: list[asyncio.Task[None]] = []
            for i in range(count):
                at = tick + i * step
                if at - loop.time() > 0.0005:
                    await asyncio.sleep(at - loop.time())
                tasks.append(loop.create_task(one(k, i)))
            await asyncio.wait(tasks, timeout=interval + timeout)

        # As the scheduler does: each cycle starts at its tick even while the previous one's
        # stragglers are out; cycles are counted in order as they complete.
        pending: list[asyncio.Task[None]] = []

        def reap(_: asyncio.Task[None]) -> None:
            while pending and pending[0].done():
                pending.pop(0)
                k = len(result.cycle_ends)
                result.cycle_ends.append(time.time())
                result.cpu_at_cycle_end.append(cpu_seconds(blackbox.pid))
                if on_cycle is not None:
                    on_cycle(k)

        t0 = loop.time()
        launched: list[asyncio.Task[None]] = []
        try:
            for k in range(cycles):
                tick = t0 + k * interval
                if tick > loop.time():
                    await asyncio.sleep(tick - loop.time())
                task = loop.create_task(cycle(k, tick))
                pending.append(task)
                launched.append(task)
                task.add_done_callback(reap)
            await asyncio.gather(*launched)
        finally:
            client.close()

    _run_loop(main())
    return result
