"""One probe: an endpoint in, a frozen ProbeResult out (no metrics, no globals).

The wire work is :mod:`availability_exporter.http1`, a small HTTP/1.1 client on an asyncio
Protocol: a fresh connection per probe (``--probe.keep-alive`` keeps idle connections per
origin instead), SSL contexts built once per process, one whole-probe deadline.

Every failure becomes a *reason* in exactly one place, :func:`classify`, most specific first:

    ProbeFailure (bad redirects)                -> its own reason (redirects)
    TimeoutError (the whole-probe deadline)     -> timeout
    a socket.gaierror in the chain              -> dns
    an ssl.SSLError in the chain                -> tls
    http1.ConnectError (TCP connect failed)     -> connect
    anything else (resets, malformed answers)   -> protocol
    a complete non-2xx answer                   -> status
    a complete 2xx answer over the threshold    -> slow
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import socket
import ssl
import time
from urllib.parse import urljoin

from availability_exporter import http1
from availability_exporter.config import Endpoint, RequestTarget, prepare_target, redact
from availability_exporter.model import ProbeResult, State

MAX_REDIRECTS = 10
BODY_CAP = 1024 * 1024
USER_AGENT = b"availability-exporter/0.1"
REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
# Idle kept-alive connections per origin (--probe.keep-alive); one endpoint needs one.
MAX_IDLE_PER_ORIGIN = 4


class ProbeFailure(Exception):
    """A failure the probe itself detects (bad redirects), carrying its reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> str:
    """Translate an exception raised while probing into one reason, most specific first."""
    if isinstance(exc, ProbeFailure):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timeout"
    chain = _chain(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "dns"
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return "tls"
    if isinstance(exc, http1.ConnectError):
        return "connect"
    return "protocol"


def judge(status: int, duration: float, threshold: float) -> tuple[State, str | None]:
    """Classify a complete answer: up is 2xx within the threshold (exactly at it is up)."""
    if not 200 <= status <= 299:
        return State.DOWN, "status"
    if duration > threshold:
        return State.DEGRADED, "slow"
    return State.UP, None


def describe(exc: BaseException) -> str:
    """A one-line human message for an exception, with its most telling cause."""
    for e in reversed(_chain(exc)):
        text = str(e).strip()
        if text:
            name = type(e).__name__
            return f"{name}: {text}"
    return type(exc).__name__


def _der_item(buf: bytes, pos: int) -> tuple[int, int, int]:
    """Read one DER TLV at ``pos``: (tag, content start, content end)."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    return tag, pos, pos + length


def cert_not_after(der: bytes) -> float | None:
    """The notAfter of a DER X.509 certificate as a Unix timestamp (None if unparseable).

    ``getpeercert()`` only decodes verified certificates; this reads the field from the raw
    bytes so an expired or self-signed certificate still reports when it expires.
    """
    try:
        _, cert_start, _ = _der_item(der, 0)
        _, pos, tbs_end = _der_item(der, cert_start)
        fields: list[tuple[int, int, int]] = []
        while pos < tbs_end and len(fields) < 6:
            item = _der_item(der, pos)
            fields.append(item)
            pos = item[2]
        if fields[0][0] == 0xA0:  # explicit version tag precedes the serial number
            fields = fields[1:]
        _, vstart, _ = fields[3]  # serial, signature algorithm, issuer, validity
        _, _, not_before_end = _der_item(der, vstart)
        tag, start, end = _der_item(der, not_before_end)
        text = der[start:end].decode("ascii").rstrip("Z")
        if tag == 0x17:  # UTCTime: two-digit year, 1950-2049
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        stamp = time.strptime(text[:14], "%Y%m%d%H%M%S")
        return float(calendar.timegm(stamp))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def make_ssl_context(*, verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """One context per process: loading the CA bundle per probe costs ~30 ms and ~180 MB.

    ``ca_file`` replaces the system trust store (SSL_CERT_FILE works too, through OpenSSL).
    """
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


Origin = tuple[bytes, bytes, int, bool]  # scheme, host, port, verify_tls


class Prober:
    """Runs probes with shared SSL contexts; one instance per process."""

    def __init__(
        self, *, keep_alive: bool = False, max_connections: int = 1000,
        ca_file: str | None = None,
    ) -> None:
        self.verified = make_ssl_context(verify=True, ca_file=ca_file)
        self.insecure = make_ssl_context(verify=False)
        self.keep_alive = keep_alive
        self.max_idle = max_connections
        self._idle: dict[Origin, list[http1.Connection]] = {}
        self._idle_count = 0

    async def warm_up(self) -> None:
        """One throwaway probe of a local listener, so the first tick pays no lazy imports."""

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            url = f"http://127.0.0.1:{port}/"
            await self.probe(Endpoint(
                name="warm-up", url=url, display_url=url, domain="127.0.0.1", method="GET",
                headers=(), body=None, timeout=5.0, latency_threshold=5.0,
                follow_redirects=False, verify_tls=True, line=0, request=prepare_target(url),
            ))
        finally:
            server.close()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    async def probe(self, endpoint: Endpoint) -> ProbeResult:
        """Probe once; never raises (except CancelledError), every failure is a result."""
        timings = http1.Timings()
        status = 0
        hops = 0
        reason: str | None = None
        error: str | None = None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(endpoint.timeout):
                status, hops = await self._exchange(endpoint, timings)
        except (Exception, TimeoutError) as exc:
            status = timings.status  # headers may have arrived before the failure
            reason = classify(exc)
            if isinstance(exc, TimeoutError):
                error = f"no complete response within the {endpoint.timeout:g}s timeout"
            else:
                error = redact(describe(exc), endpoint.secrets)
        duration = time.perf_counter() - start
        timings.end(time.perf_counter())
        cert = cert_not_after(timings.cert_der) if timings.cert_der else None
        if reason == "tls" and endpoint.is_https and cert is None:
            cert = await self._unverified_cert(endpoint.request, start + endpoint.timeout)
        if reason is None:
            state, reason = judge(status, duration, endpoint.latency_threshold)
            if reason == "status":
                error = f"HTTP status {status}"
            elif reason == "slow":
                error = (
                    f"took {duration * 1000:.0f} ms, over the "
                    f"{endpoint.latency_threshold * 1000:g} ms threshold"
                )
        else:
            state = State.DOWN
        p = timings.phases
        return ProbeResult(
            state=state,
            reason=reason,
            status_code=status,
            duration=duration,
            phases=(p[0], p[1], p[2], p[3], p[4]),
            finished_at=time.time(),
            cert_not_after=cert,
            error=error,
            redirects=hops,
        )

    async def _exchange(self, endpoint: Endpoint, timings: http1.Timings) -> tuple[int, int]:
        """Send the request, follow redirects, read bodies up to the cap: (status, hops)."""
        target = endpoint.request
        method = endpoint.method.encode("ascii")
        body = endpoint.body
        headers = endpoint.headers
        for hop in range(MAX_REDIRECTS + 1):
            payload = self._payload(target, method, headers, body)
            response = await self._send_one(target, payload, method == b"HEAD", endpoint,
                                            timings)
            status, location = response.status, response.location
            if status not in REDIRECT_CODES or not endpoint.follow_redirects:
                return status, hop
            if location is None:
                return status, hop
            if hop == MAX_REDIRECTS:
                raise ProbeFailure("redirects", f"more than {MAX_REDIRECTS} redirects")
            try:
                new_target = prepare_target(urljoin(target.url, location))
            except Exception as exc:
                raise ProbeFailure("redirects", f"unusable redirect location: {exc}") from None
            if (new_target.scheme, new_target.host, new_target.port) != (
                target.scheme, target.host, target.port,
            ):
                # Like browsers and httpx: credentials never follow a redirect to another origin.
                headers = tuple((k, v) for k, v in headers if k.lower() != "authorization")
            if status == 303 or (status in (301, 302) and method == b"POST"):
                method, body = b"GET", None
            target = new_target
        raise AssertionError("unreachable")  # pragma: no cover

    def _payload(
        self,
        target: RequestTarget,
        method: bytes,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None,
    ) -> bytes:
        """The request head and body, byte for byte as they go on the wire."""
        lines = [method + b" " + target.target + b" HTTP/1.1", b"Host: " + target.host_header]
        names = set()
        for key, value in headers:
            lines.append(key.encode("latin-1") + b": " + value.encode("utf-8"))
            names.add(key.lower())
        if "user-agent" not in names:
            lines.append(b"User-Agent: " + USER_AGENT)
        if "accept" not in names:
            lines.append(b"Accept: */*")
        if not self.keep_alive and "connection" not in names:
            lines.append(b"Connection: close")
        if body is not None and "content-length" not in names:
            lines.append(b"Content-Length: %d" % len(body))
        lines.append(b"\r\n")
        head = b"\r\n".join(lines)
        return head + body if body else head

    async def _send_one(
        self,
        target: RequestTarget,
        payload: bytes,
        head_only: bool,
        endpoint: Endpoint,
        timings: http1.Timings,
    ) -> http1.Response:
        origin: Origin = (target.scheme, target.host, target.port, endpoint.verify_tls)
        connection = self._take_idle(origin) if self.keep_alive else None
        if connection is not None:
            earlier = timings.status  # a redirect hop's status, kept if this hop fails
            timings.status = 0
            try:
                return await self._request(connection, origin, payload, head_only, timings)
            except (OSError, http1.ProtocolError):
                # The server closed the idle connection as we reused it; not the endpoint's
                # fault unless a fresh connection fails too.
                if timings.status:
                    raise
                timings.status = earlier
        host = target.host.decode("ascii")
        connection = await http1.connect(
            host,
            target.port,
            ssl_context=(self.verified if endpoint.verify_tls else self.insecure)
            if target.scheme == b"https" else None,
            server_hostname=host,
            timings=timings,
            body_cap=BODY_CAP,
        )
        return await self._request(connection, origin, payload, head_only, timings)

    async def _request(
        self,
        connection: http1.Connection,
        origin: Origin,
        payload: bytes,
        head_only: bool,
        timings: http1.Timings,
    ) -> http1.Response:
        try:
            response = await connection.request(payload, head_only=head_only, timings=timings)
        except BaseException:
            connection.abort()  # a deadline or a failure mid-answer: the stream is unusable
            raise
        if self.keep_alive and response.reusable and self._idle_count < self.max_idle:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
                self._idle_count += 1
                return response
        connection.close()
        return response

    def _take_idle(self, origin: Origin) -> http1.Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable and not connection.closed:
                return connection
            connection.close()
        return None

    async def _unverified_cert(self, target: RequestTarget, deadline: float) -> float | None:
        """Read the certificate a failing TLS server presents, without trusting it.

        blackbox_exporter drops the expiry when verification fails; an expired or self-signed
        certificate is exactly when its expiry matters most.
        """
        remaining = min(deadline - time.perf_counter(), 2.0)
        if remaining <= 0:
            return None
        timings = http1.Timings()
        host = target.host.decode("ascii")
        try:
            async with asyncio.timeout(remaining):
                connection = await http1.connect(
                    host, target.port, ssl_context=self.insecure, server_hostname=host,
                    timings=timings, body_cap=0,
                )
        except (OSError, TimeoutError, ssl.SSLError, http1.ProtocolError):
            return None
        connection.abort()
        return cert_not_after(timings.cert_der) if timings.cert_der else None
