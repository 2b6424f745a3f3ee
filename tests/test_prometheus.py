"""A real Prometheus scrapes a real exporter process probing a local target server.

What an SRE relies on is checked through Prometheus's own HTTP API: the target is up, the
per-domain ratio is exactly up / total of the counters in the same scrape, the console report
printed for that very cycle shows floor(100 * ratio), and latency quantiles can be computed
from the histogram.

The console comparison is race-free by construction: every cycle adds exactly E probes to a
domain of E endpoints, so a scrape whose total for the domain is k * E was taken after cycle k
finished that domain and before cycle k + 1 counted any of its probes, and the k-th report on
stdout (printed when cycle k completed) must show exactly that scrape's figure.
"""

from __future__ import annotations

import functools
import math
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.needs import binary
from tests.prometheus import Prometheus, StartPrometheus
from tests.targets import ExporterProcess, Targets, parse_reports, wait_for

# Endpoints per domain: each cycle adds exactly this many probes to the domain's total.
PER_DOMAIN = {"127.0.0.1": 3, "localhost": 3}
# Not a whole number of scrape intervals (1 s): with equal periods every scrape would land at
# the same point of the cycle, perhaps always while the slow probe is in flight, and no
# scrape would ever sit at a cycle boundary.  At 1.25 s the scrapes walk through the cycle.
EXPORTER_INTERVAL = 1.25


def endpoints_yaml(server: Targets) -> str:
    local = "localhost"
    return (
        f"- name: fast ok\n  url: {server.url('/ok')}\n"
        f"- name: body ok\n  url: {server.url('/body')}\n  method: POST\n"
        "  headers:\n    content-type: application/json\n"
        "  body: '{\"foo\":\"bar\"}'\n"
        f"- name: server error\n  url: {server.url('/error')}\n"
        f"- name: localhost ok\n  url: {server.url('/ok', host=local)}\n"
        f"- name: localhost slow\n  url: {server.url('/slow', host=local)}\n"
        f"- name: localhost flap\n  url: {server.url('/flap', host=local)}\n"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory,
          start_prometheus: StartPrometheus) -> Iterator[tuple[ExporterProcess, Prometheus]]:
    binary("prometheus")  # skip before starting anything else
    tmp_path = tmp_path_factory.mktemp("prometheus")
    with Targets() as server:
        config = tmp_path / "endpoints.yaml"
        config.write_text(endpoints_yaml(server))
        with ExporterProcess(config, "-f", str(EXPORTER_INTERVAL)) as exporter:
            exporter.wait_ready()
            prometheus = start_prometheus([f"127.0.0.1:{exporter.port}"], job="availability")
            try:
                yield exporter, prometheus
            finally:
                prometheus.stop()
            exporter.stop_cleanly()


def report_figure(exporter: ExporterProcess, cycle: int, domain: str) -> int | None:
    """The domain's percentage in the report printed after cycle ``cycle`` (1-based)."""
    reports = parse_reports(exporter.stdout)
    return reports[cycle - 1][domain] if len(reports) >= cycle else None


def test_prometheus_scrapes_consistent_availability(
    stack: tuple[ExporterProcess, Prometheus],
) -> None:
    exporter, prometheus = stack
    wait_for("up == 1", lambda: True if prometheus.query(
        'up{job="availability"}').get("") == 1 else None, timeout=30, interval=0.25)

    verified: dict[str, int] = {}

    def check_one_scrape() -> bool | None:
        # Two seconds back, every scrape stamped at or before `at` has been fully committed
        # (scrape_timeout is 1 s), so all queries below see the same samples.
        at = time.time() - 2.0
        ratio = prometheus.query("availability_ratio", at)
        stamp = prometheus.query("timestamp(availability_ratio)", at)
        up = prometheus.query(
            'sum by (domain) (availability_probes_total{result="up"})', at)
        total = prometheus.query("sum by (domain) (availability_probes_total)", at)
        divided = prometheus.query(
            'sum by (domain) (availability_probes_total{result="up"})'
            " / sum by (domain) (availability_probes_total)", at)
        oldest = prometheus.query("min by (domain) (timestamp(availability_probes_total))", at)
        newest = prometheus.query("max by (domain) (timestamp(availability_probes_total))", at)
        if ratio.keys() != PER_DOMAIN.keys():
            return None  # not scraped yet at `at`
        for domain, per_cycle in PER_DOMAIN.items():
            assert oldest[domain] == newest[domain] == stamp[domain], "not one scrape"
            assert ratio[domain] == divided[domain]
            assert ratio[domain] == up[domain] / total[domain]
            count, ups = int(total[domain]), int(up[domain])
            if count % per_cycle:
                continue  # taken mid-cycle for this domain: no console report matches it
            cycle = count // per_cycle
            figure = wait_for(f"report #{cycle} on the exporter's stdout",
                              functools.partial(report_figure, exporter, cycle, domain),
                              timeout=10)
            assert figure == 100 * ups // count
            # floor(100 * ratio) in floats can land one under for a few fractions (29/50 gives
            # 57.99999999999999); the exact claim is the integer one above.
            assert math.floor(100 * ratio[domain] + 1e-9) == figure
            verified[domain] = cycle
        return True if verified.keys() == PER_DOMAIN.keys() else None

    wait_for("a scrape at a cycle boundary of every domain", check_one_scrape,
             timeout=30, interval=0.3)
    assert all(cycle >= 1 for cycle in verified.values())

    quantile = ("histogram_quantile(0.99, sum by (le) "
                "(rate(availability_probe_duration_seconds_bucket[1m])))")

    def latency_quantile() -> float | None:
        result = prometheus.query(quantile)
        value = result.get("")
        return value if value is not None and math.isfinite(value) else None

    p99 = wait_for("a finite p99 probe latency", latency_quantile, timeout=30, interval=0.5)
    # The slow endpoint takes ~0.6 s every cycle, so the 99th percentile is over 0.5 s.
    assert 0.5 < p99 <= 10.0


def test_live_scrape_passes_promtool(stack: tuple[ExporterProcess, Prometheus]) -> None:
    promtool = binary("promtool")
    exporter, _ = stack
    scrape = httpx.get(f"{exporter.base_url}/metrics",
                       headers={"Accept-Encoding": "identity"}, timeout=10)
    assert scrape.status_code == 200
    result = subprocess.run([promtool, "check", "metrics"], input=scrape.content,
                            capture_output=True, timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
