"""Turns stats into Prometheus exposition text, cheaply enough for 10,000 endpoints.

prometheus-client's ``generate_latest`` over a 10,000-endpoint registry takes seconds and would
stall the probe loop on every scrape.  Instead the per-endpoint families are rendered straight
from the counts with plain string formatting, in 32 KiB slices so the probe loop gets its turn
between them, and a gzip scrape (what Prometheus sends) is served from a copy compressed once
per cycle (:class:`GzipSnapshot`).  Endpoints that leave the config are simply not iterated any
more, so their series vanish.

Exporter-level metrics (cycles, reloads, build info) and prometheus-client's process and
platform collectors live on an explicit ``CollectorRegistry`` and are appended to the output.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from availability_exporter.model import PHASES, REASONS, STATES, State
from availability_exporter.stats import BUCKETS, EndpointStats, Stats

if TYPE_CHECKING:
    from availability_exporter.daemon import Exporter

# The classic 0.0.4 text format is what the body is; every Prometheus version accepts it.
TEXT_CONTENT_TYPE = text_exposition.CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_CONTENT_TYPE = om_exposition.CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str
    help: str


FAMILIES: tuple[Family, ...] = (
    Family("availability_endpoint_up", "gauge",
           "1 if the last probe was up (2xx within the latency threshold), else 0."),
    Family("availability_endpoint_state", "gauge",
           "1 on the endpoint's current state (up, degraded, down), 0 on the others."),
    Family("availability_probes_total", "counter", "Probes by result (up, degraded, down)."),
    Family("availability_probe_failures_total", "counter", "Probes that were not up, by reason."),
    Family("availability_probe_duration_seconds", "histogram",
           "Whole-probe latency in seconds, from the request's real start to the end of the "
           "body."),
    Family("availability_probe_phase_duration_seconds", "gauge",
           "Seconds spent in each phase of the last probe (connect includes DNS)."),
    Family("availability_http_status_code", "gauge",
           "HTTP status of the last probe's final response, 0 if none arrived."),
    Family("availability_tls_cert_expiry_timestamp_seconds", "gauge",
           "When the leaf TLS certificate last presented expires (notAfter), as a Unix "
           "timestamp; exported even when verification failed."),
    Family("availability_endpoint_last_probe_timestamp_seconds", "gauge",
           "When the last probe finished, as a Unix timestamp."),
)
RATIO = Family("availability_ratio", "gauge",
               "Cumulative up probes / all probes per domain since start, 0-1; the console "
               "report prints 100 * up // total (decimals dropped).")

# Bytes of text per slice of an exposition: ~25 endpoints' histograms, ~0.5 ms of CPU.
BUILD_CHUNK = 32 * 1024

_LE = (*(repr(float(b)) for b in BUCKETS), "+Inf")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else f"{value}.0"


def label_text(stats: EndpointStats) -> str:
    endpoint = stats.endpoint
    return f'endpoint="{escape_label(endpoint.name)}",domain="{escape_label(endpoint.domain)}"'


# One renderer per family of FAMILIES, in order: an endpoint's samples of that family as text.
# The exposition is family-major (each family's samples must be contiguous), so a scrape renders
# one family for every endpoint, then the next.

def _up(stats: EndpointStats, labels: str) -> str:
    last = stats.last
    return f"{FAMILIES[0].name}{{{labels}}} {1 if last and last.state is State.UP else 0}.0\n"


def _state(stats: EndpointStats, labels: str) -> str:
    state = stats.last.state if stats.last is not None else None
    name = FAMILIES[1].name
    return "".join(
        f'{name}{{{labels},state="{s.value}"}} {1 if state is s else 0}.0\n' for s in STATES
    )


def _probes(stats: EndpointStats, labels: str) -> str:
    name = FAMILIES[2].name
    return (
        f'{name}{{{labels},result="up"}} {stats.up}.0\n'
        f'{name}{{{labels},result="degraded"}} {stats.degraded}.0\n'
        f'{name}{{{labels},result="down"}} {stats.down}.0\n'
    )


def _failures(stats: EndpointStats, labels: str) -> str:
    name = FAMILIES[3].name
    return "".join(
        f'{name}{{{labels},reason="{reason}"}} {count}.0\n'
        for reason, count in zip(REASONS, stats.failures, strict=True)
    )


def _duration(stats: EndpointStats, labels: str) -> str:
    name = FAMILIES[4].name
    histogram: list[str] = []
    cumulative = 0
    bucket = f"{name}_bucket{{{labels},le="
    for le, count in zip(_LE, stats.bucket_counts, strict=True):
        cumulative += count
        histogram.append(f'{bucket}"{le}"}} {cumulative}.0\n')
    histogram.append(f"{name}_sum{{{labels}}} {_num(stats.duration_sum)}\n")
    histogram.append(f"{name}_count{{{labels}}} {cumulative}.0\n")
    return "".join(histogram)


def _phases(stats: EndpointStats, labels: str) -> str:
    name = FAMILIES[5].name
    last = stats.last
    phases = last.phases if last is not None else (0.0,) * len(PHASES)
    https = stats.endpoint.is_https
    return "".join(
        f'{name}{{{labels},phase="{phase}"}} {_num(value)}\n'
        for phase, value in zip(PHASES, phases, strict=True)
        if https or phase != "tls"
    )


def _status(stats: EndpointStats, labels: str) -> str:
    last = stats.last
    return f"{FAMILIES[6].name}{{{labels}}} {last.status_code if last else 0}.0\n"


def _cert_expiry(stats: EndpointStats, labels: str) -> str:
    # Absent until a certificate was seen: a 0 ("expired in 1970") would fire expiry alerts.
    expiry = stats.cert_not_after
    if not (stats.endpoint.is_https and expiry):
        return ""
    return f"{FAMILIES[7].name}{{{labels}}} {_num(expiry)}\n"


def _last_probe(stats: EndpointStats, labels: str) -> str:
    last = stats.last
    return f"{FAMILIES[8].name}{{{labels}}} {_num(last.finished_at) if last else '0.0'}\n"


RENDERERS: tuple[Callable[[EndpointStats, str], str], ...] = (
    _up, _state, _probes, _failures, _duration, _phases, _status, _cert_expiry, _last_probe,
)


def _header(family: Family, openmetrics: bool) -> str:
    name = family.name
    if openmetrics and family.type == "counter":
        name = name.removesuffix("_total")  # OpenMetrics names the counter family without it
    return f"# HELP {name} {family.help}\n# TYPE {name} {family.type}\n"


def exposition(
    stats: Stats, registry: CollectorRegistry, *, openmetrics: bool = False,
    chunk_size: int = BUILD_CHUNK,
) -> Iterator[bytes]:
    """The whole /metrics body as chunks of about ``chunk_size`` bytes.

    Chunks let the web layer send (and gzip) a large exposition piece by piece, yielding to the
    event loop between pieces, without ever holding a second full copy in memory.
    """
    yield from endpoint_chunks(list(stats), stats, openmetrics=openmetrics,
                               chunk_size=chunk_size)
    yield _registry_text(registry, openmetrics)


def endpoint_chunks(
    endpoints: list[EndpointStats], stats: Stats, *, openmetrics: bool,
    chunk_size: int = BUILD_CHUNK,
) -> Iterator[bytes]:
    """The per-endpoint families and ``availability_ratio``: everything but the registry.

    Rendered here, from the counts, rather than kept as text per endpoint: the text is ~3.3 KB
    per endpoint (33 MB at 10,000) and each endpoint changes once per cycle anyway.  Chunks of
    ``chunk_size`` (~0.4 ms of rendering for 32 KiB) let the caller yield to the probes in between.
    """
    labels = [label_text(item) for item in endpoints]
    buffer: list[str] = []
    size = 0
    for family, render in zip(FAMILIES, RENDERERS, strict=True):
        buffer.append(_header(family, openmetrics))
        for item, label in zip(endpoints, labels, strict=True):
            piece = render(item, label)
            buffer.append(piece)
            size += len(piece)
            if size >= chunk_size:
                yield "".join(buffer).encode("utf-8")
                buffer, size = [], 0
    buffer.append(_header(RATIO, openmetrics))
    for domain, up, total in stats.domains():
        buffer.append(f'{RATIO.name}{{domain="{escape_label(domain)}"}} {_num(up / total)}\n')
    yield "".join(buffer).encode("utf-8")


# Level 1: a 30 MB exposition compresses ~18x at a fraction of level 6's CPU.
GZIP_LEVEL = 1


@dataclass(frozen=True, slots=True)
class _Compressed:
    layout: int
    head: bytes  # the gzip stream of endpoint_chunks() so far, not yet flushed
    compressor: Any  # the zlib compress object that produced it, copied per scrape


class GzipSnapshot:
    """The gzip-compressed per-endpoint series, built once per cycle instead of per scrape.

    At 10,000 endpoints the per-endpoint part of /metrics is ~33 MB of text; compressing it per
    scrape takes longer than a scrape may.  So it is rendered and compressed once when a cycle
    completes, in slices of ~0.5 ms between which the probes run, and a scrape sends those
    bytes.  The small, live part (the registry's exporter and process metrics) is compressed per
    scrape onto a *copy* of the kept compressor, so every response is one ordinary gzip stream.

    A gzip scrape (what Prometheus sends) therefore shows the per-endpoint series as of the
    last completed cycle, the same moment the console report describes.  A config change
    (``invalidate(layout=True)``) makes scrapes wait for a fresh build, so added endpoints appear
    and removed ones vanish at once.
    """

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._layout = 0
        self._built: dict[bool, _Compressed] = {}
        self._building: dict[bool, tuple[int, asyncio.Task[_Compressed]]] = {}
        self._wanted: set[bool] = set()  # formats scraped so far, rebuilt at every cycle

    def invalidate(self, *, layout: bool = False) -> None:
        """A cycle completed (or, with ``layout``, the set of endpoints changed): rebuild."""
        if layout:
            self._layout += 1
        for openmetrics in self._wanted:
            self._start(openmetrics)

    @property
    def wanted(self) -> bool:
        """True once a gzip scrape came: from then on every cycle rebuilds."""
        return bool(self._wanted)

    async def refresh(self) -> None:
        """Rebuild every format scraped so far from the counts as they are now, and wait until
        the new copies are served (a build already under way may predate the counts)."""
        for openmetrics in tuple(self._wanted):
            await self._wait_built(self._start(openmetrics, restart=True), openmetrics)

    async def body(self, registry: CollectorRegistry, *, openmetrics: bool) -> list[bytes]:
        """The whole gzip-encoded /metrics body, as pieces to send in order."""
        self._wanted.add(openmetrics)
        built = self._built.get(openmetrics)
        while built is None or built.layout != self._layout:
            built = await self._wait_built(self._start(openmetrics), openmetrics)
        compressor = built.compressor.copy()
        tail = compressor.compress(_registry_text(registry, openmetrics)) + compressor.flush()
        return [built.head, tail]

    async def settled(self) -> None:
        """Wait for the builds under way (tests, and a clean shutdown)."""
        tasks = [task for _, task in self._building.values() if not task.done()]
        if tasks:
            await asyncio.wait(tasks)

    async def _wait_built(
        self, task: asyncio.Task[_Compressed], openmetrics: bool,
    ) -> _Compressed:
        """The result of ``task``, or of the build that replaced it when a reload cancelled it.

        Shielded: a client that hangs up must not cancel a build others wait for.
        """
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or current is None or current.cancelling():
                    raise  # this waiter itself was cancelled
            task = self._start(openmetrics)

    def _start(self, openmetrics: bool, *, restart: bool = False) -> asyncio.Task[_Compressed]:
        """A build of the current endpoints: the one under way, unless ``restart``."""
        running = self._building.get(openmetrics)
        if running is not None and not running[1].done():
            if running[0] == self._layout and not restart:
                return running[1]  # a build of the same endpoints is under way: share it
            running[1].cancel()  # its waiters move to the new build
        task = asyncio.get_running_loop().create_task(self._build(openmetrics, self._layout))
        self._building[openmetrics] = (self._layout, task)
        return task

    async def _build(self, openmetrics: bool, layout: int) -> _Compressed:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        out: list[bytes] = []
        chunks = endpoint_chunks(list(self._stats), self._stats, openmetrics=openmetrics,
                                 chunk_size=BUILD_CHUNK)
        for chunk in chunks:
            # On the loop, in slices of ~0.5 ms (rendering and deflate), with a turn for the
            # probes after each: a worker thread per slice would cost more in hand-offs than
            # the deflate it moves, and a probe answer never waits more than one slice.
            out.append(compressor.compress(chunk))
            await asyncio.sleep(0)
        built = _Compressed(layout, b"".join(out), compressor)
        if layout == self._layout:
            self._built[openmetrics] = built
        return built


def _registry_text(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    if openmetrics:
        text: bytes = om_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
        return text  # ends with "# EOF"
    return text_exposition.generate_latest(registry)


def accepts_gzip(accept_encoding: str) -> bool:
    """True when ``gzip`` is listed without ``q=0``."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def wants_openmetrics(accept: str) -> bool:
    return any(
        part.split(";")[0].strip() == "application/openmetrics-text"
        for part in accept.split(",")
    )


class ExporterCollector(Collector):
    """The exporter's own metrics (cycles, reloads, build), fresh families on every scrape."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        exporter = self.exporter
        cycle = exporter.scheduler.cycle_stats
        build = GaugeMetricFamily("availability_exporter_build_info",
                                  "Always 1; the version label says which build runs.",
                                  labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        yield GaugeMetricFamily("availability_exporter_endpoints",
                                "Endpoints probed by this process (its shard).",
                                value=len(exporter.stats))
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
        status = exporter.reload_status
        yield GaugeMetricFamily("availability_exporter_config_last_reload_successful",
                                "1 if the last config load or reload succeeded, else 0.",
                                value=1 if status.successful else 0)
        yield GaugeMetricFamily(
            "availability_exporter_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully, as a Unix timestamp.",
            value=status.last_success,
        )


def exporter_registry(exporter: Exporter) -> CollectorRegistry:
    """An explicit registry: the exporter's collector plus process and platform metrics."""
    registry = CollectorRegistry()
    registry.register(ExporterCollector(exporter))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
