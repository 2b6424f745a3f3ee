"""Prometheus exposition text from the counts, cheaply enough for 10,000 endpoints.

prometheus-client's ``generate_latest`` over a 10,000-endpoint registry takes seconds and would
stall the probe loop on every scrape.  Instead each per-endpoint family carries its own
renderer, which formats an endpoint's samples straight from its counts; :func:`endpoint_chunks`
yields the text in 32 KiB slices so that ``snapshot``, which compresses them into the copy every
scrape is served from, can hand the loop back to the probes between them.  Endpoints that leave
the config are simply not iterated any more, so their series vanish.

The exporter's own metrics (cycles, reloads, build info) come from :class:`ExporterCollector`,
which reads a ``status.StatusView``; it and prometheus-client's process and platform collectors
live on an explicit ``CollectorRegistry`` whose text is appended to every exposition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client import exposition as text_exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.registry import Collector

from availability_exporter import __version__
from availability_exporter.model import EXPORTER_REASON, PHASES, REASONS, STATES, State
from availability_exporter.stats import BUCKETS, EndpointStats, Stats
from availability_exporter.status import StatusView

# The classic 0.0.4 text format is what the body is; every Prometheus version accepts it.
TEXT_CONTENT_TYPE = text_exposition.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_CONTENT_TYPE = om_exposition.CONTENT_TYPE_LATEST

# Bytes of text per slice of an exposition: ~25 endpoints' histograms, ~0.5 ms of CPU.
BUILD_CHUNK = 32 * 1024

_LE = (*(repr(float(b)) for b in BUCKETS), "+Inf")

# An endpoint's samples of one family as text: (family name, endpoint, its label text) -> lines.
Renderer = Callable[[str, EndpointStats, str], str]


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family's name, type and HELP text: its two header lines."""

    name: str
    type: str
    help: str

    def header(self, *, openmetrics: bool) -> str:
        name = self.name
        if openmetrics and self.type == "counter":
            name = name.removesuffix("_total")  # OpenMetrics names the counter family without it
        return f"# HELP {name} {self.help}\n# TYPE {name} {self.type}\n"


@dataclass(frozen=True, slots=True)
class EndpointFamily(Family):
    """A family with one group of samples per endpoint, and the renderer that writes them."""

    render: Renderer

    def samples(self, stats: EndpointStats, labels: str) -> str:
        return self.render(self.name, stats, labels)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else f"{value}.0"


def label_text(stats: EndpointStats) -> str:
    endpoint = stats.endpoint
    return f'endpoint="{escape_label(endpoint.name)}",domain="{escape_label(endpoint.domain)}"'


# -- renderers: one endpoint's samples of one family -------------------------------------------

def _up(name: str, stats: EndpointStats, labels: str) -> str:
    last = stats.last
    return f"{name}{{{labels}}} {1 if last and last.state is State.UP else 0}.0\n"


def _state(name: str, stats: EndpointStats, labels: str) -> str:
    state = stats.last.state if stats.last is not None else None
    return "".join(
        f'{name}{{{labels},state="{s.value}"}} {1 if state is s else 0}.0\n' for s in STATES
    )


def _probes(name: str, stats: EndpointStats, labels: str) -> str:
    return (
        f'{name}{{{labels},result="up"}} {stats.up}.0\n'
        f'{name}{{{labels},result="degraded"}} {stats.degraded}.0\n'
        f'{name}{{{labels},result="down"}} {stats.down}.0\n'
    )


def _maintenance_probes(name: str, stats: EndpointStats, labels: str) -> str:
    return f"{name}{{{labels}}} {stats.maintenance}.0\n"


def _in_maintenance(name: str, stats: EndpointStats, labels: str) -> str:
    return f"{name}{{{labels}}} {1 if stats.in_maintenance else 0}.0\n"


def _failures(name: str, stats: EndpointStats, labels: str) -> str:
    return "".join(
        f'{name}{{{labels},reason="{reason}"}} {count}.0\n'
        for reason, count in zip(REASONS, stats.failures, strict=True)
    )


def _duration(name: str, stats: EndpointStats, labels: str) -> str:
    histogram: list[str] = []
    cumulative = 0
    bucket = f"{name}_bucket{{{labels},le="
    for le, count in zip(_LE, stats.bucket_counts, strict=True):
        cumulative += count
        histogram.append(f'{bucket}"{le}"}} {cumulative}.0\n')
    histogram.append(f"{name}_sum{{{labels}}} {_num(stats.duration_sum)}\n")
    histogram.append(f"{name}_count{{{labels}}} {cumulative}.0\n")
    return "".join(histogram)


def _phases(name: str, stats: EndpointStats, labels: str) -> str:
    last = stats.last
    phases = last.phases if last is not None else (0.0,) * len(PHASES)
    https = stats.endpoint.is_https
    return "".join(
        f'{name}{{{labels},phase="{phase}"}} {_num(value)}\n'
        for phase, value in zip(PHASES, phases, strict=True)
        if https or phase != "tls"
    )


def _status(name: str, stats: EndpointStats, labels: str) -> str:
    last = stats.last
    return f"{name}{{{labels}}} {last.status_code if last else 0}.0\n"


def _cert_expiry(name: str, stats: EndpointStats, labels: str) -> str:
    # Absent until a certificate was seen: a 0 ("expired in 1970") would fire expiry alerts.
    expiry = stats.cert_not_after
    if not (stats.endpoint.is_https and expiry):
        return ""
    return f"{name}{{{labels}}} {_num(expiry)}\n"


def _last_probe(name: str, stats: EndpointStats, labels: str) -> str:
    last = stats.last
    return f"{name}{{{labels}}} {_num(last.finished_at) if last else '0.0'}\n"


# In exposition order.  The exposition is family-major (each family's samples must be
# contiguous), so a scrape renders one family for every endpoint, then the next.
FAMILIES: tuple[EndpointFamily, ...] = (
    EndpointFamily(
        "availability_endpoint_up", "gauge",
        "1 if the last probe was up (2xx within the latency threshold), else 0.", _up),
    EndpointFamily(
        "availability_endpoint_state", "gauge",
        "1 on the endpoint's current state (up, degraded, down), 0 on the others.", _state),
    EndpointFamily(
        "availability_endpoint_maintenance", "gauge",
        "1 if the last probe ran inside one of the endpoint's maintenance windows, else 0.",
        _in_maintenance),
    EndpointFamily(
        "availability_probes_total", "counter",
        "Probes by result (up, degraded, down), outside maintenance windows.", _probes),
    EndpointFamily(
        "availability_maintenance_probes_total", "counter",
        "Probes that ran inside a maintenance window (counted here instead of in "
        "availability_probes_total).", _maintenance_probes),
    EndpointFamily(
        "availability_probe_failures_total", "counter",
        "Probes that were not up, by reason, outside maintenance windows.",
        _failures),
    EndpointFamily(
        "availability_probe_duration_seconds", "histogram",
        "Whole-probe latency in seconds, from the request's real start to the end of the body "
        "(probes outside maintenance windows).",
        _duration),
    EndpointFamily(
        "availability_probe_phase_duration_seconds", "gauge",
        "Seconds spent in each phase of the last probe (connect includes DNS).", _phases),
    EndpointFamily(
        "availability_http_status_code", "gauge",
        "HTTP status of the last probe's final response, 0 if none arrived.", _status),
    EndpointFamily(
        "availability_tls_cert_expiry_timestamp_seconds", "gauge",
        "When the leaf TLS certificate last presented expires (notAfter), as a Unix "
        "timestamp; exported even when verification failed.", _cert_expiry),
    EndpointFamily(
        "availability_endpoint_last_probe_timestamp_seconds", "gauge",
        "When the last probe finished, as a Unix timestamp.", _last_probe),
)
RATIO = Family("availability_ratio", "gauge",
               "Cumulative up probes / all probes per domain since start, 0-1; the console "
               "report prints 100 * up // total (decimals dropped).")


def endpoint_chunks(
    stats: Stats, *, openmetrics: bool, chunk_size: int = BUILD_CHUNK,
) -> Iterator[bytes]:
    """The per-endpoint families and ``availability_ratio``: everything but the registry.

    Rendered here, from the counts, rather than kept as text per endpoint: the text is ~3.3 KB
    per endpoint (33 MB at 10,000) and each endpoint changes once per cycle anyway.  Chunks of
    ``chunk_size`` (~0.4 ms of rendering for 32 KiB) let the caller yield to the probes in between.
    The endpoints are the ones configured when the first chunk is asked for: a reload while the
    rest is rendered does not mix two configs into one body.
    """
    endpoints = list(stats)
    # Filled while the first family renders, so that no one slice formats all 10,000 labels.
    labels: list[str] = []
    buffer: list[str] = []
    size = 0
    for family in FAMILIES:
        buffer.append(family.header(openmetrics=openmetrics))
        for index, item in enumerate(endpoints):
            if index == len(labels):
                labels.append(label_text(item))
            piece = family.samples(item, labels[index])
            buffer.append(piece)
            size += len(piece)
            if size >= chunk_size:
                yield "".join(buffer).encode("utf-8")
                buffer, size = [], 0
    buffer.append(RATIO.header(openmetrics=openmetrics))
    for domain, up, total in stats.domains():
        buffer.append(f'{RATIO.name}{{domain="{escape_label(domain)}"}} {_num(up / total)}\n')
    yield "".join(buffer).encode("utf-8")


def registry_text(registry: CollectorRegistry, *, openmetrics: bool) -> bytes:
    """The registry's exposition: the exporter's own and the process metrics (small, live)."""
    if openmetrics:
        text: bytes = om_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
        return text  # ends with "# EOF"
    return text_exposition.generate_latest(registry)


class ExporterCollector(Collector):
    """The exporter's own metrics (cycles, reloads, build), fresh families on every scrape."""

    def __init__(self, status: StatusView) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status
        cycle = status.cycle_stats()
        build = GaugeMetricFamily("availability_exporter_build_info",
                                  "Always 1; the version label says which build runs.",
                                  labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        yield GaugeMetricFamily("availability_exporter_endpoints",
                                "Endpoints probed by this process (its shard).",
                                value=len(status.stats))
        yield CounterMetricFamily("availability_exporter_cycles",
                                  "Check cycles completed.", value=cycle.cycles)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for le, count in zip(_LE, cycle.duration_buckets, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        yield HistogramMetricFamily(
            "availability_exporter_cycle_duration_seconds",
            "Seconds from a cycle's start to its last probe's end.",
            buckets=buckets, sum_value=cycle.duration_sum,
        )
        yield GaugeMetricFamily("availability_exporter_cycle_lag_seconds",
                                "How late the last cycle started after its tick.",
                                value=cycle.last_lag)
        yield CounterMetricFamily(
            "availability_exporter_cycles_missed",
            "Ticks skipped because the process could not start them on time.",
            value=cycle.missed,
        )
        errors = CounterMetricFamily(
            "availability_exporter_probe_errors",
            "Probes that failed on the exporter's own resources (file descriptors, socket "
            "buffers, memory, local ports), by reason; never counted against the endpoint.",
            labels=["reason"],
        )
        errors.add_metric([EXPORTER_REASON], status.stats.exporter_errors.get(EXPORTER_REASON, 0))
        yield errors
        reload = status.reload_status()
        yield GaugeMetricFamily("availability_exporter_config_last_reload_successful",
                                "1 if the last config load or reload succeeded, else 0.",
                                value=1 if reload.successful else 0)
        yield GaugeMetricFamily(
            "availability_exporter_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully, as a Unix timestamp.",
            value=reload.last_success,
        )


def exporter_registry(status: StatusView) -> CollectorRegistry:
    """An explicit registry: the exporter's collector plus process and platform metrics."""
    registry = CollectorRegistry()
    registry.register(ExporterCollector(status))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
