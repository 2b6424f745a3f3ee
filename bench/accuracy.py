"""Goal 3: latency accuracy at the 10,000-endpoint rate, and the 500 ms threshold.

    .venv/bin/python bench/accuracy.py [--endpoints 10000 --cycles 3 --interval 15]

The target is bench/delay_server.py in its own process, answering every request exactly
200 ms (``--delay-ms``; 450 / 550 ms in run 2) after its headers arrived; it reports how late
its own answers left, so the target's error is printed beside the prober's.

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

from benchlib.blackbox import Blackbox, drive_blackbox
from benchlib.exporter import CycleWatcher, Daemon
from benchlib.inprocess import run_in_process
from benchlib.machine import BLACKBOX_BIN, require_binary
from benchlib.options import Flag, Options, parse_options, workdir
from benchlib.report import Report, Spread, percentile
from benchlib.targets import DelayServer, coverage, write_endpoints

from availability_exporter.config import default_timeout

ERROR_P99_GOAL = 0.005
ERROR_MAX_GOAL = 0.020


def main(argv: list[str] | None = None) -> int:
    args = parse_options(
        __doc__, argv, endpoints=10_000, cycles=3, interval=15.0,
        ports=Flag(4, "delay server ports"), no_blackbox=Flag(False, "skip run 3"),
        no_daemon=Flag(False, "skip run 4"), delay_ms=Flag(200.0, "runs 1, 3, 4"),
        up_ms=Flag(450.0, "run 2: delay of the endpoints that must be up"),
        degraded_ms=Flag(550.0, "run 2: delay of the endpoints that must be degraded"),
    )
    report = Report(f"latency accuracy: {args.endpoints:,} endpoints, "
                      f"{args.interval:g} s interval, target answers after exactly "
                      f"{args.delay_ms:g} ms")
    rows: list[list[str]] = []
    with workdir(args.workdir) as work, DelayServer(ports=args.ports) as target:
        ours = in_process_delay(args, work, target, report, rows)
        threshold = in_process_threshold(args, work, target, report, rows)
        theirs: Spread | None = None
        if not args.no_blackbox:
            if require_binary(BLACKBOX_BIN, "REQUIRE_BLACKBOX") is None:
                report.note("blackbox_exporter is not installed: run 3 skipped")
            else:
                theirs = blackbox_delay(args, work, target, report, rows)
        daemon: Spread | None = None
        if not args.no_daemon:
            daemon = daemon_delay(args, work, target, report, rows)
    report.table(
        "latency error = measured - delay (ms); target late = how late the delay server's "
        "own answers left; misclassified = not up (blackbox: failed), or in the threshold run "
        "not the state its delay calls for",
        ["run", "probes", "error p50", "error p99", "error max", "target late p99",
         "target late max", "start lag p99", "misclassified"],
        rows,
    )
    verdict(report, ours, threshold, theirs, daemon)
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


def _urls(target: DelayServer, count: int, delays_ms: tuple[float, ...]) -> list[str]:
    return [target.url(i, delays_ms[i % len(delays_ms)]) for i in range(count)]


def _row(name: str, errors: list[float], late: dict[str, Any], lag: float | None,
         wrong: int) -> list[str]:
    spread = Spread.of(errors)
    return [
        name, f"{spread.count:,}", f"{spread.p50 * 1000:.2f}", f"{spread.p99 * 1000:.2f}",
        f"{spread.max * 1000:.2f}", f"{late['lateness_p99_ms']:.2f}",
        f"{late['lateness_max_ms']:.2f}", "-" if lag is None else f"{lag * 1000:.2f}",
        f"{wrong:,}",
    ]


def in_process_delay(args: Options, work: Path, target: DelayServer, report: Report,
                     rows: list[list[str]]) -> Spread:
    delay = args.delay_ms / 1000
    config = work / "delay.yaml"
    write_endpoints(config, _urls(target, args.endpoints, (args.delay_ms,)))
    target.reset()
    run = run_in_process(config, interval=args.interval, cycles=args.cycles)
    late = target.stats()
    measured = run.measured()
    errors = [r.duration - delay for r in measured]
    lags = run.dispatch_lags()
    report.check("in-process: every endpoint probed exactly once in every cycle",
                 run.cycles == args.cycles
                 and all(once == args.endpoints for once in run.per_cycle()))
    spread = Spread.of(errors)
    report.figures["ours_in_process"] = {
        "error_ms": spread.as_dict(1000), "target_late": late,
        "start_lag_p99_ms": percentile(lags, 0.99) * 1000,
        "start_lag_max_ms": max(lags, default=0.0) * 1000,
        "cpu_us_per_probe": run.cpu_seconds / max(len(run.records), 1) * 1e6,
    }
    rows.append(_row(f"ours, in-process ({args.delay_ms:g} ms)", errors, late,
                     percentile(lags, 0.99), sum(r.state != "up" for r in measured)))
    return spread


@dataclass(frozen=True, slots=True)
class Threshold:
    up_ms: float
    up: int
    up_total: int
    degraded_ms: float
    degraded: int
    degraded_total: int

    @property
    def misclassified(self) -> int:
        return (self.up_total - self.up) + (self.degraded_total - self.degraded)


def in_process_threshold(args: Options, work: Path, target: DelayServer, report: Report,
                         rows: list[list[str]]) -> Threshold:
    config = work / "threshold.yaml"
    write_endpoints(config, _urls(target, args.endpoints, (args.up_ms, args.degraded_ms)))
    target.reset()
    run = run_in_process(config, interval=args.interval, cycles=args.cycles)
    late = target.stats()
    measured = run.measured()
    fast = [r for r in measured if r.index % 2 == 0]
    slow = [r for r in measured if r.index % 2 == 1]
    result = Threshold(
        up_ms=args.up_ms, up=sum(1 for r in fast if r.state == "up"), up_total=len(fast),
        degraded_ms=args.degraded_ms, degraded=sum(1 for r in slow if r.state == "degraded"),
        degraded_total=len(slow),
    )
    report.check("threshold run: every endpoint probed exactly once in every cycle",
                 run.cycles == args.cycles
                 and all(once == args.endpoints for once in run.per_cycle()))
    report.check("threshold run: no misclassification", result.misclassified == 0)
    errors = [r.duration - (args.up_ms if r.index % 2 == 0 else args.degraded_ms) / 1000
              for r in measured]
    report.figures["threshold"] = {
        "up_ms": args.up_ms, "up": result.up, "up_total": result.up_total,
        "degraded_ms": args.degraded_ms, "degraded": result.degraded,
        "degraded_total": result.degraded_total,
        "slowest_up_ms": max((r.duration for r in fast), default=0.0) * 1000,
        "fastest_degraded_ms": min((r.duration for r in slow), default=0.0) * 1000,
        "target_late": late,
    }
    rows.append(_row(f"ours, in-process ({args.up_ms:g}/{args.degraded_ms:g} ms)", errors,
                     late, percentile(run.dispatch_lags(), 0.99), result.misclassified))
    return result


def blackbox_delay(args: Options, work: Path, target: DelayServer, report: Report,
                   rows: list[list[str]]) -> Spread:
    urls = _urls(target, args.endpoints, (args.delay_ms,))
    timeout = default_timeout(args.interval)
    with Blackbox(work, timeout=timeout) as blackbox:
        target.reset()
        result = drive_blackbox(blackbox, urls, interval=args.interval, cycles=args.cycles,
                                  timeout=timeout)
    late = target.stats()
    errors = [d - args.delay_ms / 1000 for d in result.durations()]
    spread = Spread.of(errors)
    report.figures["blackbox"] = {"error_ms": spread.as_dict(1000), "target_late": late}
    failed = args.cycles * args.endpoints - sum(p.success for p in result.probes)
    rows.append(_row(f"blackbox_exporter ({args.delay_ms:g} ms)", errors, late, None, failed))
    return spread


def daemon_delay(args: Options, work: Path, target: DelayServer, report: Report,
                 rows: list[list[str]]) -> Spread:
    config = work / "delay.yaml"
    write_endpoints(config, _urls(target, args.endpoints, (args.delay_ms,)))
    target.reset()
    with Daemon(config, interval=args.interval, directory=work) as daemon:
        watcher = CycleWatcher(daemon)
        for k in range(args.cycles):
            if not daemon.wait_cycles(k + 1, 2 * args.interval + 60):
                raise SystemExit(f"the exporter did not finish cycle {k + 1}:\n"
                                 f"{daemon.stderr_tail()}")
            watcher.observe(k)
        code = daemon.stop()
    late = target.stats()
    errors = [d - args.delay_ms / 1000 for s in watcher.samples for d in s.durations]
    hits = coverage(target.arrivals(),
                      [target.path(i, args.delay_ms) for i in range(args.endpoints)],
                      cycles=args.cycles, interval=args.interval)
    report.check("daemon: exited cleanly", code == 0)
    report.check("daemon: every endpoint probed exactly once in every cycle (target's log)",
                 all(once == args.endpoints for once in hits))
    spread = Spread.of(errors)
    lags = [s.lag for s in watcher.samples]
    report.figures["ours_daemon"] = {"error_ms": spread.as_dict(1000), "target_late": late,
                                     "cycle_lag_max_ms": max(lags, default=0.0) * 1000}
    not_up = sum(args.endpoints - s.states.get("up", 0) for s in watcher.samples)
    rows.append(_row(f"ours, daemon process ({args.delay_ms:g} ms)", errors, late, None,
                     not_up))
    return spread


def verdict(report: Report, ours: Spread, threshold: Threshold, theirs: Spread | None,
            daemon: Spread | None) -> None:
    def ok(s: Spread) -> bool:
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
        f"{threshold.up_ms:g} ms: {threshold.up:,}/{threshold.up_total:,} up; "
        f"{threshold.degraded_ms:g} ms: {threshold.degraded:,}/{threshold.degraded_total:,} "
        f"degraded; {threshold.misclassified} misclassified",
    )


if __name__ == "__main__":
    sys.exit(main())
