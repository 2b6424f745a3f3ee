"""A minimal HTTP/1.1 client on an asyncio Protocol: one request, one response, timed by phase.

Why not httpx/httpcore: a probe through httpcore costs ~1 ms of CPU, 80 % of it in anyio task
groups, per-read ``fail_after`` scopes, sniffio lookups and h11 event objects (bench/README.md
has the profile).  A probe needs none of that: it sends one request it built itself and reads
one response it throws away.  This client does exactly that with loop callbacks, at about a
quarter of the cost, and so measures latency with far less of its own queueing in the figure.

It parses what a probe needs and checks what could make it lie: the status line, header
framing (Content-Length, chunked, read-until-close), a 100 KiB cap on the header block, 1xx
interim responses.  Bodies are counted, never kept.  Anything malformed is a ProtocolError.

Phases are recorded on a :class:`Timings`: connect (DNS included), tls, request, wait (until
the header block is complete), transfer (the body).  The caller owns the deadline: cancelling
the awaiting task aborts the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import socket
import ssl
import time
from typing import Final, cast

MAX_HEAD = 100 * 1024  # the header block limit httpcore uses with h11
MAX_CHUNK_LINE = 4 * 1024
NO_BODY_STATUS: Final = frozenset((204, 304))
PHASE_CONNECT, PHASE_TLS, PHASE_REQUEST, PHASE_WAIT, PHASE_TRANSFER = range(5)

_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?:[ \t][^\r\n]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


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


class ConnectError(OSError):
    """The TCP connection (or the name lookup before it) could not be made."""


class ProtocolError(Exception):
    """The server answered something that is not a well-formed HTTP/1.x response."""


class Timings:
    """Phase durations of one probe (summed over redirect hops) and what the wire showed."""

    __slots__ = ("_began", "_current", "cert_der", "phases", "status")

    def __init__(self) -> None:
        self.phases = [0.0, 0.0, 0.0, 0.0, 0.0]
        self._current = -1
        self._began = 0.0
        self.status = 0  # kept as soon as a status line arrives, for failures mid-body
        self.cert_der: bytes | None = None

    def begin(self, phase: int, now: float) -> None:
        if self._current >= 0:
            self.phases[self._current] += now - self._began
        self._current = phase
        self._began = now

    def end(self, now: float) -> None:
        """Close the open phase (also when a deadline or failure cut it short)."""
        if self._current >= 0:
            self.phases[self._current] += now - self._began
            self._current = -1


class Response:
    """What a probe keeps of an answer: its status, its Location, whether the connection
    can carry another request."""

    __slots__ = ("location", "reusable", "status")

    def __init__(self, status: int, location: str | None, reusable: bool) -> None:
        self.status = status
        self.location = location
        self.reusable = reusable


# Parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class Connection(asyncio.Protocol):
    """One client connection; ``request()`` may be called again while ``reusable``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, body_cap: int) -> None:
        self._loop = loop
        self._body_cap = body_cap
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timings: Timings | None = None
        self._buf = bytearray()
        self._state = _DONE
        self._remaining = 0
        self._received = 0
        self._head_only = False
        self._status = 0
        self._location: str | None = None
        self._keep_alive = False
        self.closed = False
        self.reusable = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _DONE:
            # Bytes nobody asked for (an idle kept-alive connection): never reuse it.
            self.reusable = False
            return
        try:
            self._feed(data)
        except ProtocolError as exc:
            self._finish(exc)

    def eof_received(self) -> bool:
        self._closed(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)

    # -- the exchange -----------------------------------------------------------------------

    async def request(self, payload: bytes, *, head_only: bool, timings: Timings) -> Response:
        """Send ``payload`` (request head and body) and read the response to its end."""
        assert self.transport is not None
        self._waiter = self._loop.create_future()
        self._timings = timings
        self._buf.clear()
        self._state = _HEAD
        self._received = 0
        self._head_only = head_only
        self._status = 0
        self._location = None
        self._keep_alive = False
        self.reusable = False
        if self.closed:
            raise ProtocolError("connection closed before the request was sent")
        timings.begin(PHASE_REQUEST, time.perf_counter())
        self.transport.write(payload)
        timings.begin(PHASE_WAIT, time.perf_counter())
        await self._waiter
        return Response(self._status, self._location, self.reusable)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, error: BaseException | None) -> None:
        self._state = _DONE
        if self._timings is not None:
            self._timings.end(time.perf_counter())
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _closed(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._state == _UNTIL_CLOSE:
            self._finish(None)
        elif self._state != _DONE:
            if exc is None:
                what = "the header block" if self._state == _HEAD else "the body"
                exc = ProtocolError(f"server closed the connection before the end of {what}")
            self._finish(exc)

    # -- parsing ----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._state == _LENGTH and not self._buf:
            self._body(len(data))  # the common case: count body bytes, copy nothing
            return
        self._buf += data
        while self._state != _DONE:
            if self._state == _HEAD:
                if not self._head():
                    return
            elif self._state in (_LENGTH, _UNTIL_CLOSE):
                size = len(self._buf)
                self._buf.clear()
                if size:
                    self._body(size)
                return
            elif not self._chunked():
                return

    def _head(self) -> bool:
        buf = self._buf
        # The head ends at the first empty line; bare LF line ends are accepted, as h11 does.
        end_match = _HEAD_END.search(buf, 0, MAX_HEAD + 4)
        if end_match is None:
            if len(buf) > MAX_HEAD:
                raise ProtocolError(f"response header block larger than {MAX_HEAD} bytes")
            return False
        end = end_match.start()
        if end > MAX_HEAD:
            raise ProtocolError(f"response header block larger than {MAX_HEAD} bytes")
        lines = _unfold(_LINE_END.split(bytes(buf[:end])))
        del buf[: end_match.end()]
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise ProtocolError(f"not an HTTP status line: {lines[0][:60]!r}")
        major, minor, status = int(match[1]), int(match[2]), int(match[3])
        if major != 1:
            raise ProtocolError(f"unsupported HTTP version {major}.{minor}")
        length: int | None = None
        chunked = False
        other_coding = False
        close = minor == 0
        location: str | None = None
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or _TOKEN.fullmatch(name) is None:
                raise ProtocolError(f"malformed header line: {line[:60]!r}")
            key = name.lower()
            value = value.strip(b" \t")
            if key == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise ProtocolError(f"bad Content-Length: {value[:30]!r}")
                if length is not None and length != int(value):
                    raise ProtocolError("conflicting Content-Length headers")
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                # Any other final coding: the body runs until the connection ends.
                other_coding = not chunked
            elif key == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and minor == 0:
                    close = False
            elif key == b"location":
                location = value.decode("latin-1")
        timings = self._timings
        if 100 <= status < 200 and status != 101:
            return True  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._status = status
        self._location = location
        if timings is not None:
            timings.status = status
            timings.begin(PHASE_TRANSFER, time.perf_counter())
        # After 101 the connection speaks another protocol: never send HTTP on it again.
        self._keep_alive = not close and status != 101
        if self._head_only or status in NO_BODY_STATUS or status == 101:
            self._complete()
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None and not other_coding:
            self._remaining = length
            self._state = _LENGTH
            if length == 0:
                self._complete()
        else:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE
        return True

    def _body(self, size: int) -> None:
        self._received += size
        if self._received >= self._body_cap:
            self._keep_alive = False
            self._complete()
        elif self._state == _LENGTH:
            self._remaining -= size
            if self._remaining <= 0:
                if self._remaining < 0:
                    self._keep_alive = False  # more bytes than announced: never reuse
                self._complete()

    def _chunked(self) -> bool:
        """Advance the chunked-body parser; False when it needs more bytes."""
        buf = self._buf
        if self._state == _CHUNK_SIZE:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_CHUNK_LINE:
                    raise ProtocolError("chunk size line too long")
                return False
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
            del buf[: end + 2]
            if _HEX.fullmatch(size_text) is None or len(size_text) > 16:
                raise ProtocolError(f"bad chunk size: {size_text[:30]!r}")
            size = int(size_text, 16)
            if size == 0:
                self._state = _TRAILER
            else:
                self._remaining = size
                self._state = _CHUNK_DATA
            return True
        if self._state == _CHUNK_DATA:
            take = min(self._remaining, len(buf))
            if take == 0:
                return False
            del buf[:take]
            self._remaining -= take
            self._received += take
            if self._received >= self._body_cap:
                self._keep_alive = False
                self._complete()
                return True
            if self._remaining == 0:
                self._state = _CHUNK_CRLF
            return True
        if self._state == _CHUNK_CRLF:
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            del buf[:2]
            self._state = _CHUNK_SIZE
            return True
        # _TRAILER: optional trailer fields, then an empty line
        if buf[:2] == b"\r\n":
            del buf[:2]
            self._complete()
            return True
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise ProtocolError("chunked trailer too large")
            return False
        del buf[: end + 4]
        self._complete()
        return True

    def _complete(self) -> None:
        # Reusable only when the answer ended exactly where its framing said it would.
        self.reusable = self._keep_alive and not self.closed and not self._buf
        self._finish(None)


# Name lookups get their own threads: the loop's default pool is min(32, CPUs + 4) threads
# under asyncio and libuv's 4 under uvloop, so a few names whose DNS hangs (getaddrinfo can
# take 10 s) would queue every other lookup behind them and turn healthy endpoints into
# timeouts.  Threads start only as lookups need them.
RESOLVER_THREADS = 64
_resolver: concurrent.futures.ThreadPoolExecutor | None = None


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[str]:
    """The addresses to try for ``host``, without a lookup when it is an IP literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    global _resolver
    if _resolver is None:
        _resolver = concurrent.futures.ThreadPoolExecutor(
            RESOLVER_THREADS, thread_name_prefix="availability-exporter-dns",
        )
    infos = await loop.run_in_executor(
        _resolver, socket.getaddrinfo, host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
    )
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
    return addresses


async def connect(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    timings: Timings,
    body_cap: int,
) -> Connection:
    """Open a connection (TCP, then TLS when a context is given), timing both phases.

    The TLS certificate is kept on ``timings`` as soon as the handshake completes, so it is
    known even when the server then answers garbage.
    """
    loop = asyncio.get_running_loop()
    connection = Connection(loop, body_cap)
    timings.begin(PHASE_CONNECT, time.perf_counter())
    try:
        addresses = await _resolve(loop, host, port)
        errors: list[OSError] = []
        for address in addresses:  # in the resolver's order, as a browser without Happy Eyeballs
            try:
                await loop.create_connection(lambda: connection, address, port)
                break
            except OSError as exc:
                errors.append(exc)
        else:
            if len(errors) == 1:
                raise errors[0]
            raise OSError("; ".join(f"{a}: {e}" for a, e in zip(addresses, errors, strict=True)))
    except OSError as exc:  # socket.gaierror is an OSError too; classify() tells them apart
        raise ConnectError(str(exc) or type(exc).__name__) from exc
    if ssl_context is None:
        return connection
    timings.begin(PHASE_TLS, time.perf_counter())
    assert connection.transport is not None
    try:
        transport = await loop.start_tls(
            connection.transport, connection, ssl_context, server_hostname=server_hostname,
        )
    except BaseException:
        connection.abort()
        raise
    if transport is None:  # the loop closed the connection during the handshake
        raise ProtocolError("connection closed during the TLS handshake")
    connection.transport = transport
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        timings.cert_der = ssl_object.getpeercert(binary_form=True)
    return connection
