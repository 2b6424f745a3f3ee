"""The HTTP interface: /metrics, the status pages, /-/healthy, /-/ready and POST /-/reload.

A plain ASGI app served by uvicorn in the probe loop's own event loop.  A gzip /metrics scrape
sends the per-endpoint part compressed once per cycle plus a live tail (metrics.GzipSnapshot);
an uncompressed one renders in small chunks, yielding to the probes in between, so a
10,000-endpoint scrape never holds the loop for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import uvicorn

from availability_exporter import __version__
from availability_exporter.config import ConfigError
from availability_exporter.metrics import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    accepts_gzip,
    exposition,
    wants_openmetrics,
)
from availability_exporter.model import PHASES, ProbeResult, State
from availability_exporter.settings import parse_listen_address
from availability_exporter.stats import EndpointStats, percentage

if TYPE_CHECKING:
    from availability_exporter.daemon import Exporter

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The status page lists the endpoints that need attention first and stops here, so a page
# over 10,000 endpoints stays cheap to render; filters narrow it down.
PAGE_ROWS = 500
_STATE_ORDER = {State.DOWN: 0, State.DEGRADED: 1, State.UP: 2, None: 3}


class App:
    """Routes requests to the exporter's state; every handler is short and never blocks."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        routes: dict[str, tuple[tuple[str, ...], Callable[[Scope, Send], Awaitable[None]]]] = {
            "/metrics": (("GET", "HEAD"), self.metrics),
            "/": (("GET", "HEAD"), self.index),
            "/endpoint": (("GET", "HEAD"), self.endpoint),
            "/-/healthy": (("GET", "HEAD"), self.healthy),
            "/-/ready": (("GET", "HEAD"), self.ready),
            "/-/reload": (("POST", "PUT"), self.reload),
        }
        route = routes.get(path)
        if route is None:
            await respond(send, 404, b"404 page not found\n")
            return
        methods, handler = route
        if method not in methods:
            await respond(send, 405, f"method {method} not allowed\n".encode(),
                          headers=[(b"allow", ", ".join(methods).encode())])
            return
        await handler(scope, send)

    async def metrics(self, scope: Scope, send: Send) -> None:
        headers = _headers(scope)
        openmetrics = wants_openmetrics(headers.get("accept", ""))
        use_gzip = accepts_gzip(headers.get("accept-encoding", ""))
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        response_headers = [(b"content-type", content_type.encode())]
        if use_gzip:
            response_headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        if use_gzip:
            # What Prometheus asks for: the per-endpoint part was compressed when the last
            # cycle completed, so this costs a copy of the compressor, not 30 MB of deflate.
            pieces = await self.exporter.snapshot.body(self.exporter.registry,
                                                       openmetrics=openmetrics)
            for piece in pieces[:-1]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": pieces[-1]})
            return
        for chunk in exposition(self.exporter.stats, self.exporter.registry,
                                openmetrics=openmetrics):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # uvicorn's send() returns without yielding until the socket buffer fills: give
            # the probes their turn between chunks so a big scrape never stalls them.
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})

    async def healthy(self, scope: Scope, send: Send) -> None:
        if self.exporter.healthy():
            await respond(send, 200, b"Healthy\n")
        else:
            await respond(send, 503, b"Unhealthy: no check cycle completed for 3 intervals\n")

    async def ready(self, scope: Scope, send: Send) -> None:
        if self.exporter.ready:
            await respond(send, 200, b"Ready\n")
        else:
            await respond(send, 503, b"Not ready: the first check cycle has not completed\n")

    async def reload(self, scope: Scope, send: Send) -> None:
        try:
            await self.exporter.reload()
        except ConfigError as exc:
            await respond(send, 500, f"failed to reload config:\n{exc}\n".encode())
            return
        await respond(send, 200, b"config reloaded\n")

    async def index(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        await respond(send, 200, render_index(self.exporter, query).encode(),
                      content_type=b"text/html; charset=utf-8")

    async def endpoint(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = (query.get("name") or [""])[0]
        stats = self.exporter.stats.get(name)
        if stats is None:
            await respond(send, 404, render_page(
                "Unknown endpoint", f"<p>No endpoint named <code>{_e(name)}</code> is "
                "configured. <a href='/'>Back to the status page</a>.</p>", refresh=None,
            ).encode(), content_type=b"text/html; charset=utf-8")
            return
        await respond(send, 200, render_endpoint_page(self.exporter, stats).encode(),
                      content_type=b"text/html; charset=utf-8")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def respond(
    send: Send, status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


# -- pages --------------------------------------------------------------------------------

def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2430}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #dde;text-align:left;font-size:.9rem}
th{background:#f3f4f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:600;padding:.1rem .45rem;border-radius:.3rem}
.up{background:#d5f5dd;color:#14652b}.degraded{background:#fff1c2;color:#7a5600}
.down{background:#fbd5d5;color:#8a1c1c}.pending{background:#e6e8ee;color:#4a5060}
.muted{color:#667}
"""


def render_page(title: str, body: str, *, refresh: float | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{max(int(refresh), 5)}">' if refresh else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title>{meta}<style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{body}"
        f"<p class='muted'>availability-exporter {_e(__version__)} · "
        "<a href='/'>status</a> · <a href='/metrics'>metrics</a> · "
        "<a href='/-/healthy'>healthy</a> · <a href='/-/ready'>ready</a></p></body></html>"
    )


def _state_badge(result: ProbeResult | None) -> str:
    if result is None:
        return "<span class='state pending'>pending</span>"
    return f"<span class='state {result.state.value}'>{result.state.value}</span>"


def render_index(exporter: Exporter, query: dict[str, list[str]]) -> str:
    stats = exporter.stats
    cycle = exporter.scheduler.cycle_stats
    settings = exporter.settings
    parts = [
        "<p>",
        f"{len(stats)} endpoints · interval {settings.probe_interval:g}s · "
        f"{cycle.cycles} cycles completed · last cycle {_ms(cycle.last_duration)} · "
        f"lag {_ms(cycle.last_lag)} · {cycle.missed} missed · "
        f"{'ready' if exporter.ready else 'waiting for the first cycle'}",
        "</p>",
    ]
    if not exporter.reload_status.successful:
        parts.append("<p class='state down'>The last config reload failed; the previous "
                     "config is still running. See the logs or POST /-/reload.</p>")
    parts.append("<h2>Domains</h2><table><tr><th>domain</th><th>availability</th>"
                 "<th>up probes</th><th>all probes</th></tr>")
    for domain, up, total in stats.domains():
        parts.append(
            f"<tr><td><a href='/?domain={quote(domain)}'>{_e(domain)}</a></td>"
            f"<td class='num'>{percentage(up, total)}%</td>"
            f"<td class='num'>{up}</td><td class='num'>{total}</td></tr>"
        )
    parts.append("</table>")
    domain_filter = query["domain"][0] if query.get("domain") else None
    state_filter = query["state"][0] if query.get("state") else None
    rows = [
        s for s in stats
        if (domain_filter is None or s.endpoint.domain == domain_filter)
        and (state_filter is None or (s.last is not None and s.last.state.value == state_filter))
    ]
    rows.sort(key=lambda s: _STATE_ORDER[s.last.state if s.last else None])
    shown = rows[:PAGE_ROWS]
    title = "Endpoints" + (f" of {_e(domain_filter)}" if domain_filter else "")
    parts.append(
        f"<h2>{title}</h2><p class='muted'>Filter: "
        "<a href='/?state=down'>down</a> · <a href='/?state=degraded'>degraded</a> · "
        "<a href='/?state=up'>up</a> · <a href='/'>all</a>"
        + (f" · showing {len(shown)} of {len(rows)}, most urgent first"
           if len(rows) > len(shown) else "")
        + "</p>"
    )
    parts.append(
        "<table id='endpoints'><tr><th>endpoint</th><th>domain</th><th>state</th>"
        "<th>reason</th><th>status</th><th>latency</th><th>last probe</th>"
        "<th>availability</th></tr>"
    )
    for s in shown:
        parts.append(_endpoint_row(s))
    parts.append("</table>")
    return render_page("Availability", "".join(parts), refresh=settings.probe_interval)


def _endpoint_row(s: EndpointStats) -> str:
    last = s.last
    name = s.endpoint.name
    availability = f"{percentage(s.up, s.total)}%" if s.total else "-"
    return (
        f"<tr data-endpoint='{_e(name)}'>"
        f"<td><a href='/endpoint?name={quote(name, safe='')}'>{_e(name)}</a></td>"
        f"<td>{_e(s.endpoint.domain)}</td><td>{_state_badge(last)}</td>"
        f"<td>{_e(last.reason or '') if last else ''}</td>"
        f"<td class='num'>{last.status_code if last and last.status_code else ''}</td>"
        f"<td class='num'>{_ms(last.duration) if last else ''}</td>"
        f"<td>{_when(last.finished_at) if last else ''}</td>"
        f"<td class='num'>{availability}</td></tr>"
    )


def render_endpoint_page(exporter: Exporter, s: EndpointStats) -> str:
    ep = s.endpoint
    header_names = ", ".join(name for name, _ in ep.headers) or "none"
    expiry = _when(s.cert_not_after) if s.cert_not_after else "-"
    parts = [
        "<table>",
        f"<tr><th>URL</th><td><code>{_e(ep.display_url)}</code></td></tr>",
        f"<tr><th>method</th><td>{_e(ep.method)}</td></tr>",
        f"<tr><th>domain</th><td>{_e(ep.domain)}</td></tr>",
        f"<tr><th>headers</th><td>{_e(header_names)} <span class='muted'>(values are never "
        "shown)</span></td></tr>",
        f"<tr><th>body</th><td>{len(ep.body)} bytes" if ep.body is not None else
        "<tr><th>body</th><td>none",
        "</td></tr>",
        f"<tr><th>timeout / threshold</th><td>{ep.timeout:g} s / "
        f"{ep.latency_threshold * 1000:g} ms</td></tr>",
        f"<tr><th>follow redirects / verify TLS</th><td>{ep.follow_redirects} / "
        f"{ep.verify_tls}</td></tr>",
        f"<tr><th>probes</th><td>{s.up} up, {s.degraded} degraded, {s.down} down"
        f" ({percentage(s.up, s.total) if s.total else 0}% available)</td></tr>",
        f"<tr><th>certificate expires</th><td>{expiry}</td></tr>",
        "</table><h2>Last results</h2>",
        "<table id='history'><tr><th>finished</th><th>state</th><th>reason</th>"
        "<th>status</th><th>duration</th>"
        + "".join(f"<th>{p}</th>" for p in PHASES)
        + "<th>message</th></tr>",
    ]
    for result in reversed(s.history):
        parts.append(
            f"<tr><td>{_when(result.finished_at)}</td><td>{_state_badge(result)}</td>"
            f"<td>{_e(result.reason or '')}</td>"
            f"<td class='num'>{result.status_code or ''}</td>"
            f"<td class='num'>{_ms(result.duration)}</td>"
            + "".join(f"<td class='num'>{_ms(v)}</td>" for v in result.phases)
            + f"<td>{_e(result.error or '')}</td></tr>"
        )
    parts.append("</table>")
    if not s.history:
        parts.append("<p class='muted'>Not probed yet.</p>")
    return render_page(f"Endpoint {ep.name}", "".join(parts),
                       refresh=exporter.settings.probe_interval)


# -- server -------------------------------------------------------------------------------

class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGINT/SIGTERM/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: ASGIApp, listen_address: str, **ssl: Any) -> uvicorn.Server:
    host, port = parse_listen_address(listen_address)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
        timeout_graceful_shutdown=1, **ssl,
    )
    return _Server(config)
