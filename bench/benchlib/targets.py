"""The targets on 127.0.0.1 (nginx, the delay server), endpoints files, who was probed when."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from benchlib.machine import (
    BENCH,
    HOST,
    NGINX_BIN,
    START_TIMEOUT,
    ChildProcess,
    free_ports,
    readline_within,
    wait_for_port,
    which,
)


def endpoint_name(index: int) -> str:
    return f"e{index:05d}"


def write_endpoints(path: Path, urls: Sequence[str]) -> list[str]:
    """An endpoints file (one flow mapping per line, fast to write); returns the names."""
    names = [endpoint_name(i) for i in range(len(urls))]
    with path.open("w") as out:
        for name, url in zip(names, urls, strict=True):
            out.write(f"- {{name: {name}, url: '{url}'}}\n")
    return names


class Nginx(ChildProcess):
    """Debian nginx-light in the foreground with its own prefix, one worker, ``ports`` ports."""

    def __init__(self, directory: Path, ports: int = 8) -> None:
        self.binary = which(NGINX_BIN)
        if self.binary is None:
            raise FileNotFoundError(NGINX_BIN)
        self.prefix = directory / "nginx"
        self.ports = free_ports(ports)
        self.access_log = self.prefix / "access.log"

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


class DelayServer(ChildProcess):
    """bench/delay_server.py as a separate process; see its docstring."""

    def __init__(self, ports: int = 4, loop: str = "uvloop") -> None:
        self.port_count = ports
        self.loop = loop
        self.ports: list[int] = []
        self.control = 0

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "delay_server.py"), "--ports", str(self.port_count),
             "--loop", self.loop],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = readline_within(self.proc.stdout, START_TIMEOUT)
        if not line:
            self.__exit__(None, None, None)
            raise RuntimeError("the delay server did not start")
        info = json.loads(line)
        self.ports = list(info["ports"])
        self.control = int(info["control"])
        return self

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
