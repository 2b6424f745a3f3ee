"""The /metrics exposition: golden text, the DESIGN table, series life cycle, ratio arithmetic.

A fixed snapshot is built by hand (config parsed from YAML, results with fixed values) and
rendered with an empty explicit registry, so the output is byte-for-byte reproducible.
Run with UPDATE_GOLDEN=1 to rewrite tests/golden/ after an intended change, then review the
diff.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import re
import subprocess
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from availability_exporter import __version__
from availability_exporter.config import Defaults, parse_config
from availability_exporter.daemon import Exporter
from availability_exporter.model import REASONS, ProbeResult, State
from availability_exporter.settings import Settings
from availability_exporter.snapshot import RELOAD_WAIT, TEXT_SLICE, GzipSnapshot, _Copy, _inflated
from availability_exporter.stats import Stats
from availability_exporter.web import accepts_gzip
from tests.factories import endpoints, exposition, result
from tests.needs import binary

GOLDEN = Path(__file__).parent / "golden"

SECRET = "golden-secret-9f3c1e"
QUERY_SECRET = "private-query-77ab"
WEIRD_NAME = 'web "quoted" \\ name'
CONFIG = f"""\
- name: api health
  url: https://API.example.com:8443/health
  headers:
    Authorization: Bearer {SECRET}
- name: api search
  url: https://api.example.com/search?q={QUERY_SECRET}
  method: POST
  body: '{{"q":"x"}}'
- name: 'web "quoted" \\ name'
  url: http://www.example.com/error
- name: idle
  url: http://idle.example.org/
"""
NAMES = ("api health", "api search", WEIRD_NAME, "idle")
HTTPS_NAMES = ("api health", "api search")
DOMAINS = {"api health": "api.example.com", "api search": "api.example.com",
           WEIRD_NAME: "www.example.com", "idle": "idle.example.org"}

T0 = 1_700_000_000.0
CERT_NOT_AFTER = 1_767_225_600.0  # 2026-01-01T00:00:00Z
# Binary fractions throughout, so sums are exact and the golden text is stable.
RESULTS: tuple[tuple[str, ProbeResult], ...] = (
    ("api health", ProbeResult(
        state=State.UP, reason=None, status_code=200, duration=0.125,
        phases=(0.0025, 0.015625, 0.0005, 0.1, 0.00675), finished_at=T0 + 0.25,
        cert_not_after=CERT_NOT_AFTER, error=None)),
    ("api search", ProbeResult(
        state=State.DEGRADED, reason="slow", status_code=200, duration=0.75,
        phases=(0.003, 0.02, 0.001, 0.7, 0.026), finished_at=T0 + 1.5,
        cert_not_after=CERT_NOT_AFTER, error="took 750 ms, over the 500 ms threshold")),
    (WEIRD_NAME, ProbeResult(
        state=State.DOWN, reason="status", status_code=500, duration=0.0625,
        phases=(0.001, 0.0, 0.0005, 0.06, 0.001), finished_at=T0 + 2.0,
        cert_not_after=None, error="HTTP status 500")),
    # Exactly the threshold: up (DESIGN), and counted in the le="0.5" bucket, not the next.
    ("api health", ProbeResult(
        state=State.UP, reason=None, status_code=200, duration=0.5,
        phases=(0.0025, 0.015625, 0.0005, 0.45, 0.03), finished_at=T0 + 15.25,
        cert_not_after=CERT_NOT_AFTER, error=None)),
    (WEIRD_NAME, ProbeResult(
        state=State.DOWN, reason="timeout", status_code=0, duration=10.0,
        phases=(0.001, 0.0, 0.0005, 9.0, 0.0), finished_at=T0 + 25.0,
        cert_not_after=None, error="no complete response within the 10s timeout")),
)

PER_ENDPOINT: dict[str, tuple[str, str | None]] = {
    # family -> (type, the extra label)
    "availability_endpoint_up": ("gauge", None),
    "availability_endpoint_state": ("gauge", "state"),
    "availability_endpoint_maintenance": ("gauge", None),
    "availability_probes_total": ("counter", "result"),
    "availability_maintenance_probes_total": ("counter", None),
    "availability_probe_failures_total": ("counter", "reason"),
    "availability_probe_duration_seconds": ("histogram", "le"),
    "availability_probe_phase_duration_seconds": ("gauge", "phase"),
    "availability_http_status_code": ("gauge", None),
    "availability_tls_cert_expiry_timestamp_seconds": ("gauge", None),
    "availability_endpoint_last_probe_timestamp_seconds": ("gauge", None),
}
EXPORTER_FAMILIES: dict[str, str] = {
    "availability_ratio": "gauge",
    "availability_exporter_build_info": "gauge",
    "availability_exporter_endpoints": "gauge",
    "availability_exporter_cycles_total": "counter",
    "availability_exporter_cycle_duration_seconds": "histogram",
    "availability_exporter_cycle_lag_seconds": "gauge",
    "availability_exporter_cycles_missed_total": "counter",
    "availability_exporter_config_last_reload_successful": "gauge",
    "availability_exporter_config_last_reload_success_timestamp_seconds": "gauge",
}
DESIGN_FAMILIES = {**{k: t for k, (t, _) in PER_ENDPOINT.items()}, **EXPORTER_FAMILIES}
BUCKET_BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5",
                 "5.0", "10.0", "+Inf")


def build_stats(config: str = CONFIG, *, record: bool = True) -> Stats:
    stats = Stats()
    stats.apply(parse_config(config.encode(), "golden.yaml", Defaults()).endpoints)
    if record:
        for name, result in RESULTS:
            tracked = stats.get(name)
            assert tracked is not None
            assert stats.record(tracked, result)
    return stats


def render(stats: Stats, *, openmetrics: bool = False, chunk_size: int = 1 << 20) -> bytes:
    return b"".join(exposition(stats, CollectorRegistry(), openmetrics=openmetrics,
                               chunk_size=chunk_size))


def parse_openmetrics(text: str) -> list[Metric]:
    """Strict OpenMetrics parsing (prometheus-client's parser is not annotated)."""
    return list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def samples(text: str) -> list[Sample]:
    return [s for family in parse_text(text) for s in family.samples]


def only(found: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in found
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(found: Iterable[Sample], name: str, **labels: str) -> float:
    matched = only(found, name, **labels)
    assert len(matched) == 1, f"{name}{labels}: {matched}"
    return matched[0].value


# -- golden text ----------------------------------------------------------------------------

@pytest.mark.parametrize(("openmetrics", "filename"),
                         [(False, "exposition.txt"), (True, "exposition.om.txt")])
def test_exposition_matches_golden(openmetrics: bool, filename: str) -> None:
    rendered = render(build_stats(), openmetrics=openmetrics)
    golden = GOLDEN / filename
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(rendered)
    assert rendered == golden.read_bytes(), f"run with UPDATE_GOLDEN=1 to rewrite {golden}"


@pytest.mark.parametrize("openmetrics", [False, True])
def test_chunking_does_not_change_the_bytes(openmetrics: bool) -> None:
    stats = build_stats()
    assert render(stats, openmetrics=openmetrics, chunk_size=1) == render(
        stats, openmetrics=openmetrics)


def test_openmetrics_golden_is_valid_openmetrics() -> None:
    text = (GOLDEN / "exposition.om.txt").read_text()
    assert text.endswith("# EOF\n")
    families = {f.name: f.type for f in parse_openmetrics(text)}
    for name, kind in DESIGN_FAMILIES.items():
        if name in PER_ENDPOINT or name == "availability_ratio":
            assert families[name.removesuffix("_total")] == kind


def test_golden_passes_promtool_check_metrics() -> None:
    promtool = binary("promtool")
    result = subprocess.run([promtool, "check", "metrics"],
                            input=(GOLDEN / "exposition.txt").read_bytes(),
                            capture_output=True, timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


# -- the DESIGN table -------------------------------------------------------------------------

def _help_and_type(text: str, name: str, kind: str, *, openmetrics: bool) -> None:
    header = name.removesuffix("_total") if openmetrics and kind == "counter" else name
    assert re.search(rf"^# HELP {re.escape(header)} \S.*$", text, re.M), f"no HELP for {name}"
    assert re.search(rf"^# TYPE {re.escape(header)} {kind}$", text, re.M), f"no TYPE for {name}"


@pytest.mark.parametrize("openmetrics", [False, True])
def test_every_design_family_has_help_and_type(openmetrics: bool, tmp_path: Path) -> None:
    config = tmp_path / "endpoints.yaml"
    config.write_text(CONFIG)
    exporter = Exporter(Settings.model_validate(
        {"config": config, "web_listen_address": "127.0.0.1:0"}).options())
    exporter.apply(exporter.load())
    text = b"".join(exposition(exporter.stats, exporter.registry,
                               openmetrics=openmetrics)).decode()
    for name, kind in DESIGN_FAMILIES.items():
        _help_and_type(text, name, kind, openmetrics=openmetrics)
    if openmetrics:
        assert text.endswith("# EOF\n")
        assert {f.name for f in parse_openmetrics(text)} >= {
            n.removesuffix("_total") for n in DESIGN_FAMILIES}
        return
    found = samples(text)
    assert value(found, "availability_exporter_build_info", version=__version__) == 1
    assert value(found, "availability_exporter_endpoints") == len(NAMES)
    assert value(found, "availability_exporter_cycles_total") == 0
    assert value(found, "availability_exporter_config_last_reload_successful") == 1
    assert value(found, "availability_exporter_config_last_reload_success_timestamp_seconds") > 0
    assert [s.labels["le"] for s in only(
        found, "availability_exporter_cycle_duration_seconds_bucket")] == list(BUCKET_BOUNDS)


def test_golden_families_labels_and_buckets() -> None:
    text = render(build_stats()).decode()
    for name, (kind, _) in PER_ENDPOINT.items():
        _help_and_type(text, name, kind, openmetrics=False)
    _help_and_type(text, "availability_ratio", "gauge", openmetrics=False)
    found = samples(text)
    for sample in found:
        if sample.name == "availability_ratio":
            assert set(sample.labels) == {"domain"}
            continue
        family = re.sub(r"_(bucket|sum|count)$", "", sample.name)
        extra = PER_ENDPOINT[family][1]
        if sample.name.endswith(("_sum", "_count")):
            extra = None
        assert set(sample.labels) == {"endpoint", "domain"} | ({extra} if extra else set())
        assert sample.labels["domain"] == DOMAINS[sample.labels["endpoint"]]
    for name in NAMES:
        bounds = [s.labels["le"] for s in only(
            found, "availability_probe_duration_seconds_bucket", endpoint=name)]
        assert bounds == list(BUCKET_BOUNDS)
    # 0.125 and exactly 0.5: both at or under le="0.5"; cumulative counts.
    health = {s.labels["le"]: s.value for s in only(
        found, "availability_probe_duration_seconds_bucket", endpoint="api health")}
    assert (health["0.1"], health["0.25"], health["0.5"], health["+Inf"]) == (0, 1, 2, 2)
    assert value(found, "availability_probe_duration_seconds_sum", endpoint="api health") == 0.625
    assert value(found, "availability_probe_failures_total", endpoint=WEIRD_NAME,
                 reason="timeout") == 1
    # The timeout left no status: the gauge shows 0, the last probe's.
    assert value(found, "availability_http_status_code", endpoint=WEIRD_NAME) == 0
    assert value(found, "availability_endpoint_last_probe_timestamp_seconds",
                 endpoint=WEIRD_NAME) == T0 + 25.0
    for name in HTTPS_NAMES:
        assert value(found, "availability_tls_cert_expiry_timestamp_seconds",
                     endpoint=name) == CERT_NOT_AFTER
    assert not only(found, "availability_tls_cert_expiry_timestamp_seconds", endpoint=WEIRD_NAME)
    assert {s.labels["phase"] for s in only(
        found, "availability_probe_phase_duration_seconds", endpoint=WEIRD_NAME)} == {
        "connect", "request", "wait", "transfer"}
    assert value(found, "availability_probe_phase_duration_seconds", endpoint="api health",
                 phase="tls") == 0.015625


# -- series life cycle ------------------------------------------------------------------------

def test_every_endpoint_has_zero_series_before_its_first_probe() -> None:
    stats = build_stats(record=False)
    found = samples(render(stats).decode())
    for name in NAMES:
        mine = [s for s in found if s.labels.get("endpoint") == name]
        assert all(s.value == 0 for s in mine), name
        assert {s.labels["state"] for s in only(
            mine, "availability_endpoint_state")} == {"up", "degraded", "down"}
        assert {s.labels["result"] for s in only(
            mine, "availability_probes_total")} == {"up", "degraded", "down"}
        assert {s.labels["reason"] for s in only(
            mine, "availability_probe_failures_total")} == set(REASONS)
        assert len(only(mine, "availability_probe_duration_seconds_bucket")) == len(
            BUCKET_BOUNDS)
        phases = {s.labels["phase"] for s in only(
            mine, "availability_probe_phase_duration_seconds")}
        assert ("tls" in phases) == (name in HTTPS_NAMES)
        for family in ("availability_endpoint_up", "availability_http_status_code",
                       "availability_endpoint_last_probe_timestamp_seconds",
                       "availability_probe_duration_seconds_count"):
            assert len(only(mine, family)) == 1, (name, family)
        # Deliberately absent until a certificate is seen: 0 would read "expired in 1970"
        # and fire every expiry alert.
        assert not only(mine, "availability_tls_cert_expiry_timestamp_seconds")
    assert not only(found, "availability_ratio")


def test_ratio_absent_for_a_domain_without_probes() -> None:
    found = samples(render(build_stats()).decode())
    assert {s.labels["domain"] for s in only(found, "availability_ratio")} == {
        "api.example.com", "www.example.com"}
    assert only(found, "availability_endpoint_up", endpoint="idle")


def test_removed_endpoint_series_vanish_and_late_results_are_dropped() -> None:
    stats = build_stats()
    removed = stats.get("api search")
    assert removed is not None
    kept_config = parse_config(CONFIG.encode(), "golden.yaml", Defaults()).endpoints
    stats.apply(e for e in kept_config if e.name != "api search")
    text = render(stats).decode()
    assert "api search" not in text
    # A probe that was in flight during the reload must not bring the series back.
    assert not stats.record(removed, RESULTS[1][1])
    text = render(stats).decode()
    assert "api search" not in text
    found = samples(text)
    assert {s.labels["endpoint"] for s in found if "endpoint" in s.labels} == (
        set(NAMES) - {"api search"})
    # The domain now counts only its remaining endpoint: 2 up of 2.
    assert value(found, "availability_ratio", domain="api.example.com") == 1.0
    assert value(found, "availability_probes_total", endpoint="api health", result="up") == 2


# -- the ratio and the console ----------------------------------------------------------------

def test_ratio_is_up_over_total_and_matches_the_console() -> None:
    stats = build_stats()
    found = samples(render(stats).decode())
    console = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"^(\S+) has (\d+)% availability percentage$", stats.report(), re.M)}
    ratios = {s.labels["domain"]: s.value for s in only(found, "availability_ratio")}
    assert ratios.keys() == console.keys() == {"api.example.com", "www.example.com"}
    for domain, ratio in ratios.items():
        counters = [s for s in only(found, "availability_probes_total", domain=domain)]
        up = sum(s.value for s in counters if s.labels["result"] == "up")
        total = sum(s.value for s in counters)
        assert ratio == up / total
        assert math.floor(100 * ratio) == console[domain]
    assert ratios == {"api.example.com": 2 / 3, "www.example.com": 0.0}
    assert console == {"api.example.com": 66, "www.example.com": 0}


def test_no_label_value_carries_a_url_header_or_error_text() -> None:
    for openmetrics in (False, True):
        text = render(build_stats(), openmetrics=openmetrics).decode()
        series = "".join(line for line in text.splitlines(keepends=True)
                         if not line.startswith("#"))
        errors = [r.error for _, r in RESULTS if r.error]
        for forbidden in (SECRET, QUERY_SECRET, "/health", "/search", "8443", *errors):
            assert forbidden not in series, forbidden
    found = samples(render(build_stats()).decode())
    urls = {e.url for e in parse_config(CONFIG.encode(), "g.yaml", Defaults()).endpoints}
    for sample in found:
        for label_value in sample.labels.values():
            assert "://" not in label_value
            assert label_value not in urls
            assert SECRET not in label_value
    assert value(found, "availability_endpoint_up", endpoint=WEIRD_NAME,
                 domain="www.example.com") == 0


@pytest.mark.parametrize(("header", "expected"), [
    ("gzip", True), ("gzip, deflate, br", True), ("deflate, gzip;q=0.5", True),
    ("gzip;q=0", False), ("identity", False), ("", False), ("*", True), ("gzip;q=bad", False),
])
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


# -- the gzip snapshot: per-endpoint series compressed once per cycle --------------------------

def _gunzip(pieces: list[bytes]) -> str:
    return gzip.decompress(b"".join(pieces)).decode()


def _live_registry(count: list[int]) -> CollectorRegistry:
    """A registry whose one gauge changes every time it is collected."""
    registry = CollectorRegistry()

    class Live(Collector):
        def collect(self) -> Iterator[Metric]:
            count[0] += 1
            yield GaugeMetricFamily("live_scrapes", "Scrapes so far.", value=count[0])

    registry.register(Live())
    return registry


@pytest.mark.parametrize("openmetrics", [False, True])
def test_gzip_snapshot_is_the_exposition_of_its_moment(openmetrics: bool) -> None:
    stats = build_stats()
    count = [0]
    registry = _live_registry(count)

    async def go() -> tuple[str, str, str, bytes]:
        snapshot = GzipSnapshot(stats)
        first = _gunzip(await snapshot.body(registry, openmetrics=openmetrics))
        expected = b"".join(exposition(stats, CollectorRegistry(), openmetrics=openmetrics))
        # A probe lands mid-cycle: gzip scrapes keep showing the completed cycle's figures,
        # while the registry part (exporter and process metrics) is rendered per scrape.
        tracked = stats.get("idle")
        assert tracked is not None
        stats.record(tracked, RESULTS[0][1])
        stale = _gunzip(await snapshot.body(registry, openmetrics=openmetrics))
        snapshot.cycle_completed()  # formats scraped before are rebuilt
        await snapshot.settled()
        fresh = _gunzip(await snapshot.body(registry, openmetrics=openmetrics))
        return first, stale, fresh, expected

    first, stale, fresh, expected = asyncio.run(go())
    tail = _tail(first, "live_scrapes 1.0\n", openmetrics)
    assert first.encode() == expected.removesuffix(b"# EOF\n") + tail
    idle_up = 'availability_endpoint_up{endpoint="idle",domain="idle.example.org"}'
    assert f"{idle_up} 0" in first
    assert f"{idle_up} 0" in stale and "live_scrapes 2.0" in stale
    assert f"{idle_up} 1" in fresh and "live_scrapes 3.0" in fresh
    parse = parse_openmetrics if openmetrics else (lambda text: list(parse_text(text)))
    assert parse(fresh)  # each body is one valid gzip stream of valid exposition


def _tail(first: str, live_line: str, openmetrics: bool) -> bytes:
    """The expected registry tail: HELP/TYPE and the one live sample, in the body's format."""
    kind = "# HELP live_scrapes Scrapes so far.\n# TYPE live_scrapes gauge\n"
    tail = kind + live_line + ("# EOF\n" if openmetrics else "")
    assert first.endswith(tail)
    return tail.encode()


def test_gzip_snapshot_follows_a_config_change_at_once() -> None:
    stats = build_stats()

    async def go() -> str:
        snapshot = GzipSnapshot(stats)
        await snapshot.body(CollectorRegistry(), openmetrics=False)
        kept = parse_config(CONFIG.encode(), "golden.yaml", Defaults()).endpoints
        stats.apply(e for e in kept if e.name != "api search")
        snapshot.config_applied()
        # A scrape right after a reload already reflects it: a build this small is done
        # within the snapshot's RELOAD_WAIT.
        return _gunzip(await snapshot.body(CollectorRegistry(), openmetrics=False))

    text = asyncio.run(go())
    assert "api search" not in text and 'endpoint="idle"' in text


def test_gzip_snapshot_builds_once_for_concurrent_scrapes_and_survives_a_hang_up() -> None:
    stats = build_stats()
    builds = 0

    async def go() -> list[str]:
        nonlocal builds
        snapshot = GzipSnapshot(stats)
        original = snapshot._build

        async def counted(openmetrics: bool, generation: int) -> Any:
            nonlocal builds
            builds += 1
            return await original(openmetrics, generation)

        snapshot._build = counted  # type: ignore[method-assign]
        registry = CollectorRegistry()
        hung_up = asyncio.ensure_future(snapshot.body(registry, openmetrics=False))
        others = [asyncio.ensure_future(snapshot.body(registry, openmetrics=False))
                  for _ in range(3)]
        await asyncio.sleep(0)
        hung_up.cancel()  # the first client goes away mid-build
        return [_gunzip(p) for p in await asyncio.gather(*others)]

    bodies = asyncio.run(go())
    assert builds == 1
    assert len(set(bodies)) == 1 and "availability_probes_total" in bodies[0]


def _gated(snapshot: GzipSnapshot, gate: asyncio.Event) -> list[int]:
    """Make every build of ``snapshot`` but the first wait for ``gate``; returns the builds."""
    original = snapshot._build
    builds: list[int] = []

    async def gated(openmetrics: bool, generation: int) -> Any:
        builds.append(generation)
        if len(builds) > 1:
            await gate.wait()
        return await original(openmetrics, generation)

    snapshot._build = gated  # type: ignore[method-assign]
    return builds


@pytest.mark.parametrize("openmetrics", [False, True])
def test_plain_scrape_is_the_gzip_copy_inflated_in_bounded_chunks(openmetrics: bool) -> None:
    """A plain scrape shows exactly what a gzip scrape of the same moment shows (the copy of
    the last completed cycle, not a probe that landed since), sent in many bounded chunks."""
    stats = Stats()
    stats.apply(endpoints(*(f"https://host{i}.example.org/health" for i in range(400))))
    for index, tracked in enumerate(stats):
        stats.record(tracked, result(State.UP, duration=0.001 * index))

    async def go() -> tuple[list[bytes], str, list[bytes], str]:
        snapshot = GzipSnapshot(stats)
        registry = CollectorRegistry()
        plain = list(await snapshot.plain(registry, openmetrics=openmetrics))
        zipped = _gunzip(await snapshot.body(registry, openmetrics=openmetrics))
        tracked = stats.get("e7")
        assert tracked is not None
        stats.record(tracked, result(State.DOWN))  # mid-cycle: in neither scrape until the next
        during = list(await snapshot.plain(registry, openmetrics=openmetrics))
        assert b"".join(during) == b"".join(plain)
        snapshot.cycle_completed()
        await snapshot.settled()
        after = list(await snapshot.plain(registry, openmetrics=openmetrics))
        return plain, zipped, after, _gunzip(await snapshot.body(registry,
                                                                  openmetrics=openmetrics))

    plain, zipped, after, zipped_after = asyncio.run(go())
    expected = b"".join(exposition(stats, CollectorRegistry(), openmetrics=openmetrics))
    assert b"".join(after) == expected == zipped_after.encode()
    assert b"".join(plain).decode() == zipped != zipped_after
    e7_up = 'availability_endpoint_up{endpoint="e7",domain="host7.example.org"}'
    assert f"{e7_up} 1" in zipped and f"{e7_up} 0" in zipped_after
    assert len(plain) > 10 and max(map(len, plain)) <= TEXT_SLICE


def test_plain_scrape_chunks_stay_bounded_however_well_the_copy_compressed() -> None:
    text = b"a" * (8 << 20)  # ~1,000x: one 4 KiB slice of input is megabytes of output
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    head = compressor.compress(text)
    chunks = list(_inflated(_Copy(0, head, compressor), b"live\n"))
    assert b"".join(chunks) == text + b"live\n"
    assert max(map(len, chunks)) <= TEXT_SLICE


def test_during_a_build_gzip_gets_the_last_copy_at_once_and_plain_waits_for_the_new() -> None:
    """A gzip scrape during a build is served the last complete copy at once; a plain one
    waits for the build under way, so a plain scrape after a report line shows that cycle."""
    stats = build_stats()

    async def go() -> tuple[str, str, bool, str, str]:
        snapshot = GzipSnapshot(stats)
        gate = asyncio.Event()
        _gated(snapshot, gate)
        registry = CollectorRegistry()
        first = _gunzip(await snapshot.body(registry, openmetrics=False))
        tracked = stats.get("idle")
        assert tracked is not None
        stats.record(tracked, RESULTS[0][1])
        snapshot.cycle_completed()  # the next copies' builds start, and hang
        plain = asyncio.ensure_future(snapshot.plain(registry, openmetrics=False))
        await asyncio.sleep(0.01)
        during = _gunzip(await asyncio.wait_for(snapshot.body(registry, openmetrics=False),
                                                0.005))
        waited = not plain.done()
        gate.set()
        plain_text = b"".join(await plain).decode()
        await snapshot.settled()
        after = _gunzip(await snapshot.body(registry, openmetrics=False))
        return first, during, waited, plain_text, after

    first, during, waited, plain, after = asyncio.run(go())
    idle_up = 'availability_endpoint_up{endpoint="idle",domain="idle.example.org"}'
    assert f"{idle_up} 0" in first and during == first
    assert waited and f"{idle_up} 1" in plain
    assert f"{idle_up} 1" in after


def test_gzip_snapshot_coalesces_cycles_that_complete_during_a_build() -> None:
    stats = build_stats()

    async def go() -> list[int]:
        snapshot = GzipSnapshot(stats)
        gate = asyncio.Event()
        builds = _gated(snapshot, gate)
        await snapshot.body(CollectorRegistry(), openmetrics=False)
        for _ in range(5):  # five cycles end while one build hangs: one more build, not five
            snapshot.cycle_completed()
            await asyncio.sleep(0)
        gate.set()
        await snapshot.settled()
        return builds

    assert asyncio.run(go()) == [0, 0, 0]


def test_gzip_scrape_after_a_reload_waits_briefly_then_gets_the_previous_copy() -> None:
    """A slow build of the new endpoints holds a scrape for RELOAD_WAIT at most."""
    stats = build_stats()

    async def go() -> tuple[str, float, str]:
        snapshot = GzipSnapshot(stats)
        gate = asyncio.Event()
        _gated(snapshot, gate)
        registry = CollectorRegistry()
        await snapshot.body(registry, openmetrics=False)
        kept = parse_config(CONFIG.encode(), "golden.yaml", Defaults()).endpoints
        stats.apply(e for e in kept if e.name != "api search")
        snapshot.config_applied()
        loop = asyncio.get_running_loop()
        started = loop.time()
        during = _gunzip(await snapshot.body(registry, openmetrics=False))
        waited = loop.time() - started
        gate.set()
        await snapshot.settled()
        return during, waited, _gunzip(await snapshot.body(registry, openmetrics=False))

    during, waited, after = asyncio.run(go())
    assert "api search" in during  # the previous copy, served after a bounded wait
    assert RELOAD_WAIT <= waited < RELOAD_WAIT + 0.5
    assert "api search" not in after and 'endpoint="idle"' in after
