"""One probe: an endpoint in, a frozen ProbeResult out (no metrics, no globals).

The engine is httpcore, the transport under httpx, driven directly: a fresh
``AsyncHTTPConnection`` per request (no pool bookkeeping, which costs ~60 % of a pooled probe's
CPU at high concurrency) with SSL contexts built once per process.  ``--probe.keep-alive`` swaps
in a shared ``AsyncConnectionPool``.  httpcore's ``trace`` extension reports the phase events.

Every failure becomes a *reason* in exactly one place, :func:`classify`, most specific first:

    TimeoutError (the whole-probe deadline)     -> timeout
    httpcore.ConnectError  caused by gaierror   -> dns
                           caused by SSLError   -> tls
                           otherwise            -> connect
    httpcore.TimeoutException                   -> timeout
    httpcore.ProtocolError, ReadError, WriteError,
    NetworkError, h11 / decoding errors         -> protocol
    too many redirects / bad Location           -> redirects
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
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urljoin

import httpcore

from availability_exporter.config import Endpoint, RequestTarget, prepare_target, redact

MAX_REDIRECTS = 10
BODY_CAP = 1024 * 1024
USER_AGENT = b"availability-exporter/0.1"
REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


STATES: tuple[State, ...] = (State.UP, State.DEGRADED, State.DOWN)
REASONS: tuple[str, ...] = (
    "slow", "status", "timeout", "dns", "connect", "tls", "protocol", "redirects",
)
PHASES: tuple[str, ...] = ("connect", "tls", "request", "wait", "transfer")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe found; ``phases`` follows PHASES, summed over redirect hops."""

    state: State
    reason: str | None
    status_code: int
    duration: float
    phases: tuple[float, float, float, float, float]
    finished_at: float
    cert_not_after: float | None
    error: str | None
    redirects: int = 0


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
    if isinstance(exc, TimeoutError | httpcore.TimeoutException):
        return "timeout"
    chain = _chain(exc)
    if isinstance(exc, httpcore.ConnectError):
        if any(isinstance(e, socket.gaierror) for e in chain):
            return "dns"
        if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
            return "tls"
        return "connect"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return "tls"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
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


def _peer_cert_not_after(ssl_object: Any) -> float | None:
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return cert_not_after(der) if der else None


class _Trace:
    """Collects httpcore trace events into phase durations (connect, tls, request, wait, transfer).

    Also keeps the TLS object of the last handshake, so the certificate is read even when
    the server answers garbage afterwards.
    """

    __slots__ = ("cert", "phases", "started", "status")

    _PHASE_OF: dict[str, int] = {  # noqa: RUF012 - a class-level lookup table
        "connection.connect_tcp": 0,
        "connection.start_tls": 1,
        "http11.send_request_headers": 2,
        "http11.send_request_body": 2,
        "http11.receive_response_headers": 3,
        "http11.receive_response_body": 4,
    }

    def __init__(self) -> None:
        self.phases = [0.0, 0.0, 0.0, 0.0, 0.0]
        self.started: dict[str, float] = {}
        self.cert: float | None = None
        self.status = 0

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        step, _, stage = event.rpartition(".")
        index = self._PHASE_OF.get(step)
        if index is None:
            return
        if stage == "started":
            self.started[step] = time.perf_counter()
            return
        began = self.started.pop(step, None)
        if began is not None:
            self.phases[index] += time.perf_counter() - began
        if step == "connection.start_tls" and stage == "complete":
            stream = info.get("return_value")
            if stream is not None:
                self.cert = _peer_cert_not_after(stream.get_extra_info("ssl_object"))

    def finish_open(self, now: float) -> None:
        """Close phases still open when a deadline or failure cut them short."""
        for step, began in self.started.items():
            self.phases[self._PHASE_OF[step]] += now - began
        self.started.clear()


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


class Prober:
    """Runs probes with shared SSL contexts and network backend; one instance per process."""

    def __init__(
        self, *, keep_alive: bool = False, max_connections: int = 1000,
        ca_file: str | None = None,
    ) -> None:
        self.verified = make_ssl_context(verify=True, ca_file=ca_file)
        self.insecure = make_ssl_context(verify=False)
        self.backend = httpcore.AnyIOBackend()
        self.keep_alive = keep_alive
        self._pools: dict[bool, httpcore.AsyncConnectionPool] = {}
        if keep_alive:
            for verify, context in ((True, self.verified), (False, self.insecure)):
                self._pools[verify] = httpcore.AsyncConnectionPool(
                    ssl_context=context,
                    max_connections=max_connections,
                    network_backend=self.backend,
                    retries=0,
                )

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
        for pool in self._pools.values():
            await pool.aclose()

    async def probe(self, endpoint: Endpoint) -> ProbeResult:
        """Probe once; never raises (except CancelledError), every failure is a result."""
        trace = _Trace()
        status = 0
        hops = 0
        reason: str | None = None
        error: str | None = None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(endpoint.timeout):
                status, hops = await self._exchange(endpoint, trace)
        except (Exception, TimeoutError) as exc:
            status = trace.status  # headers may have arrived before the failure
            reason = classify(exc)
            if isinstance(exc, TimeoutError):
                error = f"no complete response within the {endpoint.timeout:g}s timeout"
            else:
                error = redact(describe(exc), endpoint.secrets)
        duration = time.perf_counter() - start
        trace.finish_open(time.perf_counter())
        cert = trace.cert
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
        p = trace.phases
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

    async def _exchange(self, endpoint: Endpoint, trace: _Trace) -> tuple[int, int]:
        """Send the request, follow redirects, read bodies up to the cap: (status, hops)."""
        target = endpoint.request
        method = endpoint.method.encode("ascii")
        body = endpoint.body
        headers = list(endpoint.headers)
        for hop in range(MAX_REDIRECTS + 1):
            status, location = await self._send_one(target, method, headers, body, endpoint, trace)
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
                headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
            if status == 303 or (status in (301, 302) and method == b"POST"):
                method, body = b"GET", None
            target = new_target
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_one(
        self,
        target: RequestTarget,
        method: bytes,
        headers: list[tuple[str, str]],
        body: bytes | None,
        endpoint: Endpoint,
        trace: _Trace,
    ) -> tuple[int, str | None]:
        raw_headers: list[tuple[bytes, bytes]] = [(b"Host", target.host_header)]
        names = set()
        for key, value in headers:
            raw_headers.append((key.encode("latin-1"), value.encode("utf-8")))
            names.add(key.lower())
        if "user-agent" not in names:
            raw_headers.append((b"User-Agent", USER_AGENT))
        if "accept" not in names:
            raw_headers.append((b"Accept", b"*/*"))
        if not self.keep_alive and "connection" not in names:
            raw_headers.append((b"Connection", b"close"))
        if body is not None and "content-length" not in names:
            raw_headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        timeout = endpoint.timeout
        request = httpcore.Request(
            method,
            httpcore.URL(scheme=target.scheme, host=target.host, port=target.port,
                         target=target.target),
            headers=raw_headers,
            content=body if body is not None else b"",
            extensions={
                "timeout": {"connect": timeout, "read": timeout, "write": timeout,
                            "pool": timeout},
                "trace": trace,
            },
        )
        if self.keep_alive:
            pool = self._pools[endpoint.verify_tls]
            response = await pool.handle_async_request(request)
            return await self._read(response, trace)
        connection = httpcore.AsyncHTTPConnection(
            origin=request.url.origin,
            ssl_context=self.verified if endpoint.verify_tls else self.insecure,
            network_backend=self.backend,
        )
        try:
            response = await connection.handle_async_request(request)
            return await self._read(response, trace)
        finally:
            await connection.aclose()

    async def _read(
        self, response: httpcore.Response, trace: _Trace
    ) -> tuple[int, str | None]:
        """Read the body up to BODY_CAP, keeping nothing; return (status, Location)."""
        status = response.status
        # Kept before the body is read, so a timeout mid-body still reports the status.
        trace.status = status
        try:
            received = 0
            async for chunk in response.aiter_stream():
                received += len(chunk)
                if received >= BODY_CAP:
                    break
        finally:
            await response.aclose()
        location = None
        for key, value in response.headers:
            if key.lower() == b"location":
                location = value.decode("latin-1")
                break
        return status, location

    async def _unverified_cert(self, target: RequestTarget, deadline: float) -> float | None:
        """Read the certificate a failing TLS server presents, without trusting it.

        blackbox_exporter drops the expiry when verification fails; an expired or self-signed
        certificate is exactly when its expiry matters most.
        """
        remaining = min(deadline - time.perf_counter(), 2.0)
        if remaining <= 0:
            return None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(remaining):
                _, writer = await asyncio.open_connection(
                    target.host.decode("ascii"), target.port, ssl=self.insecure,
                    server_hostname=target.host.decode("ascii"),
                )
                return _peer_cert_not_after(writer.get_extra_info("ssl_object"))
        except (OSError, TimeoutError, ssl.SSLError):
            return None
        finally:
            if writer is not None:
                writer.close()

