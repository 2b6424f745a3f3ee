"""Goal 3: latency accuracy at the 10,000-endpoint rate, and the 500 ms threshold.

    .venv/bin/python bench/accuracy.py [--endpoints 10000 --cycles 3 --interval 15]

The target is bench/delay_server.py in its own process, answering every request exactly
200 ms (or 450 / 550 ms) after its headers arrived; it reports how late its own answers left,
so the target's error is printed beside the prober's.

Runs, each at the same rate (every endpoint once per cycle, starts spread as the scheduler
spreads them):

1. ours, in-process: the daemon's ``Exporter`` with a recording wrapper around
   ``Prober.probe``: every ProbeResult.duration; error = duration - 200 ms.
2. ours, in-process, half the endpoints at 450 ms and half at 550 ms (interleaved): every
   450 ms probe must be up and every 550 ms probe degraded (threshold 0.5 s).
3. blackbox_exporter driven through /probe on the same schedule: its probe_duration_seconds.
4. ours as the real daemon process: each endpoint's duration_seconds_sum change per cycle
   (one probe per endpoint per cycle), scraped right after each cycle's report line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as b

from availability_exporter.config import default_timeout

DELAY = 0.200
ERROR_P99_GOAL = 0.005
ERROR_MAX_GOAL = 0.020


@dataclass(frozen=True, slots=True)
class Options:
    json: Path | None
    workdir: Path | None
    endpoints: int
    cycles: int
    interval: float
    ports: int
    no_blackbox: bool
    no_daemon: bool


def main(argv: list[str] | None = None) -> int:
    parser = b.base_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--ports", type=int, default=4, help="delay server ports")
    parser.add_argument("--no-blackbox", action="store_true", help="skip run 3")
    parser.add_argument("--no-daemon", action="store_true", help="skip run 4")
    args = Options(**vars(parser.parse_args(argv)))
    report = b.Report(f"latency accuracy: {args.endpoints:,} endpoints, "
                      f"{args.interval:g} s interval, target answers after exactly 200 ms")
    rows: list[list[str]] = []
    with b.workdir(args.workdir) as work, b.DelayServer(ports=args.ports) as target:
        ours = in_process_delay(args, work, target, report, rows)
        threshold = in_process_threshold(args, work, target, report, rows)
        theirs: b.Spread | None = None
        if not args.no_blackbox:
            if b.require_binary(b.BLACKBOX_BIN, "REQUIRE_BLACKBOX") is None:
                report.note("blackbox_exporter is not installed: run 3 skipped")
            else:
                theirs = blackbox_delay(args, work, target, report, rows)
        daemon: b.Spread | None = None
        if not args.no_daemon:
            daemon = daemon_delay(args, work, target, report, rows)
    report.table(
        "latency error = measured - delay (ms); target late = how late the delay server's "
        "own answers left",
        ["run", "probes", "error p50", "error p99", "error max", "target late p99",
         "target late max", "start lag p99"],
        rows,
    )
    verdict(report, ours, threshold, theirs, daemon)
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


def _urls(target: b.DelayServer, count: int, delays_ms: tuple[float, ...]) -> list[str]:
    return [target.url(i, delays_ms[i % len(delays_ms)]) for i in range(count)]


def _row(name: str, errors: list[float], late: dict[str, Any], lag: float | None) -> list[str]:
    spread = b.Spread.of(errors)
    return [
        name, f"{spread.count:,}", f"{spread.p50 * 1000:.2f}", f"{spread.p99 * 1000:.2f}",
        f"{spread.max * 1000:.2f}", f"{late['lateness_p99_ms']:.2f}",
        f"{late['lateness_max_ms']:.2f}", "-" if lag is None else f"{lag * 1000:.2f}",
    ]


def in_process_delay(args: Options, work: Path, target: b.DelayServer, report: b.Report,
                     rows: list[list[str]]) -> b.Spread:
    config = work / "delay200.yaml"
    b.write_endpoints(config, _urls(target, args.endpoints, (DELAY * 1000,)))
    target.reset()
    run = b.run_in_process(config, interval=args.interval, cycles=args.cycles)
    late = target.stats()
    errors = [r.duration - DELAY for r in run.records]
    lags = run.dispatch_lags()
    per_cycle = b.completed_cycles(run, args.endpoints)
    report.check("in-process: every endpoint probed exactly once in every cycle",
                 len(per_cycle) == args.cycles and all(bad == 0 for _, bad in per_cycle))
    report.check("in-process: every 200 ms probe up", all(r.state == "up" for r in run.records))
    spread = b.Spread.of(errors)
    report.figures["ours_in_process"] = {
        "error_ms": spread.as_dict(1000), "target_late": late,
        "start_lag_p99_ms": b.percentile(lags, 0.99) * 1000,
        "cycle_lag_max_ms": max(run.cycle_lags, default=0.0) * 1000,
        "cpu_us_per_probe": run.cpu_seconds / max(len(run.records), 1) * 1e6,
    }
    rows.append(_row("ours, in-process (200 ms)", errors, late, b.percentile(lags, 0.99)))
    return spread


@dataclass(frozen=True, slots=True)
class Threshold:
    up_at_450: int
    total_450: int
    degraded_at_550: int
    total_550: int

    @property
    def misclassified(self) -> int:
        return (self.total_450 - self.up_at_450) + (self.total_550 - self.degraded_at_550)


def in_process_threshold(args: Options, work: Path, target: b.DelayServer, report: b.Report,
                         rows: list[list[str]]) -> Threshold:
    config = work / "threshold.yaml"
    b.write_endpoints(config, _urls(target, args.endpoints, (450.0, 550.0)))
    target.reset()
    run = b.run_in_process(config, interval=args.interval, cycles=args.cycles)
    late = target.stats()
    fast = [r for r in run.records if r.index % 2 == 0]
    slow = [r for r in run.records if r.index % 2 == 1]
    result = Threshold(
        up_at_450=sum(1 for r in fast if r.state == "up"), total_450=len(fast),
        degraded_at_550=sum(1 for r in slow if r.state == "degraded"), total_550=len(slow),
    )
    report.check("threshold run: every endpoint probed exactly once in every cycle",
                 all(bad == 0 for _, bad in b.completed_cycles(run, args.endpoints)))
    report.check("threshold run: no misclassification", result.misclassified == 0)
    errors = [r.duration - (0.450 if r.index % 2 == 0 else 0.550) for r in run.records]
    report.figures["threshold"] = {
        "up_at_450": result.up_at_450, "total_450": result.total_450,
        "degraded_at_550": result.degraded_at_550, "total_550": result.total_550,
        "slowest_450_ms": max((r.duration for r in fast), default=0.0) * 1000,
        "fastest_550_ms": min((r.duration for r in slow), default=0.0) * 1000,
        "target_late": late,
    }
    rows.append(_row("ours, in-process (450/550 ms)", errors, late,
                     b.percentile(run.dispatch_lags(), 0.99)))
    return result


def blackbox_delay(args: Options, work: Path, target: b.DelayServer, report: b.Report,
                   rows: list[list[str]]) -> b.Spread:
    urls = _urls(target, args.endpoints, (DELAY * 1000,))
    timeout = default_timeout(args.interval)
    with b.Blackbox(work, timeout=timeout) as blackbox:
        target.reset()
        result = b.drive_blackbox(blackbox, urls, interval=args.interval, cycles=args.cycles,
                                  timeout=timeout)
    late = target.stats()
    errors = [d - DELAY for d in result.durations()]
    report.check("blackbox: every probe succeeded",
                 sum(p.success for p in result.probes) == args.cycles * args.endpoints)
    spread = b.Spread.of(errors)
    report.figures["blackbox"] = {"error_ms": spread.as_dict(1000), "target_late": late}
    rows.append(_row("blackbox_exporter (200 ms)", errors, late, None))
    return spread


def daemon_delay(args: Options, work: Path, target: b.DelayServer, report: b.Report,
                 rows: list[list[str]]) -> b.Spread:
    config = work / "delay200.yaml"
    b.write_endpoints(config, _urls(target, args.endpoints, (DELAY * 1000,)))
    target.reset()
    with b.Daemon(config, interval=args.interval, directory=work) as daemon:
        watcher = b.CycleWatcher(daemon)
        for k in range(args.cycles):
            if not daemon.wait_cycles(k + 1, 2 * args.interval + 60):
                raise SystemExit(f"the exporter did not finish cycle {k + 1}:\n"
                                 f"{daemon.stderr_tail()}")
            watcher.observe(k)
        code = daemon.stop()
    late = target.stats()
    errors = [d - DELAY for s in watcher.samples for d in s.durations]
    report.check("daemon: exited cleanly", code == 0)
    report.check("daemon: every endpoint's probe count +1 per cycle",
                 all(s.counts_ok for s in watcher.samples))
    report.check("daemon: every probe up",
                 all(s.states.get("up") == args.endpoints for s in watcher.samples))
    spread = b.Spread.of(errors)
    lags = [s.lag for s in watcher.samples]
    report.figures["ours_daemon"] = {"error_ms": spread.as_dict(1000), "target_late": late,
                                     "cycle_lag_max_ms": max(lags, default=0.0) * 1000}
    rows.append(_row("ours, daemon process (200 ms)", errors, late, None))
    return spread


def verdict(report: b.Report, ours: b.Spread, threshold: Threshold, theirs: b.Spread | None,
            daemon: b.Spread | None) -> None:
    def ok(s: b.Spread) -> bool:
        return s.p99 <= ERROR_P99_GOAL and s.max <= ERROR_MAX_GOAL

    met = ok(ours) and (daemon is None or ok(daemon))
    detail = (f"in-process error p99 {ours.p99 * 1000:.2f} ms <= 5, max "
              f"{ours.max * 1000:.2f} ms <= 20")
    if daemon is not None:
        detail += f"; daemon p99 {daemon.p99 * 1000:.2f}, max {daemon.max * 1000:.2f}"
    if theirs is not None:
        detail += (f"; blackbox at the same load p99 {theirs.p99 * 1000:.2f}, max "
                   f"{theirs.max * 1000:.2f}")
    report.verdict("GOAL 3a latency error", met, detail)
    report.verdict(
        "GOAL 3b 500 ms threshold", threshold.misclassified == 0,
        f"450 ms: {threshold.up_at_450:,}/{threshold.total_450:,} up; 550 ms: "
        f"{threshold.degraded_at_550:,}/{threshold.total_550:,} degraded; "
        f"{threshold.misclassified} misclassified",
    )


if __name__ == "__main__":
    sys.exit(main())
