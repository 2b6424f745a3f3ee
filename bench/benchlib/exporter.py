"""The exporter as a real process: spawned, scraped, and its cycles observed."""

from __future__ import annotations

import gzip
import http.client
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from benchlib.machine import (
    HOST,
    ROOT,
    START_TIMEOUT,
    cpu_seconds,
    free_ports,
    rss_bytes,
    stop,
    wait_for_port,
)


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

    A gzip scrape (the one made here, as Prometheus does) serves the per-endpoint series from
    the last complete compressed copy (``snapshot.GzipSnapshot``), which the daemon rebuilds
    after it printed the cycle's report line; a scrape right after the report may still show
    the cycle before.  So :meth:`observe` scrapes again, every FRESH_RETRY s for at most
    FRESH_WAIT s, until every endpoint's probe count shows the cycle, and says so when it gave
    up.  (A plain scrape would be live, but 33 MB rendered per cycle would weigh on the very
    process being measured.)
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
