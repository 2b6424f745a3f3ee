"""Goals 1 and 2: 10,000 endpoints in one process, and CPU per probe against blackbox_exporter.

    .venv/bin/python bench/capacity.py [--endpoints 10000 --cycles 4 --interval 15]

The exporter runs as the real daemon (fresh connection per probe, uvloop) against nginx with
one path per endpoint.  After each cycle's report line it is scraped once (gzip, as Prometheus
does at a 15 s interval), which gives the cycle's lag, its duration and each endpoint's probe
count; nginx's access log says independently which endpoint was probed in which cycle.  CPU is
utime + stime from /proc/PID/stat over whole intervals after a warm-up cycle.

blackbox_exporter then probes the same targets through /probe (module http_2xx), driven on the
exporter's own schedule (same spread of starts, same in-flight cap) for the same number of
cycles; its CPU comes from /proc the same way.  The figure compared is CPU microseconds per
probe; the ratio is ours / blackbox's, both from this run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchlib.blackbox import Blackbox, drive_blackbox
from benchlib.exporter import CycleWatcher, Daemon
from benchlib.machine import (
    BLACKBOX_BIN,
    NGINX_BIN,
    cpu_seconds,
    peak_rss_bytes,
    require_binary,
    rss_bytes,
)
from benchlib.options import Flag, Options, parse_options, workdir
from benchlib.report import Report, fmt, mb, percentile
from benchlib.targets import Nginx, coverage, write_endpoints

from availability_exporter.config import default_timeout
from availability_exporter.scheduler import spread_window

LAG_GOAL = 0.050
CPU_CORES_GOAL = 1.0


def main(argv: list[str] | None = None) -> int:
    args = parse_options(
        __doc__, argv, endpoints=10_000, interval=15.0,
        cycles=Flag(4, "measured cycles (after warm-up)"), warmup=1,
        ports=Flag(8, "nginx listen ports"), no_blackbox=Flag(False, "skip goal 2"),
    )
    if require_binary(NGINX_BIN, "REQUIRE_NGINX") is None:
        print("SKIP: nginx is not installed (/usr/sbin/nginx)")
        return 0
    report = Report(f"capacity: {args.endpoints:,} endpoints, {args.interval:g} s interval")
    with workdir(args.workdir) as work, Nginx(work, ports=args.ports) as nginx:
        ours = measure_ours(args, work, nginx, report)
        theirs = None
        if not args.no_blackbox:
            if require_binary(BLACKBOX_BIN, "REQUIRE_BLACKBOX") is None:
                report.note("blackbox_exporter is not installed: goal 2 skipped")
            else:
                theirs = measure_blackbox(args, work, nginx, report)
    summarize(args, report, ours, theirs)
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


def measure_ours(args: Options, work: Path, nginx: Nginx,
                 report: Report) -> dict[str, Any]:
    n, interval = args.endpoints, args.interval
    config = work / "endpoints.yaml"
    paths = [nginx.path(i) for i in range(n)]
    write_endpoints(config, nginx.urls(n))
    total = args.warmup + args.cycles
    per_cycle_timeout = 2 * interval + 60
    with Daemon(config, interval=interval, directory=work) as daemon:
        watcher = CycleWatcher(daemon)
        for k in range(total):
            if not daemon.wait_cycles(k + 1, per_cycle_timeout):
                raise SystemExit(f"the exporter did not finish cycle {k + 1}:\n"
                                 f"{daemon.stderr_tail()}")
            watcher.observe(k)
        rss = daemon.rss()
        peak = peak_rss_bytes(daemon.pid)
        code = daemon.stop()
    samples = watcher.samples
    first, last = samples[args.warmup - 1], samples[-1]
    cpu = last.cpu - first.cpu
    wall = last.wall - first.wall
    probes = args.cycles * n
    hits = coverage(nginx.arrivals(), paths, cycles=total, interval=interval)
    every_cycle = all(once == n for once in hits)
    attributed = sum(s.attributed for s in samples)
    up = sum(s.states.get("up", 0) for s in samples)
    lags = [s.lag for s in samples]
    durations = [s.cycle_seconds for s in samples]
    missed = samples[-1].missed
    report.check("exporter exited cleanly", code == 0)
    report.check("every endpoint probed exactly once in every cycle (nginx log)", every_cycle)
    window = spread_window(n, interval)
    figures = {
        "endpoints": n, "interval": interval, "cycles": args.cycles,
        "probes_per_second": probes / wall if wall else 0.0,
        "peak_start_rate": n / window if window else float(n),
        "spread_window_seconds": window,
        "cpu_seconds": cpu, "cpu_us_per_probe": cpu / probes * 1e6,
        "cpu_cores": cpu / wall if wall else 0.0,
        "cycle_lag_p99_ms": percentile(lags, 0.99) * 1000,
        "cycle_lag_max_ms": max(lags) * 1000,
        "cycle_duration_max_s": max(durations),
        "cycles_missed": missed,
        "probes_up": up, "probes_seen": n * len(samples), "attributed": attributed,
        "scrape_p99_ms": percentile([s.scrape_seconds for s in samples], 0.99) * 1000,
        "rss_bytes": rss, "peak_rss_bytes": peak,
        "coverage": hits,
    }
    report.figures["ours"] = figures
    return figures


def measure_blackbox(args: Options, work: Path, nginx: Nginx,
                     report: Report) -> dict[str, Any]:
    n, interval = args.endpoints, args.interval
    urls = nginx.urls(n)
    timeout = default_timeout(interval)
    total = args.warmup + args.cycles
    with Blackbox(work, timeout=timeout) as blackbox:
        began = cpu_seconds(blackbox.pid)
        result = drive_blackbox(blackbox, urls, interval=interval, cycles=total,
                                  timeout=timeout)
        rss = rss_bytes(blackbox.pid)
    measured = range(args.warmup, total)
    cpu = result.cpu_at_cycle_end[-1] - result.cpu_at_cycle_end[args.warmup - 1]
    wall = result.cycle_ends[-1] - result.cycle_ends[args.warmup - 1]
    probes = args.cycles * n
    ok = sum(1 for p in result.probes if p.cycle in measured and p.success)
    figures = {
        "probes_per_second": probes / wall if wall else 0.0,
        "cpu_seconds": cpu, "cpu_us_per_probe": cpu / probes * 1e6,
        "cpu_cores": cpu / wall if wall else 0.0,
        "startup_cpu_seconds": result.cpu_at_cycle_end[0] - began,
        "successful": ok, "probes": probes, "rss_bytes": rss,
    }
    report.figures["blackbox"] = figures
    return figures


def summarize(args: Options, report: Report, ours: dict[str, Any],
              theirs: dict[str, Any] | None) -> None:
    rows = [
        ["probes/s (average over whole intervals)", fmt(ours["probes_per_second"])],
        ["probe starts/s within the spread window", fmt(ours["peak_start_rate"])],
        ["CPU µs per probe", fmt(ours["cpu_us_per_probe"])],
        ["CPU cores (average)", fmt(ours["cpu_cores"], 3)],
        ["cycle lag p99 / max (ms)",
         f"{ours['cycle_lag_p99_ms']:.2f} / {ours['cycle_lag_max_ms']:.2f}"],
        ["longest cycle (s)", fmt(ours["cycle_duration_max_s"], 2)],
        ["cycles missed", f"{ours['cycles_missed']:.0f}"],
        ["probes up (the target answers 200 at once)",
         f"{ours['probes_up']:,} of {ours['probes_seen']:,}"],
        ["/metrics scrape after each cycle, p99 (ms)", fmt(ours["scrape_p99_ms"])],
        ["RSS at end / peak", f"{mb(ours['rss_bytes'])} / {mb(ours['peak_rss_bytes'])}"],
    ]
    headers = ["availability-exporter", "figure"]
    if theirs is not None:
        headers = ["figure", "availability-exporter", "blackbox_exporter"]
        rows = [
            ["probes/s (average)", fmt(ours["probes_per_second"]),
             fmt(theirs["probes_per_second"])],
            ["CPU µs per probe", fmt(ours["cpu_us_per_probe"]),
             fmt(theirs["cpu_us_per_probe"])],
            ["CPU cores (average)", fmt(ours["cpu_cores"], 3), fmt(theirs["cpu_cores"], 3)],
            ["RSS at end", mb(ours["rss_bytes"]), mb(theirs["rss_bytes"])],
            ["successful probes (measured cycles)", "",
             f"{theirs['successful']:,} of {theirs['probes']:,}"],
        ] + [[r[0], r[1], ""] for r in rows if not r[0].startswith(("probes/s (av", "CPU", "RSS"))]
    report.table(f"{args.cycles} measured cycles of {args.endpoints:,} endpoints "
                 f"(after {args.warmup} warm-up); fresh connection per probe", headers, rows)
    completed = report.checks.get(
        "every endpoint probed exactly once in every cycle (nginx log)", False,
    ) and ours["cycles_missed"] == 0
    in_time = ours["cycle_duration_max_s"] < args.interval
    all_up = ours["probes_up"] == ours["probes_seen"]
    met = (completed and in_time and all_up and ours["cycle_lag_p99_ms"] <= LAG_GOAL * 1000
           and ours["cpu_cores"] <= CPU_CORES_GOAL)
    report.verdict(
        "GOAL 1 capacity", met,
        f"{ours['probes_per_second']:,.0f} probes/s, {ours['cpu_us_per_probe']:,.0f} µs CPU "
        f"per probe, {ours['cpu_cores']:.2f} cores <= {CPU_CORES_GOAL:g}; cycle lag p99 "
        f"{ours['cycle_lag_p99_ms']:.1f} ms <= {LAG_GOAL * 1000:g}; longest cycle "
        f"{ours['cycle_duration_max_s']:.2f} s < {args.interval:g} s; every endpoint every "
        f"cycle: {'yes' if completed else 'NO'}; probes up {ours['probes_up']:,} of "
        f"{ours['probes_seen']:,}",
    )
    if theirs is not None:
        ratio = ours["cpu_us_per_probe"] / theirs["cpu_us_per_probe"]
        report.figures["cpu_ratio"] = ratio
        report.verdict(
            "GOAL 2 CPU per probe vs blackbox_exporter", ratio <= 1.0,
            f"{ours['cpu_us_per_probe']:,.0f} µs vs {theirs['cpu_us_per_probe']:,.0f} µs, "
            f"ratio {ratio:.2f} <= 1",
        )


if __name__ == "__main__":
    sys.exit(main())
