"""The local target server answers as its table says, on time and never early.

Through tests/targets.py's ``Targets`` (the server on a thread, as the end-to-end tests use
it), httpx as the client; the bench's and the demo's settings directly on a loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
import trustme

from availability_exporter.demo import SLOW_SECONDS, DemoServer
from availability_exporter.target_server import HOST, SLOW_MS, Recorder, TargetServer
from tests.targets import Targets, wait_for


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    with Targets() as running:
        yield running


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/", None, 200),
    ("GET", "/healthy", None, 200),
    ("GET", "/ok?id=7", None, 200),
    ("GET", "/error", None, 500),
    ("GET", "/slow?ms=20", None, 200),
    ("GET", "/d/20/endpoint-3", None, 200),
    ("GET", "/switch", None, 200),
    ("POST", "/body", b'{"foo":"bar"}', 200),
    ("POST", "/body", b"{}", 422),
    ("POST", "/body", b"not json", 422),
    ("GET", "/body", None, 404),
    ("GET", "/nothing-here", None, 404),
    ("HEAD", "/error", None, 500),
])
def test_paths_answer_as_the_table_says(targets: Targets, method: str, path: str,
                                        body: bytes | None, status: int) -> None:
    response = httpx.request(method, targets.url(path), content=body, timeout=5)
    assert response.status_code == status
    assert response.headers["connection"] == "close"
    expected = b"" if method == "HEAD" else f'{{"status": {status}}}\n'.encode()
    assert response.content == expected


def test_flap_alternates_starting_up_and_switch_follows_the_test(targets: Targets) -> None:
    with Targets() as fresh:
        assert [httpx.get(fresh.url("/flap")).status_code for _ in range(4)] == [
            200, 500, 200, 500]
    targets.switch_status = 503
    try:
        assert httpx.get(targets.url("/switch")).status_code == 503
    finally:
        targets.switch_status = 200


def test_redirects_carry_the_query(targets: Targets) -> None:
    loop = httpx.get(targets.url("/bounce?token=x"), follow_redirects=False)
    assert (loop.status_code, loop.headers["location"]) == (302, "/bounce?token=x")
    ftp = httpx.get(targets.url("/bounce-ftp?token=x"), follow_redirects=False)
    assert ftp.headers["location"] == f"ftp://{HOST}/?token=x"


def test_slow_waits_its_time_and_seen_keeps_the_headers(targets: Targets) -> None:
    started = time.perf_counter()
    httpx.get(targets.url("/slow"), headers={"X-Probe": "yes"}, timeout=5)
    assert time.perf_counter() - started >= SLOW_MS / 1000
    last = targets.seen[-1]
    assert (last.method, last.path, last.target) == ("GET", "/slow", "/slow")
    assert last.headers["X-Probe"] == "yes"
    assert last.head.endswith(b"\r\n\r\n")


def test_a_held_request_ends_when_the_client_leaves(targets: Targets) -> None:
    with socket.create_connection((HOST, targets.port), timeout=5) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for("the request to be held", lambda: targets.in_flight == 1 or None)
    wait_for("the held request to be dropped", lambda: targets.in_flight == 0 or None)


def test_tls() -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with Targets(tls=context) as secure:
        assert secure.url("/ok").startswith("https://")
        assert httpx.get(secure.url("/ok"), verify=client).status_code == 200


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_delays_are_never_early_and_recorded(use_uvloop: bool) -> None:
    """The bench's settings: /d/<ms>/ and default_ms, lateness and arrivals recorded."""
    if use_uvloop:
        uvloop = pytest.importorskip("uvloop")

    async def go() -> tuple[list[float], Recorder]:
        recorder = Recorder()
        server = TargetServer(default_ms=30, recorder=recorder)
        await server.start(ports=2)
        took: list[float] = []
        try:
            for index, path in enumerate(["/d/25/a", "/d/40/b", "/anything", "/d/0/c"]):
                reader, writer = await asyncio.open_connection(HOST, server.ports[index % 2])
                started = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                answer = await asyncio.wait_for(reader.read(), 5)
                took.append(time.perf_counter() - started)
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
                writer.close()
        finally:
            await server.stop()
        return took, recorder

    took, recorder = uvloop.run(go()) if use_uvloop else asyncio.run(go())
    for seconds, wanted in zip(took, [0.025, 0.040, 0.030, 0.0], strict=True):
        assert seconds >= wanted
    assert recorder.served == 4
    assert [path for _, path in recorder.arrivals] == ["/d/25/a", "/d/40/b", "/anything",
                                                       "/d/0/c"]
    assert len(recorder.lateness) == 3  # /d/0/ answers at once: nothing to be late for
    assert all(late >= 0 for late in recorder.lateness)
    assert recorder.stats()["served"] == 4


def test_demo_server_has_the_demo_paths() -> None:
    async def go() -> list[int]:
        server = DemoServer()
        await server.start()
        try:
            async with httpx.AsyncClient() as client:
                statuses = [(await client.get(server.url(path))).status_code
                            for path in ("/", "/healthy", "/error")]
                started = time.perf_counter()
                statuses.append((await client.get(server.url("/slow"))).status_code)
                assert time.perf_counter() - started >= SLOW_SECONDS
                return statuses
        finally:
            await server.stop()

    assert asyncio.run(go()) == [200, 200, 500, 200]
