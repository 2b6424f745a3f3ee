"""A misbehaving HTTP target for tests and benchmarks: one path per way a server can fail.

The server speaks HTTP/1.1 over raw asyncio streams, parsing requests itself so that
it can break the protocol on purpose. It listens on 127.0.0.1 only, on ports the
kernel picks. Paths (query parameters in brackets are optional):

| path                      | behaviour                                                        |
|---------------------------|------------------------------------------------------------------|
| `/ok`, `/`                | 200, small body, Content-Length                                  |
| `/error`                  | 500 (with `/` and `/body`, what the exercise's sample.yaml uses) |
| `/slow?ms=N[&part=body]`  | 200 no earlier than N ms after the request was read (measured    |
|                           | on the monotonic clock, reported in `X-Slept-Ms`); `part=body`   |
|                           | sends the headers at once and holds back only the body           |
| `/status?code=N`          | status N (200-599)                                               |
| `/hang`                   | reads the request, never answers; ends when the client leaves    |
|                           | or the server stops                                              |
| `/drip[?ms=N]`            | status line and headers (Content-Length: 100), then one body     |
|                           | byte every N ms (default 1000), on a drift-free schedule         |
| `/huge[?bytes=N]`         | 200 with a 256 MiB body (or N bytes) streamed from one reused    |
|                           | chunk; stops when the client goes                                |
| `/reset`                  | reads the request, then RST (SO_LINGER 0 and close)              |
| `/garbage`                | `SSH-2.0-OpenSSH_9.0\\r\\n` and random bytes, then close           |
| `/bigheader[?bytes=N]`    | a 256 KiB (or N bytes) response header block, then a body        |
| `/redirect-loop`          | 302 to itself                                                    |
| `/redirect?n=K`           | 302 chain of K hops ending at `/ok` (`n=0` answers like `/ok`)   |
| `/redirect-to?location=U` | a redirect to U, sent as the Location value unchanged (relative  |
| `[&code=N]`               | or absolute, any host); status N (300-399, default 302), empty   |
|                           | body                                                             |
| `/half-status`            | `HTTP/1.1 20`, then close                                        |
| `/http10`                 | `HTTP/1.0 200 OK`, no Content-Length, body, then close           |
| `/body`                   | 200 if the request body parses as JSON equal to {"foo":"bar"},   |
|                           | else 422 (the exercise's endpoint)                               |
| `/echo`                   | 200, JSON: method, target, version, headers as received (list of |
|                           | [name, value], latin-1 so `.encode("latin-1")` gives the exact   |
|                           | bytes), body and whole request head as base64                    |
| anything else             | 404                                                              |

`hang_accept_url()` is a separate listener that accepts and never answers anything, not
even a TLS ClientHello, so it also serves as a TLS-handshake hang. (On the main listener
`/hang-accept` behaves like `/hang`: the request has been read by then.) It discards what
arrives so that a client hanging up is seen and counted; to the client that is the same
as not reading, since the kernel acknowledges the bytes either way.

With a `CertSet`, one TLS listener per `CertKind` serves the same paths over TLS. (Python's
ssl module reports `/reset` under TLS as an EOF, not ConnectionResetError; the TCP RST is real.)
Keep-alive works for the well-behaved answers (HTTP/1.1 unless `Connection: close`).
While `/slow`, `/drip` and `/hang` wait, they watch the client: a client that closes is
counted gone at once, so `connections_open` shows promptly whether a prober cleaned up.

`with server.recording() as log:` keeps every request read while the block is open, on any
listener and path, as a `Request` (method, target, headers as (name, value) bytes in received
order and case, body, raw head), in arrival order; `log.requests` reads them from any thread.
A request is logged before it is answered, so once a client has its answer the log holds the
request. `127.0.0.1` and `localhost` reach the same listener: two origins on one port.

Use it inside an event loop (`async with AdversarialServer() as server:`), or from
synchronous code with `serve_in_thread()`, which runs it on its own loop in a thread.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import dataclasses
import errno
import http
import json
import random
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from .certs import CertKind, CertSet

__all__ = [
    "HEADER_LIMIT",
    "HUGE_BODY_BYTES",
    "REQUEST_BODY_LIMIT",
    "UNRESOLVABLE_HOST",
    "AdversarialServer",
    "Request",
    "RequestLog",
    "ServerStats",
    "refused_port",
    "serve_in_thread",
]

UNRESOLVABLE_HOST: Final = "unresolvable.invalid"
"""A host name that never resolves: RFC 6761 reserves `.invalid` for exactly that."""

HEADER_LIMIT: Final = 64 * 1024
"""Longest request head (request line and headers) read; longer gets 431."""

REQUEST_BODY_LIMIT: Final = 16 * 1024 * 1024
"""Largest request body read; larger gets 413."""

HUGE_BODY_BYTES: Final = 256 * 1024 * 1024
BIG_HEADER_BYTES: Final = 256 * 1024
DRIP_BODY_BYTES: Final = 100
GARBAGE_PREFIX: Final = b"SSH-2.0-OpenSSH_9.0\r\n"

_HOST: Final = "127.0.0.1"
_CHUNK_BYTES: Final = 256 * 1024
# How long a graceful close may wait for the peer (TLS close_notify) before aborting.
_CLOSE_GRACE_SECONDS: Final = 2.0
_MAX_SLOW_MS: Final = 600_000
_MAX_REDIRECTS: Final = 1000
_REDIRECT_CODES: Final = (300, 399)
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_EXPECTED_BODY: Final = {"foo": "bar"}

# The ways a client legitimately goes away mid-conversation; not server bugs.
# OSError covers resets, broken pipes, TLS alerts (ssl.SSLError) and timeouts.
_CLIENT_GONE: Final = (OSError, asyncio.IncompleteReadError)


class _BadRequest(Exception):
    """The request cannot be served; answer `status` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request, with its head kept byte for byte."""

    method: str
    target: str
    path: str
    query: Mapping[str, str]
    version: str
    headers: tuple[tuple[bytes, bytes], ...]
    head: bytes
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header(b"connection") or b"").lower()
        return self.version == "HTTP/1.1" and b"close" not in connection

    def int_param(self, name: str, *, default: int | None, low: int, high: int) -> int:
        """Query parameter `name` as an int in [low, high]; 400 if absent, bad or out of range."""
        raw = self.query.get(name)
        if raw is None:
            if default is None:
                raise _BadRequest(400, f"query parameter {name} is required")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _BadRequest(400, f"query parameter {name} must be an integer") from None
        if not low <= value <= high:
            raise _BadRequest(400, f"query parameter {name} must be in [{low}, {high}]")
        return value


@dataclass(frozen=True, slots=True)
class ServerStats:
    """A snapshot of what the server has seen, safe to read from any thread."""

    connections_accepted: int
    connections_open: int
    accepted_by_listener: Mapping[str, int]
    """Keys: "http", "hang-accept", and "tls-<kind>" for each TLS listener."""
    requests: Mapping[str, int]
    """Requests read, by path (query excluded); unknown paths are counted too."""
    errors: tuple[str, ...]
    """Unexpected exceptions in handlers (server bugs); should stay empty."""


class RequestLog:
    """The requests read while a `recording()` block was open, in arrival order.

    Appended to on the server's loop, read from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Request] = []

    def _add(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> tuple[Request, ...]:
        """A snapshot of the requests logged so far."""
        with self._lock:
            return tuple(self._requests)

    def __len__(self) -> int:
        with self._lock:
            return len(self._requests)


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    listener: str


@dataclass(slots=True)
class _Counts:
    accepted: int = 0
    open: int = 0
    by_listener: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


_Behaviour = Callable[[_Conn, Request], Awaitable[bool]]
"""Serves one request; returns whether the connection may carry another one."""


class AdversarialServer:
    """The misbehaving server; see the module docstring for its paths."""

    def __init__(self, *, certs: CertSet | None = None, seed: int = 0) -> None:
        self._certs = certs
        self._random = random.Random(seed)
        self._chunk = b"x" * _CHUNK_BYTES
        self._listeners: dict[str, asyncio.Server] = {}
        self._ports: dict[str, int] = {}
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stop_event: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._stopping = False
        # Counts are written on the server's loop and read from test threads.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._counts = _Counts()
        self._logs: list[RequestLog] = []  # guarded by _lock
        self._behaviours: dict[str, _Behaviour] = {
            "/": self._ok,
            "/ok": self._ok,
            "/error": self._error,
            "/slow": self._slow,
            "/status": self._status,
            "/hang": self._hang,
            "/hang-accept": self._hang,
            "/drip": self._drip,
            "/huge": self._huge,
            "/reset": self._reset,
            "/garbage": self._garbage,
            "/bigheader": self._bigheader,
            "/redirect-loop": self._redirect_loop,
            "/redirect": self._redirect,
            "/redirect-to": self._redirect_to,
            "/half-status": self._half_status,
            "/http10": self._http10,
            "/body": self._body,
            "/echo": self._echo,
        }

    # Life cycle

    async def start(self) -> None:
        """Open the listeners: plain HTTP, hang-accept, and one per TLS certificate kind."""
        self._stop_event = asyncio.Event()
        self._changed = asyncio.Event()
        await self._listen("http")
        await self._listen("hang-accept")
        if self._certs is not None:
            for kind, leaf in self._certs.leaves.items():
                name = _tls_listener(kind)
                self._tls_contexts[name] = leaf.server_context()
                await self._listen(name)

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop listening, cancel every handler and close every connection, within `timeout`."""
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        if self._stop_event is not None:
            self._stop_event.set()
        for server in self._listeners.values():
            server.close()
        # Connections accepted just before close() get their handler task a few loop
        # iterations later; let those start (they see _stopping and abort) so none is missed.
        for _ in range(3):
            await asyncio.sleep(0)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for writer in list(self._writers):
            writer.transport.abort()
        for server in self._listeners.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    server.wait_closed(), timeout=max(0.0, deadline - time.monotonic())
                )

    async def __aenter__(self) -> AdversarialServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # Addresses

    @property
    def port(self) -> int:
        return self._ports["http"]

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        return f"http://{_HOST}:{self.port}"

    def tls_port(self, kind: CertKind) -> int:
        return self._ports[_tls_listener(kind)]

    def url(self, path: str = "/", *, tls: CertKind | None = None, host: str = _HOST) -> str:
        """URL of `path` (with any query) on the plain listener or the `tls` one.

        `host` may be "localhost" to make a TLS client check the name instead of the IP.
        """
        if tls is None:
            return f"http://{host}:{self.port}{path}"
        return f"https://{host}:{self.tls_port(tls)}{path}"

    @property
    def hang_accept_port(self) -> int:
        return self._ports["hang-accept"]

    def hang_accept_url(self, *, tls: bool = False) -> str:
        """URL on the listener that accepts and never answers (https: a handshake that hangs)."""
        scheme = "https" if tls else "http"
        return f"{scheme}://{_HOST}:{self.hang_accept_port}/hang-accept"

    # Counts

    def stats(self) -> ServerStats:
        with self._lock:
            return self._snapshot()

    @property
    def connections_open(self) -> int:
        with self._lock:
            return self._counts.open

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._counts.accepted

    def requests(self, path: str) -> int:
        """How many requests for `path` (no query) were read so far."""
        with self._lock:
            return self._counts.requests[path]

    def wait_until(self, predicate: Callable[[ServerStats], bool], timeout: float) -> bool:
        """Block until `predicate(stats)` holds or `timeout` passes; from another thread only.

        Calling it on the server's own loop would block that loop: use `wait_until_async`.
        """
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._snapshot()), timeout)

    async def wait_until_async(
        self, predicate: Callable[[ServerStats], bool], timeout: float
    ) -> bool:
        """`wait_until` for a caller running on the server's event loop."""
        assert self._changed is not None, "server not started"
        deadline = time.monotonic() + timeout
        while not predicate(self.stats()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    @contextlib.contextmanager
    def recording(self) -> Iterator[RequestLog]:
        """Log every request read until the block ends (usable from any thread)."""
        log = RequestLog()
        with self._lock:
            self._logs.append(log)
        try:
            yield log
        finally:
            with self._lock:
                self._logs.remove(log)

    def _snapshot(self) -> ServerStats:
        counts = self._counts
        return ServerStats(
            connections_accepted=counts.accepted,
            connections_open=counts.open,
            accepted_by_listener=dict(counts.by_listener),
            requests=dict(counts.requests),
            errors=tuple(counts.errors),
        )

    def _update(self, change: Callable[[_Counts], None]) -> None:
        with self._cond:
            change(self._counts)
            self._cond.notify_all()
        if self._changed is not None:
            self._changed.set()

    def _received(self, request: Request) -> None:
        """Log `request` to the open recordings, then count it (so a count implies the log)."""
        with self._lock:
            logs = tuple(self._logs)
        for log in logs:
            log._add(request)
        self._update(lambda counts: counts.requests.update((request.path,)))

    # Connections

    async def _listen(self, name: str) -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # stop() cancels handlers; ending the task normally rather than cancelled keeps
            # asyncio 3.11's done-callback (it calls task.exception()) from logging an error.
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection(_Conn(reader, writer, name))

        server = await asyncio.start_server(on_connect, _HOST, 0, limit=HEADER_LIMIT)
        self._listeners[name] = server
        self._ports[name] = server.sockets[0].getsockname()[1]

    async def _connection(self, conn: _Conn) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(conn.writer)

        def opened(counts: _Counts) -> None:
            counts.accepted += 1
            counts.open += 1
            counts.by_listener[conn.listener] += 1

        self._update(opened)
        graceful = True
        try:
            if self._stopping:
                graceful = False
                return
            await self._converse(conn)
        except asyncio.CancelledError:
            graceful = False
            raise
        except _CLIENT_GONE:
            graceful = False
        except Exception as exc:  # a server bug: keep it for the test to see, not in a log
            graceful = False
            message = f"{type(exc).__name__}: {exc}"
            self._update(lambda counts: counts.errors.append(message))
        finally:
            try:
                if graceful and not conn.writer.is_closing():
                    conn.writer.close()
                    await asyncio.wait_for(conn.writer.wait_closed(), _CLOSE_GRACE_SECONDS)
            except _CLIENT_GONE:
                pass
            finally:
                # Python 3.11's SSL transport raises AttributeError when aborted after close.
                with contextlib.suppress(AttributeError):
                    conn.writer.transport.abort()
                self._writers.discard(conn.writer)
                self._tasks.discard(task)

                def closed(counts: _Counts) -> None:
                    counts.open -= 1

                self._update(closed)

    async def _converse(self, conn: _Conn) -> None:
        if conn.listener == "hang-accept":
            await _discard_until_eof(conn.reader)
            return
        context = self._tls_contexts.get(conn.listener)
        if context is not None:
            await conn.writer.start_tls(context)
        while True:
            try:
                request = await _read_request(conn.reader)
            except _BadRequest as exc:
                await _send(conn.writer, _error_response(exc.status, str(exc)))
                return
            if request is None:
                return
            self._received(request)
            behaviour = self._behaviours.get(request.path, self._not_found)
            try:
                keep_alive = await behaviour(conn, request)
            except _BadRequest as exc:
                await _send(conn.writer, _error_response(exc.status, str(exc)))
                return
            if not keep_alive:
                return

    # Behaviours

    async def _ok(self, conn: _Conn, request: Request) -> bool:
        return await _respond(conn, request, 200, b"ok\n")

    async def _error(self, conn: _Conn, request: Request) -> bool:
        return await _respond(conn, request, 500, b"error\n")

    async def _not_found(self, conn: _Conn, request: Request) -> bool:
        return await _respond(conn, request, 404, b"no such behaviour\n")

    async def _slow(self, conn: _Conn, request: Request) -> bool:
        delay_ms = request.int_param("ms", default=None, low=0, high=_MAX_SLOW_MS)
        part = request.query.get("part", "head")
        if part == "head":
            slept = await _wait(conn.reader, delay_ms / 1000)
            extra = (("X-Slept-Ms", f"{slept * 1000:.3f}"),)
            return await _respond(conn, request, 200, b"slow\n", extra=extra)
        if part != "body":
            raise _BadRequest(400, "query parameter part must be head or body")
        body = b"slow\n"
        keep_alive = request.keep_alive
        await _send(conn.writer, _head(200, _standard_headers(len(body), keep_alive=keep_alive)))
        await _wait(conn.reader, delay_ms / 1000)
        if request.method != "HEAD":
            await _send(conn.writer, body)
        return keep_alive

    async def _status(self, conn: _Conn, request: Request) -> bool:
        code = request.int_param("code", default=None, low=200, high=599)
        return await _respond(conn, request, code, f"status {code}\n".encode())

    async def _hang(self, conn: _Conn, request: Request) -> bool:
        await _discard_until_eof(conn.reader)
        return False

    async def _drip(self, conn: _Conn, request: Request) -> bool:
        interval = request.int_param("ms", default=1000, low=1, high=60_000) / 1000
        headers = _standard_headers(DRIP_BODY_BYTES, keep_alive=False)
        await _send(conn.writer, _head(200, headers))
        if request.method == "HEAD":
            return False
        start = time.monotonic()
        for sent in range(1, DRIP_BODY_BYTES + 1):
            # Scheduled from the start, so write delays do not add up into drift.
            await _wait(conn.reader, start + sent * interval - time.monotonic())
            await _send(conn.writer, b"x")
        return False

    async def _huge(self, conn: _Conn, request: Request) -> bool:
        size = request.int_param("bytes", default=HUGE_BODY_BYTES, low=0, high=2**40)
        await _send(conn.writer, _head(200, _standard_headers(size, keep_alive=False)))
        if request.method == "HEAD":
            return False
        chunk = memoryview(self._chunk)
        remaining = size
        while remaining > 0:
            piece = chunk[: min(remaining, len(chunk))]
            await _send(conn.writer, piece)
            remaining -= len(piece)
        return False

    async def _reset(self, conn: _Conn, request: Request) -> bool:
        sock = conn.writer.get_extra_info("socket")
        # Linger on with timeout 0: close() discards the send buffer and sends RST, not FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()
        return False

    async def _garbage(self, conn: _Conn, request: Request) -> bool:
        await _send(conn.writer, GARBAGE_PREFIX + self._random.randbytes(512))
        return False

    async def _bigheader(self, conn: _Conn, request: Request) -> bool:
        size = request.int_param("bytes", default=BIG_HEADER_BYTES, low=0, high=64 * 1024 * 1024)
        body = b"big header\n"
        filler: list[tuple[str, str]] = []
        line_value = "a" * 1000
        # Each filler line is "X-Filler-NNNNNN: " (17) + value + CRLF (2).
        for index in range(-(-size // (len(line_value) + 19))):
            filler.append((f"X-Filler-{index:06d}", line_value))
        headers = (*_standard_headers(len(body), keep_alive=False), *filler)
        await _send(conn.writer, _head(200, headers) + body)
        return False

    async def _redirect_loop(self, conn: _Conn, request: Request) -> bool:
        return await _respond(conn, request, 302, b"", extra=(("Location", "/redirect-loop"),))

    async def _redirect(self, conn: _Conn, request: Request) -> bool:
        hops = request.int_param("n", default=1, low=0, high=_MAX_REDIRECTS)
        if hops == 0:
            return await self._ok(conn, request)
        location = "/ok" if hops == 1 else f"/redirect?n={hops - 1}"
        return await _respond(conn, request, 302, b"", extra=(("Location", location),))

    async def _redirect_to(self, conn: _Conn, request: Request) -> bool:
        low, high = _REDIRECT_CODES
        code = request.int_param("code", default=302, low=low, high=high)
        location = request.query.get("location")
        if not location:
            raise _BadRequest(400, "query parameter location is required")
        if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or ord(char) > 0xFF
               for char in location):
            raise _BadRequest(400, "query parameter location must be printable latin-1")
        return await _respond(conn, request, code, b"", extra=(("Location", location),))

    async def _half_status(self, conn: _Conn, request: Request) -> bool:
        await _send(conn.writer, b"HTTP/1.1 20")
        return False

    async def _http10(self, conn: _Conn, request: Request) -> bool:
        head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        await _send(conn.writer, head + b"http/1.0 body, ended by close\n")
        return False

    async def _body(self, conn: _Conn, request: Request) -> bool:
        try:
            matches = bool(json.loads(request.body) == _EXPECTED_BODY)
        except ValueError:
            matches = False
        if matches:
            return await _respond(conn, request, 200, b"ok\n")
        return await _respond(conn, request, 422, b'body must be {"foo":"bar"}\n')

    async def _echo(self, conn: _Conn, request: Request) -> bool:
        document = {
            "method": request.method,
            "target": request.target,
            "version": request.version,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers],
            "body_base64": base64.b64encode(request.body).decode("ascii"),
            "head_base64": base64.b64encode(request.head).decode("ascii"),
        }
        body = json.dumps(document).encode()
        return await _respond(conn, request, 200, body, content_type="application/json")


def _tls_listener(kind: CertKind) -> str:
    return f"tls-{kind.value}"


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request; None when the client closed cleanly between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, f"request head longer than {HEADER_LIMIT} bytes") from None
    request_line, _, header_block = head[:-4].partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = (part.decode("latin-1") for part in parts)
    headers: list[tuple[bytes, bytes]] = []
    for line in header_block.split(b"\r\n") if header_block else ():
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        headers.append((name, value.strip(b" \t")))
    split = urlsplit(target)
    request = Request(
        method=method,
        target=target,
        path=split.path or "/",
        query=dict(parse_qsl(split.query)),
        version=version,
        headers=tuple(headers),
        head=head,
        body=b"",
    )
    return dataclasses.replace(request, body=await _read_body(reader, request))


async def _read_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    transfer_encoding = request.header(b"transfer-encoding")
    if transfer_encoding is not None and b"chunked" in transfer_encoding.lower():
        return await _read_chunked(reader)
    length_header = request.header(b"content-length")
    if length_header is None:
        return b""
    try:
        length = int(length_header)
    except ValueError:
        raise _BadRequest(400, "invalid Content-Length") from None
    if length < 0:
        raise _BadRequest(400, "invalid Content-Length")
    if length > REQUEST_BODY_LIMIT:
        raise _BadRequest(413, f"request body longer than {REQUEST_BODY_LIMIT} bytes")
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while True:
        try:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except (asyncio.LimitOverrunError, ValueError):
            raise _BadRequest(400, "malformed chunk size") from None
        if size == 0:
            break
        total += size
        if total > REQUEST_BODY_LIMIT:
            raise _BadRequest(413, f"request body longer than {REQUEST_BODY_LIMIT} bytes")
        pieces.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest(400, "chunk not followed by CRLF")
    # Trailers are read and dropped, up to the empty line that ends the message.
    for _ in range(100):
        try:
            if await reader.readuntil(b"\r\n") == b"\r\n":
                return b"".join(pieces)
        except asyncio.LimitOverrunError:
            break
    raise _BadRequest(400, "malformed chunked trailer")


async def _discard_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _wait(reader: asyncio.StreamReader, seconds: float) -> float:
    """Wait until `seconds` have passed on the monotonic clock; return the time waited.

    Meanwhile the client is watched: if it closes (or half-closes) the connection the
    wait ends with ConnectionResetError, so a connection left by its client is counted
    closed at once rather than at the next write. Bytes arriving meanwhile are dropped.
    A loop timer may fire a little early (uvloop keeps milliseconds), hence the re-check.
    """
    start = time.monotonic()
    deadline = start + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(65536), remaining)
        except TimeoutError:
            continue
        if not data:
            raise ConnectionResetError("the client closed the connection")
    return time.monotonic() - start


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _standard_headers(
    length: int | None,
    *,
    keep_alive: bool,
    content_type: str = "text/plain; charset=utf-8",
) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = [("Content-Type", content_type)]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    if not keep_alive:
        headers.append(("Connection", "close"))
    return tuple(headers)


async def _respond(
    conn: _Conn,
    request: Request,
    status: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: tuple[tuple[str, str], ...] = (),
) -> bool:
    """Send one well-formed response; return whether the connection stays open."""
    keep_alive = request.keep_alive
    no_body = status in _NO_BODY_STATUSES
    length = None if no_body else len(body)
    headers = (*_standard_headers(length, keep_alive=keep_alive, content_type=content_type), *extra)
    payload = b"" if no_body or request.method == "HEAD" else body
    await _send(conn.writer, _head(status, headers) + payload)
    return keep_alive


def _error_response(status: int, message: str) -> bytes:
    body = (message + "\n").encode()
    return _head(status, _standard_headers(len(body), keep_alive=False)) + body


async def _send(writer: asyncio.StreamWriter, data: bytes | memoryview) -> None:
    writer.write(data)
    await writer.drain()
    # Writes to a lost connection are dropped without blocking, and a TLS transport
    # learns of the loss only in a later loop iteration: yield, then check, so a
    # streaming loop stops instead of spinning on a dead connection.
    await asyncio.sleep(0)
    if writer.transport.is_closing():
        raise ConnectionResetError("the client closed the connection")


@contextlib.contextmanager
def serve_in_thread(
    *,
    certs: CertSet | None = None,
    seed: int = 0,
    stop_timeout: float = 2.0,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> Iterator[AdversarialServer]:
    """Run an `AdversarialServer` on its own event loop in a daemon thread.

    Yields the started server (`server.base_url`, `server.url(...)`, counts). On exit it
    closes every connection and cancels every handler, in about `stop_timeout` at most.
    `loop_factory` lets a benchmark run the server on uvloop.
    """
    server = AdversarialServer(certs=certs, seed=seed)
    loop = loop_factory()
    thread = threading.Thread(
        target=loop.run_forever, name=f"adversarial-server-{id(server):x}", daemon=True
    )
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server
    finally:
        try:
            stopping = asyncio.run_coroutine_threadsafe(server.stop(stop_timeout), loop)
            stopping.result(timeout=stop_timeout + 1)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=stop_timeout + 1)
            if not thread.is_alive():
                loop.close()


# Bound and never listening: a connection to one of these ports is refused, and while the
# socket stays bound no other program can take the port and turn the refusal into an answer.
_REFUSING: list[socket.socket] = []


def _release_refusing() -> None:
    while _REFUSING:
        _REFUSING.pop().close()


atexit.register(_release_refusing)


def refused_port(attempts: int = 20) -> int:
    """A 127.0.0.1 port where a connection is refused (checked, not assumed).

    The port stays reserved for the rest of this process: its socket is bound, never
    listens, and is closed only at exit.
    """
    for _ in range(attempts):
        reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        reserved.bind((_HOST, 0))
        port: int = reserved.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(1.0)
            result = client.connect_ex((_HOST, port))
        if result == errno.ECONNREFUSED:
            _REFUSING.append(reserved)
            return port
        reserved.close()
    raise RuntimeError(f"no refusing port on {_HOST} found in {attempts} attempts")


@dataclass(frozen=True)
class RemoteServer:
    """Where a server started by `serve_in_process` listens (same URLs as AdversarialServer)."""

    port: int
    hang_accept_port: int
    tls_ports: Mapping[str, int]
    ca_path: str | None = None
    not_after: Mapping[str, float] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{_HOST}:{self.port}"

    def url(self, path: str = "/", *, tls: CertKind | None = None, host: str = _HOST) -> str:
        if tls is None:
            return f"http://{host}:{self.port}{path}"
        return f"https://{host}:{self.tls_ports[tls.value]}{path}"

    def hang_accept_url(self, *, tls: bool = False) -> str:
        scheme = "https" if tls else "http"
        return f"{scheme}://{_HOST}:{self.hang_accept_port}/hang-accept"


@contextlib.contextmanager
def serve_in_process(certs_dir: str | None = None, timeout: float = 10.0,
                     ) -> Iterator[RemoteServer]:
    """Run the server in a child process (``python -m tests.adversarial``).

    For latency-sensitive tests: a server thread would share the test process's GIL, and the
    child runs at a raised priority where allowed (as bench/delay_server.py does), so a busy
    machine delays the prober under test rather than the target it measures.
    With ``certs_dir`` (made by `make_certs`), the TLS listeners are started too.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [sys.executable, "-m", "tests.adversarial"]
    if certs_dir is not None:
        args += ["--certs", certs_dir]
    def raise_priority() -> None:
        with contextlib.suppress(OSError):
            os.nice(-10)

    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root,
                             env=env, text=True, preexec_fn=raise_priority)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        try:
            info = json.loads(line)
        except ValueError:
            raise RuntimeError(f"adversarial server did not start: {line!r}") from None
        yield RemoteServer(port=info["port"], hang_accept_port=info["hang_accept_port"],
                           tls_ports=info["tls_ports"], ca_path=info["ca_path"],
                           not_after=info["not_after"])
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
