"""The per-endpoint wire options, each against a real local server: ``http2`` (through httpx's
own transport, against Hypercorn), ``proxy`` (a forward proxy that tunnels and relays),
``tls`` (a private CA, a client certificate, another server name) and ``ip_family`` (a name
whose first address is dead)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from availability_exporter.config import Defaults, parse_config
from availability_exporter.model import Endpoint, ProbeResult, State
from tests import factories

HOST = "127.0.0.1"
BIG = 16 * 1024 * 1024  # an HTTP/2 body far larger than the 1 MiB a probe keeps


def endpoint(url: str, **extra: object) -> Endpoint:
    return factories.endpoint(url, name="option-test", timeout=5, **extra)


def probe(ep: Endpoint) -> ProbeResult:
    return factories.probe_once(ep)


class Background:
    """An event loop on a daemon thread, for servers the probe under test talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def background() -> Iterator[Background]:
    running = Background()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 and alt.test, a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert(HOST, "alt.test")
    client = ca.issue_cert("probe.client.test")
    files = {"ca": directory / "ca.pem", "server": directory / "server.pem",
             "client": directory / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
    writer.close()


def listen(background: Background, handler: Handler, *, host: str = HOST,
           context: ssl.SSLContext | None = None) -> int:
    async def start() -> int:
        server = await asyncio.start_server(handler, host, 0, ssl=context)
        return int(server.sockets[0].getsockname()[1])

    port: int = background.run(start())
    return port


def server_context(pki: dict[str, Path], *, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki["server"]))
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(pki["ca"]))
    return context


# -- tls --------------------------------------------------------------------------------------

def test_private_ca_is_trusted_only_with_ca_file(background: Background,
                                                 pki: dict[str, Path]) -> None:
    port = listen(background, answer_ok, context=server_context(pki))
    url = f"https://{HOST}:{port}/"
    assert probe(endpoint(url)).reason == "tls"
    result = probe(endpoint(url, tls={"ca_file": str(pki["ca"])}))
    assert (result.state, result.reason) == (State.UP, None), result
    assert result.cert_not_after is not None


def test_client_certificate_is_presented(background: Background, pki: dict[str, Path]) -> None:
    port = listen(background, answer_ok, context=server_context(pki, require_client=True))
    url = f"https://{HOST}:{port}/"
    without = probe(endpoint(url, tls={"ca_file": str(pki["ca"])}))
    assert without.state is State.DOWN and without.reason in ("tls", "protocol"), without
    result = probe(endpoint(url, tls={"ca_file": str(pki["ca"]),
                                      "cert_file": str(pki["client"])}))
    assert (result.state, result.reason) == (State.UP, None), result


def test_server_name_sets_sni_and_the_name_verified(background: Background,
                                                    pki: dict[str, Path]) -> None:
    names: list[str | None] = []
    context = server_context(pki)

    def note(sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = note
    port = listen(background, answer_ok, context=context)
    url = f"https://{HOST}:{port}/"
    result = probe(endpoint(url, tls={"ca_file": str(pki["ca"]), "server_name": "alt.test"}))
    assert (result.state, result.reason) == (State.UP, None), result
    wrong = probe(endpoint(url, tls={"ca_file": str(pki["ca"]), "server_name": "nope.test"}))
    assert wrong.reason == "tls"
    assert names[:2] == ["alt.test", "nope.test"]


def test_bad_tls_files_are_config_errors(tmp_path: Path, pki: dict[str, Path]) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    source = (f"- name: a\n  url: https://{HOST}/\n  tls: {{ca_file: {garbage}}}\n"
              f"- name: b\n  url: https://{HOST}/\n  tls: {{cert_file: {tmp_path}/none.pem}}\n"
              f"- name: c\n  url: https://{HOST}/\n  tls: {{key_file: {pki['client']}}}\n"
              f"- name: d\n  url: https://{HOST}/\n  tls: {{ca: x}}\n")
    from availability_exporter.config import ConfigError
    with pytest.raises(ConfigError) as info:
        parse_config(source.encode(), "t.yaml", Defaults())
    problems = info.value.problems
    assert problems[0].startswith(f"t.yaml:3: endpoint 'a': tls: ca_file '{garbage}' cannot")
    assert problems[1].startswith("t.yaml:6: endpoint 'b': tls: cert_file")
    assert "No such file" in problems[1]
    assert problems[2] == "t.yaml:9: endpoint 'c': tls.key_file needs tls.cert_file"
    assert problems[3] == ("t.yaml:12: endpoint 'd': tls: unknown key 'ca'; allowed keys: "
                           "ca_file, cert_file, key_file, server_name")


# -- ip_family ----------------------------------------------------------------------------------

def test_ip_family_probes_only_that_family(background: Background,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """dual.test has a dead AAAA (::1, nothing listening) before a live A record."""
    port = listen(background, answer_ok, host=HOST)
    real = socket.getaddrinfo

    def fake(host: str, port_: int, family: int = 0, type_: int = 0,
             *args: Any) -> list[Any]:
        if host != "dual.test":
            return real(host, port_, family, type_, *args)
        both = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port_, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST, port_))]
        return [info for info in both if family in (socket.AF_UNSPEC, info[0])]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    url = f"http://dual.test:{port}/"
    assert probe(endpoint(url)).state is State.UP  # any: the dead address, then the live one
    assert probe(endpoint(url, ip_family="ipv4")).state is State.UP
    only_v6 = probe(endpoint(url, ip_family="ipv6"))
    assert (only_v6.state, only_v6.reason) == (State.DOWN, "connect")


def test_ip_family_against_a_literal_of_the_other_family_is_a_config_error() -> None:
    from availability_exporter.config import ConfigError
    with pytest.raises(ConfigError) as info:
        parse_config(b"- {name: a, url: 'http://[::1]:80/', ip_family: ipv4}\n"
                     b"- {name: b, url: 'http://10.0.0.1/', ip_family: ipv6}\n"
                     b"- {name: c, url: 'http://h/', ip_family: v4}\n", "t.yaml", Defaults())
    assert info.value.problems == [
        "t.yaml:1: endpoint 'a': ip_family ipv4 cannot reach the IPv6 address ::1",
        "t.yaml:2: endpoint 'b': ip_family ipv6 cannot reach the IPv4 address 10.0.0.1",
        "t.yaml:3: endpoint 'c': ip_family must be one of any, ipv4, ipv6, not 'v4'",
    ]


# -- proxy --------------------------------------------------------------------------------------

class ForwardProxy:
    """An HTTP forward proxy: CONNECT tunnels, absolute-form requests relayed as they are."""

    def __init__(self) -> None:
        self.request_lines: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            self.request_lines.append(line)
            method, target, _ = line.split(b" ", 2)
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                authority = target.split(b"/")[2].decode()
                host, _, port = authority.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


def test_proxy_relays_http_and_tunnels_https(background: Background,
                                             pki: dict[str, Path]) -> None:
    proxy = ForwardProxy()
    proxy_port = listen(background, proxy.handle)
    plain = listen(background, answer_ok)
    secure = listen(background, answer_ok, context=server_context(pki))
    proxy_url = f"http://{HOST}:{proxy_port}"
    result = probe(endpoint(f"http://{HOST}:{plain}/via", proxy=proxy_url))
    assert (result.state, result.reason) == (State.UP, None), result
    result = probe(endpoint(f"https://{HOST}:{secure}/", proxy=proxy_url,
                            tls={"ca_file": str(pki["ca"])}))
    assert (result.state, result.reason) == (State.UP, None), result
    assert proxy.request_lines == [
        f"GET http://{HOST}:{plain}/via HTTP/1.1".encode(),
        f"CONNECT {HOST}:{secure} HTTP/1.1".encode(),
    ]


def test_a_dead_proxy_is_connect() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        dead = s.getsockname()[1]
    result = probe(endpoint(f"http://{HOST}:1/", proxy=f"http://{HOST}:{dead}"))
    assert (result.state, result.reason) == (State.DOWN, "connect")


def test_proxy_credentials_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_PASS", "pr0xy-secret")
    ep = endpoint("http://h.test/", proxy="http://user:${PROXY_PASS}@127.0.0.1:3128")
    assert "pr0xy-secret" in ep.secrets and "pr0xy-secret" not in repr(ep)


# -- http2 --------------------------------------------------------------------------------------

def test_http2_goes_over_h2(background: Background, pki: dict[str, Path]) -> None:
    hypercorn_config = pytest.importorskip("hypercorn.config")
    hypercorn_asyncio = pytest.importorskip("hypercorn.asyncio")
    versions: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        versions.append(scope["http_version"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        if scope["path"] != "/big":
            await send({"type": "http.response.body", "body": b"ok"})
            return
        piece = b"x" * 65536
        for _ in range(BIG // len(piece)):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"UP"})

    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = hypercorn_config.Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.certfile = str(pki["server"])
    config.keyfile = str(pki["server"])
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()

    async def shutdown() -> None:
        await stop.wait()

    async def set_stop() -> None:
        stop.set()

    served = asyncio.run_coroutine_threadsafe(
        hypercorn_asyncio.serve(app, config, shutdown_trigger=shutdown), background.loop)
    try:
        url = f"https://{HOST}:{port}/h2"
        result = probe(endpoint(url, http2=True, tls={"ca_file": str(pki["ca"])}))
        assert (result.state, result.reason, result.status_code) == (State.UP, None, 200), result
        connect, tls, request, wait, _ = result.phases
        assert connect > 0 and tls > 0 and request >= 0 and wait > 0
        assert result.cert_not_after is not None
        plain = probe(endpoint(url, tls={"ca_file": str(pki["ca"])}))
        assert plain.state is State.UP
        assert versions == ["2", "1.1"]
        # httpx's own transport streams the body: it is read to its end, never held whole.
        big = endpoint(f"https://{HOST}:{port}/big", http2=True, latency_threshold=4,
                       tls={"ca_file": str(pki["ca"])},
                       expect={"body_not_contains": "UP", "max_body_bytes": BIG + 2})
        tracemalloc.start()
        try:
            result = probe(big)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The kept first MiB has no "UP"; the whole size is BIG + 2, within the limit.
        assert (result.state, result.reason) == (State.UP, None), result
        assert peak < BIG // 2, f"{peak} bytes at peak for a {BIG}-byte body"
    finally:
        background.run(set_stop())
        served.result(10)
        with contextlib.suppress(OSError):  # Hypercorn closes the socket it was given
            sock.close()


# -- a server that answers before it has read the request body --------------------------------

def test_an_early_answer_is_read_and_the_unsent_body_is_not_held(background: Background) -> None:
    """The server answers 200 after the head and never reads the 16 MiB POST body: the probe
    reads the answer, and the connection (with what is still unsent) is let go at once
    instead of lingering for as long as the server keeps it open."""
    closed = asyncio.Event()
    released: list[float] = []

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            answered = time.monotonic()
            # Never read the body on purpose; wait for the client to give up the connection.
            reader._transport.pause_reading()  # type: ignore[attr-defined]
            await asyncio.wait_for(_closed(writer), 10)
            released.append(time.monotonic() - answered)
        closed.set()
        writer.close()

    port = listen(background, early)
    body = "x" * (16 * 1024 * 1024)
    result = probe(endpoint(f"http://{HOST}:{port}/upload", method="POST", body=body))
    assert (result.state, result.reason, result.status_code) == (State.UP, None, 200), result
    assert background.run(asyncio.wait_for(closed.wait(), 10)) is True
    assert released and released[0] < 2.0, released


async def _closed(writer: asyncio.StreamWriter) -> None:
    """Until the peer has let the connection go: a byte written every 10 ms then fails."""
    for _ in range(1000):  # 10 s at most
        try:
            writer.write(b"\0")
            await writer.drain()
        except OSError:
            return
        if writer.is_closing():
            return
        await asyncio.sleep(0.01)
