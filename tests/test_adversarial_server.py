"""The adversarial target server behaves as documented, checked with plain sockets and ssl."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.adversarial import (
    UNRESOLVABLE_HOST,
    AdversarialServer,
    CertKind,
    CertSet,
    make_certs,
    refused_port,
    serve_in_thread,
)
from tests.adversarial.certs import VERIFY_CODE_BY_IP, VERIFY_CODE_BY_NAME, WRONG_HOST_NAME
from tests.adversarial.server import BIG_HEADER_BYTES, GARBAGE_PREFIX, HUGE_BODY_BYTES

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
IO_TIMEOUT = 5.0


@dataclass(frozen=True)
class Response:
    status_line: bytes
    headers: dict[str, str]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ")[1])


@pytest.fixture(scope="module")
def server(server: AdversarialServer) -> Iterator[AdversarialServer]:
    """conftest's server, which must have logged no error of its own by the end of the module."""
    yield server
    assert server.stats().errors == ()


def connect(port: int, *, context: ssl.SSLContext | None = None, host: str = HOST) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def send_request(
    sock: socket.socket,
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    close: bool = True,
) -> None:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def read_head(sock: socket.socket) -> tuple[bytes, dict[str, str], bytes]:
    """Read up to the end of the response head; return status line, headers, bytes after."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the head ended: {data[:200]!r}"
        data += chunk
        assert len(data) < 4 * 1024 * 1024
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.lower()] = value.strip()
    return status_line, headers, rest


def read_response(sock: socket.socket) -> Response:
    """One response, delimited by Content-Length, else by the server closing."""
    status_line, headers, body = read_head(sock)
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside the body"
            body += chunk
        return Response(status_line, headers, body[:length])
    return Response(status_line, headers, body + read_to_eof(sock))


def read_to_eof(sock: socket.socket, limit: int = 16 * 1024 * 1024) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        assert len(data) <= limit
    return data


def fetch(
    port: int,
    path: str,
    *,
    context: ssl.SSLContext | None = None,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    with connect(port, context=context) as sock:
        send_request(sock, path, method=method, headers=headers, body=body)
        return read_response(sock)


# Well-behaved answers


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ok", 200),
        ("/", 200),
        ("/error", 500),
        ("/status?code=503", 503),
        ("/status?code=201", 201),
        ("/status?code=99", 400),
        ("/status", 400),
        ("/no-such-path", 404),
    ],
)
def test_status_of_simple_paths(server: AdversarialServer, path: str, status: int) -> None:
    response = fetch(server.port, path)
    assert response.status == status
    assert int(response.headers["content-length"]) == len(response.body)


def test_ok_counts_requests_and_connections(server: AdversarialServer) -> None:
    before = server.stats()
    response = fetch(server.port, "/ok")
    assert (response.status, response.body) == (200, b"ok\n")
    after = server.stats()
    assert server.requests("/ok") == before.requests.get("/ok", 0) + 1
    assert after.connections_accepted == before.connections_accepted + 1
    assert after.accepted_by_listener["http"] == before.accepted_by_listener["http"] + 1


def test_keep_alive_serves_several_requests_on_one_connection(server: AdversarialServer) -> None:
    before = server.connections_accepted
    with connect(server.port) as sock:
        for path in ("/ok", "/status?code=404", "/redirect?n=2", "/ok"):
            send_request(sock, path, close=False)
            assert read_response(sock).status in (200, 404, 302)
    assert server.connections_accepted == before + 1


def test_slow_answers_no_earlier_than_asked(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        started = time.monotonic()
        send_request(sock, "/slow?ms=200")
        response = read_response(sock)
        elapsed = time.monotonic() - started
    assert response.status == 200
    assert elapsed >= 0.200
    assert float(response.headers["x-slept-ms"]) >= 200.0


def test_slow_body_sends_headers_first(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        started = time.monotonic()
        send_request(sock, "/slow?ms=300&part=body")
        _, headers, early_body = read_head(sock)
        head_at = time.monotonic() - started
        body = early_body + read_to_eof(sock)
        body_at = time.monotonic() - started
    assert headers["content-length"] == str(len(body))
    assert early_body == b""
    assert body_at >= 0.300
    assert head_at < body_at


def test_slow_sees_a_client_that_leaves_early(server: AdversarialServer) -> None:
    before = server.requests("/slow")
    with connect(server.port) as sock:
        send_request(sock, "/slow?ms=60000")
        assert server.wait_until(lambda stats: stats.requests.get("/slow", 0) > before, 5)
    # Far sooner than the 60 s answer: the server notices the close while it waits.
    assert server.wait_until(lambda stats: stats.connections_open == 0, timeout=5)


def test_redirect_chain_has_k_hops_ending_at_ok(server: AdversarialServer) -> None:
    path = "/redirect?n=3"
    hops: list[str] = []
    for _ in range(10):
        response = fetch(server.port, path)
        if response.status != 302:
            break
        path = response.headers["location"]
        hops.append(path)
    assert hops == ["/redirect?n=2", "/redirect?n=1", "/ok"]
    assert (response.status, response.body) == (200, b"ok\n")


def test_redirect_loop_points_at_itself(server: AdversarialServer) -> None:
    for _ in range(3):
        response = fetch(server.port, "/redirect-loop")
        assert (response.status, response.headers["location"]) == (302, "/redirect-loop")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"foo":"bar"}', 200),
        (b'{ "foo" : "bar" }\n', 200),
        (b"{}", 422),
        (b'{"foo":"baz"}', 422),
        (b'{"foo":"bar","x":1}', 422),
        (b"not json", 422),
        (b"", 422),
    ],
)
def test_body_accepts_only_foo_bar(server: AdversarialServer, body: bytes, status: int) -> None:
    headers = [("Content-Type", "application/json")]
    assert fetch(server.port, "/body", method="POST", headers=headers, body=body).status == status


def test_echo_returns_headers_and_body_byte_for_byte(server: AdversarialServer) -> None:
    body = bytes(range(256)) + b'{"foo":"bar"}'
    headers = [("X-MiXeD-Case", "Value With  Spaces"), ("x-dup", "1"), ("x-dup", "2")]
    response = fetch(server.port, "/echo?q=1", method="PATCH", headers=headers, body=body)
    document = json.loads(response.body)
    assert document["method"] == "PATCH"
    assert document["target"] == "/echo?q=1"
    assert document["version"] == "HTTP/1.1"
    received = [tuple(pair) for pair in document["headers"]]
    assert received[1:4] == headers
    assert ("Content-Length", str(len(body))) in received
    assert base64.b64decode(document["body_base64"]) == body
    head = base64.b64decode(document["head_base64"])
    assert head.startswith(b"PATCH /echo?q=1 HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")


def test_echo_reads_a_chunked_body(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
        )
        document = json.loads(read_response(sock).body)
    assert base64.b64decode(document["body_base64"]) == b"hello world"


def test_oversized_request_head_gets_431(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/ok", headers=[("X-Big", "a" * 70_000)])
        assert read_response(sock).status == 431


# Broken answers


def test_garbage_is_not_http(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/garbage")
        data = read_to_eof(sock)
    assert data.startswith(GARBAGE_PREFIX)
    assert len(data) > len(GARBAGE_PREFIX)
    assert not data.startswith(b"HTTP/")


def test_half_status_closes_mid_status_line(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/half-status")
        assert read_to_eof(sock) == b"HTTP/1.1 20"


def test_http10_body_ends_at_close(server: AdversarialServer) -> None:
    response = fetch(server.port, "/http10")
    assert response.status_line == b"HTTP/1.0 200 OK"
    assert "content-length" not in response.headers
    assert response.body == b"http/1.0 body, ended by close\n"


def test_bigheader_sends_a_256_kib_head(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/bigheader")
        data = read_to_eof(sock)
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator
    assert len(head) >= BIG_HEADER_BYTES
    assert body == b"big header\n"


def test_reset_gives_connection_reset(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/reset")
        with pytest.raises(ConnectionResetError):
            read_to_eof(sock)


def test_refused_port_refuses() -> None:
    port = refused_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=IO_TIMEOUT).close()


def test_unresolvable_host_does_not_resolve() -> None:
    # The lookup runs in a thread so a resolver that never answers cannot hold the test.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        lookup = pool.submit(socket.getaddrinfo, UNRESOLVABLE_HOST, 80)
        with pytest.raises(socket.gaierror):
            lookup.result(timeout=15)


# Slow and endless answers


def test_drip_sends_one_byte_per_second(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/drip")
        _, headers, early = read_head(sock)
        head_at = time.monotonic()
        assert headers["content-length"] == "100"
        assert early == b""
        arrivals: list[float] = []
        for _ in range(3):
            assert sock.recv(100) == b"x"
            arrivals.append(time.monotonic() - head_at)
    for index, arrival in enumerate(arrivals, start=1):
        # The server schedules byte k at k seconds after it sent the head.
        assert index - 0.05 <= arrival <= index + 0.5, arrivals


def test_huge_streams_until_the_client_leaves(server: AdversarialServer) -> None:
    with connect(server.port) as sock:
        send_request(sock, "/huge")
        _, headers, received = read_head(sock)
        assert headers["content-length"] == str(HUGE_BODY_BYTES) == "268435456"
        total = len(received)
        while total < 2 * 1024 * 1024:
            chunk = sock.recv(1024 * 1024)
            assert chunk
            total += len(chunk)
    assert server.wait_until(lambda stats: stats.connections_open == 0, timeout=5)


def test_hang_reads_and_never_answers(server: AdversarialServer) -> None:
    before = server.requests("/hang")
    with connect(server.port) as sock:
        send_request(sock, "/hang")
        assert server.wait_until(lambda stats: stats.requests.get("/hang", 0) > before, 5)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert server.wait_until(lambda stats: stats.connections_open == 0, timeout=5)


@pytest.mark.parametrize("tls", [False, True])
def test_hang_accept_never_answers(server: AdversarialServer, certs: CertSet, tls: bool) -> None:
    before = server.stats().accepted_by_listener.get("hang-accept", 0)
    with socket.create_connection((HOST, server.hang_accept_port), timeout=0.3) as raw:
        if tls:
            with pytest.raises(TimeoutError):
                certs.client_context().wrap_socket(raw, server_hostname=HOST)
        else:
            send_request(raw, "/ok")
            with pytest.raises(TimeoutError):
                raw.recv(1)
    assert server.stats().accepted_by_listener["hang-accept"] == before + 1
    assert server.hang_accept_url(tls=tls).endswith(f":{server.hang_accept_port}/hang-accept")


# TLS


def test_tls_good_certificate_verifies_with_the_ca(
    server: AdversarialServer, certs: CertSet
) -> None:
    for host in ("127.0.0.1", "localhost"):
        with connect(
            server.tls_port(CertKind.GOOD), context=certs.client_context(), host=host
        ) as s:
            assert isinstance(s, ssl.SSLSocket)
            der = s.getpeercert(binary_form=True)
            send_request(s, "/redirect?n=1")
            assert read_response(s).status == 302
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    assert leaf.not_valid_after_utc == certs[CertKind.GOOD].not_after
    assert certs[CertKind.GOOD].not_after > datetime.datetime.now(datetime.UTC)
    assert server.url("/ok", tls=CertKind.GOOD).startswith("https://127.0.0.1:")


def test_tls_good_certificate_fails_without_the_ca(
    server: AdversarialServer, tmp_path: Path
) -> None:
    # A second, unrelated CA: the good leaf does not chain to it.
    context = make_certs(tmp_path).client_context()
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        connect(server.tls_port(CertKind.GOOD), context=context)
    assert caught.value.verify_code == 20  # unable to get local issuer certificate


@pytest.mark.parametrize("kind", [CertKind.EXPIRED, CertKind.SELF_SIGNED, CertKind.WRONG_HOST])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_bad_certificates_fail_verification(
    server: AdversarialServer, certs: CertSet, kind: CertKind, host: str
) -> None:
    expected = VERIFY_CODE_BY_IP if host == HOST else VERIFY_CODE_BY_NAME
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        connect(server.tls_port(kind), context=certs.client_context(), host=host)
    assert caught.value.verify_code == expected[kind]


def test_tls_bad_certificates_still_serve_without_verification(
    server: AdversarialServer, certs: CertSet
) -> None:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    now = datetime.datetime.now(datetime.UTC)
    for kind in CertKind:
        with connect(server.tls_port(kind), context=insecure) as sock:
            assert isinstance(sock, ssl.SSLSocket)
            der = sock.getpeercert(binary_form=True)
            send_request(sock, "/ok")
            assert read_response(sock).status == 200
        assert der is not None
        leaf = x509.load_der_x509_certificate(der)
        assert leaf.not_valid_after_utc == certs[kind].not_after
        assert (certs[kind].not_after < now) == (kind is CertKind.EXPIRED)
    wrong = x509.load_pem_x509_certificate(certs[CertKind.WRONG_HOST].cert_pem)
    names = wrong.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [WRONG_HOST_NAME]


def test_tls_huge_stops_when_the_client_leaves(server: AdversarialServer, certs: CertSet) -> None:
    with connect(server.tls_port(CertKind.GOOD), context=certs.client_context()) as sock:
        send_request(sock, "/huge")
        _, _, received = read_head(sock)
        total = len(received)
        while total < 1024 * 1024:
            chunk = sock.recv(256 * 1024)
            assert chunk
            total += len(chunk)
    assert server.wait_until(lambda stats: stats.connections_open == 0, timeout=5)


def test_tls_reset_is_a_tcp_reset(server: AdversarialServer, certs: CertSet) -> None:
    # Python's SSLSocket reports a reset under TLS as a ragged EOF, so TLS runs over
    # memory BIOs here and the TCP socket's own error is what the test sees.
    with connect(server.tls_port(CertKind.GOOD)) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = certs.client_context().wrap_bio(incoming, outgoing, server_hostname=HOST)
        for _ in range(10):
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(outgoing.read())
        with pytest.raises(ConnectionResetError):
            read_to_eof(sock)


# Stopping


def test_thread_server_stops_within_2s_with_hanging_clients(certs: CertSet) -> None:
    threads_before = set(threading.enumerate())
    clients: list[socket.socket] = []
    try:
        with serve_in_thread(certs=certs) as server:
            tls = certs.client_context()
            for path in ("/hang", "/drip", "/huge", "/slow?ms=60000"):
                sock = connect(server.port)
                clients.append(sock)
                send_request(sock, path)
            tls_sock = connect(server.tls_port(CertKind.GOOD), context=tls)
            clients.append(tls_sock)
            send_request(tls_sock, "/hang")
            clients.append(socket.create_connection((HOST, server.hang_accept_port)))
            raw_tls = socket.create_connection((HOST, server.tls_port(CertKind.GOOD)))
            clients.append(raw_tls)  # TCP open, TLS handshake never started
            assert server.wait_until(
                lambda stats: sum(stats.requests.values()) == 5 and stats.connections_open == 7,
                timeout=5,
            )
            stopping_at = time.monotonic()
        stop_took = time.monotonic() - stopping_at
        assert stop_took < 2.0
        assert server.connections_open == 0
        assert server.stats().errors == ()
        assert set(threading.enumerate()) <= threads_before
        for sock in clients:
            sock.settimeout(IO_TIMEOUT)
            try:
                while sock.recv(1024 * 1024):
                    pass
            except (ConnectionResetError, ssl.SSLError):
                pass
    finally:
        for sock in clients:
            sock.close()


def test_runs_inside_a_test_event_loop() -> None:
    async def scenario() -> None:
        async with AdversarialServer() as server:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            writer.write(b"GET /slow?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await reader.readexactly(5) == b"slow\n"
            writer.close()
            await writer.wait_closed()
            assert await server.wait_until_async(lambda s: s.connections_open == 0, 5)

            hanging_reader, hanging_writer = await asyncio.open_connection(HOST, server.port)
            hanging_writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await server.wait_until_async(lambda s: s.requests.get("/hang") == 1, 5)
            await asyncio.wait_for(server.stop(), 2.0)
            assert await asyncio.wait_for(hanging_reader.read(), 2.0) == b""
            hanging_writer.close()
        assert server.connections_open == 0

    asyncio.run(scenario())
