"""A local HTTP/1.1 target with predictable answers: the demo's, the tests' and the bench's.

One server serves ``--demo`` (demo.py), the end-to-end tests (tests/targets.py runs it on a
thread) and the benchmarks' delay server (bench/delay_server.py runs it in a process of its
own).  Every answer closes its connection, as a fresh-connection probe expects; a body or
pipelined bytes after the request are ignored.  The paths:

| path                   | answer                                                          |
|------------------------|-----------------------------------------------------------------|
| ``/``, ``/healthy``, ``/ok`` | 200 at once                                               |
| ``/error``             | 500 at once                                                     |
| ``/slow?ms=N``         | 200 after N ms; without ``ms`` after ``slow_ms``                |
| ``/d/<ms>/<anything>`` | 200 after ``<ms>`` ms (the bench: one path per endpoint)        |
| ``/hang``              | never answers; ends when the client leaves or the server stops  |
| ``/flap``              | 200 and 500 alternately, 200 first                              |
| ``POST /body``         | 200 for the JSON ``{"foo":"bar"}``, else 422                    |
| ``/switch``            | ``switch_status`` (200 unless someone changes it)               |
| ``/bounce``            | 302 to itself, query string included: a redirect loop          |
| ``/bounce-ftp``        | 302 to an ftp:// URL carrying the query string                  |
| anything else          | 404, or 200 after ``default_ms`` when that is set               |

The query string is ignored except for ``ms``, so ``/ok?id=7`` gives distinct URLs that behave
alike.  Delays are timed from the moment the request head arrived, on ``time.perf_counter``,
and an answer never leaves early: uvloop's timers count whole milliseconds from a cached clock
and may fire up to 1 ms before their deadline, so on uvloop each is padded by 1 ms and re-armed
if it still fires early.  A held answer (``/slow``, ``/d/``, ``/hang``) is dropped when the
client leaves.  With a :class:`Recorder`, the server keeps each request's wall-clock arrival
and path and how late each delayed answer left (bounded); with ``seen_kept``, the last requests
with their headers, so a test can check what reached the wire.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
# Over the default 0.5 s latency threshold (degraded) and well under the timeouts used with it.
SLOW_MS = 600
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_DELAY_MS = 600_000
# Bounded bookkeeping: a long soak must not turn the target into the memory hog.
MAX_RECORDS = 2_000_000
# See the module docstring: uvloop timers may fire up to a millisecond early.
UVLOOP_TIMER_PAD = 0.001


@dataclass(frozen=True, slots=True)
class Request:
    """One request as it reached the server."""

    method: str
    target: str  # path and query, as on the request line
    path: str
    query: str
    head: bytes  # request line and headers, byte for byte
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Names as sent; the last of a repeated header wins."""
        headers: dict[str, str] = {}
        for line in self.head.decode("latin-1").rstrip("\r\n").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        return headers


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer, and when: ``delay`` seconds after the head arrived, never (None)."""

    status: int
    delay: float | None = 0.0
    body: bytes | None = None  # None: {"status": N}
    content_type: str = "application/json"
    location: str | None = None


Route = Callable[[Request], Reply]


@dataclass(slots=True)
class Recorder:
    """Arrivals (wall clock, path) of every request and lateness of every delayed answer."""

    lateness: list[float] = field(default_factory=list)
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    first_arrival: float | None = None
    served: int = 0

    def reset(self) -> None:
        self.lateness.clear()
        self.arrivals.clear()
        self.first_arrival = None
        self.served = 0

    def stats(self) -> dict[str, Any]:
        values = sorted(self.lateness)

        def pct(q: float) -> float:
            if not values:
                return 0.0
            return values[min(len(values) - 1, int(q * len(values)))]

        return {
            "served": self.served,
            "recorded": len(values),
            "lateness_p50_ms": pct(0.50) * 1000,
            "lateness_p99_ms": pct(0.99) * 1000,
            "lateness_max_ms": (values[-1] if values else 0.0) * 1000,
            "first_arrival": self.first_arrival,
        }


class TargetServer:
    """The server on the running loop: ``await start()``, then ``port``/``ports``, ``stop()``.

    ``routes`` replaces the table above (the bench's control port answers its own paths);
    ``default_ms`` answers unknown paths 200 after that long instead of 404.
    """

    def __init__(self, *, slow_ms: float = SLOW_MS, default_ms: float | None = None,
                 seen_kept: int = 0, recorder: Recorder | None = None,
                 routes: Mapping[str, Route] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.slow_ms = slow_ms
        self.default_ms = default_ms
        self.recorder = recorder
        self.switch_status = 200
        self.seen: collections.deque[Request] = collections.deque(maxlen=seen_kept)
        self.in_flight = 0  # requests read and not yet answered (or abandoned)
        self.routes: dict[str, Route] = dict(self._table() if routes is None else routes)
        self.ports: list[int] = []
        self._tls = tls
        self._flaps = 0
        self._pad = 0.0
        self._servers: list[asyncio.Server] = []
        self._open: set[_Connection] = set()

    @property
    def port(self) -> int:
        return self.ports[0]

    def url(self, path: str = "/ok", *, host: str = HOST, index: int = 0) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.ports[index]}{path}"

    async def start(self, host: str = HOST, *, ports: int = 1) -> None:
        loop = asyncio.get_running_loop()
        self._pad = UVLOOP_TIMER_PAD if type(loop).__module__.startswith("uvloop") else 0.0
        for _ in range(ports):
            # A large backlog: a cycle opens up to thousands of connections within a second.
            server = await loop.create_server(lambda: _Connection(self), host, 0,
                                              backlog=8192, ssl=self._tls)
            self._servers.append(server)
            self.ports.append(int(server.sockets[0].getsockname()[1]))

    async def stop(self) -> None:
        """Stop listening and drop every connection, answered or not, at once."""
        for server in self._servers:
            server.close()
        for connection in list(self._open):
            connection.abort()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # -- routing ---------------------------------------------------------------------------

    def reply(self, request: Request) -> Reply:
        route = self.routes.get(request.path)
        if route is not None:
            return route(request)
        if request.path.startswith("/d/"):
            part = request.path[3:].split("/", 1)[0]
            with contextlib.suppress(ValueError):
                return Reply(200, _clamp_ms(float(part)) / 1000)
        if self.default_ms is not None:
            return Reply(200, self.default_ms / 1000)
        return Reply(404)

    def _table(self) -> dict[str, Route]:
        def ok(_: Request) -> Reply:
            return Reply(200)

        def slow(request: Request) -> Reply:
            values = parse_qs(request.query).get("ms")
            ms = float(values[0]) if values else self.slow_ms
            return Reply(200, _clamp_ms(ms) / 1000)

        def flap(_: Request) -> Reply:
            self._flaps += 1
            return Reply(200 if self._flaps % 2 else 500)

        def body(request: Request) -> Reply:
            if request.method != "POST":
                return Reply(404)
            try:
                return Reply(200 if json.loads(request.body) == {"foo": "bar"} else 422)
            except ValueError:
                return Reply(422)

        return {
            "/": ok, "/healthy": ok, "/ok": ok,
            "/error": lambda _: Reply(500),
            "/slow": slow,
            "/hang": lambda _: Reply(200, None),
            "/flap": flap,
            "/body": body,
            "/switch": lambda _: Reply(self.switch_status),
            "/bounce": lambda request: Reply(302, location=request.target),
            "/bounce-ftp": lambda request: Reply(302, location=f"ftp://{HOST}/?{request.query}"),
        }


def _clamp_ms(ms: float) -> float:
    return min(max(ms, 0.0), MAX_DELAY_MS)


def render(request: Request, reply: Reply) -> bytes:
    """The response bytes; no body for HEAD."""
    payload = reply.body if reply.body is not None else f'{{"status": {reply.status}}}\n'.encode()
    if request.method == "HEAD":
        payload = b""
    try:
        phrase = http.HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Status"
    location = f"Location: {reply.location}\r\n" if reply.location is not None else ""
    return (
        f"HTTP/1.1 {reply.status} {phrase}\r\nContent-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(payload)}\r\n{location}Connection: close\r\n\r\n".encode()
        + payload
    )


class _Connection(asyncio.Protocol):
    """One connection: read the head (and a Content-Length body), answer when due, close."""

    def __init__(self, server: TargetServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.arrival = 0.0
        self.head_end = -1
        self.body_length = 0
        self.timer: asyncio.TimerHandle | None = None
        self.request: Request | None = None
        self.holding = False  # counted in server.in_flight
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.server._open.add(self)

    def data_received(self, data: bytes) -> None:
        if self.done or self.request is not None:
            return  # bytes after the request: ignored
        if self.head_end < 0:
            # The clock first: everything below is bookkeeping that must not count.
            # perf_counter, not loop.time(): uvloop's loop clock is cached, whole milliseconds.
            self.arrival = time.perf_counter()
        self.buffer += data
        if self.head_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.abort()
                return
            self.head_end = end + 4
            self.body_length = _content_length(self.buffer[:self.head_end])
            if self.head_end > MAX_HEAD_BYTES or self.body_length > MAX_BODY_BYTES:
                self.abort()
                return
        if len(self.buffer) - self.head_end < self.body_length:
            return
        self._dispatch()

    def _dispatch(self) -> None:
        server = self.server
        head = self.buffer[:self.head_end]
        body = self.buffer[self.head_end:self.head_end + self.body_length]
        self.buffer = b""
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        method = parts[0]
        target = parts[1] if len(parts) >= 2 else "/"
        url = urlsplit(target)
        request = Request(method, target, url.path, url.query, head, body)
        self.request = request
        recorder = server.recorder
        if recorder is not None:
            recorder.served += 1
            if len(recorder.arrivals) < MAX_RECORDS:
                wall = time.time()
                if recorder.first_arrival is None:
                    recorder.first_arrival = wall
                recorder.arrivals.append((wall, target))
        if server.seen.maxlen:
            server.seen.append(request)
        reply = server.reply(request)
        # Rendered now, so the timer's callback only writes: its lateness is the answer's.
        answer = render(request, reply)
        server.in_flight += 1
        self.holding = True
        if reply.delay is None:
            return  # /hang: until the client leaves or the server stops
        if reply.delay <= 0:
            self._answer(answer, None)
            return
        self._arm(answer, self.arrival + reply.delay)

    def _arm(self, answer: bytes, due: float) -> None:
        wait = due - time.perf_counter() + self.server._pad
        self.timer = asyncio.get_running_loop().call_later(max(wait, 0.0), self._answer,
                                                           answer, due)

    def _answer(self, answer: bytes, due: float | None) -> None:
        if due is not None:
            late = time.perf_counter() - due
            if late < 0:  # a timer rounded to whole milliseconds fired early: never early
                self._arm(answer, due)
                return
            recorder = self.server.recorder
            if recorder is not None and len(recorder.lateness) < MAX_RECORDS:
                recorder.lateness.append(late)
        self._release()
        self.done = True
        if self.transport is not None:
            self.transport.write(answer)
            self.transport.close()

    def _release(self) -> None:
        if self.holding:
            self.holding = False
            self.server.in_flight -= 1

    def abort(self) -> None:
        self.done = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None and not self.timer.cancelled():
            self.timer.cancel()
        self._release()
        self.done = True
        self.server._open.discard(self)


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    value = head[at + 17:head.find(b"\r\n", at + 2)]
    try:
        return max(int(value.strip()), 0)
    except ValueError:
        return 0
