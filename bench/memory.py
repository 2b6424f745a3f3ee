"""Goal 5: resident memory at 10,000 endpoints after 10 cycles, and flat from cycle 10 to 40.

    .venv/bin/python bench/memory.py [--endpoints 10000 --cycles 40 --interval 10 --timeout 2]

Forty 15 s cycles would take ten minutes, so by default the daemon runs with a shorter
interval (``-f 10 --probe.timeout 2``; the output says which): starts stay one millisecond
apart, as at 15 s, so the process keeps the same pace as in production.  Everything else is as
in production: fresh connection per probe against nginx, uvloop, and one gzip scrape of
/metrics after every cycle (Prometheus scraping at the probe interval).  RSS (VmRSS) is read
from /proc/PID/status right after each cycle's report line, before that cycle's scrape.
"""

from __future__ import annotations

import sys

from benchlib.exporter import CycleWatcher, Daemon
from benchlib.machine import NGINX_BIN, peak_rss_bytes, require_binary
from benchlib.options import Flag, parse_options, workdir
from benchlib.report import Report, mb
from benchlib.targets import Nginx, coverage, write_endpoints

RSS_GOAL = 150 * 10**6
GROWTH_GOAL = 0.05


def main(argv: list[str] | None = None) -> int:
    args = parse_options(
        __doc__, argv, endpoints=10_000, cycles=Flag(40, "cycles in all"),
        checkpoint=Flag(10, "the cycle whose RSS is the baseline (default 10)"),
        interval=10.0, timeout=2.0, ports=Flag(8, "nginx listen ports"),
        no_scrape=Flag(False, "no scrape after each cycle"),
    )
    if require_binary(NGINX_BIN, "REQUIRE_NGINX") is None:
        print("SKIP: nginx is not installed (/usr/sbin/nginx)")
        return 0
    n = args.endpoints
    shortened = (f" (shortened from 15 s so {args.cycles} cycles fit in minutes)"
                 if args.interval < 15 else "")
    report = Report(f"memory: {n:,} endpoints, {args.cycles} cycles at -f {args.interval:g} "
                      f"--probe.timeout {args.timeout:g}{shortened}")
    rss: list[int] = []
    lag_missed = 0.0
    with workdir(args.workdir) as work, Nginx(work, ports=args.ports) as nginx:
        config = work / "endpoints.yaml"
        write_endpoints(config, nginx.urls(n))
        extra = ["--probe.timeout", f"{args.timeout:g}"]
        with Daemon(config, interval=args.interval, directory=work, extra=extra) as daemon:
            watcher = CycleWatcher(daemon)
            for k in range(args.cycles):
                if not daemon.wait_cycles(k + 1, 4 * args.interval + 120):
                    raise SystemExit(f"the exporter did not finish cycle {k + 1}:\n"
                                     f"{daemon.stderr_tail()}")
                rss.append(daemon.rss())
                if not args.no_scrape:
                    watcher.observe(k)
            peak = peak_rss_bytes(daemon.pid)
            if watcher.samples:
                lag_missed = watcher.samples[-1].missed
            code = daemon.stop()
        hits = coverage(nginx.arrivals(), [nginx.path(i) for i in range(n)],
                          cycles=args.cycles, interval=args.interval)
    base = rss[min(args.checkpoint, len(rss)) - 1]
    end = rss[-1]
    growth = (end - base) / base
    report.check("daemon exited cleanly", code == 0)
    report.check("every endpoint probed exactly once in every cycle (nginx log)",
                 all(once == n for once in hits))
    marks = sorted({1, 2, 5, args.checkpoint, *range(args.checkpoint, args.cycles + 1, 10),
                    args.cycles} & set(range(1, args.cycles + 1)))
    scrapes = "no scrapes" if args.no_scrape else "one gzip scrape per cycle"
    report.table(f"RSS after cycle k ({scrapes})",
                 ["cycle", "RSS"], [[str(k), mb(rss[k - 1])] for k in marks])
    report.table("", ["figure", "value"], [
        [f"RSS after cycle {args.checkpoint}", mb(base)],
        [f"RSS after cycle {args.cycles}", mb(end)],
        [f"growth cycle {args.checkpoint} -> {args.cycles}", f"{growth * 100:+.2f} %"],
        ["peak RSS (VmHWM)", mb(peak)],
        ["cycles missed (interval shortened)", f"{lag_missed:.0f}"],
    ])
    report.figures.update({
        "endpoints": n, "interval": args.interval, "timeout": args.timeout,
        "rss": rss, "rss_checkpoint": base, "rss_end": end, "growth": growth, "peak": peak,
        "cycles_missed": lag_missed,
    })
    report.verdict(
        "GOAL 5 memory", base <= RSS_GOAL and growth <= GROWTH_GOAL,
        f"RSS {base / 1e6:.0f} MB after cycle {args.checkpoint} <= {RSS_GOAL / 1e6:.0f} MB; "
        f"{growth * 100:+.2f} % to cycle {args.cycles} <= {GROWTH_GOAL * 100:g} %; peak "
        f"{peak / 1e6:.0f} MB; at -f {args.interval:g} --probe.timeout {args.timeout:g}",
    )
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
