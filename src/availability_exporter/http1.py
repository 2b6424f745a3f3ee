"""The wire under the probe's httpx transport: HTTP/1.1 on an asyncio Protocol, linear in bytes.

Why not httpcore under httpx: a probe through httpcore costs ~1 ms of CPU, 80 % of it in anyio
task groups, per-read ``fail_after`` scopes, sniffio lookups and h11 event objects
(bench/README.md has the profile), and h11 itself spends 1.56 s of CPU on a body of 300,000
one-byte chunks.  A probe sends one request that httpx built and reads one response to its end;
this module does exactly that with loop callbacks, and :mod:`availability_exporter.transport`
hands the result back to httpx as an ``httpx.Response``.

It parses what a probe needs and checks what could make it lie: the status line, header
framing (Content-Length, chunked, read-until-close), a 100 KiB cap on the header block, 1xx
interim responses.  Bodies are always read to their end; only their first ``keep`` bytes are
kept, the rest is counted and dropped, so memory stays bounded whatever the server sends.
Anything malformed is a :class:`ProtocolError`.

Cost is linear in the bytes received: the header block is scanned only where new bytes
arrived, and chunk data is skipped by arithmetic (a body of 300,000 one-byte chunks is one
regex match and one ``int()`` per chunk, no copies).

Timings come out through the httpcore ``trace`` hook shape: ``trace(event_name, info)`` with
httpcore's event names, so the probe records phases the same way whichever engine ran.  The
caller owns the deadline: cancelling the awaiting task aborts the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final, cast

MAX_HEAD = 100 * 1024  # the header block limit httpcore uses with h11
MAX_CHUNK_LINE = 4 * 1024
NO_BODY_STATUS: Final = frozenset((204, 304))

Trace = Callable[[str, dict[str, Any]], object]
Headers = list[tuple[bytes, bytes]]

_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?:[ \t]([^\r\n]*))?")
# One header field line: a token, a colon, the value without surrounding blanks.  Matched over
# the whole block at once (findall), so a head of 1,800 fields costs one C pass, not 1,800.
_FIELD = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\n]*?)[ \t]*$", re.MULTILINE)
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
# The end of the header block: an empty line, CRLF or bare LF (as h11 accepts).
_HEAD_END = re.compile(rb"\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
# A chunk-size line: hex digits (no "0x", no "_": int() would take those), optional extensions.
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
# The value of a one-digit chunk size by byte (0 for anything else, "0" included): the fast
# path for the tiny chunks a hostile server sends by the hundred thousand.
_HEX_DIGIT = tuple(
    int(chr(b), 16) if chr(b) in "123456789abcdefABCDEF" else 0 for b in range(256)
)
# Chunk-size lines parsed per loop callback: ~1-2 ms of work; the rest waits for the next turn
# (reading paused meanwhile), so a body of tiny chunks cannot hold the loop.
CHUNKS_PER_TURN = 4096


def _no_trace(event: str, info: dict[str, Any]) -> None:
    """The trace hook when nobody listens."""


def _unfold(lines: list[bytes]) -> list[bytes]:
    """Join obsolete folded header lines to the line before them with one space (RFC 9112
    section 5.2 asks a client to accept them)."""
    if not any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        return lines
    out = lines[:2]
    for line in lines[2:]:
        if line[:1] in (b" ", b"\t"):
            out[-1] = out[-1].rstrip(b" \t") + b" " + line.strip(b" \t")
        else:
            out.append(line)
    return out


def _fields(lines: list[bytes]) -> Headers:
    """The (name, value) pairs of header field lines; ProtocolError names the first bad one."""
    block = b"\n".join(lines)
    pairs: Headers = _FIELD.findall(block)
    if len(pairs) == len(lines) and b"\0" not in block and b"\r" not in block:
        return pairs
    for line in lines:  # the slow way, only to say which line is wrong
        match = _FIELD.fullmatch(line)
        if match is None:
            raise ProtocolError(f"malformed header line: {line[:60]!r}")
        if b"\0" in line or b"\r" in line:  # RFC 9110 section 5.5: never valid in a field
            raise ProtocolError(f"invalid character in header {match[1][:40]!r}")
    raise AssertionError("unreachable")  # pragma: no cover - findall and fullmatch agree


class ConnectError(OSError):
    """The TCP connection (or the name lookup before it) could not be made."""


class ProtocolError(Exception):
    """The server answered something that is not a well-formed HTTP/1.x response."""


class Answer:
    """One complete response: status line, raw headers, the kept start of the body."""

    __slots__ = ("body", "body_bytes", "headers", "reason", "reusable", "status", "version")

    def __init__(self, version: bytes, status: int, reason: bytes, headers: Headers,
                 body: bytes, body_bytes: int, reusable: bool) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.body_bytes = body_bytes
        self.reusable = reusable


# Parser states
_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


class Connection(asyncio.Protocol):
    """One client connection; ``exchange()`` may be called again while ``reusable``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._trace: Trace = _no_trace
        self._buf = bytearray()
        self._scanned = 0  # how much of _buf the head search has already looked at
        self._state = _DONE
        self._remaining = 0  # body bytes still due (Content-Length) or of the current chunk
        self._received = 0  # body bytes received
        self._keep = 0  # body bytes to keep for the caller
        self._kept = bytearray()
        self._head_only = False
        self._version = b"HTTP/1.1"
        self._status = 0
        self._reason = b""
        self._headers: Headers = []
        self._keep_alive = False
        self._budget = CHUNKS_PER_TURN  # chunk-size lines left for this loop turn
        self._deferred = False  # the rest of the buffer is parsed in a later turn
        self.closed = False
        self.reusable = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _DONE:
            # Bytes nobody asked for (an idle kept-alive connection): never reuse it.
            self.reusable = False
            return
        try:
            if state == _LENGTH or (state == _UNTIL_CLOSE and not self._buf):
                self._body(data)  # the common case: count body bytes, copy nothing
            elif state == _CHUNK_DATA and len(data) < self._remaining:
                self._body(data)  # inside a large chunk: skip by arithmetic
                self._remaining -= len(data)
            elif state == _HEAD and b"\n" not in data:
                # A header block dripping in: nothing can end here, so no search at all.
                self._buf += data
                if len(self._buf) > MAX_HEAD:
                    raise ProtocolError(f"response header block larger than {MAX_HEAD} bytes")
            else:
                self._buf += data
                self._parse()
        except ProtocolError as exc:
            self._finish(exc)

    def eof_received(self) -> bool:
        self._closed(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)

    # -- the exchange -----------------------------------------------------------------------

    async def exchange(self, payload: bytes, *, head_only: bool, keep: int,
                       trace: Trace | None) -> Answer:
        """Send ``payload`` (request head and body) and read the response to its end."""
        assert self.transport is not None
        if self.closed:
            raise ProtocolError("connection closed before the request was sent")
        self._waiter = self._loop.create_future()
        self._trace = trace or _no_trace
        self._buf.clear()
        self._scanned = 0
        self._kept = bytearray()
        self._state = _HEAD
        self._received = 0
        self._keep = keep
        self._head_only = head_only
        self._status = 0
        self._headers = []
        self._keep_alive = False
        self.reusable = False
        self._trace("http11.send_request_headers.started", {})
        self.transport.write(payload)
        self._trace("http11.receive_response_headers.started", {})
        await self._waiter
        return Answer(self._version, self._status, self._reason, self._headers,
                      bytes(self._kept), self._received, self.reusable)

    def release(self) -> None:
        """Close after an answer; abort when the server answered before taking our whole
        request body, so the unsent bytes and the socket are not held for as long as the
        server keeps it open."""
        self.reusable = False
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, error: BaseException | None) -> None:
        self._state = _DONE
        self._buf.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _closed(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._deferred and self._state != _DONE:
            self._budget = 1 << 62  # the connection is gone: finish what arrived, now
            try:
                self._parse()
            except ProtocolError as error:
                self._finish(error)
        if self._state == _UNTIL_CLOSE:
            self._complete()
        elif self._state != _DONE:
            if exc is None:
                what = "the header block" if self._state == _HEAD else "the body"
                exc = ProtocolError(f"server closed the connection before the end of {what}")
            self._finish(exc)

    # -- parsing ----------------------------------------------------------------------------

    def _parse(self) -> None:
        """Consume what is buffered; every branch moves forward or returns for more bytes."""
        self._budget = CHUNKS_PER_TURN
        while self._state != _DONE:
            state = self._state
            if state == _HEAD:
                if not self._head():
                    return
            elif state in (_LENGTH, _UNTIL_CLOSE):
                if self._buf:
                    data = bytes(self._buf)
                    self._buf.clear()
                    self._body(data)
                return
            elif not self._chunked():
                return

    def _head(self) -> bool:
        buf = self._buf
        # Only the bytes not searched before (less two, for a terminator split across reads).
        end_match = _HEAD_END.search(buf, max(self._scanned - 2, 0), MAX_HEAD + 4)
        if end_match is None:
            self._scanned = len(buf)
            if len(buf) > MAX_HEAD:
                raise ProtocolError(f"response header block larger than {MAX_HEAD} bytes")
            return False
        end = end_match.start()
        if end > MAX_HEAD:
            raise ProtocolError(f"response header block larger than {MAX_HEAD} bytes")
        head = bytes(buf[:end])
        del buf[: end_match.end()]
        self._scanned = 0
        lines = _unfold(_LINE_END.split(head[:-1] if head.endswith(b"\r") else head))
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise ProtocolError(f"not an HTTP status line: {lines[0][:60]!r}")
        major, minor, status = int(match[1]), int(match[2]), int(match[3])
        if major != 1:
            raise ProtocolError(f"unsupported HTTP version {major}.{minor}")
        headers = _fields(lines[1:])
        length: int | None = None
        chunked = False
        other_coding = False
        close = minor == 0
        for name, value in headers:
            key = name.lower()
            if key not in _FRAMING:
                continue
            if key == b"content-length":
                # One value, or a list of the same value (RFC 9110 section 8.6 allows both).
                for item in value.split(b","):
                    item = item.strip(b" \t")
                    if not item.isdigit() or len(item) > 18:
                        raise ProtocolError(f"bad Content-Length: {value[:30]!r}")
                    if length is not None and length != int(item):
                        raise ProtocolError("conflicting Content-Length headers")
                    length = int(item)
            elif key == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                # Any other final coding: the body runs until the connection ends.
                other_coding = not chunked
            else:  # connection
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and minor == 0:
                    close = False
        if 100 <= status < 200 and status != 101:
            return True  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._version = b"HTTP/1.%d" % minor
        self._status = status
        self._reason = match[4] or b""
        self._headers = headers
        self._trace("http11.receive_response_headers.complete",
                    {"return_value": (self._version, status, self._reason, headers)})
        # After 101 the connection speaks another protocol: never send HTTP on it again.
        self._keep_alive = not close and status != 101
        if self._head_only or status in NO_BODY_STATUS or status == 101:
            self._complete()
        elif chunked:
            self._remaining = 0
            self._state = _CHUNK_SIZE_LINE
        elif length is not None and not other_coding:
            self._remaining = length
            self._state = _LENGTH
            if length == 0:
                self._complete()
        else:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE
        return True

    def _body(self, data: bytes) -> None:
        """Count (and keep the start of) body bytes in a Content-Length or unframed body, or
        inside a chunk."""
        size = len(data)
        self._received += size
        room = self._keep - len(self._kept)
        if room > 0:
            self._kept += data[:room]
        if self._state == _LENGTH:
            self._remaining -= size
            if self._remaining <= 0:
                if self._remaining < 0:
                    self._keep_alive = False  # more bytes than announced: never reuse
                self._complete()

    def _chunked(self) -> bool:
        """Advance the chunked-body parser over the buffer; False when it needs more bytes.

        One pass with a position: chunk data is skipped by arithmetic, and the buffer is cut
        once at the end instead of once per chunk.
        """
        buf = self._buf
        size_line = _CHUNK_SIZE.match
        pos = 0
        total = len(buf)
        try:
            while True:
                state = self._state
                if state == _CHUNK_DATA:
                    take = min(self._remaining, total - pos)
                    if take:
                        if len(self._kept) < self._keep:
                            self._kept += buf[pos : pos + min(take, self._keep - len(self._kept))]
                        self._received += take
                        self._remaining -= take
                        pos += take
                    if self._remaining:
                        return False
                    self._state = state = _CHUNK_SIZE_LINE
                    self._remaining = -2  # the CRLF after the data is still due
                if state == _CHUNK_SIZE_LINE:
                    if self._remaining == -2:
                        if total - pos < 2:
                            return False
                        if buf[pos] != 13 or buf[pos + 1] != 10:
                            raise ProtocolError("chunk not followed by CRLF")
                        pos += 2
                        self._remaining = 0
                    if self._budget <= 0:
                        self._defer()
                        return False
                    pos = self._tiny_chunks(buf, pos, total)
                    self._budget -= 1
                    match = size_line(buf, pos)
                    if match is None:
                        line_end = buf.find(b"\n", pos)
                        if line_end < 0:
                            if total - pos > MAX_CHUNK_LINE:
                                raise ProtocolError("chunk size line too long")
                            return False
                        text = bytes(buf[pos:line_end])
                        raise ProtocolError(f"bad chunk size: {text[:30]!r}")
                    pos = match.end()
                    size = int(match[1], 16)
                    if size == 0:
                        self._state = _TRAILER
                        continue
                    self._remaining = size
                    self._state = _CHUNK_DATA
                    continue
                # _TRAILER: optional trailer fields, then an empty line
                if buf.startswith(b"\r\n", pos):
                    end = pos + 2
                else:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        if total - pos > MAX_HEAD:
                            raise ProtocolError("chunked trailer too large")
                        return False
                    end += 4
                del buf[:end]  # before _complete(): bytes left after the end forbid reuse
                pos = 0
                self._complete()
                return True
        finally:
            if pos:
                del buf[:pos]

    def _tiny_chunks(self, buf: bytearray, pos: int, total: int) -> int:
        """Skip whole one-digit chunks (``"7\\r\\n" + 7 bytes + "\\r\\n"``) with index arithmetic
        alone, within the turn's budget; returns where the next chunk-size line starts."""
        hex_digit = _HEX_DIGIT
        keeping = len(self._kept) < self._keep
        received = 0
        budget = self._budget
        while budget > 0 and pos + 3 <= total:
            size = hex_digit[buf[pos]]
            if not size or buf[pos + 1] != 13 or buf[pos + 2] != 10:
                break  # a longer size, an extension, the last chunk: the general parser
            end = pos + 3 + size
            if end + 2 > total:
                break  # not all here yet
            if buf[end] != 13 or buf[end + 1] != 10:
                raise ProtocolError("chunk not followed by CRLF")
            if keeping:
                self._kept += buf[pos + 3 : end]
                keeping = len(self._kept) < self._keep
            received += size
            pos = end + 2
            budget -= 1
        self._received += received
        self._budget = budget
        return pos

    def _defer(self) -> None:
        """Parse the rest of the buffer in a later loop turn, reading paused until then."""
        self._deferred = True
        if self.transport is not None:
            self.transport.pause_reading()
        self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self._deferred:
            return
        self._deferred = False
        if self._state != _DONE:
            try:
                self._parse()
            except ProtocolError as exc:
                self._finish(exc)
        if not self._deferred and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _complete(self) -> None:
        # Reusable only when the answer ended exactly where its framing said it would.
        self.reusable = self._keep_alive and not self.closed and not self._buf
        self._trace("http11.receive_response_body.complete", {})
        self._finish(None)


# Name lookups get their own threads: the loop's default pool is min(32, CPUs + 4) threads
# under asyncio and libuv's 4 under uvloop, so a few names whose DNS hangs (getaddrinfo can
# take 10 s) would queue every other lookup behind them and turn healthy endpoints into
# timeouts.  Threads start only as lookups need them.
RESOLVER_THREADS = 64
_resolver: concurrent.futures.ThreadPoolExecutor | None = None


def _literal_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 when ``host`` is an IP address literal, else None.

    inet_pton, in C: ``ipaddress.ip_address`` costs ~20 µs a call, a tenth of a probe.
    """
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int,
                   family: socket.AddressFamily) -> list[tuple[socket.AddressFamily, Any]]:
    """The addresses to try for ``host`` (of ``family`` only, unless AF_UNSPEC), in order."""
    found = _literal_family(host)
    if found is not None:
        if family not in (socket.AF_UNSPEC, found):
            raise socket.gaierror(socket.EAI_ADDRFAMILY,
                                  f"{host} is not an IPv{4 if found == socket.AF_INET6 else 6}"
                                  " address")
        return [(found, (host, port))]
    global _resolver
    if _resolver is None:
        _resolver = concurrent.futures.ThreadPoolExecutor(
            RESOLVER_THREADS, thread_name_prefix="availability-exporter-dns",
        )
    infos = await loop.run_in_executor(
        _resolver, socket.getaddrinfo, host, port, family, socket.SOCK_STREAM,
    )
    addresses: list[tuple[socket.AddressFamily, Any]] = []
    for info_family, _type, _proto, _name, sockaddr in infos:
        if (info_family, sockaddr) not in addresses:
            addresses.append((info_family, sockaddr))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
    return addresses


async def _tcp_socket(loop: asyncio.AbstractEventLoop, family: socket.AddressFamily,
                      sockaddr: Any) -> socket.socket:
    """A non-blocking TCP socket connected to ``sockaddr``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    family: socket.AddressFamily = socket.AF_UNSPEC,
    trace: Trace | None = None,
) -> Connection:
    """Open a connection (TCP, then TLS when a context is given), tracing both phases.

    Addresses are tried in the resolver's order, as a browser without Happy Eyeballs.  For
    TLS the TCP socket is connected first and then handed to the loop with its TLS settings
    in one call (rather than ``start_tls`` on a live transport, whose handshake under uvloop
    logs a traceback when the server closes the moment it accepted); plain HTTP takes the
    loop's own, cheaper, connect.  The TLS stream is traced as soon as the handshake
    completes, so the certificate is known even when the server then answers garbage.
    """
    emit = trace or _no_trace
    loop = asyncio.get_running_loop()
    connection = Connection(loop)
    emit("connection.connect_tcp.started", {})
    sock: socket.socket | None = None
    try:
        addresses = await _resolve(loop, host, port, family)
        errors: list[str] = []
        for address_family, sockaddr in addresses:
            try:
                if ssl_context is None:
                    await loop.create_connection(lambda: connection, sockaddr[0], port)
                    return connection
                sock = await _tcp_socket(loop, address_family, sockaddr)
                break
            except OSError as exc:
                if len(addresses) == 1:
                    raise
                errors.append(f"{sockaddr[0]}: {exc}")
        else:
            raise OSError("; ".join(errors))
    except OSError as exc:  # socket.gaierror is an OSError too; the probe tells them apart
        raise ConnectError(str(exc) or type(exc).__name__) from exc
    emit("connection.start_tls.started", {})
    try:
        transport, _ = await loop.create_connection(
            lambda: connection, sock=sock, ssl=ssl_context, server_hostname=server_hostname,
        )
    except BaseException:
        connection.abort()
        sock.close()
        raise
    emit("connection.start_tls.complete", {"return_value": transport})
    return connection
