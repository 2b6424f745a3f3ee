"""The HTTP interface: routes and content negotiation for /metrics, the pages and /-/*.

A plain ASGI app served by uvicorn in the probe loop's own event loop.  It reads the daemon only
through a ``status.StatusView``.  A gzip /metrics scrape (what Prometheus sends) is served from
the copy in ``snapshot``; an uncompressed one is rendered and sent in 32 KiB slices with the loop
handed back to the probes between them, so even a 32 MB scrape never holds the loop for long.
The pages come from ``pages``.  :class:`WebServer` runs uvicorn on a socket bound by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from prometheus_client import CollectorRegistry

from availability_exporter import api
from availability_exporter.badges import CONTENT_TYPE as SVG
from availability_exporter.badges import badge_for_path
from availability_exporter.config import ConfigError
from availability_exporter.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, exposition
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
    ) -> None:
        self.status = status
        self.registry = registry
        self.snapshot = snapshot
        self.routes: dict[str, tuple[tuple[str, ...], Handler]] = {
            "/metrics": (("GET", "HEAD"), self.metrics),
            "/": (("GET", "HEAD"), self.index),
            "/endpoint": (("GET", "HEAD"), self.endpoint),
            "/api/v1/status": (("GET", "HEAD"), self.api_status),
            "/-/healthy": (("GET", "HEAD"), self.healthy),
            "/-/ready": (("GET", "HEAD"), self.ready),
            "/-/reload": (("POST", "PUT"), self.reload),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
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
            # The per-endpoint part was compressed after the last completed cycle, so this
            # costs a copy of the compressor and the live registry's few lines, not 30 MB of
            # deflate; it never waits for a build under way (see snapshot).
            pieces = await self.snapshot.body(self.registry, openmetrics=openmetrics)
            for piece in pieces[:-1]:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": pieces[-1]})
            return
        for chunk in exposition(self.status.stats, self.registry, openmetrics=openmetrics):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # uvicorn's send() returns without yielding until the socket buffer fills: give
            # the probes their turn between slices so a big scrape never stalls them.
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})

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
        try:
            await self.status.reload()
        except ConfigError as exc:
            await respond(send, 500, f"failed to reload config:\n{exc}\n".encode())
            return
        await respond(send, 200, b"config reloaded\n")

    async def index(self, scope: Scope, send: Send) -> None:
        try:
            pieces = index_pieces(self.status, _query(scope))
        except FilterError as exc:
            await respond(send, 400, render_bad_query(str(exc)).encode(), content_type=HTML)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", HTML)]})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        # A page of 200 rows is ~1 MB of SVG; sent in ~32 KiB slices with the loop handed
        # back to the probes between them, so rendering never holds the loop for long.
        buffer: list[str] = []
        size = 0
        for piece in pieces:
            buffer.append(piece)
            size += len(piece)
            if size >= PAGE_SLICE:
                await send({"type": "http.response.body", "body": "".join(buffer).encode(),
                            "more_body": True})
                buffer.clear()
                size = 0
                await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": "".join(buffer).encode()})

    async def endpoint(self, scope: Scope, send: Send) -> None:
        name = (_query(scope).get("name") or [""])[0]
        stats = self.status.stats.get(name)
        if stats is None:
            await respond(send, 404, render_unknown_endpoint(name).encode(), content_type=HTML)
            return
        await respond(send, 200, render_endpoint(self.status, stats).encode(),
                      content_type=HTML)

    async def api_status(self, scope: Scope, send: Send) -> None:
        """``/api/v1/status`` (see ``api``): 200 with the status, 400 for a bad filter."""
        try:
            body = api.encode(api.status_document(self.status, _query(scope)))
        except FilterError as exc:
            await respond(send, 400, api.error_body(str(exc)), content_type=api.CONTENT_TYPE,
                          headers=[(b"x-content-type-options", b"nosniff")])
            return
        await respond(send, 200, body, content_type=api.CONTENT_TYPE,
                      headers=[(b"x-content-type-options", b"nosniff"),
                               (b"cache-control", b"no-store")])

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


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


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


class WebServer:
    """uvicorn serving ``app`` on a socket the caller bound, until told to stop.

    The daemon owns SIGINT, SIGTERM and SIGHUP.  ``uvicorn.Server.serve()`` would install its
    own handlers for the first two (``capture_signals``) and re-raise the signals it caught once
    it stops, which the daemon would take for a second stop request.  So this drives the
    server's public steps itself (``startup``, ``main_loop``, ``shutdown``), the ones ``serve()``
    wraps, and stops it with ``should_exit``: uvicorn touches no signal at all.
    """

    def __init__(
        self, app: ASGIApp, sock: socket.socket, *, host: str, port: int,
        ssl: Mapping[str, Any] | None = None,
    ) -> None:
        self.sock = sock
        self.config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, **(ssl or {}),
        )
        self.server = uvicorn.Server(self.config)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or this task is cancelled), then close gracefully."""
        server, config = self.server, self.config
        config.load()
        server.lifespan = config.lifespan_class(config)  # what serve() sets up before startup
        await server.startup(sockets=[self.sock])

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
