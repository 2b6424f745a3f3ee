"""One probe: an endpoint in, a frozen ProbeResult out (no metrics, no globals).

The request goes through one shared ``httpx.AsyncClient``: httpx builds it (method, headers,
Host, the body byte for byte, basic auth from URL credentials) and builds every redirect
request (``response.next_request``: relative and non-ASCII ``Location``, 303 and
301/302-after-POST become GET, ``Authorization`` dropped on another origin); on another
origin the probe also drops every header from the endpoint's ``headers:`` and a 307/308 body
(:meth:`Prober._next_hop`), unless ``redirect_keep_headers: true``.  Under it,
:class:`~availability_exporter.transport.ProbeTransport` carries the bytes and reports phases
through the ``trace`` extension.  The probe follows at most 10 redirects itself, so each hop's
body is drained by the transport instead of being buffered by httpx.

Every failure becomes a *reason* in exactly one place, :func:`classify`, most specific first:

    ProbeFailure (bad redirects)                   -> its own reason (redirects)
    the exporter's own resources ran out (EMFILE,  -> exporter (never counted against the
      ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL)         endpoint; see stats)
    TimeoutError / httpx.TimeoutException          -> timeout
    a socket.gaierror in the chain                 -> dns
    an ssl.SSLError in the chain                   -> tls
    httpx.ConnectError, httpx.ProxyError           -> connect
    httpx.UnsupportedProtocol, httpx.InvalidURL    -> redirects (only a redirect can lead there)
    anything else (resets, malformed answers)      -> protocol
    a complete non-2xx answer                      -> status
      (with ``expect.status``: a status it does not list)
    a complete answer failing an ``expect`` check  -> content (checks.py; first 1 MiB)
    a complete 2xx answer over the threshold       -> slow
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable
from http.cookiejar import Cookie, CookieJar, CookiePolicy
from typing import Any

import httpx

from availability_exporter import checks, http1
from availability_exporter.config import parse_url, redact
from availability_exporter.model import EXPORTER_REASON, Endpoint, ProbeResult, State, TlsOptions
from availability_exporter.transport import BODY_BYTES, ROUTE, ProbeTransport, Route

MAX_REDIRECTS = 10
# Body bytes a probe keeps for response checks; the rest is read to its end and dropped.
BODY_CAP = checks.BODY_CAP
USER_AGENT = "availability-exporter/0.1"
_CONNECT, _TLS, _REQUEST, _WAIT, _TRANSFER = range(5)
# httpcore's trace event names (our transport emits the same ones) -> the phase they start.
_PHASE_STARTS = {
    "connection.connect_tcp.started": _CONNECT,
    "connection.start_tls.started": _TLS,
    "http11.send_request_headers.started": _REQUEST,
    "http2.send_request_headers.started": _REQUEST,
    "http11.receive_response_headers.started": _WAIT,
    "http2.receive_response_headers.started": _WAIT,
    "http11.receive_response_headers.complete": _TRANSFER,
    "http2.receive_response_headers.complete": _TRANSFER,
}
_PHASE_ENDS = frozenset((
    "http11.receive_response_body.complete",
    "http2.receive_response_body.complete",
    "http11.response_closed.started",
    "http2.response_closed.started",
))
_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
# Errors that say this process or host ran out of something (descriptors, socket buffers,
# memory, local ports), not that the endpoint failed: reason `exporter`.
EXPORTER_ERRNOS = frozenset((
    errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL,
))


class ProbeFailure(Exception):
    """A failure the probe itself detects (bad redirects), carrying its reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Phases:
    """The ``trace`` hook of one probe: phase durations summed over every hop, the last
    status received and the TLS certificate, from httpcore-style trace events."""

    __slots__ = ("_began", "_current", "cert_der", "phases", "status")

    def __init__(self) -> None:
        self.phases = [0.0, 0.0, 0.0, 0.0, 0.0]
        self._current = -1
        self._began = 0.0
        self.status = 0  # kept as soon as a status arrives, for failures mid-body
        self.cert_der: bytes | None = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        phase = _PHASE_STARTS.get(event)
        if phase is not None:
            if self._current >= 0:
                self.phases[self._current] += now - self._began
            self._current = phase
            self._began = now
            if phase == _TRANSFER:
                self.status = next(
                    (v for v in info.get("return_value", ()) if isinstance(v, int)), 0,
                )
        elif event in _PHASE_ENDS:
            self.end(now)
        elif event == "connection.start_tls.complete":
            ssl_object = info["return_value"].get_extra_info("ssl_object")
            if ssl_object is not None:
                self.cert_der = ssl_object.getpeercert(binary_form=True)

    def end(self, now: float) -> None:
        """Close the open phase (also when a deadline or failure cut it short)."""
        if self._current >= 0:
            self.phases[self._current] += now - self._began
            self._current = -1


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first.

    An implicit ``__context__`` is followed only where no explicit cause was given and the
    context was not suppressed (``raise ... from None``): it is whatever happened to be being
    handled at the time, which can be unrelated (an ImportError caught around the whole run).
    """
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    return seen


def _exporter_error(chain: list[BaseException]) -> OSError | None:
    """The error in ``chain`` saying the exporter ran out of a resource, if any."""
    for e in chain:
        if isinstance(e, OSError) and e.errno in EXPORTER_ERRNOS:
            return e
    return None


def classify(exc: BaseException) -> str:
    """Translate an exception raised while probing into one reason, most specific first."""
    if isinstance(exc, ProbeFailure):
        return exc.reason
    chain = _chain(exc)
    if _exporter_error(chain) is not None:
        return EXPORTER_REASON
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TooManyRedirects):
        return "redirects"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "dns"
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return "tls"
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError | http1.ConnectError):
        return "connect"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "redirects"
    return "protocol"


def judge(
    status: int, duration: float, threshold: float, *,
    accepts: Callable[[int], bool] | None = None, content: str | None = None,
) -> tuple[State, str | None]:
    """Classify a complete answer: up is 2xx within the threshold (exactly at it is up).

    With an ``expect:``, ``accepts`` says which statuses are good instead of 2xx, and
    ``content`` is the failed check's message (the answer is then down, however fast).
    """
    if not (accepts(status) if accepts is not None else 200 <= status <= 299):
        return State.DOWN, "status"
    if content is not None:
        return State.DOWN, "content"
    if duration > threshold:
        return State.DEGRADED, "slow"
    return State.UP, None


def describe(exc: BaseException) -> str:
    """A one-line human message for an exception, with its most telling cause.

    The most telling cause is the operating system's or TLS library's own error when there is
    one (``ConnectionRefusedError: [Errno 111] ...``, an SSL verification failure), since the
    wrappers above it repeat it or say less; otherwise the outermost exception with a message.
    Never the deepest for its own sake: that can be an unrelated error that was being handled.
    """
    chain = _chain(exc)
    exhausted = _exporter_error(chain)
    if exhausted is not None:
        return f"exporter out of resources: {type(exhausted).__name__}: {exhausted}"
    for e in reversed(chain):
        # An OSError without an errno is a wrapper (http1.ConnectError, a joined list).
        telling = isinstance(e, ssl.SSLError) or (isinstance(e, OSError) and e.errno is not None)
        if telling and str(e).strip():
            return f"{type(e).__name__}: {str(e).strip()}"
    for e in chain:
        text = str(e).strip()
        if text:
            return f"{type(e).__name__}: {text}"
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


def make_ssl_context(
    *, verify: bool, tls: TlsOptions | None = None, http2: bool = False,
) -> ssl.SSLContext:
    """One context per kind per process: loading the CA bundle per probe costs ~30 ms and
    ~180 MB.  ``tls.ca_file`` replaces the system trust store (SSL_CERT_FILE works too,
    through OpenSSL); ``tls.cert_file``/``key_file`` is the client certificate."""
    context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    if tls is not None and tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # httpcore sets ALPN on the contexts it is given, so HTTP/2 endpoints get their own.
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


_ContextKey = tuple[bool, TlsOptions | None, bool]


class Prober:
    """Runs probes through one shared httpx client and transport; one instance per process."""

    def __init__(
        self, *, keep_alive: bool = False, max_connections: int = 1000,
        ca_file: str | None = None,
    ) -> None:
        self._default_tls = TlsOptions(ca_file=ca_file) if ca_file else None
        self._contexts: dict[_ContextKey, ssl.SSLContext] = {}
        self.verified = self._context(True, None, False)
        self.insecure = self._context(False, None, False)
        self.transport = ProbeTransport(
            default=Route(self.verified), keep_alive=keep_alive, max_idle=max_connections,
        )
        # trust_env=False: proxy variables and .netrc are ignored, as blackbox does; a monitor
        # measures the path it was told to measure.  Redirects are followed by probe() itself.
        self.client = httpx.AsyncClient(
            transport=self.transport, trust_env=False, follow_redirects=False, timeout=None,
            cookies=_NO_COOKIES, max_redirects=MAX_REDIRECTS,
        )
        # Speed only (correctness is the jar's policy): parsing a response for Set-Cookie costs
        # ~28 µs, a tenth of a probe, and httpx offers no switch for it.
        self.client._cookies = _NoCookies(_NO_COOKIES)
        headers = self.client.headers
        # No Accept-Encoding: a probe reads and drops the body, so it asks for it as is.
        del headers["Accept-Encoding"]
        headers["User-Agent"] = USER_AGENT
        headers["Connection"] = "keep-alive" if keep_alive else "close"

    def _context(self, verify: bool, tls: TlsOptions | None, http2: bool) -> ssl.SSLContext:
        tls = tls or self._default_tls
        key = (verify, tls, http2)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = make_ssl_context(verify=verify, tls=tls, http2=http2)
        return context

    def route(self, endpoint: Endpoint) -> Route:
        """How this endpoint's requests travel (contexts are shared per distinct TLS setup)."""
        tls = endpoint.tls
        return Route(
            ssl_context=self._context(endpoint.verify_tls, tls, endpoint.http2),
            server_name=tls.server_name if tls else None,
            server_name_for=endpoint.request.raw_host.decode("ascii"),
            family=_FAMILIES[endpoint.ip_family],
            http2=endpoint.http2,
            proxy=endpoint.proxy,
            keep=BODY_CAP if endpoint.expect is not None and endpoint.expect.needs_body else 0,
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
                follow_redirects=False, verify_tls=True, line=0, request=parse_url(url),
            ))
        finally:
            server.close()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def probe(self, endpoint: Endpoint) -> ProbeResult:
        """Probe once; never raises (except CancelledError), every failure is a result."""
        phases = Phases()
        hops = 0
        status = 0
        response: httpx.Response | None = None
        body, size = b"", 0
        reason: str | None = None
        error: str | None = None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(endpoint.timeout):
                response, body, size, hops = await self._exchange(endpoint, phases)
                status = response.status_code
        except (Exception, TimeoutError) as exc:
            status = phases.status  # headers may have arrived before the failure
            reason = classify(exc)
            if isinstance(exc, TimeoutError):
                error = f"no complete response within the {endpoint.timeout:g}s timeout"
            else:
                error = redact(describe(exc), endpoint.secrets)
        duration = time.perf_counter() - start
        phases.end(time.perf_counter())
        cert = cert_not_after(phases.cert_der) if phases.cert_der else None
        if reason == "tls" and endpoint.is_https and cert is None:
            cert = await self._unverified_cert(endpoint, start + endpoint.timeout)
        if reason is None:
            expect = endpoint.expect
            content = None
            if expect is not None and response is not None and expect.status_ok(status):
                failed = expect.failure(response.headers, body, size)
                # A body may echo part of a secret ("Bearer <token>" sent, "<token>" shown).
                parts = {p for v in endpoint.secrets for p in (v, *v.split())}
                content = None if failed is None else redact(
                    failed, sorted(parts, key=len, reverse=True))
            state, reason = judge(
                status, duration, endpoint.latency_threshold,
                accepts=expect.status_ok if expect is not None else None, content=content,
            )
            if reason == "content":
                error = content
            elif reason == "status":
                error = f"HTTP status {status}"
            elif reason == "slow":
                error = (
                    f"took {duration * 1000:.0f} ms, over the "
                    f"{endpoint.latency_threshold * 1000:g} ms threshold"
                )
        else:
            state = State.DOWN
        p = phases.phases
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

    async def _exchange(
        self, endpoint: Endpoint, phases: Phases,
    ) -> tuple[httpx.Response, bytes, int, int]:
        """Send the request and follow redirects, each body read to its end: (the final
        response, the start of its body as sent (at most the route's ``keep`` bytes), the
        body's whole size, hops)."""
        route = self.route(endpoint)
        request = self.client.build_request(
            endpoint.method, endpoint.request,
            headers=[(k.encode("latin-1"), v.encode("utf-8")) for k, v in endpoint.headers],
            content=endpoint.body,
            extensions={ROUTE: route, "trace": phases},
        )
        hops = 0
        away = False  # a hop has gone to another origin: configured headers stay behind
        while True:
            try:
                # stream=True: httpx would buffer a whole body; _body() keeps only its start.
                response = await self.client.send(request, stream=True)
                try:
                    body, size = await _body(response, route.keep)
                finally:
                    await response.aclose()
            except httpx.RemoteProtocolError as exc:
                # httpx builds the next hop's request inside send(); an unusable Location is
                # its RemoteProtocolError "Invalid URL in location header".
                if "location header" in str(exc):
                    raise ProbeFailure("redirects", f"unusable redirect location: {exc}") from None
                raise
            phases.status = response.status_code
            next_request = response.next_request
            if next_request is None or not endpoint.follow_redirects:
                return response, body, size, hops
            if hops == MAX_REDIRECTS:
                raise ProbeFailure("redirects", f"more than {MAX_REDIRECTS} redirects")
            away = away or not _same_origin(request.url, next_request.url)
            if endpoint.headers or endpoint.body is not None:
                next_request = self._next_hop(endpoint, next_request, response.status_code,
                                              away=away)
            request = next_request
            hops += 1

    def _next_hop(
        self, endpoint: Endpoint, request: httpx.Request, code: int, *, away: bool,
    ) -> httpx.Request:
        """httpx's request for the next hop, with the configured headers the config means.

        ``away``: some hop so far went to another origin (scheme, host or port).  httpx drops
        only ``Authorization`` (and, on every hop, ``Cookie``) there; an ``X-Api-Key`` from
        ``headers:`` (often a ${VAR} secret) and a 307/308 body would follow, so the probe
        drops every configured header and that body.  They stay dropped for the rest of the
        chain, even back on the first origin: a redirect chain decides where a probe goes, not
        the config.  Until then
        (and always with ``redirect_keep_headers: true``, ``Authorization`` included, as curl's
        ``--location-trusted``) every configured header goes on: httpx drops a ``Cookie``
        header on every redirect, even to the same origin.  URL credentials never follow.
        """
        headers = request.headers.copy()
        if endpoint.redirect_keep_headers or not away:
            missing = [(k, v) for k, v in endpoint.headers if k not in headers]
            if not missing:
                return request
            for name, value in missing:
                headers[name] = value
            return httpx.Request(request.method, request.url, headers=headers,
                                 stream=request.stream, extensions=request.extensions)
        for name, _ in endpoint.headers:
            if name.lower() != "host":  # httpx set Host for the new URL
                headers.pop(name, None)
                default = self.client.headers.get(name)
                if default is not None:  # e.g. a configured User-Agent: ours again
                    headers[name] = default
        stream = request.stream
        if code in (307, 308) and endpoint.body is not None:
            for name in ("Content-Length", "Content-Type", "Transfer-Encoding"):
                headers.pop(name, None)
            stream = httpx.ByteStream(b"")
        return httpx.Request(request.method, request.url, headers=headers, stream=stream,
                             extensions=request.extensions)

    async def _unverified_cert(self, endpoint: Endpoint, deadline: float) -> float | None:
        """Read the certificate a failing TLS server presents, without trusting it.

        blackbox_exporter drops the expiry when verification fails; an expired or self-signed
        certificate is exactly when its expiry matters most.
        """
        remaining = min(deadline - time.perf_counter(), 2.0)
        if remaining <= 0:
            return None
        phases = Phases()
        route = self.route(endpoint)
        url = endpoint.request
        host = url.raw_host.decode("ascii")
        try:
            async with asyncio.timeout(remaining):
                connection = await http1.connect(
                    host, url.port or 443, ssl_context=self.insecure,
                    server_hostname=route.server_name or host, family=route.family,
                    trace=phases,
                )
        except (OSError, TimeoutError, ssl.SSLError, http1.ProtocolError):
            return None
        connection.abort()
        return cert_not_after(phases.cert_der) if phases.cert_der else None


async def _body(response: httpx.Response, keep: int) -> tuple[bytes, int]:
    """The first ``keep`` bytes of a response's body as sent, and its whole size, having read
    it to its end.  The project's transport has read it already and kept that start; httpx's
    own (HTTP/2, proxies) streams it here, and the rest is dropped as it arrives."""
    known: int | None = response.extensions.get(BODY_BYTES)
    if known is not None and not keep:
        return b"", known  # nothing to look at: skip httpx's stream machinery altogether
    if response.is_stream_consumed:  # a transport that answered with content in hand (mocks)
        return response.content[:keep], len(response.content)
    kept = bytearray()
    size = 0
    async for chunk in response.aiter_raw():  # raw: a compressed body is checked as sent
        size += len(chunk)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
    return bytes(kept), size if known is None else known


def _same_origin(url: httpx.URL, other: httpx.URL) -> bool:
    """Scheme, host and port all equal (an absent port is the scheme's default)."""
    defaults = {"http": 80, "https": 443}
    return (url.scheme, url.host, url.port or defaults.get(url.scheme)) == (
        other.scheme, other.host, other.port or defaults.get(other.scheme)
    )


class _RejectAll(CookiePolicy):
    """Cookies never persist between probes: each probe is a new client (like curl)."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = False

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


_NO_COOKIES = CookieJar(policy=_RejectAll())


class _NoCookies(httpx.Cookies):
    """The client's cookie store: nothing is ever taken from a response."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None
