"""Fixed-rate cycles: every endpoint once per cycle, no drift, missed ticks counted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from availability_exporter.cli import run_event_loop
from availability_exporter.config import Defaults, parse_config
from availability_exporter.model import Endpoint, ProbeResult, State
from availability_exporter.probe import Prober
from availability_exporter.scheduler import Observer, Scheduler, spread_window
from availability_exporter.stats import Stats
from tests.adversarial.server import serve_in_process
from tests.factories import endpoints, result


def test_spread_window() -> None:
    assert spread_window(1, 15) == 0.0
    assert spread_window(4, 15) == 0.008  # small configs start at once
    assert spread_window(5_000, 15) == 10.0  # one start every 2 ms
    assert spread_window(10_000, 15) == 13.5  # within 90 % of the interval
    assert spread_window(200, 1) == pytest.approx(0.4)


def test_every_endpoint_once_per_cycle_reports_on_time() -> None:
    """200 endpoints, interval 2 s, a quarter taking 0.9 x timeout: reports at a steady offset
    from their ticks, every endpoint once per cycle, no misses.

    At 2 s the starts (0.4 s) plus the slowest answers (1.44 s) end before the next tick, so
    a cycle's report is not competing with the next cycle's starts (at 1 s they would overlap
    and the report time would measure that contention, not the scheduler).
    """
    interval, timeout = 2.0, 1.6
    slow_ms = 1440
    with serve_in_process() as server:
        base = server.base_url
        urls = [f"{base}/slow?ms={slow_ms}" if i % 4 == 0 else f"{base}/ok" for i in range(200)]
        text = "".join(f"- {{name: ep{i}, url: '{u}'}}\n" for i, u in enumerate(urls))
        eps = parse_config(text.encode(), "t.yaml",
                           Defaults(interval=interval, timeout=timeout)).endpoints

        async def go() -> tuple[list[float], float, Stats, Scheduler]:
            stats = Stats()
            stats.apply(eps)
            prober = Prober()
            await prober.warm_up()
            reports: list[float] = []
            loop = asyncio.get_running_loop()
            reported = Observer(on_cycle_end=lambda k: reports.append(loop.time()))
            scheduler = Scheduler(stats=stats, probe=prober.probe, interval=interval,
                                  concurrency=1000, observers=[reported])
            t0 = loop.time()
            await scheduler.run(asyncio.Event(), max_cycles=4)
            await prober.aclose()
            return reports, t0, stats, scheduler

        # The daemon's own event loop (uvloop when installed), as in production.
        reports, t0, stats, scheduler = run_event_loop(go())
    assert len(reports) == 4
    # Report k comes when cycle k's last probe is done: after its slowest probe, no later than
    # its last start plus the timeout, and at the same offset from its tick every cycle
    # (within 50 ms): no drift, no lateness piling up.
    offsets = [at - (t0 + k * interval) for k, at in enumerate(reports)]
    window = spread_window(200, interval)
    assert all(slow_ms / 1000 <= off <= window + timeout + 0.05 for off in offsets), offsets
    assert max(offsets) - min(offsets) <= 0.05, offsets
    assert scheduler.cycle_stats.missed == 0
    assert scheduler.cycle_stats.last_lag < 0.05
    assert all(s.total == 4 for s in stats), Counter(s.total for s in stats)
    slow = [s for s in stats if s.endpoint.url.endswith(f"ms={slow_ms}")]
    assert len(slow) == 50
    bad = [(s.up, s.degraded, s.down, s.last) for s in slow if s.degraded != 4]
    assert not bad, bad
    assert sum(s.up for s in stats) == 150 * 4


def test_suspended_process_counts_missed_ticks() -> None:
    """A loop blocked past a whole tick skips it and counts it; it never merges two cycles.

    Ticks at 0, .2, .4, .6, .8 s; the probe of cycle 1 blocks the process until ~.7 s, so tick
    .4 passed entirely (missed) and tick .6 starts late (lag ~.1 s, inside its own slot).
    """
    (ep,) = endpoints("http://x.example/", interval=0.2)
    calls: list[float] = []

    async def blocking_probe(endpoint: Endpoint) -> ProbeResult:
        calls.append(time.monotonic())
        if len(calls) == 2:
            time.sleep(0.5)  # the whole process stalls, as if suspended
        return result(State.UP)

    async def go() -> Scheduler:
        stats = Stats()
        stats.apply([ep])
        scheduler = Scheduler(stats=stats, probe=blocking_probe, interval=0.2, concurrency=10)
        await scheduler.run(asyncio.Event(), max_cycles=4)
        return scheduler

    scheduler = asyncio.run(go())
    assert scheduler.cycle_stats.cycles == 4
    assert scheduler.cycle_stats.missed == 1
    assert len(calls) == 4
    assert 0.4 < calls[2] - calls[0] < 0.2 * 4


def test_stop_cancels_the_cycle_in_flight() -> None:
    (ep,) = endpoints("http://x.example/", interval=5)

    async def go() -> tuple[Scheduler, float]:
        stop = asyncio.Event()
        began = asyncio.Event()

        async def hanging_probe(endpoint: Endpoint) -> ProbeResult:
            began.set()
            await asyncio.sleep(60)
            return result(State.UP)

        stats = Stats()
        stats.apply([ep])
        scheduler = Scheduler(stats=stats, probe=hanging_probe, interval=5, concurrency=10)
        task = asyncio.create_task(scheduler.run(stop))
        await began.wait()
        t = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 3)
        return scheduler, time.monotonic() - t

    scheduler, took = asyncio.run(go())
    assert scheduler.cycle_stats.cycles == 0  # the cancelled cycle is not counted
    assert took < 2.5


class SleepingProbe:
    """A fake probe that takes ``seconds`` and records the most probes in flight at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, endpoint: Endpoint) -> ProbeResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight -= 1
        return result(State.UP)


def test_concurrency_bound_is_respected() -> None:
    eps = endpoints(*[f"http://h{i}.example/" for i in range(50)], interval=5)
    probe = SleepingProbe(0.01)

    async def go() -> Stats:
        stats = Stats()
        stats.apply(eps)
        scheduler = Scheduler(stats=stats, probe=probe, interval=5, concurrency=7)
        await scheduler.run(asyncio.Event(), max_cycles=1)
        return stats

    stats = asyncio.run(go())
    assert probe.peak <= 7
    assert all(s.total == 1 for s in stats)


def test_overload_skips_ticks_instead_of_piling_up_cycles() -> None:
    """Probes that take 2.5 intervals: never more than two cycles in flight, the rest missed."""
    (ep,) = endpoints("http://x.example/", interval=0.2)
    probe = SleepingProbe(0.5)

    async def go() -> Scheduler:
        stats = Stats()
        stats.apply([ep])
        scheduler = Scheduler(stats=stats, probe=probe, interval=0.2, concurrency=10)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(2.1, stop.set)
        await scheduler.run(stop)
        return scheduler

    scheduler = asyncio.run(go())
    assert probe.peak == 2
    assert scheduler.cycle_stats.missed >= 3
    assert scheduler.cycle_stats.cycles + scheduler.cycle_stats.missed >= 8


def test_observers_see_every_result_and_every_cycle_end() -> None:
    """Each result once, after the stats counted it, with its start time; cycle ends in order.

    A failing observer is logged and neither stops the cycle nor the other observers.
    """
    eps = endpoints(*[f"http://h{i}.example/" for i in range(5)], interval=0.2)
    seen: list[tuple[str, State, float, int]] = []
    ends: list[int] = []

    async def go() -> tuple[Stats, float]:
        stats = Stats()
        stats.apply(eps)
        loop = asyncio.get_running_loop()

        def on_result(endpoint: Endpoint, res: ProbeResult, started: float) -> None:
            counted = next(s.total for s in stats if s.endpoint is endpoint)
            seen.append((endpoint.name, res.state, started, counted))

        def broken(*_: object) -> None:
            raise RuntimeError("observer bug")

        scheduler = Scheduler(
            stats=stats, probe=SleepingProbe(0.001), interval=0.2, concurrency=10,
            observers=[Observer(on_result=broken, on_cycle_end=broken),
                       Observer(on_result=on_result, on_cycle_end=ends.append)],
        )
        t0 = loop.time()
        await scheduler.run(asyncio.Event(), max_cycles=3)
        return stats, t0

    stats, t0 = asyncio.run(go())
    assert ends == [0, 1, 2]
    assert Counter(name for name, *_ in seen) == {e.name: 3 for e in eps}
    assert all(state is State.UP for _, state, _, _ in seen)
    assert all(started >= t0 for _, _, started, _ in seen)
    # The k-th result of an endpoint arrives once the stats hold k results for it.
    ranks: Counter[str] = Counter()
    for name, _, _, counted in seen:
        ranks[name] += 1
        assert counted == ranks[name]
    assert all(s.total == 3 for s in stats)
