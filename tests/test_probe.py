"""One probe: classification, reasons, phases, deadlines and byte-exact requests.

Everything runs through `Prober().probe(endpoint)` against a real misbehaving server on
127.0.0.1 (tests/adversarial), which also logs each request as it arrived, so what is sent is
checked on the wire, whatever HTTP engine the prober uses.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from availability_exporter.model import ProbeResult, State
from availability_exporter.probe import (
    BODY_CAP,
    MAX_REDIRECTS,
    USER_AGENT,
    Prober,
    cert_not_after,
    judge,
)
from tests.adversarial.certs import CertKind, CertSet
from tests.adversarial.server import (
    UNRESOLVABLE_HOST,
    AdversarialServer,
    Request,
    refused_port,
)
from tests.factories import endpoint, probe_once

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


# -- the server: real sockets on 127.0.0.1 -------------------------------------------------

def probe_url(url: str, *, ca: Path | None = None, **extra: object) -> ProbeResult:
    return probe_once(endpoint(url, **extra), Prober(ca_file=str(ca) if ca else None))


# -- what the server receives, and how its answers are read ---------------------------------
# Through Prober.probe only, against a real server on 127.0.0.1 that logs each request as it
# arrived (tests/adversarial); 127.0.0.1 and localhost are two origins on the same port.


def values(request: Request, name: str) -> list[bytes]:
    """Every value of header `name` (case-insensitive) in `request`, in the order received."""
    wanted = name.lower().encode("ascii")
    return [value for key, value in request.headers if key.lower() == wanted]


def redirect_to(location: str, code: int = 302) -> str:
    """Path and query of the server's answer `code` with `Location: location` (sent verbatim)."""
    return "/redirect-to?" + urlencode({"code": code, "location": location})


def test_2xx_is_up(server: AdversarialServer) -> None:
    with server.recording() as log:
        result = probe_url(server.url("/ok"))
    assert (result.state, result.reason, result.status_code) == (State.UP, None, 200)
    assert [r.target for r in log.requests] == ["/ok"]


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503])
def test_non_2xx_is_down_with_status(server: AdversarialServer, status: int) -> None:
    result = probe_url(server.url(f"/status?code={status}"))
    assert (result.state, result.reason, result.status_code) == (State.DOWN, "status", status)
    assert result.error == f"HTTP status {status}"


def test_redirects_are_followed(server: AdversarialServer) -> None:
    # 301 to a relative Location, then 302 to an absolute one on another origin, then 200.
    second = redirect_to(server.url("/ok", host="localhost"), 302)
    first = redirect_to(second, 301)
    with server.recording() as log:
        result = probe_url(server.url(first))
    assert (result.state, result.status_code, result.redirects) == (State.UP, 200, 2)
    port = server.port
    assert [(r.method, values(r, "host"), r.target) for r in log.requests] == [
        ("GET", [f"127.0.0.1:{port}".encode()], first),
        ("GET", [f"127.0.0.1:{port}".encode()], second),
        ("GET", [f"localhost:{port}".encode()], "/ok"),
    ]


def test_redirect_not_followed_when_disabled(server: AdversarialServer) -> None:
    with server.recording() as log:
        result = probe_url(server.url(redirect_to("/ok")), follow_redirects=False)
    assert (result.state, result.reason, result.status_code) == (State.DOWN, "status", 302)
    assert result.redirects == 0
    assert [r.target for r in log.requests] == [redirect_to("/ok")]


def test_redirect_loop_is_redirects(server: AdversarialServer) -> None:
    with server.recording() as log:
        result = probe_url(server.url("/redirect-loop"))
    assert (result.state, result.reason) == (State.DOWN, "redirects")
    assert result.error
    assert [r.target for r in log.requests] == ["/redirect-loop"] * (MAX_REDIRECTS + 1)


def test_303_after_post_becomes_get_without_body(server: AdversarialServer) -> None:
    with server.recording() as log:
        result = probe_url(server.url(redirect_to("/ok", 303)), method="POST", body='{"a":1}')
    assert (result.state, result.redirects) == (State.UP, 1)
    post, get = log.requests
    assert (post.method, post.body, values(post, "content-length")) == ("POST", b'{"a":1}', [b"7"])
    assert (get.method, get.target, get.body) == ("GET", "/ok", b"")
    assert values(get, "content-length") == [] and values(get, "transfer-encoding") == []


@pytest.mark.parametrize(("code", "method", "body"), [
    (301, "GET", b""), (302, "GET", b""), (303, "GET", b""),
    (307, "POST", b'{"a":1}'), (308, "POST", b'{"a":1}'),
])
def test_post_redirect_method_and_body(server: AdversarialServer, code: int, method: str,
                                       body: bytes) -> None:
    # 301/302/303 turn a POST into a body-less GET (as browsers do); 307/308 repeat it as is.
    with server.recording() as log:
        result = probe_url(server.url(redirect_to("/ok", code)), method="POST", body='{"a":1}')
    assert (result.state, result.redirects) == (State.UP, 1)
    _, again = log.requests
    assert (again.method, again.target, again.body) == (method, "/ok", body)
    assert values(again, "content-length") == ([str(len(body)).encode()] if body else [])


def test_authorization_is_dropped_on_cross_origin_redirect(server: AdversarialServer) -> None:
    location = server.url("/ok", host="localhost")
    with server.recording() as log:
        result = probe_url(server.url(redirect_to(location)),
                           headers={"Authorization": "Bearer t0ken", "X-A": "1"})
    assert (result.state, result.redirects) == (State.UP, 1)
    first, second = log.requests
    assert values(first, "authorization") == [b"Bearer t0ken"] and values(first, "x-a") == [b"1"]
    assert values(second, "host") == [f"localhost:{server.port}".encode()]
    assert values(second, "authorization") == [] and values(second, "x-a") == []


SECRET_HEADERS = {"X-Api-Key": "${PROBE_API_KEY}", "Cookie": "session=${PROBE_SESSION}",
                  "User-Agent": "custom-agent/1", "X-Plain": "1"}


@pytest.mark.parametrize("code", [302, 307, 308])
def test_configured_headers_and_body_stay_with_their_origin(
    server: AdversarialServer, monkeypatch: pytest.MonkeyPatch, code: int,
) -> None:
    # Issue 12 item 2: every header from `headers:` (not only Authorization) and a 307/308
    # body stay on the origin they were configured for; Host is the new origin's own.
    monkeypatch.setenv("PROBE_API_KEY", "k3y-s3cret-value")
    monkeypatch.setenv("PROBE_SESSION", "c00kie-s3cret")
    location = server.url("/ok", host="localhost")
    with server.recording() as log:
        result = probe_url(server.url(redirect_to(location, code)), method="POST",
                           body='{"pin":"${PROBE_SESSION}"}', headers=SECRET_HEADERS)
    assert (result.state, result.redirects) == (State.UP, 1)
    first, second = log.requests
    assert values(first, "x-api-key") == [b"k3y-s3cret-value"]
    assert values(first, "cookie") == [b"session=c00kie-s3cret"]
    assert first.body == b'{"pin":"c00kie-s3cret"}'
    assert values(second, "host") == [f"localhost:{server.port}".encode()]
    assert b"s3cret" not in second.head + second.body
    for name in ("x-api-key", "cookie", "x-plain", "content-length", "content-type"):
        assert values(second, name) == [], name
    assert values(second, "user-agent") == [USER_AGENT.encode()]  # ours again, not theirs
    assert (second.method, second.body) == (("POST", b"") if code != 302 else ("GET", b""))


def test_redirect_keep_headers_sends_them_to_the_other_origin(
    server: AdversarialServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROBE_API_KEY", "k3y-s3cret-value")
    monkeypatch.setenv("PROBE_SESSION", "c00kie-s3cret")
    location = server.url("/ok", host="localhost")
    with server.recording() as log:
        result = probe_url(server.url(redirect_to(location, 307)), method="POST",
                           body='{"a":1}', redirect_keep_headers=True,
                           headers={**SECRET_HEADERS, "Authorization": "Bearer t0ken"})
    assert (result.state, result.redirects) == (State.UP, 1)
    _, second = log.requests
    assert values(second, "x-api-key") == [b"k3y-s3cret-value"]
    assert values(second, "cookie") == [b"session=c00kie-s3cret"]
    assert values(second, "authorization") == [b"Bearer t0ken"]
    assert values(second, "user-agent") == [b"custom-agent/1"]
    assert (second.method, second.body, values(second, "content-length")) == (
        "POST", b'{"a":1}', [b"7"])


def test_headers_dropped_on_another_origin_stay_dropped_back_home(
    server: AdversarialServer,
) -> None:
    back = redirect_to(server.url("/ok"), 307)
    away = server.url(back, host="localhost")
    with server.recording() as log:
        result = probe_url(server.url(redirect_to(away, 307)), headers={"X-Api-Key": "k3y"})
    assert (result.state, result.redirects) == (State.UP, 2)
    assert [values(r, "x-api-key") for r in log.requests] == [[b"k3y"], [], []]


def test_url_credentials_are_percent_decoded_on_the_wire(server: AdversarialServer) -> None:
    # Issue 12 item 6: "p%40ss" is sent as "p@ss", as curl and httpx send it.
    url = server.url("/ok").replace("http://", "http://us%3Aer:p%40ss@", 1)
    with server.recording() as log:
        result = probe_url(url)
    assert result.state is State.UP
    (request,) = log.requests
    assert values(request, "authorization") == [b"Basic " + base64.b64encode(b"us:er:p@ss")]


def test_authorization_is_kept_on_same_origin_redirect(server: AdversarialServer) -> None:
    with server.recording() as log:
        result = probe_url(server.url(redirect_to(server.url("/ok"))),
                           headers={"Authorization": "Bearer t0ken"})
    assert (result.state, result.redirects) == (State.UP, 1)
    assert [values(r, "authorization") for r in log.requests] == [[b"Bearer t0ken"]] * 2


def test_body_and_headers_sent_byte_for_byte(server: AdversarialServer) -> None:
    body = '{"foo":"bar", "ü": [1, 2]}'
    with server.recording() as log:
        result = probe_url(server.url("/echo"), method="post", body=body,
                           headers={"content-type": "application/json", "X-Trace": "a b  c"})
    assert result.state is State.UP
    (request,) = log.requests
    assert request.method == "POST"
    assert request.body == body.encode("utf-8")
    # Names as configured (case included), values unchanged (inner spaces included), once each.
    assert [(k, v) for k, v in request.headers if k.lower() in (b"content-type", b"x-trace")] == [
        (b"content-type", b"application/json"), (b"X-Trace", b"a b  c"),
    ]
    assert values(request, "content-length") == [str(len(body.encode("utf-8"))).encode()]


def test_missing_method_is_get_and_lower_case_is_upper(server: AdversarialServer) -> None:
    with server.recording() as log:
        probe_url(server.url("/ok"))
        probe_url(server.url("/ok"), method="delete")
    get, delete = log.requests
    assert get.head.startswith(b"GET /ok HTTP/1.1\r\n")
    assert delete.head.startswith(b"DELETE /ok HTTP/1.1\r\n")
    for request in (get, delete):
        assert request.body == b""
        assert values(request, "content-length") == values(request, "transfer-encoding") == []


def test_connection_close_unless_keep_alive(server: AdversarialServer) -> None:
    with server.recording() as log:
        probe_url(server.url("/ok"))
        probe_once(endpoint(server.url("/ok")), Prober(keep_alive=True))
    closing, kept = log.requests
    assert [v.lower() for v in values(closing, "connection")] == [b"close"]
    assert all(b"close" not in v.lower() for v in values(kept, "connection"))
    for request in (closing, kept):
        (agent,) = values(request, "user-agent")
        assert agent


def test_user_agent_can_be_replaced(server: AdversarialServer) -> None:
    with server.recording() as log:
        probe_url(server.url("/ok"), headers={"User-Agent": "checker/2"})
    (request,) = log.requests
    assert values(request, "user-agent") == [b"checker/2"]


def test_host_header_carries_a_non_default_port(server: AdversarialServer,
                                                certs: CertSet) -> None:
    with server.recording() as log:
        probe_url(server.url("/ok"))
        probe_url(server.url("/ok", host="localhost"))
        probe_url(server.url("/ok", tls=CertKind.GOOD, host="localhost"), ca=certs.ca_path)
    assert [values(r, "host") for r in log.requests] == [
        [f"127.0.0.1:{server.port}".encode()],
        [f"localhost:{server.port}".encode()],
        [f"localhost:{server.tls_port(CertKind.GOOD)}".encode()],
    ]


# -- how each kind of failure is classified ------------------------------------------------

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



def test_name_lookups_do_not_queue_behind_the_default_executor(
    server: AdversarialServer,
) -> None:
    """Lookups have their own threads: a busy default pool (file I/O, gzip) delays no probe."""
    ep = endpoint(server.url("/ok").replace("127.0.0.1", "localhost"))
    release = threading.Event()

    async def go() -> ProbeResult:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(2))
        # Fill every default-pool thread until the probe is done (bounded: 10 s at most).
        busy = [loop.run_in_executor(None, release.wait, 10.0) for _ in range(4)]
        prober = Prober()
        try:
            return await prober.probe(ep)
        finally:
            release.set()
            await asyncio.gather(*busy)
            await prober.aclose()

    result = asyncio.run(go())
    assert (result.state, result.reason) == (State.UP, None), result
