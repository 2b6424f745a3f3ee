"""A raw HTTP/1.1 server that plays one scripted answer per path, for the differential test.

It runs on its own event loop in a daemon thread, so that curl subprocesses, the exporter and
httpx (each on the caller's side) all reach the same listeners at the same time. Listeners, all
on 127.0.0.1 with ports the kernel picks:

- ``plain``: HTTP.
- one TLS listener per `CertKind` (``good``, ``self-signed``, ``expired``, ``wrong-host``),
  serving the same routes.
- ``drop``: accepts and closes at once, before reading or writing a byte (used both as an
  ``http://`` and as an ``https://`` target: the latter is a server closing right after accept).

A route maps the exact request target (path and query, as sent) to an `Answer`: byte strings
written in order (each drained before the next), then one of three endings: close the connection,
keep it open for the next request (so only the response's own framing can end it), or stall
(hold it open without writing, until the client gives up). Byte strings may name listener ports
as ``@PORT@`` (plain), ``@GOOD@`` (good TLS), ``@SELF@`` (self-signed TLS) and ``@DROP@``;
they are substituted when written.

Every wait is bounded by `HOLD_LIMIT`, so no connection outlives a client by more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.adversarial.certs import CertKind, CertSet

HOST = "127.0.0.1"
HOLD_LIMIT = 30.0  # seconds a stalled or kept-open connection waits for its client at most
MAX_REQUEST_HEAD = 64 * 1024
MAX_REQUEST_BODY = 1024 * 1024


class Then(enum.Enum):
    """What the server does after writing an answer's bytes."""

    CLOSE = "close"
    KEEP = "keep"  # wait for another request on the same connection
    STALL = "stall"  # write nothing more; hold the connection until the client closes it


@dataclass(frozen=True)
class Answer:
    pieces: tuple[bytes, ...]
    then: Then = Then.CLOSE


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent, decoded as latin-1 (so raw bytes survive)
    headers: tuple[tuple[str, str], ...]
    body: bytes


Route = Callable[[Request], Answer]

NOT_FOUND = Answer((b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",))


class ScriptServer:
    """The listeners, on a loop in a thread; `start` and `stop` are called from outside it."""

    def __init__(self, routes: Mapping[str, Route], certs: CertSet) -> None:
        self.routes = dict(routes)
        self.certs = certs
        self.ports: dict[str, int] = {}
        # Server-side loop errors (e.g. a TLS handshake the client rejected, which is the
        # point of the bad-certificate cases): kept here instead of logged, so that the
        # no-traceback test only sees what the exporter itself reports.
        self.loop_errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="differential-server", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._substitutions: list[tuple[bytes, bytes]] = []

    # -- outside the server thread --------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def url(self, path: str, listener: str = "plain", *, tls: bool = False) -> str:
        scheme = "https" if tls or listener in {kind.value for kind in CertKind} else "http"
        return f"{scheme}://{HOST}:{self.ports[listener]}{path}"

    # -- inside the server thread ---------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_exception_handler(self._quiet)
        self._loop.run_forever()

    def _quiet(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        self.loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    async def _listen(self) -> None:
        plain = await asyncio.start_server(self._serve, HOST, 0, limit=MAX_REQUEST_HEAD)
        self._servers.append(plain)
        self.ports["plain"] = plain.sockets[0].getsockname()[1]
        for kind in CertKind:
            context = self.certs[kind].server_context()
            server = await asyncio.start_server(
                self._serve, HOST, 0, ssl=context, limit=MAX_REQUEST_HEAD,
                ssl_handshake_timeout=10.0,
            )
            self._servers.append(server)
            self.ports[kind.value] = server.sockets[0].getsockname()[1]
        drop = await asyncio.start_server(self._drop, HOST, 0)
        self._servers.append(drop)
        self.ports["drop"] = drop.sockets[0].getsockname()[1]
        self._substitutions = [
            (b"@PORT@", str(self.ports["plain"]).encode()),
            (b"@GOOD@", str(self.ports[CertKind.GOOD.value]).encode()),
            (b"@DROP@", str(self.ports["drop"]).encode()),
            (b"@SELF@", str(self.ports[CertKind.SELF_SIGNED.value]).encode()),
        ]

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # Clients going away at any point is the normal end of most cases here.
            with contextlib.suppress(
                OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError, asyncio.CancelledError,
            ):
                await self._converse(reader, writer)
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # one pass per request; bounded by HOLD_LIMIT per wait and client closes
            async with asyncio.timeout(HOLD_LIMIT):
                request = await _read_request(reader)
            if request is None:
                return
            route = self.routes.get(request.target)
            answer = NOT_FOUND if route is None else route(request)
            for piece in answer.pieces:
                for marker, value in self._substitutions:
                    if marker in piece:
                        piece = piece.replace(marker, value)
                writer.write(piece)
                await writer.drain()
            if answer.then is Then.KEEP:
                continue
            if answer.then is Then.STALL:
                # Read (and drop) until the client closes: its close ends the stall.
                async with asyncio.timeout(HOLD_LIMIT):
                    while await reader.read(65536):
                        pass
            return


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request (head and Content-Length body), or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.append((name.strip().lower(), value.strip()))
    length = int(dict(headers).get("content-length", "0"))
    if not 0 <= length <= MAX_REQUEST_BODY:
        raise ValueError("request body too large for this test server")
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, tuple(headers), body)
