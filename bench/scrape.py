"""Goal 4: /metrics at 10,000 endpoints: latency while probing, size, and no effect on accuracy.

    .venv/bin/python bench/scrape.py [--endpoints 10000 --cycles 3 --interval 15]

One daemon process probes the delay server (every answer exactly 200 ms late, ``--delay-ms``).
After a warm-up cycle come ``--cycles`` quiet cycles (scraped only once, right after each
cycle's report line, to read each probe's duration) and then ``--cycles`` cycles during which
/metrics is also scraped once a second (gzip, as Prometheus asks).  The latency error of the
quiet and the scraped cycles is compared: scraping must not move figure 3.  At the end one plain
and one gzip scrape give the sizes, and the plain one is parsed with prometheus_client's text
parser.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import benchlib as b
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_P99_GOAL = 0.050
ERROR_P99_GOAL = 0.005
ERROR_MAX_GOAL = 0.020
# A shift of the error's p99 smaller than this is within what repeats of the same run show.
SHIFT_ALLOWED = 0.001
SCRAPE_TIMEOUT = 60.0  # as b.scrape: a scrape slower than this counts as failed


@dataclass(frozen=True, slots=True)
class Options:
    json: Path | None
    workdir: Path | None
    endpoints: int
    cycles: int
    interval: float
    ports: int
    delay_ms: float
    every: float
    save_scrape: Path | None


@dataclass(frozen=True, slots=True)
class Timed:
    started: float  # wall clock
    seconds: float
    wire_bytes: int
    ok: bool


class Scraper:
    """Scrapes /metrics every ``every`` seconds in a process of its own until stopped.

    Not a thread of this process: here the CycleWatcher inflates and parses ~33 MB after each
    cycle, and a thread would share that GIL and CPU and time its own waiting as the exporter's
    scrape latency.  The child is forked (no start-up, nothing re-imported), makes at most
    ``limit`` scrapes (each with a timeout), and hands its records back through a pipe.
    """

    def __init__(self, daemon: b.Daemon, every: float, limit: int) -> None:
        self.results: list[Timed] = []
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._receive, self._send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=scrape_loop, args=(daemon.port, every, limit, self._stop, self._send),
            name="scraper", daemon=True,
        )

    def start(self) -> None:
        self._process.start()
        self._send.close()  # the child has its own copy: EOF here if it dies without a word

    def stop(self) -> None:
        if self._process.pid is None:  # never started
            return
        self._stop.set()
        rows: list[tuple[float, float, int, bool]] = []
        # A scrape under way may take up to its timeout before the child looks at the event.
        if self._receive.poll(SCRAPE_TIMEOUT + 30):
            with contextlib.suppress(EOFError):
                rows = self._receive.recv()
        self._receive.close()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self.results = [Timed(*row) for row in rows]


def scrape_loop(port: int, every: float, limit: int, stop: Event, out: Connection) -> None:
    """The scraper process: timed gzip scrapes (not inflated: only their time counts)."""
    rows: list[tuple[float, float, int, bool]] = []
    try:
        next_at = time.monotonic()
        for _ in range(limit):
            if stop.wait(max(next_at - time.monotonic(), 0.0)):
                break
            next_at += every
            started = time.time()
            try:
                result = b.scrape(port, use_gzip=True, timeout=SCRAPE_TIMEOUT, decompress=False)
            except (OSError, http.client.HTTPException):
                rows.append((started, 0.0, 0, False))
                continue
            rows.append((started, result.seconds, result.wire_bytes, result.status == 200))
    finally:
        out.send(rows)
        out.close()


def main(argv: list[str] | None = None) -> int:
    parser = b.base_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=3,
                        help="cycles in each phase (quiet, then scraped)")
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--delay-ms", type=float, default=200.0,
                        help="the target answers after this long")
    parser.add_argument("--ports", type=int, default=4, help="delay server ports")
    parser.add_argument("--every", type=float, default=1.0, help="scrape period (s)")
    parser.add_argument("--save-scrape", type=Path, default=None,
                        help="write the final plain scrape here")
    args = Options(**vars(parser.parse_args(argv)))
    n = args.endpoints
    report = b.Report(f"/metrics: {n:,} endpoints, {args.interval:g} s interval, scraped every "
                      f"{args.every:g} s while probing")
    with b.workdir(args.workdir) as work, b.DelayServer(ports=args.ports) as target:
        config = work / "endpoints.yaml"
        b.write_endpoints(config, [target.url(i, args.delay_ms) for i in range(n)])
        with b.Daemon(config, interval=args.interval, directory=work) as daemon:
            watcher = b.CycleWatcher(daemon)
            timeout = 2 * args.interval + 60
            warmup = 1
            scraper = Scraper(daemon, args.every,
                              limit=int((args.cycles + 1) * args.interval / args.every) + 10)
            for k in range(warmup + 2 * args.cycles):
                if k == warmup + args.cycles:
                    scraper.start()
                if not daemon.wait_cycles(k + 1, timeout):
                    scraper.stop()
                    raise SystemExit(f"the exporter did not finish cycle {k + 1}:\n"
                                     f"{daemon.stderr_tail()}")
                watcher.observe(k)
            scraper.stop()
            plain = daemon.scrape(use_gzip=False)
            zipped = daemon.scrape(use_gzip=True)
            code = daemon.stop()
        hits = b.coverage(target.arrivals(), [target.path(i, args.delay_ms) for i in range(n)],
                          cycles=warmup + 2 * args.cycles, interval=args.interval)
    samples = watcher.samples
    quiet = samples[warmup:warmup + args.cycles]
    noisy = samples[warmup + args.cycles:]
    delay = args.delay_ms / 1000
    quiet_err = b.Spread.of([d - delay for s in quiet for d in s.durations])
    noisy_err = b.Spread.of([d - delay for s in noisy for d in s.durations])
    # A scrape overlaps probing when it ran during a cycle (cycle end minus its duration).
    windows = [(s.wall - s.cycle_seconds - 1.0, s.wall) for s in noisy]
    during = [t for t in scraper.results
              if any(lo <= t.started <= hi for lo, hi in windows)]
    all_scrapes = b.Spread.of([t.seconds for t in scraper.results if t.ok])
    probing = b.Spread.of([t.seconds for t in during if t.ok])

    text = plain.body.decode()
    families = list(text_string_to_metric_families(text))
    series = sum(len(f.samples) for f in families)
    first = b.endpoint_name(0)
    per_endpoint = sum(1 for line in text.splitlines()
                       if not line.startswith("#") and f'endpoint="{first}"' in line)
    if args.save_scrape is not None:
        args.save_scrape.write_bytes(plain.body)

    report.check("daemon exited cleanly", code == 0)
    report.check("every scrape answered 200", all(t.ok for t in scraper.results))
    report.check("every endpoint probed exactly once in every cycle (target's log)",
                 all(once == n for once in hits))
    report.check("the plain scrape parses with prometheus_client", series > 0)
    report.check("every endpoint has series", len(b.endpoint_values(
        plain.body, "availability_endpoint_up")) == n)

    report.table("scrapes (gzip, like Prometheus)", ["figure", "value"], [
        ["scrapes at 1/s", f"{all_scrapes.count}"],
        ["scrape p50 / p99 / max (ms), all", all_scrapes.ms()],
        ["scrape p50 / p99 / max (ms), while probes ran", probing.ms()],
        ["series per endpoint", f"{per_endpoint}"],
        ["series in all", f"{series:,}"],
        ["bytes per scrape, plain", f"{plain.wire_bytes:,}"],
        ["bytes per scrape, gzip", f"{zipped.wire_bytes:,}"],
        ["plain scrape time (ms)", f"{plain.seconds * 1000:.1f}"],
        ["probes up", f"{sum(s.states.get('up', 0) for s in samples):,} of "
                      f"{n * len(samples):,}"],
    ])
    report.table(f"latency error (measured - {args.delay_ms:g} ms), ms",
                 ["cycles", "probes", "p50", "p99", "max"], [
        ["quiet (one scrape after each cycle)", f"{quiet_err.count:,}",
         f"{quiet_err.p50 * 1000:.2f}", f"{quiet_err.p99 * 1000:.2f}",
         f"{quiet_err.max * 1000:.2f}"],
        [f"scraped every {args.every:g} s", f"{noisy_err.count:,}",
         f"{noisy_err.p50 * 1000:.2f}", f"{noisy_err.p99 * 1000:.2f}",
         f"{noisy_err.max * 1000:.2f}"],
    ])
    report.figures.update({
        "endpoints": n, "series_per_endpoint": per_endpoint, "series": series,
        "bytes_plain": plain.wire_bytes, "bytes_gzip": zipped.wire_bytes,
        "scrape_ms": all_scrapes.as_dict(1000), "scrape_while_probing_ms": probing.as_dict(1000),
        "error_quiet_ms": quiet_err.as_dict(1000), "error_scraped_ms": noisy_err.as_dict(1000),
    })
    report.verdict(
        "GOAL 4a scrape latency", all_scrapes.p99 <= SCRAPE_P99_GOAL,
        f"p99 {all_scrapes.p99 * 1000:.1f} ms <= {SCRAPE_P99_GOAL * 1000:g} over "
        f"{all_scrapes.count} scrapes ({probing.count} while probing: p99 "
        f"{probing.p99 * 1000:.1f} ms); {per_endpoint} series per endpoint, "
        f"{plain.wire_bytes / 1e6:.1f} MB plain, {zipped.wire_bytes / 1e6:.2f} MB gzip",
    )
    shift = noisy_err.p99 - quiet_err.p99
    report.verdict(
        "GOAL 4b scraping does not move figure 3",
        shift <= SHIFT_ALLOWED and noisy_err.p99 <= ERROR_P99_GOAL
        and noisy_err.max <= ERROR_MAX_GOAL,
        f"error p99 {quiet_err.p99 * 1000:.2f} -> {noisy_err.p99 * 1000:.2f} ms "
        f"(shift {shift * 1000:+.2f} <= {SHIFT_ALLOWED * 1000:g}), max "
        f"{quiet_err.max * 1000:.2f} -> {noisy_err.max * 1000:.2f} ms (<= 20)",
    )
    for text in watcher.notes:
        report.note(f"watcher: {text}")
    report.emit(args.json)
    return 0 if all(report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
