"""Fixed-rate check cycles: cycle k starts at t0 + k * interval on the loop's monotonic clock.

Within a cycle every endpoint is probed exactly once.  Starts are spread evenly over a window
(at most ``interval - longest timeout``, so the whole cycle still ends before the next tick)
because thousands of probes fired at one instant queue behind each other and every one of them
then measures the queue, not the endpoint.  A tick that arrives while the process could not
start it (suspended, or the previous cycle overran) is counted as missed, never merged.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from availability_exporter.config import Endpoint
from availability_exporter.probe import ProbeResult
from availability_exporter.stats import BUCKETS, EndpointStats, Stats

log = logging.getLogger(__name__)

# Aim for at most one probe start per millisecond when the interval leaves room.
START_SPACING = 0.001
# Keep a margin so a probe started last and running to its timeout ends before the next tick.
WINDOW_SHARE = 0.9

ProbeFunc = Callable[[Endpoint], Awaitable[ProbeResult]]


@dataclass(slots=True)
class CycleStats:
    """What the scheduler itself has done; exported as availability_exporter_* metrics."""

    cycles: int = 0
    missed: int = 0
    last_lag: float = 0.0
    last_duration: float = 0.0
    duration_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    duration_sum: float = 0.0
    last_completed: float | None = None  # loop time

    def add(self, duration: float) -> None:
        self.cycles += 1
        self.last_duration = duration
        self.duration_buckets[bisect.bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration


def spread_window(count: int, interval: float, longest_timeout: float) -> float:
    """How long a cycle spends starting its probes (0 for a single endpoint)."""
    if count <= 1:
        return 0.0
    room = max(interval - longest_timeout, 0.0) * WINDOW_SHARE
    return min(room, count * START_SPACING)


class Scheduler:
    """Runs check cycles over the current endpoints of ``stats`` until told to stop."""

    def __init__(
        self,
        *,
        stats: Stats,
        probe: ProbeFunc,
        interval: float,
        concurrency: int,
        on_cycle: Callable[[int], None] | None = None,
    ) -> None:
        self.stats = stats
        self.probe = probe
        self.interval = interval
        self.concurrency = concurrency
        self.on_cycle = on_cycle
        self.cycle_stats = CycleStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event, *, max_cycles: int | None = None) -> None:
        """Cycle until ``stop`` is set (or ``max_cycles`` completed); cancel what is in flight."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        try:
            while not stop.is_set() and (
                max_cycles is None or self.cycle_stats.cycles < max_cycles
            ):
                tick = t0 + k * self.interval
                now = loop.time()
                if now - tick >= self.interval:
                    skipped = math.floor((now - tick) / self.interval)
                    self.cycle_stats.missed += skipped
                    log.warning(
                        "skipped %d check cycle(s): the process could not start them on time "
                        "(late by %.3fs)", skipped, now - tick,
                    )
                    k += skipped
                    tick = t0 + k * self.interval
                if tick > now and await _wait_until(stop, tick):
                    break
                start = loop.time()
                self.cycle_stats.last_lag = max(start - tick, 0.0)
                single = max_cycles == 1
                if not await self._cycle(start, stop, spread=not single):
                    break  # stopped mid-cycle: that cycle is not counted
                duration = loop.time() - start
                self.cycle_stats.add(duration)
                self.cycle_stats.last_completed = loop.time()
                log.debug("cycle %d done in %.3fs, lag %.4fs", k, duration,
                          self.cycle_stats.last_lag)
                if self.on_cycle is not None:
                    self.on_cycle(k)
                k += 1
        finally:
            await self._cancel_in_flight()

    async def _cycle(self, start: float, stop: asyncio.Event, *, spread: bool) -> bool:
        """Probe every current endpoint once; False if stopped before the cycle completed."""
        loop = asyncio.get_running_loop()
        endpoints = list(self.stats)
        if not endpoints:
            return True
        longest = max(s.endpoint.timeout for s in endpoints)
        window = spread_window(len(endpoints), self.interval, longest) if spread else 0.0
        step = window / len(endpoints)
        done = asyncio.Event()
        remaining = len(endpoints)

        def finished(task: asyncio.Task[None]) -> None:
            nonlocal remaining
            self._in_flight.discard(task)
            remaining -= 1
            if remaining == 0:
                done.set()

        for index, stats in enumerate(endpoints):
            at = start + index * step
            # Sleep only when the next start is a timer tick away; otherwise start a batch.
            if at - loop.time() > 0.0005 and await _wait_until(stop, at):
                return False
            task = loop.create_task(self._probe_one(stats))
            self._in_flight.add(task)
            task.add_done_callback(finished)
        stopper = loop.create_task(stop.wait())
        waiter = loop.create_task(done.wait())
        await asyncio.wait((stopper, waiter), return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        waiter.cancel()
        return done.is_set()

    async def _probe_one(self, stats: EndpointStats) -> None:
        # The latency clock starts inside probe(), after the slot is ours.
        async with self._slots:
            result = await self.probe(stats.endpoint)
        self.stats.record(stats, result)

    async def _cancel_in_flight(self) -> None:
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)


async def _wait_until(stop: asyncio.Event, deadline: float) -> bool:
    """Sleep until the loop time ``deadline``; True if ``stop`` was set meanwhile."""
    if stop.is_set():
        return True
    try:
        async with asyncio.timeout_at(deadline):
            await stop.wait()
    except TimeoutError:
        return False
    return True
