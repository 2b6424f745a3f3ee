"""The HTTP interface: routes and content negotiation for /metrics, the pages and /-/*.

A plain ASGI app served by uvicorn in the probe loop's own event loop.  It reads the daemon only
through a ``status.StatusView``.  A /metrics scrape is served from the gzip copy in ``snapshot``:
as it is when the client accepts gzip (Prometheus does), else inflated and sent in ~60 KiB slices
with the loop handed back to the probes between them, so even a 33 MB scrape never holds it long.
The pages come from ``pages``.  :class:`WebServer` runs uvicorn on a socket bound by the caller.

Hardening (issue 12): ``POST /-/reload`` answers only with ``--web.enable-lifecycle`` (403
otherwise, as Prometheus does), so a cross-origin form cannot reload the exporter; with
``--web.allowed-hosts`` a request whose ``Host`` is not listed gets 421 (DNS rebinding); HTML
pages carry a CSP without script, ``X-Frame-Options: DENY`` and ``nosniff``; no ``server``
header.  The server caps its connections and closes those that sit idle or never finish their
request head (:class:`GuardedConnection`), so held-open connections cannot take the
descriptors the probes need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from availability_exporter import api
from availability_exporter.badges import CONTENT_TYPE as SVG
from availability_exporter.badges import badge_for_path
from availability_exporter.config import ConfigError
from availability_exporter.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from availability_exporter.overview import FilterError
from availability_exporter.pages import (
    index_pieces,
    render_bad_query,
    render_endpoint,
    render_unknown_endpoint,
)
from availability_exporter.snapshot import GzipSnapshot
from availability_exporter.status import StatusView

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Handler = Callable[[Scope, Send], Awaitable[None]]

HTML = b"text/html; charset=utf-8"
PAGE_SLICE = 32 * 1024  # characters of the status page sent before the loop gets a turn
# The pages use no script at all, and one inline <style>; nothing may frame them.
PAGE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy",
     b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
     b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


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


class App:
    """Routes requests to the status view; every handler is short and never blocks."""

    def __init__(
        self, status: StatusView, *, registry: CollectorRegistry, snapshot: GzipSnapshot,
        enable_lifecycle: bool = False, allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.status = status
        self.registry = registry
        self.snapshot = snapshot
        self.enable_lifecycle = enable_lifecycle
        # Lower-case host names (no port); None accepts any Host.
        self.allowed_hosts = allowed_hosts
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/metrics": (("GET", "HEAD"), self.metrics),
            "/": (("GET", "HEAD"), self.index),
            "/endpoint": (("GET", "HEAD"), self.endpoint),
            "/api/v1/status": (("GET", "HEAD"), self.api_status),
            "/-/healthy": (("GET", "HEAD"), self.healthy),
            "/-/ready": (("GET", "HEAD"), self.ready),
            "/-/reload": (("POST",), self.reload),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.allowed_hosts is not None and not self._host_allowed(scope):
            # 421 Misdirected Request: this server does not answer for that name.
            await respond(send, 421, b"421 misdirected request: host not allowed\n")
            return
        route = self.routes.get(scope["path"])
        if route is None and scope["path"].startswith("/badge/"):
            route = (("GET", "HEAD"), self.badge)
        if route is None:
            await respond(send, 404, b"404 page not found\n")
            return
        methods, handler = route
        method: str = scope["method"]
        if method not in methods:
            await respond(send, 405, f"method {method} not allowed\n".encode(),
                          headers=[(b"allow", ", ".join(methods).encode())])
            return
        await handler(scope, send)

    def _host_allowed(self, scope: Scope) -> bool:
        """``Host`` (without its port) is one of ``allowed_hosts``; a missing Host is not."""
        assert self.allowed_hosts is not None
        host = _headers(scope).get("host", "").strip().lower()
        if host.startswith("["):  # [IPv6]:port
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if host.count(":") == 1 else host
        return bool(name) and name.rstrip(".") in self.allowed_hosts

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
            await _stream(send, ())
            return
        if use_gzip:
            # The per-endpoint part was compressed after the last completed cycle, so this
            # costs a copy of the compressor and the live registry's few lines, not 30 MB of
            # deflate; it never waits for a build under way (see snapshot).
            pieces = await self.snapshot.body(self.registry, openmetrics=openmetrics)
            for piece in pieces[:-1]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": pieces[-1]})
            return
        # Inflated from the same copy, in slices with the loop handed back between them.
        await _stream(send, await self.snapshot.plain(self.registry, openmetrics=openmetrics))

    async def healthy(self, scope: Scope, send: Send) -> None:
        if self.status.healthy():
            await respond(send, 200, b"Healthy\n")
        else:
            await respond(send, 503, b"Unhealthy: no check cycle completed for 3 intervals\n")

    async def ready(self, scope: Scope, send: Send) -> None:
        if self.status.ready():
            await respond(send, 200, b"Ready\n")
        else:
            await respond(send, 503, b"Not ready: the first check cycle has not completed\n")

    async def reload(self, scope: Scope, send: Send) -> None:
        if not self.enable_lifecycle:
            await respond(send, 403, b"Lifecycle API is not enabled (--web.enable-lifecycle)\n")
            return
        if _cross_site(_headers(scope)):
            # A browser sent this from another site's page (a form POST needs no CORS): no.
            await respond(send, 403, b"cross-site request refused\n")
            return
        try:
            await self.status.reload()
        except ConfigError:
            # The details (file path, problems: which may quote a literal URL password) go to
            # the log, redacted, by the reload itself; the caller learns only that it failed.
            await respond(send, 500, b"failed to reload config: see the exporter's log\n")
            return
        await respond(send, 200, b"config reloaded\n")

    async def index(self, scope: Scope, send: Send) -> None:
        try:
            pieces = index_pieces(self.status, _query(scope))
        except FilterError as exc:
            await respond(send, 400, render_bad_query(str(exc)).encode(), content_type=HTML,
                          headers=PAGE_HEADERS)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", HTML), *PAGE_HEADERS]})
        # A page of 200 rows is ~1 MB of SVG: rendered lazily, sent in ~32 KiB slices.
        await _stream(send, () if scope["method"] == "HEAD" else _batched(pieces, PAGE_SLICE))

    async def endpoint(self, scope: Scope, send: Send) -> None:
        name = (_query(scope).get("name") or [""])[0]
        stats = self.status.stats.get(name)
        if stats is None:
            await respond(send, 404, render_unknown_endpoint(name).encode(), content_type=HTML,
                          headers=PAGE_HEADERS)
            return
        await respond(send, 200, render_endpoint(self.status, stats).encode(),
                      content_type=HTML, headers=PAGE_HEADERS)

    async def api_status(self, scope: Scope, send: Send) -> None:
        """``/api/v1/status`` (see ``api``): 200 with the status, 400 for a bad filter."""
        try:
            pieces = api.status_pieces(self.status, _query(scope))
        except FilterError as exc:
            await respond(send, 400, api.error_body(str(exc)), content_type=api.CONTENT_TYPE,
                          headers=[(b"x-content-type-options", b"nosniff")])
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", api.CONTENT_TYPE), (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store")]})
        await _stream(send, () if scope["method"] == "HEAD" else pieces)

    async def badge(self, scope: Scope, send: Send) -> None:
        """``/badge/endpoint/{name}.svg`` and ``/badge/domain/{domain}.svg`` (see ``badges``);
        cached for one probe interval, the time their answer can stay right."""
        raw = scope.get("raw_path") or scope["path"].encode()
        # Some servers leave the query on raw_path; a literal "?" ends the path.
        path = raw.decode("latin-1").partition("?")[0]
        badge = badge_for_path(self.status, path)
        if badge is None:
            await respond(send, 404, b"404 page not found\n")
            return
        max_age = max(1, int(self.status.probe_interval))
        await respond(send, badge.status, badge.svg(), content_type=SVG, headers=[
            (b"cache-control", f"max-age={max_age}".encode()),
            (b"x-content-type-options", b"nosniff"),
            # An SVG opened on its own is a document: it must not run or load anything.
            (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
        ])


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


def _cross_site(headers: Mapping[str, str]) -> bool:
    """A browser request made by another site's page (``Sec-Fetch-Site``, else ``Origin``
    against ``Host``); tools such as curl and Prometheus send neither header."""
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site:
        return fetch_site not in ("same-origin", "none")
    origin = headers.get("origin", "").strip().lower()
    if not origin:
        return False
    host = origin.partition("://")[2]
    return host != headers.get("host", "").strip().lower()


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


async def _stream(send: Send, chunks: Iterable[bytes]) -> None:
    """Send a body chunk by chunk, then end it.  uvicorn's send() returns without yielding
    until the socket buffer fills, so the loop goes to the probes between chunks: a large
    body (a plain scrape, a page, the API) never holds it for longer than one chunk."""
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


def _batched(pieces: Iterable[str], size: int) -> Iterator[bytes]:
    """Text pieces joined into chunks of about ``size`` characters, encoded."""
    buffer: list[str] = []
    length = 0
    for piece in pieces:
        buffer.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(buffer).encode()
            buffer.clear()
            length = 0
    if buffer:
        yield "".join(buffer).encode()


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


# -- server -------------------------------------------------------------------------------

# Open connections get this long to finish their responses at shutdown (uvicorn then cancels).
GRACEFUL_SHUTDOWN_SECONDS = 1


class _ShutdownCancellations(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record for a response cancelled by our
    own shutdown (a plain scrape still streaming after the grace period): stopping is asked
    for, not an error, and the traceback would read as a crash in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


logging.getLogger("uvicorn.error").addFilter(_ShutdownCancellations())
# A request head must be complete this long after the connection opened (after the TLS
# handshake) or after the previous response ended plus KEEP_ALIVE_SECONDS: a connection that
# sends nothing, or drips a head, is closed.  Prometheus sends its whole head at once.
HEAD_TIMEOUT_SECONDS = 10.0
# An idle keep-alive connection (plain or TLS) is closed after this long; longer than a 15 s
# scrape interval, so Prometheus keeps reusing its connection.
KEEP_ALIVE_SECONDS = 20
# Bytes a request head may take before it is complete; a longer one is cut off.
MAX_HEAD_BYTES = 64 * 1024
# --web.max-connections's default, as Prometheus's own.
DEFAULT_MAX_CONNECTIONS = 512
# Why the guard closed a connection (the reason label of its counter).
CLOSE_REASONS: tuple[str, ...] = (
    "evicted", "evicted_stalled", "refused", "timeout", "head_too_large",
)
# The listen queue, which is also how many connections asyncio accepts in one go before any of
# them reaches the guard (uvloop hands each one over as it accepts it).  Under a flood about
# three such batches hold descriptors beyond the limit for a moment (one accepted, one being
# evicted, one closing): daemon.FD_HEADROOM keeps room for them.  A full queue only delays a
# scraper's connection (its SYN is retried), it does not refuse it.
ACCEPT_BACKLOG = 64


class ConnectionGuard:
    """The open connections of one server, oldest first, and what was done to keep them few.

    At ``limit`` open connections a new one evicts the oldest connection that has no request
    in flight (idle, or still sending its head) and was never answered, else the oldest with no
    request in flight, else the oldest whose answer waits for a client that stopped reading
    (uvicorn paused writing to it): held-open connections can take a slot but never keep a
    scrape out, nor take the connection a scraper keeps alive, and never more than ``limit``
    descriptors.  Only when every connection is busy with a client that reads is the new one
    refused.
    """

    def __init__(self, limit: int, *, head_timeout: float = HEAD_TIMEOUT_SECONDS,
                 idle_timeout: float = KEEP_ALIVE_SECONDS,
                 max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self.limit = limit
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.max_head_bytes = max_head_bytes
        self.open: dict[GuardedConnection, None] = {}  # insertion order: oldest first
        # Connections this guard closed, by why (exported by ConnectionCollector).
        self.closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)

    def admit(self, connection: GuardedConnection) -> bool:
        """Make room for ``connection`` (evicting an idle one if full); False to refuse it."""
        if len(self.open) >= self.limit:
            # Three passes of at most `limit` steps each.  A connection that has been answered
            # goes after those that never sent a whole request: Prometheus keeps its scrape
            # connection open between scrapes, and a flood of held connections must not take
            # it (a new one's SYN may then wait seconds behind the flood in the listen queue).
            victim = next((c for c in self.open if not c.busy and not c.answered), None)
            if victim is None:
                victim = next((c for c in self.open if not c.busy), None)
            reason = "evicted"
            if victim is None:
                victim = next((c for c in self.open if c.stalled), None)
                reason = "evicted_stalled"
            if victim is None:
                self.closed["refused"] += 1
                return False
            self.closed[reason] += 1
            victim.drop()
        self.open[connection] = None
        return True


class GuardedConnection:
    """Mixed into uvicorn's HTTP protocol class (httptools or h11) by :func:`guarded`.

    uvicorn arms no timer before the first request and none while a head is half-sent, and
    has no connection limit (its ``limit_concurrency`` still accepts, then answers 503): this
    adds the three.  It uses only what both of uvicorn's protocols have: ``transport``,
    ``cycle`` (the request in flight) and the callbacks below.
    """

    guard: ConnectionGuard
    transport: asyncio.Transport
    cycle: Any
    flow: Any  # uvicorn's FlowControl: write_paused while the client does not read
    connections: set[Any]  # uvicorn's server-wide set of open connections
    _deadline: asyncio.TimerHandle | None = None
    _admitted = False
    _head_bytes = 0
    answered = False  # a response on this connection was sent whole (a client that reads)

    @property
    def busy(self) -> bool:
        """A request is being answered (its head complete, its response not yet)."""
        return self.cycle is not None and not self.cycle.response_complete

    @property
    def stalled(self) -> bool:
        """Busy, with the answer waiting for the client to read (uvicorn's flow control)."""
        return self.busy and self.flow is not None and self.flow.write_paused

    def connection_made(self, transport: asyncio.Transport) -> None:
        if not self.guard.admit(self):
            transport.abort()
            return
        self._admitted = True
        super().connection_made(transport)  # type: ignore[misc]
        self._arm(self.guard.head_timeout)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.max_head_bytes:
                self.guard.closed["head_too_large"] += 1
                self.drop()
                return
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self.answered = True
        self._head_bytes = 0
        self._arm(self.guard.idle_timeout + self.guard.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.open.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._admitted:
            super().connection_lost(exc)  # type: ignore[misc]

    def drop(self) -> None:
        """Close at once (RST): frees the descriptor now, not after a lingering close."""
        self.guard.open.pop(self, None)
        # uvicorn forgets the connection in connection_lost, which the loop may run after the
        # next connection's request: its limit_concurrency would count this one and answer 503.
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.abort()

    def _arm(self, delay: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if not self.busy:  # a response under way ends with on_response_complete, re-arming
            self.guard.closed["timeout"] += 1
            self.drop()


class ConnectionCollector(Collector):
    """What the connection guard did, so that an attack on the web port shows on /metrics."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "availability_exporter_web_connections",
            "Open connections to the web port (at most --web.max-connections).",
            value=len(self.guard.open))
        yield GaugeMetricFamily(
            "availability_exporter_web_connections_limit",
            "The most web connections kept open: --web.max-connections, lowered to keep file "
            "descriptors for the probes.", value=self.guard.limit)
        closed = CounterMetricFamily(
            "availability_exporter_web_connections_closed",
            "Web connections the exporter closed to protect itself: evicted (idle or half-sent "
            "at the limit), evicted_stalled (its client stopped reading its answer), refused "
            "(every slot busy), timeout (no complete request head in time, or idle), "
            "head_too_large.", labels=["reason"])
        for reason, count in self.guard.closed.items():
            closed.add_metric([reason], count)
        yield closed


def guarded(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's protocol class ``base`` with :class:`GuardedConnection`'s limits."""
    return type(f"Guarded{base.__name__}", (GuardedConnection, base), {"guard": guard})


class WebServer:
    """uvicorn serving ``app`` on a socket the caller bound, until told to stop.

    The daemon owns SIGINT, SIGTERM and SIGHUP.  ``uvicorn.Server.serve()`` would install its
    own handlers for the first two (``capture_signals``) and re-raise the signals it caught once
    it stops, which the daemon would take for a second stop request.  So this drives the
    server's public steps itself (``startup``, ``main_loop``, ``shutdown``), the ones ``serve()``
    wraps, and stops it with ``should_exit``: uvicorn touches no signal at all.  Its startup is
    ``_startup``, uvicorn's own for a given socket plus a TLS handshake deadline.
    """

    def __init__(
        self, app: ASGIApp, sock: socket.socket, *, host: str, port: int,
        ssl: Mapping[str, Any] | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.sock = sock
        self.guard = ConnectionGuard(max_connections)
        self.config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            # The guard keeps connections at max_connections; uvicorn's own limit is the
            # backstop for requests in flight (it answers 503 beyond it).
            limit_concurrency=max_connections + 1, timeout_keep_alive=KEEP_ALIVE_SECONDS,
            backlog=ACCEPT_BACKLOG,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            # No "server: uvicorn" (it names the software to an attacker); Date is harmless.
            server_header=False, date_header=True,
            **(ssl or {}),
        )
        self.server = uvicorn.Server(self.config)

    async def _startup(self) -> None:
        """What ``Server.startup(sockets=[sock])`` does, with a deadline for TLS handshakes.

        uvicorn passes no ``ssl_handshake_timeout`` to ``create_server``, so a client that opens
        a TLS connection and never finishes its handshake would hold a descriptor for asyncio's
        default 60 s; here it gets HEAD_TIMEOUT_SECONDS, as a plain connection gets for its head.
        """
        server, config = self.server, self.config
        await server.lifespan.startup()  # lifespan="off": nothing to start

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=server.server_state,
                app_state=server.lifespan.state, _loop=_loop,
            )

        listener = await asyncio.get_running_loop().create_server(
            create_protocol, sock=self.sock, ssl=config.ssl, backlog=config.backlog,
            ssl_handshake_timeout=HEAD_TIMEOUT_SECONDS if config.ssl is not None else None,
        )
        server.servers = [listener]
        server.started = True

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or this task is cancelled), then close gracefully."""
        server, config = self.server, self.config
        config.load()
        config.http_protocol_class = guarded(config.http_protocol_class, self.guard)
        server.lifespan = config.lifespan_class(config)  # what serve() sets up before startup
        await self._startup()

        async def exit_on_stop() -> None:
            await stop.wait()
            server.should_exit = True  # main_loop() looks at it every 0.1 s

        watcher = asyncio.get_running_loop().create_task(exit_on_stop())
        try:
            await server.main_loop()  # keeps the Date header current; returns on should_exit
        finally:
            server.should_exit = True
            watcher.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.shutdown(sockets=[self.sock]),
                                       GRACEFUL_SHUTDOWN_SECONDS + 0.5)
