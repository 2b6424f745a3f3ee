"""The probe's httpx transport: how a request httpx built travels, and what it cost by phase.

httpx (``httpx.AsyncClient``) owns what a client library is for: building the request, URL
handling, userinfo credentials and redirect requests.  This ``httpx.AsyncBaseTransport`` owns
only the wire:

- HTTP/1.1 over :mod:`availability_exporter.http1` (an asyncio Protocol), a fresh connection
  per request, or kept per origin with ``keep_alive``;
- TLS from SSL contexts the caller built once;
- the whole response read before it is handed back, so a response's body is never more than
  the ``keep`` bytes the caller asked for, whatever the server sends;
- phases through the ``trace`` request extension, with httpcore's event names;
- endpoints that need HTTP/2 or a proxy go to httpx's own transport (httpcore), which emits
  the same trace events.

Per-endpoint wire options ride in ``request.extensions[ROUTE]``; httpx copies a request's
extensions to the requests it builds for redirects, so they follow every hop.

Failures are raised as httpx's exceptions, as httpx's own transport does: ConnectError (TCP,
DNS or TLS, with the OSError / gaierror / SSLError as its cause), RemoteProtocolError
(malformed or cut-short responses), ReadError (a reset mid-response), UnsupportedProtocol.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import httpx

from availability_exporter import http1

ROUTE = "availability_exporter.route"
# The body's whole size in bytes, in ``response.extensions`` (only ``keep`` of it is kept).
BODY_BYTES = "availability_exporter.body_bytes"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Route:
    """How one endpoint's requests travel."""

    ssl_context: ssl.SSLContext
    # TLS server name (SNI and verification) for requests to ``server_name_for``; redirects to
    # other hosts use their own name.
    server_name: str | None = None
    server_name_for: str | None = None
    family: socket.AddressFamily = socket.AF_UNSPEC
    http2: bool = False
    proxy: str | None = None
    keep: int = 0  # body bytes to keep for the caller

    @property
    def via_httpcore(self) -> bool:
        return self.http2 or self.proxy is not None


_PoolKey = tuple[str, str, int, int, str | None, int]


class ProbeTransport(httpx.AsyncBaseTransport):
    """The wire for the probe's shared ``httpx.AsyncClient``; one per process."""

    def __init__(self, *, default: Route, keep_alive: bool = False,
                 max_idle: int = 1000) -> None:
        self._default = default
        self._keep_alive = keep_alive
        self._max_idle = max_idle
        self._idle: dict[_PoolKey, list[http1.Connection]] = {}
        self._idle_count = 0
        self._httpcore: dict[tuple[int, bool, str | None, int], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route: Route = request.extensions.get(ROUTE, self._default)
        if route.via_httpcore:
            return await self._via_httpcore(request, route)
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"request URL has an unsupported scheme {scheme!r}", request=request,
            )
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS[scheme]
        tls = scheme == "https"
        server_name = route.server_name if route.server_name_for == host else None
        key: _PoolKey = (scheme, host, port, id(route.ssl_context) if tls else 0, server_name,
                         int(route.family))
        payload = await _payload(request)
        trace = request.extensions.get("trace")
        head_only = request.method == "HEAD"
        connection = self._take_idle(key) if self._keep_alive else None
        try:
            if connection is not None:
                try:
                    answer = await connection.exchange(payload, head_only=head_only,
                                                       keep=route.keep, trace=trace)
                except (OSError, http1.ProtocolError):
                    # The server closed the idle connection as we reused it: not the endpoint's
                    # fault unless a fresh connection fails too.
                    connection.abort()
                    connection = None
            if connection is None:
                connection = await http1.connect(
                    host, port, ssl_context=route.ssl_context if tls else None,
                    server_hostname=(server_name or host) if tls else None,
                    family=route.family, trace=trace,
                )
                answer = await connection.exchange(payload, head_only=head_only,
                                                   keep=route.keep, trace=trace)
        except BaseException as exc:
            if connection is not None:
                connection.abort()  # a deadline or a failure mid-answer: the stream is unusable
            translated = _translate(exc, request)
            if translated is exc:
                raise
            raise translated from exc
        if not (self._keep_alive and answer.reusable and self._keep(key, connection)):
            connection.release()
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.body),
            extensions={
                "http_version": answer.version,
                "reason_phrase": answer.reason,
                BODY_BYTES: answer.body_bytes,
            },
        )

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.release()
        self._idle.clear()
        self._idle_count = 0
        for transport in self._httpcore.values():
            await transport.aclose()
        self._httpcore.clear()

    # -- kept-alive connections (--probe.keep-alive) ----------------------------------------

    # One endpoint needs one idle connection per origin; a few allow redirects back and forth.
    MAX_IDLE_PER_ORIGIN = 4

    def _keep(self, key: _PoolKey, connection: http1.Connection) -> bool:
        if self._idle_count >= self._max_idle:
            return False
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.MAX_IDLE_PER_ORIGIN:
            return False
        idle.append(connection)
        self._idle_count += 1
        return True

    def _take_idle(self, key: _PoolKey) -> http1.Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable and not connection.closed:
                return connection
            connection.release()
        return None

    # -- HTTP/2 and proxies: httpx's own transport -----------------------------------------

    async def _via_httpcore(self, request: httpx.Request, route: Route) -> httpx.Response:
        key = (id(route.ssl_context), route.http2, route.proxy, int(route.family))
        transport = self._httpcore.get(key)
        if transport is None:
            local = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}.get(route.family)
            transport = httpx.AsyncHTTPTransport(
                verify=route.ssl_context, http2=route.http2, proxy=route.proxy,
                local_address=local, trust_env=False, retries=0,
                limits=httpx.Limits(
                    max_connections=None,
                    max_keepalive_connections=None if self._keep_alive else 0,
                ),
            )
            self._httpcore[key] = transport
        extensions = dict(request.extensions)
        if route.server_name is not None and (
            route.server_name_for == request.url.raw_host.decode("ascii")
        ):
            extensions["sni_hostname"] = route.server_name
        trace = extensions.get("trace")
        if trace is not None:
            # httpcore awaits its trace hook in async code; ours is a plain callable.
            async def async_trace(event: str, info: dict[str, object]) -> None:
                trace(event, info)

            extensions["trace"] = async_trace
        request.extensions = extensions
        return await transport.handle_async_request(request)


async def _payload(request: httpx.Request) -> bytes:
    """The request head and body, byte for byte as httpx built them."""
    try:
        body = request.content
    except httpx.RequestNotRead:  # a redirect hop re-sending a streamed body (307/308)
        body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
    lines = [request.method.encode("ascii") + b" " + request.url.raw_path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    lines.append(b"\r\n")
    return b"\r\n".join(lines) + body


def _translate(exc: BaseException, request: httpx.Request) -> BaseException:
    """The httpx exception for a wire failure; cancellation and httpx's own pass through."""
    if isinstance(exc, http1.ConnectError | ssl.SSLError | ssl.CertificateError):
        return httpx.ConnectError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, http1.ProtocolError):
        return httpx.RemoteProtocolError(str(exc), request=request)
    if isinstance(exc, OSError):
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    return exc

