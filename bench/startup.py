"""Goal 6: a 10,000-endpoint config parsed and the first cycle started within 2 s of spawning.

    .venv/bin/python bench/startup.py [--endpoints 10000 --repeat 3]

Measured from process spawn (just before ``Popen``) to the first probe arriving at the target
(nginx's access log, ``$msec``, the same wall clock), ``--repeat`` times; the verdict takes the
slowest.  Also printed: the config parse alone (``load_config`` in this process, imports
excluded), ``--config.check`` as a whole process, the package import alone, and spawn to the
end of the first cycle.
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchlib.exporter import Daemon
from benchlib.machine import NGINX_BIN, ROOT, require_binary
from benchlib.options import Flag, parse_options, workdir
from benchlib.report import Report
from benchlib.targets import Nginx, write_endpoints

from availability_exporter.config import Defaults, load_config

GOAL = 2.0


def _timed(argv: list[str]) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=120, check=False)
    return time.perf_counter() - began, done.returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, endpoints=10_000, repeat=3, interval=15.0,
                         ports=Flag(8, "nginx listen ports"))
    if require_binary(NGINX_BIN, "REQUIRE_NGINX") is None:
        print("SKIP: nginx is not installed (/usr/sbin/nginx)")
        return 0
    n = args.endpoints
    report = Report(f"start-up: {n:,} endpoints")
    with workdir(args.workdir) as work, Nginx(work, ports=args.ports) as nginx:
        config = work / "endpoints.yaml"
        write_endpoints(config, nginx.urls(n))
        parse: list[float] = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            loaded = load_config(config, Defaults(interval=args.interval))
            parse.append(time.perf_counter() - began)
        report.check("the config has every endpoint", len(loaded.endpoints) == n)
        check_runs = [_timed([sys.executable, "-m", "availability_exporter", str(config),
                              "--config.check"]) for _ in range(args.repeat)]
        report.check("--config.check accepts the config",
                     all(code == 0 for _, code in check_runs))
        imports = [_timed([sys.executable, "-c", "import availability_exporter.cli"])[0]
                   for _ in range(args.repeat)]
        first_probe: list[float] = []
        first_cycle: list[float] = []
        for _ in range(args.repeat):
            with Daemon(config, interval=args.interval, directory=work) as daemon:
                if not daemon.wait_cycles(1, 2 * args.interval + 60):
                    raise SystemExit(f"no first cycle:\n{daemon.stderr_tail()}")
                spawned = daemon.spawned_at
                first_cycle.append(daemon.cycle_ends[0] - spawned)
                daemon.stop()
            arrivals = [t for t, _ in nginx.arrivals() if t >= spawned]
            report.check("the first cycle reached the target", bool(arrivals))
            first_probe.append(min(arrivals) - spawned if arrivals else float("inf"))
    report.table(f"{args.repeat} runs each; seconds", ["figure", "min", "max"], [
        ["config parse alone (load_config, in-process)", f"{min(parse):.3f}",
         f"{max(parse):.3f}"],
        ["import availability_exporter.cli (process)", f"{min(imports):.3f}",
         f"{max(imports):.3f}"],
        ["--config.check (whole process)", f"{min(t for t, _ in check_runs):.3f}",
         f"{max(t for t, _ in check_runs):.3f}"],
        ["spawn -> first probe at the target", f"{min(first_probe):.3f}",
         f"{max(first_probe):.3f}"],
        ["spawn -> first cycle's report", f"{min(first_cycle):.3f}", f"{max(first_cycle):.3f}"],
    ])
    report.figures.update({
        "endpoints": n, "parse_s": parse, "import_s": imports,
        "config_check_s": [t for t, _ in check_runs], "first_probe_s": first_probe,
        "first_cycle_s": first_cycle,
    })
    worst = max(first_probe)
    report.verdict(
        "GOAL 6 start-up", worst <= GOAL,
        f"spawn to first probe at the target {worst:.2f} s (slowest of {args.repeat}) <= "
        f"{GOAL:g} s; config parse alone {min(parse):.2f} s",
    )
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
