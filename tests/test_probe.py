"""One probe: classification, reasons, phases, deadlines and byte-exact requests.

respx (mocking httpcore, the layer the prober drives) covers what a mock can show; a real
misbehaving server on 127.0.0.1 (tests/adversarial) covers what only a socket can.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

from availability_exporter.config import Defaults, Endpoint, parse_config
from availability_exporter.probe import (
    BODY_CAP,
    MAX_REDIRECTS,
    Prober,
    ProbeResult,
    State,
    cert_not_after,
    judge,
)
from tests.adversarial.certs import CertKind, CertSet, make_certs
from tests.adversarial.server import (
    UNRESOLVABLE_HOST,
    AdversarialServer,
    refused_port,
    serve_in_thread,
)


def endpoint(url: str, **extra: object) -> Endpoint:
    lines = [f"- name: probe-test\n  url: '{url}'\n"]
    for key, value in extra.items():
        lines.append(f"  {key}: {json.dumps(value)}\n")
    return parse_config("".join(lines).encode(), "t.yaml", Defaults()).endpoints[0]


def run(ep: Endpoint, prober: Prober | None = None) -> ProbeResult:
    async def go() -> ProbeResult:
        p = prober or Prober()
        try:
            return await p.probe(ep)
        finally:
            await p.aclose()

    return asyncio.run(go())


# -- classification of a complete answer ---------------------------------------------------

JUDGE = [
    (200, 0.1, 0.5, State.UP, None),
    (200, 0.5, 0.5, State.UP, None),  # exactly at the threshold is up
    (204, 0.5000001, 0.5, State.DEGRADED, "slow"),
    (299, 0.0, 0.5, State.UP, None),
    (300, 0.0, 0.5, State.DOWN, "status"),
    (199, 0.0, 0.5, State.DOWN, "status"),
    (404, 0.0, 0.5, State.DOWN, "status"),
    (500, 9.0, 0.5, State.DOWN, "status"),
]


@pytest.mark.parametrize(("status", "duration", "threshold", "state", "reason"), JUDGE)
def test_judge(status: int, duration: float, threshold: float, state: State,
               reason: str | None) -> None:
    assert judge(status, duration, threshold) == (state, reason)


# -- respx: what the request looks like and how answers are read ----------------------------

@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpcore", assert_all_called=False) as router:
        yield router


def test_2xx_is_up(mock: respx.MockRouter) -> None:
    mock.get("http://svc.example/").respond(200, text="ok")
    result = run(endpoint("http://svc.example/"))
    assert (result.state, result.reason, result.status_code) == (State.UP, None, 200)


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503])
def test_non_2xx_is_down_with_status(mock: respx.MockRouter, status: int) -> None:
    mock.get("http://svc.example/").respond(status)
    result = run(endpoint("http://svc.example/"))
    assert (result.state, result.reason, result.status_code) == (State.DOWN, "status", status)
    assert result.error == f"HTTP status {status}"


def test_redirects_are_followed(mock: respx.MockRouter) -> None:
    mock.get("http://svc.example/a").respond(301, headers={"Location": "/b"})
    mock.get("http://svc.example/b").respond(302, headers={"Location": "http://other.example/c"})
    mock.get("http://other.example/c").respond(200)
    result = run(endpoint("http://svc.example/a"))
    assert (result.state, result.status_code, result.redirects) == (State.UP, 200, 2)


def test_redirect_not_followed_when_disabled(mock: respx.MockRouter) -> None:
    mock.get("http://svc.example/a").respond(302, headers={"Location": "/b"})
    result = run(endpoint("http://svc.example/a", follow_redirects=False))
    assert (result.state, result.reason, result.status_code) == (State.DOWN, "status", 302)


def test_redirect_loop_is_redirects(mock: respx.MockRouter) -> None:
    route = mock.get("http://svc.example/loop").respond(302, headers={"Location": "/loop"})
    result = run(endpoint("http://svc.example/loop"))
    assert (result.state, result.reason) == (State.DOWN, "redirects")
    assert route.call_count == MAX_REDIRECTS + 1


def test_303_after_post_becomes_get_without_body(mock: respx.MockRouter) -> None:
    mock.post("http://svc.example/form").respond(303, headers={"Location": "/done"})
    done = mock.get("http://svc.example/done").respond(200)
    result = run(endpoint("http://svc.example/form", method="POST", body='{"a":1}'))
    assert result.state is State.UP
    assert done.calls.last.request.content == b""


def test_authorization_is_dropped_on_cross_origin_redirect(mock: respx.MockRouter) -> None:
    mock.get("http://svc.example/a").respond(302, headers={"Location": "http://evil.example/"})
    evil = mock.get("http://evil.example/").respond(200)
    run(endpoint("http://svc.example/a", headers={"Authorization": "Bearer t0ken", "X-A": "1"}))
    sent = evil.calls.last.request.headers
    assert "authorization" not in sent and sent["x-a"] == "1"


def test_body_and_headers_sent_byte_for_byte(mock: respx.MockRouter) -> None:
    route = mock.post("http://svc.example/body").respond(200)
    body = '{"foo":"bar", "ü": [1, 2]}'
    run(endpoint("http://svc.example/body", method="post", body=body,
                 headers={"content-type": "application/json", "X-Trace": "a b  c"}))
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.content == body.encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-trace"] == "a b  c"
    assert request.headers["content-length"] == str(len(body.encode()))


def test_missing_method_is_get_and_lower_case_is_upper(mock: respx.MockRouter) -> None:
    get = mock.get("http://svc.example/").respond(200)
    delete = mock.delete("http://svc.example/").respond(200)
    run(endpoint("http://svc.example/"))
    run(endpoint("http://svc.example/", method="delete"))
    assert get.call_count == 1 and delete.call_count == 1
    assert get.calls.last.request.content == b""


def test_connection_close_unless_keep_alive(mock: respx.MockRouter) -> None:
    route = mock.get("http://svc.example/").respond(200)
    run(endpoint("http://svc.example/"))
    assert route.calls.last.request.headers["connection"] == "close"


# -- a real misbehaving server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(certs: CertSet) -> Iterator[AdversarialServer]:
    with serve_in_thread(certs=certs) as srv:
        yield srv


def probe_url(url: str, *, ca: Path | None = None, **extra: object) -> ProbeResult:
    return run(endpoint(url, **extra), Prober(ca_file=str(ca) if ca else None))


SOCKET_CASES = [
    ("/ok", {}, State.UP, None, 200),
    ("/status?code=204", {}, State.UP, None, 204),
    ("/status?code=404", {}, State.DOWN, "status", 404),
    ("/error", {}, State.DOWN, "status", 500),
    ("/redirect?n=3", {}, State.UP, None, 200),
    ("/redirect-loop", {}, State.DOWN, "redirects", 302),
    ("/slow?ms=200", {}, State.UP, None, 200),
    ("/slow?ms=700", {}, State.DEGRADED, "slow", 200),
    ("/slow?ms=300", {"latency_threshold": 0.1}, State.DEGRADED, "slow", 200),
    ("/garbage", {}, State.DOWN, "protocol", 0),
    ("/half-status", {}, State.DOWN, "protocol", 0),
    ("/reset", {}, State.DOWN, "protocol", 0),
    ("/bigheader", {}, State.DOWN, "protocol", 0),
    ("/http10", {}, State.UP, None, 200),
    ("/hang", {"timeout": 1}, State.DOWN, "timeout", 0),
    ("/drip", {"timeout": 2}, State.DOWN, "timeout", 200),
]


@pytest.mark.parametrize(("path", "extra", "state", "reason", "status"), SOCKET_CASES,
                         ids=[c[0] for c in SOCKET_CASES])
def test_socket_behaviour(server: AdversarialServer, path: str, extra: dict[str, Any],
                          state: State, reason: str | None, status: int) -> None:
    result = probe_url(server.url(path), **extra)
    assert (result.state, result.reason, result.status_code) == (state, reason, status), result
    if state is not State.UP:
        assert result.error
    if path.startswith("/slow"):
        assert result.duration >= int(path.split("=")[1].split("&")[0]) / 1000


def test_phases_cover_the_probe(server: AdversarialServer) -> None:
    result = probe_url(server.url("/slow?ms=100"))
    connect, tls, request, wait, _transfer = result.phases
    assert tls == 0.0
    assert wait >= 0.1
    assert connect > 0 and request > 0
    assert sum(result.phases) <= result.duration


@pytest.mark.parametrize(("path", "timeout"), [("/hang", 1.0), ("/drip", 1.5)])
def test_deadline_covers_the_whole_probe(server: AdversarialServer, path: str,
                                         timeout: float) -> None:
    started = time.monotonic()
    result = probe_url(server.url(path), timeout=timeout)
    elapsed = time.monotonic() - started
    assert result.reason == "timeout"
    assert timeout <= result.duration < timeout + 0.1
    assert elapsed < timeout + 1.0


def test_hang_before_tls_handshake_is_timeout(server: AdversarialServer) -> None:
    result = probe_url(server.hang_accept_url(tls=True), timeout=1)
    assert (result.state, result.reason) == (State.DOWN, "timeout")


def test_huge_body_is_capped_and_memory_stays_small(server: AdversarialServer) -> None:
    tracemalloc.start()
    try:
        result = probe_url(server.url("/huge"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.state is State.UP and result.status_code == 200
    assert peak < 4 * BODY_CAP, peak


def test_exercise_body_endpoint_over_a_socket(server: AdversarialServer) -> None:
    ok = probe_url(server.url("/body"), method="POST", body='{"foo":"bar"}',
                   headers={"content-type": "application/json"})
    wrong = probe_url(server.url("/body"), method="POST", body="{}",
                      headers={"content-type": "application/json"})
    assert (ok.state, ok.status_code) == (State.UP, 200)
    assert (wrong.state, wrong.reason, wrong.status_code) == (State.DOWN, "status", 422)


def test_refused_port_is_connect() -> None:
    result = probe_url(f"http://127.0.0.1:{refused_port()}/")
    assert (result.state, result.reason, result.status_code) == (State.DOWN, "connect", 0)


def test_unresolvable_host_is_dns() -> None:
    result = probe_url(f"http://{UNRESOLVABLE_HOST}/")
    assert (result.state, result.reason) == (State.DOWN, "dns")


def _timestamp(when: datetime.datetime) -> float:
    return when.replace(microsecond=0).timestamp()


def test_tls_good_certificate(server: AdversarialServer, certs: CertSet) -> None:
    result = probe_url(server.url("/ok", tls=CertKind.GOOD), ca=certs.ca_path)
    assert result.state is State.UP
    assert result.cert_not_after == _timestamp(certs[CertKind.GOOD].not_after)
    assert result.phases[1] > 0  # the tls phase exists for https


@pytest.mark.parametrize("kind", [CertKind.EXPIRED, CertKind.SELF_SIGNED, CertKind.WRONG_HOST])
def test_tls_failures_still_export_expiry(server: AdversarialServer, certs: CertSet,
                                          kind: CertKind) -> None:
    result = probe_url(server.url("/ok", tls=kind), ca=certs.ca_path)
    assert (result.state, result.reason) == (State.DOWN, "tls")
    assert result.cert_not_after == _timestamp(certs[kind].not_after)


def test_tls_without_verification(server: AdversarialServer, certs: CertSet) -> None:
    result = probe_url(server.url("/ok", tls=CertKind.SELF_SIGNED), verify_tls=False)
    assert result.state is State.UP
    assert result.cert_not_after == _timestamp(certs[CertKind.SELF_SIGNED].not_after)


def test_keep_alive_reuses_connections(server: AdversarialServer) -> None:
    ep = endpoint(server.url("/ok"))
    before = server.connections_accepted

    async def go() -> list[ProbeResult]:
        prober = Prober(keep_alive=True)
        try:
            return [await prober.probe(ep) for _ in range(3)]
        finally:
            await prober.aclose()

    results = asyncio.run(go())
    assert all(r.state is State.UP for r in results)
    assert server.connections_accepted - before == 1


def test_cert_not_after_of_garbage_is_none() -> None:
    assert cert_not_after(b"") is None
    assert cert_not_after(b"\x30\x03\x02\x01\x00") is None

