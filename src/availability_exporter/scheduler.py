"""Fixed-rate check cycles: cycle k starts at t0 + k * interval on the loop's monotonic clock.

Within a cycle every endpoint is probed exactly once, at a fixed offset from the tick: starts
are spread 2 ms apart over at most 90 % of the interval, because thousands of probes fired at
one instant queue behind each other and every one of them then measures the queue, not the
endpoint.  Offsets are anchored to the tick, so a late start never pushes later probes or
cycles back (no drift).  A tick that passes while the process cannot start it (suspended) is
counted as missed, never merged.

Whoever wants to see results or cycle ends (the daemon's report, tests, bench/) registers an
:class:`Observer`; nothing needs to wrap the probe function or replace a callback.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from availability_exporter.model import Endpoint, ProbeResult
from availability_exporter.stats import BUCKETS, EndpointStats, Stats

log = logging.getLogger(__name__)

# Aim for a probe start every 2 ms when the interval leaves room.  A probe costs ~0.2 ms of CPU
# (bench/), so this keeps the loop mostly idle; bunched starts would make probes wait behind
# each other's callbacks and measure that queue instead of their endpoint.
START_SPACING = 0.002
# Starts due within this long are made together, after one wake-up.
BATCH = 0.01
# Leave the end of the interval free of starts, so the last probes' answers usually arrive
# before the next tick and reports keep their rhythm.
WINDOW_SHARE = 0.9

# A cycle's stragglers may overlap the next cycle; a third cycle in flight means overload.
MAX_CYCLES_IN_FLIGHT = 2

ProbeFunc = Callable[[Endpoint], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class Observer:
    """Callbacks the scheduler calls on the loop: after every probe, and after every cycle.

    ``on_result(endpoint, result, started)`` runs once the result is counted in the stats;
    ``started`` is the loop time the probe began (its concurrency slot held), which is what a
    check of the start schedule needs.  ``on_cycle_end(cycle)`` runs when cycle ``cycle``
    (numbered from the first tick, missed ticks included) completed, in cycle order; a cycle
    cut short by a stop is not reported.  Both run on the event loop between probes, so they
    must return quickly; an exception is logged and the scheduler carries on.
    """

    on_result: Callable[[Endpoint, ProbeResult, float], None] | None = None
    on_cycle_end: Callable[[int], None] | None = None


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


def spread_window(count: int, interval: float) -> float:
    """How long a cycle spends starting its probes: 2 ms apart, within 90 % of the interval."""
    if count <= 1:
        return 0.0
    return min(count * START_SPACING, WINDOW_SHARE * interval)


@dataclass(slots=True)
class _Cycle:
    number: int
    started: float  # loop time
    task: asyncio.Task[float | None]


class Scheduler:
    """Runs check cycles over the current endpoints of ``stats`` until told to stop."""

    def __init__(
        self,
        *,
        stats: Stats,
        probe: ProbeFunc,
        interval: float,
        concurrency: int,
        observers: Iterable[Observer] = (),
    ) -> None:
        self.stats = stats
        self.probe = probe
        self.interval = interval
        self.concurrency = concurrency
        # Appended to by whoever joins after construction (bench/ on the daemon's scheduler).
        self.observers: list[Observer] = list(observers)
        self.cycle_stats = CycleStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._cycles: deque[_Cycle] = deque()

    async def run(
        self, stop: asyncio.Event, *, max_cycles: int | None = None, spread: bool = True,
    ) -> None:
        """Run cycles until ``stop`` is set, or until this call ran ``max_cycles`` of them.

        ``spread=False`` starts every probe of a cycle at once (``--once``: nothing to pace).

        Cycle k is launched at its tick whether or not cycle k-1 has finished: a cycle whose
        last probes run into their timeouts may overlap the next one's first probes (each
        endpoint's own probes never overlap: its offset is fixed and timeout < interval).
        Cycles complete, count and report in order.
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        launched = 0
        try:
            while not stop.is_set() and (max_cycles is None or launched < max_cycles):
                tick = t0 + k * self.interval
                if tick > loop.time() and await _wait_until(stop, tick):
                    break
                start = loop.time()
                if start - tick >= self.interval:
                    # Whole slots passed while the process could not run (suspended, or a
                    # blocked loop): count them, then start the slot we are in, late.
                    skipped = math.floor((start - tick) / self.interval)
                    self.cycle_stats.missed += skipped
                    log.warning(
                        "skipped %d check cycle(s): the process could not start them on time "
                        "(late by %.3fs)", skipped, start - tick,
                    )
                    k += skipped
                    tick = t0 + k * self.interval
                self.cycle_stats.last_lag = max(start - tick, 0.0)
                if len(self._cycles) >= MAX_CYCLES_IN_FLIGHT:
                    # Overloaded: more probes than the process completes per interval.
                    # Skipping (and counting) the tick keeps memory bounded.
                    self.cycle_stats.missed += 1
                    log.warning(
                        "skipped check cycle %d: %d earlier cycles are still running",
                        k, len(self._cycles),
                    )
                    k += 1
                    continue
                task = loop.create_task(self._cycle(tick, stop, spread=spread))
                self._cycles.append(_Cycle(k, start, task))
                task.add_done_callback(self._reap)
                launched += 1
                k += 1
            await _wait_all(stop, [c.task for c in self._cycles])
        finally:
            for cycle in self._cycles:
                cycle.task.cancel()
            await self._cancel_in_flight()

    def _reap(self, _task: asyncio.Task[float | None]) -> None:
        """Count and report finished cycles, oldest first (a later one waits for its elders)."""
        while self._cycles and self._cycles[0].task.done():
            cycle = self._cycles.popleft()
            if cycle.task.cancelled() or cycle.task.exception() is not None:
                continue  # stopped mid-cycle: not counted
            ended = cycle.task.result()
            if ended is None:
                continue
            duration = ended - cycle.started
            self.cycle_stats.add(duration)
            self.cycle_stats.last_completed = ended
            log.debug("cycle %d done in %.3fs", cycle.number, duration)
            for observer in self.observers:
                if observer.on_cycle_end is not None:
                    try:
                        observer.on_cycle_end(cycle.number)
                    except Exception:
                        # A done-callback that raises would stop reaping the later cycles.
                        log.exception("cycle observer failed on cycle %d", cycle.number)

    async def _cycle(self, tick: float, stop: asyncio.Event, *, spread: bool) -> float | None:
        """Probe every current endpoint once; the loop time it ended, None if stopped.

        Starts are anchored to the tick, not to when this task ran: a late start catches up
        at once instead of pushing every later probe (and the next cycles) back.
        """
        loop = asyncio.get_running_loop()
        endpoints = list(self.stats)
        if not endpoints:
            return loop.time()
        window = spread_window(len(endpoints), self.interval) if spread else 0.0
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
            at = tick + index * step
            # Start in batches: every wake-up of the loop costs ~70-110 us of CPU, more than
            # the spacing is worth at thousands of starts per second.
            wait = at - loop.time()
            if wait > BATCH:
                await asyncio.sleep(wait)
            if stop.is_set():
                return None
            task = loop.create_task(self._probe_one(stats))
            self._in_flight.add(task)
            task.add_done_callback(finished)
        waiter = loop.create_task(done.wait())
        try:
            await _wait_all(stop, [waiter])
        finally:
            waiter.cancel()
        return loop.time() if done.is_set() else None

    async def _probe_one(self, stats: EndpointStats) -> None:
        # The latency clock starts inside probe(), after the slot is ours.
        async with self._slots:
            started = asyncio.get_running_loop().time()
            result = await self.probe(stats.endpoint)
        self.stats.record(stats, result)
        for observer in self.observers:
            if observer.on_result is not None:
                try:
                    observer.on_result(stats.endpoint, result, started)
                except Exception:
                    # One probe's bookkeeping must not surface as a lost task exception.
                    log.exception("result observer failed for %s", stats.endpoint.name)

    async def _cancel_in_flight(self) -> None:
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)


async def _wait_all(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    """Wait until every task is done or ``stop`` is set."""
    pending = {t for t in tasks if not t.done()}
    if not pending or stop.is_set():
        return
    stopper = asyncio.get_running_loop().create_task(stop.wait())
    try:
        while pending and not stop.is_set():
            _, pending = await asyncio.wait(pending | {stopper},
                                            return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
    finally:
        stopper.cancel()


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
