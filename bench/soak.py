"""Soak: run the exporter for a long time against bad servers and check that nothing grows.

    python bench/soak.py [--duration 3600] [--interval 15] [--endpoints 1000] [--json FILE]
                         [--timeout S] [--warmup N] [--workdir DIR] [--verbose]

Not part of the test suite (tests/test_soak_short.py runs a two-minute version).  The
endpoints are a mix of healthy, slow, failing and adversarial targets, all on 127.0.0.1:
this script's own target server (tests/targets.py), the misbehaving server of
tests/adversarial/ (drips, resets, garbage, huge headers and bodies, redirect loops, bad TLS
certificates, a listener that never answers), a refused port and an unresolvable name.

After every check cycle (every console report) it samples the exporter: RSS, open file
descriptors (/proc/PID/fd), and from /metrics the cycle lag, missed cycles, completed cycles
and every endpoint's probe count.  It prints the figures at the start, after the warm-up and
at the end, then the verdicts, and exits 1 if any fails:

- RSS growth <= 5 % from the end of the warm-up (when each endpoint's 50-result history is
  full) to the end;
- open fds flat: at the end within 2 of the warm-up figure;
- cycle lag p99 <= 50 ms;
- every cycle probed every endpoint (each endpoint's probe count equals the completed
  cycles, or one more while a cycle is in flight) and no cycle was missed.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib.options import Flag, Options, parse_options, workdir  # noqa: E402

from tests.adversarial import (  # noqa: E402
    UNRESOLVABLE_HOST,
    AdversarialServer,
    CertKind,
    make_certs,
    refused_port,
    serve_in_thread,
)
from tests.targets import (  # noqa: E402
    ExporterProcess,
    Targets,
    probe_counts,
    required_sample,
    write_config,
)

HISTORY_CYCLES = 50  # stats.HISTORY: results kept per endpoint for its status page
RSS_GROWTH_LIMIT = 0.05
FDS_SLACK = 2
LAG_P99_LIMIT = 0.050


@dataclass(frozen=True, slots=True)
class Sample:
    """The exporter right after one check cycle."""

    elapsed: float  # seconds since the first report
    cycles: int
    lag: float
    cycle_seconds_total: float  # all cycles' durations summed (the histogram's _sum)
    missed: int
    rss: int
    fds: int
    probes_min: int
    probes_max: int


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    passed: bool
    detail: str


def endpoint_mix(count: int, targets: Targets, adversarial: AdversarialServer,
                 refused: int) -> list[tuple[str, str]]:
    """``count`` endpoints: about half healthy, a sixth slow, the rest failing or hostile."""
    def own(path: str) -> Callable[[int], str]:
        return lambda i: targets.url(f"{path}{'&' if '?' in path else '?'}id={i}")

    def hostile(path: str, tls: CertKind | None = None) -> Callable[[int], str]:
        return lambda i: adversarial.url(f"{path}{'&' if '?' in path else '?'}id={i}", tls=tls)

    kinds: list[tuple[str, int, Callable[[int], str]]] = [
        ("healthy", 15, own("/ok")),
        # 100-900 ms: some up, some degraded (the threshold is 0.5 s).
        ("slow", 5, lambda i: targets.url(f"/slow?ms={100 + (i * 37) % 800}&id={i}")),
        ("error", 1, own("/error")),
        ("hang", 1, own("/hang")),
        ("refused", 1, lambda i: f"http://127.0.0.1:{refused}/?id={i}"),
        ("dns", 1, lambda i: f"http://{UNRESOLVABLE_HOST}/?id={i}"),
        ("drip", 1, hostile("/drip?ms=200")),
        ("reset", 1, hostile("/reset")),
        ("garbage", 1, hostile("/garbage")),
        ("bigheader", 1, hostile("/bigheader")),
        ("huge", 1, hostile("/huge?bytes=4194304")),
        ("redirect-loop", 1, hostile("/redirect-loop")),
        ("redirects", 1, hostile("/redirect?n=3")),
        ("half-status", 1, hostile("/half-status")),
        ("http10", 1, hostile("/http10")),
        ("status-503", 1, hostile("/status?code=503")),
        ("slow-body", 1, hostile("/slow?ms=300&part=body")),
        ("hang-accept", 1, lambda i: f"{adversarial.hang_accept_url()}?id={i}"),
        ("tls-hang", 1, lambda i: f"{adversarial.hang_accept_url(tls=True)}?id={i}"),
        ("tls-expired", 1, hostile("/ok", CertKind.EXPIRED)),
        ("tls-self-signed", 1, hostile("/ok", CertKind.SELF_SIGNED)),
        ("tls-wrong-host", 1, hostile("/ok", CertKind.WRONG_HOST)),
    ]
    cycle = [(name, make) for name, weight, make in kinds for _ in range(weight)]
    return [(f"{cycle[i % len(cycle)][0]}-{i}", cycle[i % len(cycle)][1](i))
            for i in range(count)]


def take_sample(process: ExporterProcess, started: float) -> Sample:
    fds = process.fds()
    rss = process.rss_bytes()
    metrics = process.scrape()
    counts = list(probe_counts(metrics).values())
    return Sample(
        elapsed=time.monotonic() - started,
        cycles=int(required_sample(metrics, "availability_exporter_cycles_total")),
        lag=required_sample(metrics, "availability_exporter_cycle_lag_seconds"),
        cycle_seconds_total=required_sample(
            metrics, "availability_exporter_cycle_duration_seconds_sum"),
        missed=int(required_sample(metrics, "availability_exporter_cycles_missed_total")),
        rss=rss,
        fds=fds,
        probes_min=min(counts) if counts else 0,
        probes_max=max(counts) if counts else 0,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def judge(samples: Sequence[Sample], warmup: int, endpoints: int) -> list[Verdict]:
    base = samples[min(warmup, len(samples) - 1)]
    end = samples[-1]
    growth = (end.rss - base.rss) / base.rss
    lag_p99 = percentile([s.lag for s in samples], 0.99)
    unprobed = [s for s in samples if s.probes_min < s.cycles or s.probes_max > s.cycles + 1]
    return [
        Verdict("rss", growth <= RSS_GROWTH_LIMIT,
                f"{base.rss / 2**20:.1f} MiB -> {end.rss / 2**20:.1f} MiB "
                f"({growth:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%})"),
        Verdict("fds", abs(end.fds - base.fds) <= FDS_SLACK,
                f"{base.fds} -> {end.fds} (max {max(s.fds for s in samples)} in between)"),
        Verdict("lag", lag_p99 <= LAG_P99_LIMIT,
                f"p99 {lag_p99 * 1000:.1f} ms, max {max(s.lag for s in samples) * 1000:.1f} ms "
                f"(limit {LAG_P99_LIMIT * 1000:.0f} ms)"),
        Verdict("every cycle probes every endpoint", not unprobed and end.missed == 0,
                f"{end.cycles} cycles x {endpoints} endpoints, {end.missed} missed, "
                f"{len(unprobed)} samples off"),
    ]


def run(args: Options) -> int:
    # The TLS listener that never answers makes asyncio warn on every probe of it (in this
    # process, the targets' side); that is the point of the target, not news.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    with workdir(args.workdir) as tmp, Targets() as targets, \
            serve_in_thread(certs=make_certs(tmp / "certs")) as adversarial:
        config = write_config(
            tmp / "endpoints.yaml",
            endpoint_mix(args.endpoints, targets, adversarial, refused_port()),
        )
        command = ["-f", str(args.interval), "--state.file", str(tmp / "state.json")]
        if args.timeout > 0:
            command += ["--probe.timeout", str(args.timeout)]
        print(f"soak: {args.endpoints} endpoints, interval {args.interval:g}s, "
              f"{args.duration:g}s", flush=True)
        samples: list[Sample] = []
        with ExporterProcess(config, *command) as process:
            process.wait_serving()
            started = time.monotonic()
            deadline = started + args.duration
            reports = 0
            while time.monotonic() < deadline:
                reports += 1
                process.wait_reports(reports, timeout=3 * args.interval + 30)
                samples.append(take_sample(process, started))
                if args.verbose:
                    print(json.dumps(asdict(samples[-1])), flush=True)
            process.send(signal.SIGTERM)
            status = process.wait(timeout=30)
            stderr = process.stderr
    warmup = min(args.warmup, len(samples) // 3)
    verdicts = judge(samples, warmup, args.endpoints)
    for label, index in (("start", 0), ("after warm-up", min(warmup, len(samples) - 1)),
                         ("end", len(samples) - 1)):
        s = samples[index]
        print(f"{label:>14}: cycle {s.cycles:5d}  RSS {s.rss / 2**20:7.1f} MiB  "
              f"fds {s.fds:4d}  lag {s.lag * 1000:6.1f} ms  "
              f"mean cycle {s.cycle_seconds_total / max(s.cycles, 1):6.3f} s")
    for verdict in verdicts:
        print(f"{'PASS' if verdict.passed else 'FAIL'} {verdict.name}: {verdict.detail}")
    traceback_at = stderr.find("Traceback")
    clean_exit = status == 0 and traceback_at < 0
    print(f"{'PASS' if clean_exit else 'FAIL'} exit: status {status}"
          + ("" if traceback_at < 0 else ", a traceback on stderr:"))
    if traceback_at >= 0:
        print(stderr[max(traceback_at - 500, 0):traceback_at + 4000])
    if args.json is not None:
        Path(args.json).write_text(json.dumps({
            "endpoints": args.endpoints,
            "interval": args.interval,
            "warmup": warmup,
            "exit_status": status,
            "traceback": "Traceback" in stderr,
            "samples": [asdict(s) for s in samples],
            "verdicts": [asdict(v) for v in verdicts],
        }, indent=1))
    return 0 if clean_exit and all(v.passed for v in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    return run(parse_options(
        __doc__, argv, duration=3600.0, interval=15.0, endpoints=1000,
        timeout=Flag(0.0, "--probe.timeout (s; 0, the default: the exporter's own); short "
                          "enough that window + timeout < interval, no probe is in flight "
                          "when a report prints, so each sample's fd count is exact"),
        warmup=Flag(HISTORY_CYCLES + 1, "cycles before the RSS and fd baseline (at most a "
                                         "third of the samples)"),
        verbose=Flag(False, "print every sample"),
    ))


if __name__ == "__main__":
    raise SystemExit(main())
