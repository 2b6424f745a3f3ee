"""Every benchmark in sequence (about 20 minutes), then one verdict line per goal.

    .venv/bin/python bench/run_all.py [--results DIR] [--only capacity,accuracy] [--markdown F]
                                      [--quick] [--workdir DIR] [--json FILE]

Each benchmark runs as its own process (so one's sockets and memory never colour the next),
prints its own table as it goes and writes its figures as JSON into ``--results``.  At the end
the verdict lines of all of them are repeated together; ``--markdown`` also writes the results
table that bench/README.md shows, ``--json`` all the figures in one file, and ``--workdir``
keeps every benchmark's configs and logs (in a folder per benchmark).  ``--quick`` runs every
benchmark small (a minute or two), to check that the suite works, not to measure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib.machine import BENCH, ROOT, machine_info
from benchlib.options import Flag, parse_options

# name, full-size arguments, quick arguments.  The full sizes are the goals; the cycle
# counts are what fits in ~20 minutes on the 2-core machine.
BENCHMARKS: tuple[tuple[str, list[str], list[str]], ...] = (
    ("capacity", ["--endpoints", "10000", "--cycles", "4", "--interval", "15"],
     ["--endpoints", "300", "--cycles", "2", "--interval", "2"]),
    ("accuracy", ["--endpoints", "10000", "--cycles", "3", "--interval", "15"],
     ["--endpoints", "300", "--cycles", "2", "--interval", "2", "--delay-ms", "50",
      "--up-ms", "100", "--degraded-ms", "900"]),
    ("scrape", ["--endpoints", "10000", "--cycles", "3", "--interval", "15"],
     ["--endpoints", "300", "--cycles", "2", "--interval", "2", "--delay-ms", "50"]),
    ("memory", ["--endpoints", "10000", "--cycles", "40", "--interval", "10", "--timeout", "2"],
     ["--endpoints", "300", "--cycles", "6", "--checkpoint", "3", "--interval", "1",
      "--timeout", "0.5"]),
    ("startup", ["--endpoints", "10000", "--repeat", "3"],
     ["--endpoints", "300", "--repeat", "1"]),
    ("scaling", ["--sizes", "100,1000,10000,30000", "--cycles", "2", "--interval", "15"],
     ["--sizes", "30,300,600", "--per-process", "400", "--cycles", "1", "--interval", "2",
      "--delay-ms", "50"]),
)
# Longest a single benchmark may take before it is stopped.
LIMIT_SECONDS = 30 * 60


def main(argv: list[str] | None = None) -> int:
    args = parse_options(
        __doc__, argv,
        results=Flag(None, "directory for each benchmark's JSON (default: a temp dir)"),
        only=Flag("", "comma-separated benchmark names"),
        markdown=Flag(None, "write the results table (Markdown) here"),
        quick=Flag(False, "small sizes: check, not measure"),
    )
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = chosen - {name for name, _, _ in BENCHMARKS}
    if unknown:
        print(f"run_all.py: unknown benchmark(s): {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 2
    results = args.results or Path(tempfile.mkdtemp(prefix="availability-bench-results-"))
    results.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, {info['cpu_model']}, Python {info['python']}, "
          f"load average {info['loadavg']:.2f}; results in {results}", flush=True)
    outcomes: list[tuple[str, int, float, dict[str, Any] | None]] = []
    for name, full, quick in BENCHMARKS:
        if chosen and name not in chosen:
            continue
        out = results / f"{name}.json"
        argv_one = [sys.executable, str(BENCH / f"{name}.py"), *(quick if args.quick else full),
                    "--json", str(out)]
        if args.workdir is not None:  # each keeps its configs and logs in a folder of its own
            argv_one += ["--workdir", str(args.workdir / name)]
        print(f"\n$ {' '.join(argv_one[1:])}", flush=True)
        began = time.monotonic()
        try:
            code = subprocess.run(argv_one, cwd=ROOT, timeout=LIMIT_SECONDS,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            code = -1
            print(f"{name}: stopped after {LIMIT_SECONDS} s", flush=True)
        data = json.loads(out.read_text()) if out.exists() else None
        outcomes.append((name, code, time.monotonic() - began, data))
    print("\n== all verdicts ==")
    for name, code, seconds, data in outcomes:
        verdicts = data["verdicts"] if data else []
        if not verdicts:
            print(f"{name}: no verdict (exit status {code}, {seconds:.0f} s)")
        for v in verdicts:
            print(f"{v['goal']}: {'MET' if v['met'] else 'NOT MET'} ({v['detail']})")
        failed = [k for k, ok in (data or {}).get("checks", {}).items() if not ok]
        if failed:
            print(f"{name}: correctness checks FAILED: {', '.join(failed)}")
    total = sum(seconds for _, _, seconds, _ in outcomes)
    print(f"\n{len(outcomes)} benchmarks in {total / 60:.1f} minutes")
    if args.markdown is not None:
        args.markdown.write_text(markdown(outcomes, info))
        print(f"results table written to {args.markdown}")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "benchmarks": {
            name: {"exit_status": code, "seconds": seconds, "result": data}
            for name, code, seconds, data in outcomes}}, indent=1))
    return 0 if all(code == 0 for _, code, _, _ in outcomes) else 1


def markdown(outcomes: list[tuple[str, int, float, dict[str, Any] | None]],
             info: dict[str, Any]) -> str:
    """The README's results table: goal, verdict, figure."""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {info['nproc']} CPUs ("
        f"{info['cpu_model']}), Python {info['python']}, load average at start "
        f"{info['loadavg']:.2f}.",
        "",
        "| goal | verdict | figures |",
        "|---|---|---|",
    ]
    for name, code, _, data in outcomes:
        if not data:
            lines.append(f"| {name} | no result (exit status {code}) | |")
            continue
        for v in data["verdicts"]:
            detail = v["detail"].replace("|", "/")
            lines.append(f"| {v['goal']} | {'MET' if v['met'] else 'NOT MET'} | {detail} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
