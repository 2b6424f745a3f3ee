"""Goal 7: probes/s, CPU per probe and latency error at 100, 1,000, 10,000 and 30,000 endpoints.

    .venv/bin/python bench/scaling.py [--sizes 100,1000,10000,30000 --cycles 2 --interval 15]

Every size probes the delay server (answers exactly 200 ms after the request, ``--delay-ms``)
with real daemon processes; sizes above ``--per-process`` (15,000) are split into ``--shard i/N``
processes, so 30,000 endpoints run as ``--shard 0/2`` and ``--shard 1/2``.  Each process is
scraped right after each of its cycles; the change of each endpoint's duration sum is that
cycle's probe duration.  CPU is utime + stime of every process over whole measured intervals
after a warm-up cycle.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any

from benchlib.exporter import CycleWatcher, Daemon
from benchlib.options import Flag, Options, parse_options, workdir
from benchlib.report import Report, Spread, fmt
from benchlib.targets import DelayServer, coverage, endpoint_name, write_endpoints

from availability_exporter.shard import shard_of


def main(argv: list[str] | None = None) -> int:
    args = parse_options(
        __doc__, argv, sizes="100,1000,10000,30000",
        cycles=Flag(2, "measured cycles per size"), warmup=1, interval=15.0, delay_ms=200.0,
        ports=Flag(8, "delay server ports"), per_process=15_000,
    )
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report = Report(f"scaling: {args.interval:g} s interval, target answers after "
                      f"{args.delay_ms:g} ms, "
                      f"{args.cycles} measured cycles per size")
    rows: list[list[str]] = []
    curve: list[dict[str, Any]] = []
    with workdir(args.workdir) as work, DelayServer(ports=args.ports) as target:
        for size in sizes:
            point = measure(args, work, target, size, report)
            curve.append(point)
            err = point["error"]
            rows.append([
                f"{size:,}", str(point["processes"]), fmt(point["probes_per_second"]),
                fmt(point["cpu_us_per_probe"], 0), fmt(point["cpu_cores"], 2),
                f"{err.p50 * 1000:.2f}", f"{err.p99 * 1000:.2f}", f"{err.max * 1000:.2f}",
                f"{point['longest_cycle']:.2f}", f"{point['target_late_p99_ms']:.2f}",
                f"{point['up_fraction'] * 100:.1f}",
                "yes" if point["every_cycle"] else "NO",
            ])
    report.table(
        f"latency error = measured - {args.delay_ms:g} ms (ms); CPU = all processes of that "
        "size",
        ["endpoints", "processes", "probes/s", "CPU µs/probe", "CPU cores", "error p50",
         "error p99", "error max", "longest cycle s", "target late p99", "up %",
         "every endpoint every cycle"],
        rows,
    )
    report.figures["curve"] = [
        {**{k: v for k, v in p.items() if k != "error"}, "error_ms": p["error"].as_dict(1000)}
        for p in curve
    ]
    complete = all(p["every_cycle"] for p in curve)
    report.verdict(
        "GOAL 7 scaling curve", complete and len(curve) == len(sizes),
        "measured at " + ", ".join(
            f"{p['endpoints']:,}: {p['probes_per_second']:,.0f} probes/s, "
            f"{p['cpu_us_per_probe']:,.0f} µs, p99 err {p['error'].p99 * 1000:.1f} ms"
            for p in curve
        ) + ("; every endpoint probed every cycle at every size" if complete
             else "; some size lost probes"),
    )
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


def measure(args: Options, work: Path, target: DelayServer, size: int,
            report: Report) -> dict[str, Any]:
    config = work / f"endpoints-{size}.yaml"
    write_endpoints(config, [target.url(i, args.delay_ms) for i in range(size)])
    shards = max(1, math.ceil(size / args.per_process))
    total = args.warmup + args.cycles
    target.reset()
    with contextlib.ExitStack() as stack:
        daemons = [
            stack.enter_context(Daemon(
                config, interval=args.interval, directory=work, label=f"exporter-{size}-{i}",
                extra=["--shard", f"{i}/{shards}"] if shards > 1 else [],
            ))
            for i in range(shards)
        ]
        watchers = [CycleWatcher(d) for d in daemons]
        for k in range(total):
            for daemon, watcher in zip(daemons, watchers, strict=True):
                if not daemon.wait_cycles(k + 1, 2 * args.interval + 120):
                    raise SystemExit(f"{size} endpoints: no cycle {k + 1}:\n"
                                     f"{daemon.stderr_tail()}")
                watcher.observe(k)
        codes = [d.stop() for d in daemons]
        stops = [d.stop_seconds for d in daemons]
    late = target.stats()
    arrivals = target.arrivals()
    every_cycle = True
    for i in range(shards):
        # Each process's own endpoints against its own cycle ends (shards tick independently).
        mine = [target.path(j, args.delay_ms) for j in range(size)
                if shards == 1 or shard_of(endpoint_name(j), shards) == i]
        hits = coverage(arrivals, mine, cycles=total, interval=args.interval)
        every_cycle = every_cycle and all(once == len(mine) for once in hits)
    cpu = sum(w.samples[-1].cpu - w.samples[args.warmup - 1].cpu for w in watchers)
    wall = max(w.samples[-1].wall - w.samples[args.warmup - 1].wall for w in watchers)
    probes = args.cycles * sum(w.endpoints for w in watchers)
    measured = [s for w in watchers for s in w.samples[args.warmup:]]
    errors = [d - args.delay_ms / 1000 for s in measured for d in s.durations]
    every_cycle = every_cycle and sum(w.endpoints for w in watchers) == size
    report.check(f"{size}: every process exited 0 on SIGTERM", all(c == 0 for c in codes))
    report.check(f"{size}: every endpoint probed exactly once in every cycle (target's log)",
                 every_cycle)
    return {
        "endpoints": size, "processes": shards,
        "probes_per_second": probes / wall if wall else 0.0,
        "cpu_us_per_probe": cpu / probes * 1e6 if probes else 0.0,
        "cpu_cores": cpu / wall if wall else 0.0,
        "error": Spread.of(errors),
        "longest_cycle": max(s.cycle_seconds for s in measured),
        "cycle_lag_max_ms": max(s.lag for s in measured) * 1000,
        "target_late_p99_ms": late["lateness_p99_ms"],
        "every_cycle": every_cycle,
        "exit_codes": codes, "stop_seconds": stops,
        "up_fraction": sum(s.states.get("up", 0) for s in measured) / max(
            sum(w.endpoints for w in watchers) * args.cycles, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
