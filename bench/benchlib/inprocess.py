"""The daemon's own ``Exporter`` run in this process, every probe result kept."""

from __future__ import annotations

import array
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib.machine import run_loop
from benchlib.targets import slot_check


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
    from availability_exporter.daemon import Exporter
    from availability_exporter.model import Endpoint, ProbeResult
    from availability_exporter.scheduler import Observer, spread_window
    from availability_exporter.settings import load_settings

    settings = load_settings([str(config), "-f", f"{interval:g}", *extra])
    records = RecordColumns()
    done: list[int] = []
    count: dict[str, int] = {}

    async def main() -> None:
        exporter = Exporter(settings.options(), out=io.StringIO())
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
    run_loop(main())
    endpoints = count.get("endpoints", 0)
    step = spread_window(endpoints, interval) / endpoints if endpoints else 0.0
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return InProcessRun(records.records(), endpoints, len(done), interval, step, cpu, wall)
