"""``/api/v1/status``: the status as JSON for scripts, stable from version 1 on.

The answer's shape is the JSON Schema in ``schemas/status-v1.json`` (package data); its
``version`` field is 1, and a change that could break a reader (a field removed, renamed or
given another type or meaning) would come as ``/api/v2/status`` with ``version`` 2, while
fields may be added to v1.  README.md ("JSON API") documents it.

Filters are those of the status page (``overview.parse_filters``): ``?state=`` (up, degraded,
down, pending) narrows the endpoints, ``?domain=`` the endpoints and the domains.  A value it
does not accept is a 400 answer with ``{"version": 1, "error": "..."}``.

Nothing secret is in the answer: the URL is the config's text without credentials and before
``${VAR}`` expansion, header values never appear, and error texts are the probe's, which are
redacted of the endpoint's secrets where they are made.  ``<``, ``>`` and ``&`` are written as
``\\u003c`` and the like, so even a client that sniffs the body as HTML finds no markup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

from availability_exporter.explain import explain
from availability_exporter.overview import (
    configured_domains,
    domain_figures,
    most_urgent_first,
    parse_filters,
    state_of,
)
from availability_exporter.stats import EndpointStats
from availability_exporter.status import StatusView

VERSION = 1
BATCH = 250  # endpoints encoded between two turns of the event loop
CONTENT_TYPE = b"application/json; charset=utf-8"


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-1 answer."""
    text = resources.files("availability_exporter").joinpath(
        "schemas/status-v1.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _endpoint(s: EndpointStats) -> dict[str, Any]:
    endpoint, last = s.endpoint, s.last
    words = explain(last) if last is not None else None
    return {
        "name": endpoint.name,
        "domain": endpoint.domain,
        "url": endpoint.display_url,
        "method": endpoint.method,
        "state": state_of(s),
        "in_maintenance": s.in_maintenance,
        "reason": last.reason if last is not None else None,
        "since": s.since,
        "last_probe": last.finished_at if last is not None else None,
        "last_latency_seconds": last.duration if last is not None else None,
        "last_status": last.status_code or None if last is not None else None,
        "error": None if words is None else {"summary": words.summary, "detail": words.detail},
        "latency_threshold_seconds": endpoint.latency_threshold,
        "probes": {"up": s.up, "degraded": s.degraded, "down": s.down},
        "availability": s.up / s.total if s.total else None,
    }


def status_document(status: StatusView, query: Mapping[str, Sequence[str]],
                    now: float | None = None) -> dict[str, Any]:
    """The answer as a dict; raises ``overview.FilterError`` for a query it does not accept."""
    document, rows = _document(status, query, now)
    document["endpoints"] = [_endpoint(s) for s in rows]
    return document


def status_pieces(status: StatusView, query: Mapping[str, Sequence[str]],
                  now: float | None = None) -> Iterator[bytes]:
    """The answer as JSON in pieces of ``BATCH`` endpoints, so the web server can hand the
    loop back to the probes between them (10,000 endpoints are ~3.5 MB of JSON).  Raises
    ``overview.FilterError`` at once, before any piece, for a query it does not accept."""
    document, rows = _document(status, query, now)
    document["endpoints"] = []
    head = encode(document)
    # "endpoints" is the last key: the document ends with `[]}` and a newline.
    assert head.endswith(b"[]}\n")
    return _pieces(head[:-3], rows)


def _pieces(head: bytes, rows: list[EndpointStats]) -> Iterator[bytes]:
    yield head
    for start in range(0, len(rows), BATCH):
        batch = b",".join(encode(_endpoint(s))[:-1] for s in rows[start:start + BATCH])
        yield (b"," if start else b"") + batch
    yield b"]}\n"


def _document(status: StatusView, query: Mapping[str, Sequence[str]],
              now: float | None) -> tuple[dict[str, Any], list[EndpointStats]]:
    filters = parse_filters(query, configured_domains(status))
    now = time.time() if now is None else now
    cycle = status.cycle_stats()
    reload = status.reload_status()
    domains = [d for d in domain_figures(status, now)
               if filters.domain is None or d.domain == filters.domain]
    return {
        "version": VERSION,
        "generated_at": now,
        "filters": {"state": filters.state, "domain": filters.domain},
        "cycle": {
            "number": cycle.cycles,
            "interval_seconds": status.probe_interval,
            "lag_seconds": cycle.last_lag,
            "duration_seconds": cycle.last_duration,
            "missed": cycle.missed,
        },
        "config": {
            "ready": status.ready(),
            "healthy": status.healthy(),
            "last_reload_successful": reload.successful,
            "last_reload_success_timestamp": reload.last_success or None,
        },
        "domains": [{
            "domain": d.domain,
            "endpoints": d.endpoints,
            "probes": {"up": d.up, "total": d.total},
            "availability": d.ratio,
            "last_hour": {
                "availability": d.recent_ratio,
                "probes": {"up": d.recent_up, "total": d.recent_total},
                "span_seconds": d.recent_span,
            },
        } for d in domains],
        "endpoints": None,  # filled by the caller, and always the last key
    }, most_urgent_first(status, filters)


def encode(document: Mapping[str, Any]) -> bytes:
    """Compact JSON, with <, > and & escaped (valid JSON; inert if sniffed as HTML)."""
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            + "\n").encode()


def error_body(message: str) -> bytes:
    return encode({"version": VERSION, "error": message})
