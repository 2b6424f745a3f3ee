"""blackbox_exporter as the reference, driven through /probe on the exporter's schedule."""

from __future__ import annotations

import asyncio
import re
import string
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

from benchlib.machine import (
    BLACKBOX_BIN,
    HOST,
    START_TIMEOUT,
    ChildProcess,
    cpu_seconds,
    free_ports,
    run_loop,
    wait_for_port,
    which,
)

# The exporter's default in-flight cap; the blackbox driver keeps the same one.
CONCURRENCY = 1000


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


class Blackbox(ChildProcess):
    """Debian prometheus-blackbox-exporter with module http_2xx, on a free local port."""

    def __init__(self, directory: Path, *, timeout: float) -> None:
        self.binary = which(BLACKBOX_BIN)
        if self.binary is None:
            raise FileNotFoundError(BLACKBOX_BIN)
        self.config = directory / "blackbox.yml"
        self.config.write_text(BLACKBOX_CONFIG.substitute(timeout=f"{timeout:g}"))
        self.port = free_ports(1)[0]
        self.log = directory / "blackbox.log"

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

    run_loop(main())
    return result
