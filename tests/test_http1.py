"""HTTP/1.1 response framing, through `Prober.probe`, against a scripted raw server.

Each test starts an asyncio server on 127.0.0.1:0 in its own event loop. The server reads a
request head, then plays a script: byte strings to write and pauses (floats, seconds), and
then closes the connection or keeps it open for the next request. A piece is written only
once the probe's connection has read everything written before it (the `Wire` counts what
`http1.Connection.data_received` gets), so a response split into pieces reaches the parser
split exactly there, and `wire.reads` shows it did.

When the server keeps the connection open after a complete answer, the probe can only end
in time by its framing (Content-Length, chunked, 1xx, HEAD, 204/304): an `up` result with
`reason is None` and a duration under the timeout is the proof; read-until-close would end
in `timeout` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pytest

from availability_exporter import http1
from availability_exporter.model import Endpoint, ProbeResult, State
from availability_exporter.probe import BODY_CAP, Prober
from tests import factories

TIMEOUT = 5.0

Step = bytes | float  # bytes to write, or seconds to pause


@dataclass(frozen=True)
class Reply:
    """The server's answer to one request: its steps, then close or keep the connection.

    ``sync=False`` writes without waiting for the probe to read each piece (to flood it).
    """

    steps: tuple[Step, ...]
    keep_open: bool = False
    sync: bool = True


def pieces(*chunks: bytes, keep_open: bool = True) -> Reply:
    return Reply(chunks, keep_open=keep_open)


def byte_by_byte(data: bytes, *, keep_open: bool = True) -> Reply:
    return Reply(tuple(data[i : i + 1] for i in range(len(data))), keep_open=keep_open)


class Wire:
    """What the probe's connections have read, so the server can wait for each piece."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.reads: list[int] = []
        self.open = 0
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()

    async def consumed(self, limit: float = 2.0) -> None:
        """Until the probe has read all that was sent, or has no connection left to read it."""
        if self._event is None:
            self._event = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while self.received < self.sent and self.open > 0:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                return


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    """Count what each probe connection reads (the parser itself is untouched)."""
    counter = Wire()
    made = http1.Connection.connection_made
    received = http1.Connection.data_received
    lost = http1.Connection.connection_lost

    def connection_made(self: http1.Connection, transport: asyncio.BaseTransport) -> None:
        counter.open += 1
        made(self, transport)

    def data_received(self: http1.Connection, data: bytes) -> None:
        counter.received += len(data)
        counter.reads.append(len(data))
        received(self, data)
        counter.notify()

    def connection_lost(self: http1.Connection, exc: Exception | None) -> None:
        counter.open -= 1
        lost(self, exc)
        counter.notify()

    monkeypatch.setattr(http1.Connection, "connection_made", connection_made)
    monkeypatch.setattr(http1.Connection, "data_received", data_received)
    monkeypatch.setattr(http1.Connection, "connection_lost", connection_lost)
    return counter


class ScriptedServer:
    """Answers the n-th request (over all connections) with ``replies[n]`` (the last repeats)."""

    def __init__(self, wire: Wire, replies: Sequence[Reply]) -> None:
        self.wire = wire
        self.replies = list(replies)
        self.accepts = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepts += 1
        # Cancelled at teardown: ending normally keeps 3.11's done-callback from logging it.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            try:
                while True:
                    try:
                        head = await reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError:
                        return
                    reply = self.replies[min(len(self.requests), len(self.replies) - 1)]
                    self.requests.append(head)
                    await self._play(reply, writer)
                    if not reply.keep_open:
                        return
            finally:
                writer.close()
                self._tasks.discard(task)

    async def _play(self, reply: Reply, writer: asyncio.StreamWriter) -> None:
        for step in reply.steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            if reply.sync:
                await self.wire.consumed()
            if writer.is_closing():
                return
            self.wire.sent += len(step)
            writer.write(step)
            await writer.drain()


def endpoint(url: str, **extra: object) -> Endpoint:
    return factories.endpoint(url, name="http1-test", **{"timeout": TIMEOUT, **extra})


@pytest.fixture(scope="module")
def prober() -> Iterator[Prober]:
    """One shared prober without keep-alive (building one loads the CA bundle, ~60 ms)."""
    yield Prober()


def run_probes(wire: Wire, replies: Sequence[Reply], prober: Prober, probes: int,
               options: Mapping[str, object]) -> tuple[list[ProbeResult], ScriptedServer]:
    """``probes`` sequential probes of one scripted server: the results and the server."""

    async def go() -> tuple[list[ProbeResult], ScriptedServer]:
        async with ScriptedServer(wire, replies) as server:
            ep = endpoint(server.url(), **options)
            try:
                return [await prober.probe(ep) for _ in range(probes)], server
            finally:
                await prober.aclose()

    return asyncio.run(go())


def probe_script(wire: Wire, replies: Sequence[Reply], prober: Prober, probes: int = 1,
                 **options: object) -> tuple[list[ProbeResult], ScriptedServer]:
    return run_probes(wire, replies, prober, probes, options)


def probe_one(wire: Wire, reply: Reply, prober: Prober, **options: object) -> ProbeResult:
    (result,), _ = run_probes(wire, [reply], prober, 1, options)
    return result


def outcome(result: ProbeResult) -> tuple[State, str | None, int]:
    return result.state, result.reason, result.status_code


UP_200 = (State.UP, None, 200)
PROTOCOL_0 = (State.DOWN, "protocol", 0)  # failed before a complete header block
PROTOCOL_200 = (State.DOWN, "protocol", 200)  # the head arrived, the body was malformed


def assert_prompt(result: ProbeResult) -> None:
    """Ended on framing, not on the deadline (the server keeps the connection open)."""
    assert result.reason != "timeout", result
    assert result.duration < TIMEOUT, result


# -- responses that must be read exactly to their end, however they are split ----------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

FRAMED = {
    "content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", UP_200),
    "chunked-ext-trailers": (
        CHUNKED_HEAD
        + b"5;name=value\r\nhello\r\n"
        + b"6 ; a ; b=\"q;x\"\r\n world\r\n"
        + b"0;last\r\nX-Trailer: 1\r\nY-Trailer: two\r\n\r\n",
        UP_200,
    ),
    "chunked-plain": (CHUNKED_HEAD + b"3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n", UP_200),
    "lf-only": (b"HTTP/1.1 200 OK\nContent-Length: 5\nX-A: 1\n\nhello", UP_200),
    "100-continue": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", UP_200,
    ),
    "103-then-204": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n",
        (State.UP, None, 204),
    ),
}


@pytest.mark.parametrize("name", list(FRAMED))
def test_response_byte_by_byte(wire: Wire, prober: Prober, name: str) -> None:
    data, expected = FRAMED[name]
    result = probe_one(wire, byte_by_byte(data), prober)
    assert outcome(result) == expected, result
    assert_prompt(result)
    assert wire.reads == [1] * len(data)  # every byte reached the parser on its own


@pytest.mark.parametrize("name", list(FRAMED))
def test_response_split_at_every_position(wire: Wire, prober: Prober, name: str) -> None:
    data, expected = FRAMED[name]
    splits = range(1, len(data))
    results, _ = probe_script(wire, [pieces(data[:i], data[i:]) for i in splits], prober,
                              len(splits))
    wrong = [(i, data[:i], outcome(r)) for i, r in zip(splits, results, strict=True)
             if outcome(r) != expected or r.duration >= TIMEOUT]
    assert wrong == []
    assert wire.reads == [n for i in splits for n in (i, len(data) - i)]


# -- chunked framing -------------------------------------------------------------------------

@pytest.mark.parametrize("size", [b"a", b"A", b"0a", b"00000A", b"a ", b"A;ext"])
def test_chunk_size_in_either_hex_case(wire: Wire, prober: Prober, size: bytes) -> None:
    data = CHUNKED_HEAD + size + b"\r\n0123456789\r\n0\r\n\r\n"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result
    assert_prompt(result)


def test_chunk_of_255_bytes_in_mixed_case_hex(wire: Wire, prober: Prober) -> None:
    data = CHUNKED_HEAD + b"fF\r\n" + b"x" * 255 + b"\r\n0\r\n\r\n"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result
    assert_prompt(result)


BAD_CHUNK_SIZES = [
    pytest.param(b"zz\r\n", id="zz"),
    pytest.param(b"-1\r\n", id="minus-1"),
    pytest.param(b"+a\r\n", id="plus-a"),
    pytest.param(b"0x10\r\n", id="0x10"),
    pytest.param(b"\r\n", id="empty"),
    pytest.param(b"1 0\r\n", id="inner-space"),
    pytest.param(b";ext\r\n", id="extension-only"),
    pytest.param(b"1" * (http1.MAX_CHUNK_LINE + 10), id="line-too-long"),  # and no CRLF yet
    pytest.param(b"1_0\r\n", id="underscore"),  # int(x, 16) would read it as 16
]


@pytest.mark.parametrize("line", BAD_CHUNK_SIZES)
def test_invalid_chunk_size_is_protocol(wire: Wire, prober: Prober, line: bytes) -> None:
    rest = b"0123456789abcdef\r\n0\r\n\r\n" if line.endswith(b"\r\n") else b""
    result = probe_one(wire, pieces(CHUNKED_HEAD + line + rest), prober)
    assert outcome(result) == PROTOCOL_200, result
    assert result.error


@pytest.mark.parametrize("body", [
    pytest.param(b"5\r\nhelloXY0\r\n\r\n", id="junk-after-data"),
    pytest.param(b"5\r\nhello\n0\r\n\r\n", id="bare-lf-after-data"),
    pytest.param(b"3\r\nhello\r\n0\r\n\r\n", id="data-longer-than-size"),
    pytest.param(b"5\r\nhello0\r\n\r\n", id="no-crlf-after-data"),
])
def test_chunk_data_not_followed_by_crlf_is_protocol(wire: Wire, prober: Prober,
                                                      body: bytes) -> None:
    result = probe_one(wire, pieces(CHUNKED_HEAD, body), prober)
    assert outcome(result) == PROTOCOL_200, result


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="before-first-size"),
    pytest.param(b"5", id="in-size-line"),
    pytest.param(b"5\r\nhel", id="in-chunk-data"),
    pytest.param(b"5\r\nhello", id="before-chunk-crlf"),
    pytest.param(b"5\r\nhello\r\n", id="before-next-size"),
    pytest.param(b"5\r\nhello\r\n0\r\n", id="before-trailer-end"),
    pytest.param(b"5\r\nhello\r\n0\r\nX-T: 1\r\n", id="in-trailers"),
])
def test_connection_closed_mid_chunked_body_is_protocol(wire: Wire, prober: Prober,
                                                        body: bytes) -> None:
    reply = pieces(CHUNKED_HEAD, body, keep_open=False) if body else pieces(
        CHUNKED_HEAD, keep_open=False)
    result = probe_one(wire, reply, prober)
    assert outcome(result) == PROTOCOL_200, result


def test_connection_closed_mid_content_length_body_is_protocol(wire: Wire,
                                                               prober: Prober) -> None:
    reply = pieces(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"abc", keep_open=False)
    result = probe_one(wire, reply, prober)
    assert outcome(result) == PROTOCOL_200, result


# -- interim and body-less answers -------------------------------------------------------------

@pytest.mark.parametrize(("heads", "expected"), [
    pytest.param((b"HTTP/1.1 100 Continue\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), UP_200, id="100-then-200"),
    pytest.param((b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n",
                  b"HTTP/1.1 204 No Content\r\n\r\n"), (State.UP, None, 204), id="103-then-204"),
    pytest.param((b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\n\r\n",
                  b"HTTP/1.1 103 Early Hints\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"),
                 UP_200, id="three-interim-then-200"),
    pytest.param((b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: upgrade\r\n\r\n",), (State.DOWN, "status", 101), id="101"),
])
def test_interim_answers(wire: Wire, prober: Prober, heads: tuple[bytes, ...],
                         expected: tuple[State, str | None, int]) -> None:
    # Each part arrives in its own read, 10 ms apart, and the connection stays open.
    steps: list[Step] = []
    for head in heads:
        steps += [head, 0.01]
    result = probe_one(wire, Reply(tuple(steps), keep_open=True), prober)
    assert outcome(result) == expected, result
    assert_prompt(result)
    assert wire.reads == [len(h) for h in heads]


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
], ids=["content-length", "chunked", "no-framing"])
def test_head_request_reads_no_body(wire: Wire, prober: Prober, head: bytes) -> None:
    (result,), server = probe_script(wire, [pieces(head)], prober, method="HEAD")
    assert outcome(result) == UP_200, result
    assert_prompt(result)
    assert server.requests[0].startswith(b"HEAD / HTTP/1.1\r\n")


@pytest.mark.parametrize(("status", "header", "expected"), [
    (204, b"", (State.UP, None, 204)),
    (204, b"Content-Length: 1000\r\n", (State.UP, None, 204)),
    (204, b"Transfer-Encoding: chunked\r\n", (State.UP, None, 204)),
    (304, b"", (State.DOWN, "status", 304)),
    (304, b"Content-Length: 1000\r\n", (State.DOWN, "status", 304)),
    (304, b"Transfer-Encoding: chunked\r\n", (State.DOWN, "status", 304)),
])
def test_204_and_304_have_no_body(wire: Wire, prober: Prober, status: int, header: bytes,
                                  expected: tuple[State, str | None, int]) -> None:
    head = b"HTTP/1.1 %d X\r\n%s\r\n" % (status, header)
    result = probe_one(wire, pieces(head), prober)
    assert outcome(result) == expected, result
    assert_prompt(result)


# -- Content-Length and Transfer-Encoding ----------------------------------------------------

@pytest.mark.parametrize("headers", [
    pytest.param(b"Content-Length: 5\r\nContent-Length: 6\r\n", id="conflicting"),
    pytest.param(b"Content-Length: 6\r\nContent-Length: 5\r\n", id="conflicting-reversed"),
    pytest.param(b"Content-Length: abc\r\n", id="letters"),
    pytest.param(b"Content-Length: -1\r\n", id="negative"),
    pytest.param(b"Content-Length: +5\r\n", id="plus"),
    pytest.param(b"Content-Length: 0x10\r\n", id="hex"),
    pytest.param(b"Content-Length: 1e3\r\n", id="exponent"),
    pytest.param(b"Content-Length: 5 5\r\n", id="inner-space"),
    pytest.param(b"Content-Length: \r\n", id="empty"),
    pytest.param(b"Content-Length: 5\xc2\xa0\r\n", id="nbsp"),
    pytest.param(b"Content-Length: " + b"1" * 19 + b"\r\n", id="19-digits"),
])
def test_bad_content_length_is_protocol(wire: Wire, prober: Prober, headers: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + headers + b"\r\nhello"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == PROTOCOL_0, result
    assert result.error and "Content-Length" in result.error


@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\ncontent-length:\t 5 \r\n",
    b"Content-Length: 005\r\n",
])
def test_equivalent_content_lengths_are_fine(wire: Wire, prober: Prober,
                                             headers: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + headers + b"\r\nhello"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result
    assert_prompt(result)


@pytest.mark.parametrize("headers", [
    pytest.param(b"Content-Length: 1000\r\nTransfer-Encoding: chunked\r\n", id="cl-first"),
    pytest.param(b"Transfer-Encoding: chunked\r\nContent-Length: 1000\r\n", id="te-first"),
    pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", id="gzip-then-chunked"),
    pytest.param(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                 id="two-fields-chunked-last"),
    pytest.param(b"Transfer-Encoding: Chunked\r\n", id="capitalised"),
])
def test_chunked_overrides_content_length(wire: Wire, prober: Prober, headers: bytes) -> None:
    # Read by Content-Length: 1000 the probe would wait for more bytes; it must end on `0`.
    data = b"HTTP/1.1 200 OK\r\n" + headers + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result
    assert_prompt(result)


PAUSE = 0.2


@pytest.mark.parametrize("head", [
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", id="te-gzip"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
                 id="te-gzip-with-content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                 id="te-chunked-then-gzip"),
    pytest.param(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n", id="http10-no-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", id="http11-no-length"),
])
def test_unframed_body_is_read_until_close(wire: Wire, prober: Prober, head: bytes) -> None:
    reply = Reply((head, b"abc", PAUSE, b"def"), keep_open=False)
    result = probe_one(wire, reply, prober)
    assert outcome(result) == UP_200, result
    # Still reading after the first bytes (and past any Content-Length): ended by the close.
    assert result.duration >= PAUSE
    assert wire.received == len(head) + 6


# -- line endings and malformed heads -----------------------------------------------------------

@pytest.mark.parametrize("data", [
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", id="lf-only"),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", id="lf-status-line"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok", id="one-lf-field"),
    pytest.param(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\r\nok\r\n0\r\n\r\n",
                 id="lf-head-chunked-body"),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 6\n\nab\r\n\r\n", id="lf-head-crlf-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok", id="crlf-then-lf-end"),
])
def test_bare_lf_line_ends_are_accepted(wire: Wire, prober: Prober, data: bytes) -> None:
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result
    assert_prompt(result)


@pytest.mark.parametrize("line", [
    pytest.param(b"Server nginx", id="no-colon"),
    pytest.param(b"Content-Length : 2", id="space-before-colon"),
    pytest.param(b": value", id="empty-name"),
    pytest.param(b"X(A): 1", id="separator-in-name"),
])
def test_malformed_header_line_is_protocol(wire: Wire, prober: Prober, line: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 2\r\n\r\nok"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == PROTOCOL_0, result


def test_obsolete_line_folding_is_unfolded(wire: Wire, prober: Prober) -> None:
    data = b"HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\n\tthree\r\nContent-Length: 2\r\n\r\nok"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result


@pytest.mark.parametrize("status_line", [
    b"HTTP/2.0 200 OK", b"HTTP/2 200 OK", b"HTTP/0.9 200 OK", b"ICY 200 OK", b"http/1.1 200 OK",
    b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 abc OK", b"HTTP/1.1200 OK",
    b"HTTP/1.1  200 OK", b" HTTP/1.1 200 OK", b"SSH-2.0-OpenSSH_9.0",
    b"",
])
def test_bad_status_line_is_protocol(wire: Wire, prober: Prober, status_line: bytes) -> None:
    data = status_line + b"\r\nContent-Length: 2\r\n\r\nok"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == PROTOCOL_0, result


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.0 200 OK",
                                         b"HTTP/1.1 200 \xe2\x9c\x93 fine\tby me"])
def test_unusual_but_valid_status_lines(wire: Wire, prober: Prober, status_line: bytes) -> None:
    data = status_line + b"\r\nContent-Length: 2\r\n\r\nok"
    result = probe_one(wire, pieces(data), prober)
    assert outcome(result) == UP_200, result


@pytest.mark.parametrize("read_request", [True, False], ids=["after-request", "at-once"])
def test_empty_answer_is_protocol(wire: Wire, prober: Prober, read_request: bool) -> None:
    async def go() -> ProbeResult:
        async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                if read_request:
                    await reader.readuntil(b"\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await prober.probe(endpoint(f"http://127.0.0.1:{port}/"))
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(go())
    assert outcome(result) == PROTOCOL_0, result
    assert result.error


def head_of_size(total: int, *, terminated: bool = True) -> bytes:
    """A response head of exactly ``total`` bytes (with its blank line when terminated)."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
    end = b"\r\n" if terminated else b""
    filler = total - len(start) - len(end)
    lines = []
    while filler > 0:
        size = min(filler, 1000)
        if 0 < filler - size < 8:  # keep every filler line at least 8 bytes long
            size -= 8
        lines.append(b"X-F: " + b"a" * (size - 7) + b"\r\n")
        filler -= size
    data = start + b"".join(lines) + end
    assert len(data) == total
    return data


def split_every(data: bytes, size: int) -> tuple[bytes, ...]:
    return tuple(data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("piece", [None, 4096], ids=["whole", "in-4k-pieces"])
@pytest.mark.parametrize(("total", "terminated", "expected"), [
    pytest.param(http1.MAX_HEAD, True, UP_200, id="at-limit"),
    pytest.param(http1.MAX_HEAD - 50, True, UP_200, id="just-under"),
    pytest.param(http1.MAX_HEAD + 5, True, PROTOCOL_0, id="just-over"),
    pytest.param(http1.MAX_HEAD + 50, False, PROTOCOL_0, id="over-never-ending"),
])
def test_header_block_limit(wire: Wire, prober: Prober, total: int, terminated: bool,
                            expected: tuple[State, str | None, int], piece: int | None) -> None:
    # The limit counts the head up to its blank line: `total` includes the final CRLFCRLF.
    data = head_of_size(total, terminated=terminated)
    reply = Reply(split_every(data, piece) if piece else (data,), keep_open=True)
    result = probe_one(wire, reply, prober)
    assert outcome(result) == expected, result
    assert_prompt(result)


# -- the body cap --------------------------------------------------------------------------------

FLOOD_PIECE = b"x" * 65536
FLOOD = 4 * BODY_CAP  # well past the part a probe keeps for response checks
FLOOD_STEPS = tuple([FLOOD_PIECE] * (FLOOD // len(FLOOD_PIECE)))


@pytest.mark.parametrize(("head", "tail", "keep_open"), [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % FLOOD, (), True,
                 id="content-length"),
    pytest.param(CHUNKED_HEAD + b"%x\r\n" % FLOOD, (b"\r\n0\r\n\r\n",), True, id="chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", (), False, id="until-close"),
])
def test_large_body_is_read_to_its_end(wire: Wire, prober: Prober, head: bytes,
                                       tail: tuple[bytes, ...], keep_open: bool) -> None:
    # Past the kept 1 MiB the body is still read, to its framed end: only that ends the probe.
    steps = (head, *FLOOD_STEPS, *tail)
    result = probe_one(wire, Reply(steps, keep_open=keep_open, sync=False), prober)
    assert outcome(result) == UP_200, result
    assert_prompt(result)
    assert wire.received == len(head) + FLOOD + sum(map(len, tail))


@pytest.mark.parametrize("head", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 * BODY_CAP),
                 id="content-length"),
    pytest.param(CHUNKED_HEAD + b"%x\r\n" % (10 * BODY_CAP), id="chunked"),
])
@pytest.mark.parametrize("keep_open", [False, True], ids=["cut", "stalled"])
def test_body_cut_or_stalled_past_the_kept_part_is_down(
    wire: Wire, prober: Prober, head: bytes, keep_open: bool,
) -> None:
    # 1.5 MiB of a 10 MiB body, then the server closes (protocol) or goes quiet (timeout).
    steps = (head, *FLOOD_STEPS[: (3 * BODY_CAP // 2) // len(FLOOD_PIECE)])
    result = probe_one(wire, Reply(steps, keep_open=keep_open, sync=False), prober,
                       timeout=1.0)
    expected = "timeout" if keep_open else "protocol"
    assert (result.state, result.reason, result.status_code) == (State.DOWN, expected, 200)
    if keep_open:
        assert result.duration >= 1.0  # latency covers the whole (unfinished) response


# -- keep-alive ----------------------------------------------------------------------------------

KEPT = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def keep_alive(wire: Wire, replies: Sequence[Reply], probes: int = 2,
               **options: object) -> tuple[list[ProbeResult], ScriptedServer]:
    return run_probes(wire, replies, Prober(keep_alive=True), probes, options)


@pytest.mark.parametrize(("data", "method"), [
    pytest.param(KEPT, "GET", id="content-length"),
    pytest.param(FRAMED["chunked-ext-trailers"][0], "GET", id="chunked-trailers"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", "HEAD", id="head"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", "GET", id="204"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + KEPT, "GET", id="after-100"),
    pytest.param(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
                 "GET", id="http10-keep-alive"),
])
def test_keep_alive_reuses_one_connection(wire: Wire, data: bytes, method: str) -> None:
    results, server = keep_alive(wire, [pieces(data)], probes=3, method=method)
    assert [r.reason for r in results] == [None] * 3, results
    assert all(r.duration < TIMEOUT for r in results)
    assert (server.accepts, len(server.requests)) == (1, 3)
    assert all(b"close" not in head.lower() for head in server.requests)


@pytest.mark.parametrize("data", [
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                 id="connection-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2"
                 b"\r\n\r\nok", id="close-token-in-list"),
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http10"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", id="more-than-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n", id="stray-crlf"),
    pytest.param(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\nEXTRA", id="bytes-after-chunked"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\nbody", id="body-after-204"),
])
def test_keep_alive_opens_a_new_connection_when_the_old_cannot_be_reused(
        wire: Wire, data: bytes) -> None:
    # The server keeps the connection open: only the answer tells the probe not to reuse it.
    results, server = keep_alive(wire, [pieces(data)])
    status = int(data.split(b" ")[1])
    assert [outcome(r) for r in results] == [(State.UP, None, status)] * 2, results
    assert all(r.duration < TIMEOUT for r in results)
    assert (server.accepts, len(server.requests)) == (2, 2)


def test_keep_alive_after_the_server_closed_the_idle_connection(wire: Wire) -> None:
    # Answers without `Connection: close`, then closes: the second probe needs a new one,
    # whether the prober has seen the close yet (skips the idle connection) or not (retries).
    results, server = keep_alive(wire, [pieces(KEPT, keep_open=False)])
    assert [outcome(r) for r in results] == [UP_200] * 2, results
    assert server.accepts == 2


def test_keep_alive_retries_when_the_reused_connection_is_dropped(wire: Wire) -> None:
    # The first request is answered, the second (on the same connection) gets a close, the
    # third (on a fresh connection) an answer: a stale idle connection is not a failure.
    replies = [pieces(KEPT), Reply((), keep_open=False), pieces(KEPT)]
    results, server = keep_alive(wire, replies)
    assert [outcome(r) for r in results] == [UP_200] * 2, results
    assert (server.accepts, len(server.requests)) == (2, 3)


def test_keep_alive_retries_a_dropped_connection_after_a_redirect(wire: Wire) -> None:
    redirect = b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"
    replies = [pieces(redirect), Reply((), keep_open=False), pieces(KEPT)]
    results, server = keep_alive(wire, replies, probes=1)
    assert [(outcome(r), r.redirects) for r in results] == [(UP_200, 1)], results
    assert (server.accepts, len(server.requests)) == (2, 3)


def test_keep_alive_never_reuses_a_switched_connection(wire: Wire) -> None:
    switched = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: upgrade\r\n\r\n")
    results, server = keep_alive(wire, [pieces(switched), pieces(KEPT)])
    assert [outcome(r) for r in results] == [(State.DOWN, "status", 101), UP_200], results
    assert server.accepts == 2


# -- phases ----------------------------------------------------------------------------------------

def test_phases_split_wait_and_transfer(wire: Wire, prober: Prober) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    reply = Reply((0.1, head, b"ab", 0.1, b"cd"), keep_open=True)
    result = probe_one(wire, reply, prober)
    assert outcome(result) == UP_200, result
    connect, tls, request, wait, transfer = result.phases
    assert tls == 0.0
    assert connect > 0 and request > 0
    assert wait >= 0.1 and transfer >= 0.1
    assert sum(result.phases) <= result.duration < TIMEOUT
