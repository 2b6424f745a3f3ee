"""The probe's policy over httpx, with respx standing in for the network: how statuses,
redirect chains and every httpx exception become a state and a reason, and what httpx sends
on each hop.

respx replaces the client's transport (``using="httpx"``), so these cases exercise exactly
the httpx side: the project's transport and the wire are tested against real sockets in
test_probe.py, test_http1.py and test_differential.py.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest
import respx

from availability_exporter.model import Endpoint, ProbeResult, State
from availability_exporter.probe import MAX_REDIRECTS, Prober, classify
from tests import factories

BASE = "http://svc.test"


def endpoint(url: str = f"{BASE}/", **extra: object) -> Endpoint:
    return factories.endpoint(url, name="policy", **extra)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router


def probe(ep: Endpoint) -> ProbeResult:
    return factories.probe_once(ep)


def outcome(result: ProbeResult) -> tuple[State, str | None, int]:
    return result.state, result.reason, result.status_code


# -- statuses ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "expected"), [
    (200, (State.UP, None, 200)),
    (204, (State.UP, None, 204)),
    (299, (State.UP, None, 299)),
    (300, (State.DOWN, "status", 300)),
    (304, (State.DOWN, "status", 304)),
    (404, (State.DOWN, "status", 404)),
    (500, (State.DOWN, "status", 500)),
    (503, (State.DOWN, "status", 503)),
])
def test_status_codes(mock: respx.MockRouter, status: int,
                      expected: tuple[State, str | None, int]) -> None:
    mock.get(f"{BASE}/").respond(status)
    assert outcome(probe(endpoint())) == expected


# -- redirect chains -----------------------------------------------------------------------------

def chain(mock: respx.MockRouter, hops: int, *, code: int = 302, final: int = 200) -> None:
    """/0 -> /1 -> ... -> /hops, which answers ``final``."""
    for i in range(hops):
        mock.route(url=f"{BASE}/{i}").respond(code, headers={"Location": f"/{i + 1}"})
    mock.route(url=f"{BASE}/{hops}").respond(final)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_each_redirect_code_is_followed(mock: respx.MockRouter, code: int) -> None:
    chain(mock, 3, code=code)
    result = probe(endpoint(f"{BASE}/0"))
    assert outcome(result) == (State.UP, None, 200)
    assert result.redirects == 3


def test_ten_hops_are_followed_and_the_eleventh_is_not(mock: respx.MockRouter) -> None:
    chain(mock, MAX_REDIRECTS)
    assert outcome(probe(endpoint(f"{BASE}/0"))) == (State.UP, None, 200)
    mock.clear()
    chain(mock, MAX_REDIRECTS + 1)
    result = probe(endpoint(f"{BASE}/0"))
    assert (result.state, result.reason) == (State.DOWN, "redirects")


def test_redirect_chain_ending_in_an_error_is_status(mock: respx.MockRouter) -> None:
    chain(mock, 2, final=502)
    assert outcome(probe(endpoint(f"{BASE}/0"))) == (State.DOWN, "status", 502)


def test_redirects_are_not_followed_when_disabled(mock: respx.MockRouter) -> None:
    chain(mock, 1)
    result = probe(endpoint(f"{BASE}/0", follow_redirects=False))
    assert outcome(result) == (State.DOWN, "status", 302)
    assert result.redirects == 0


def test_3xx_without_location_is_final(mock: respx.MockRouter) -> None:
    mock.get(f"{BASE}/").respond(302)
    assert outcome(probe(endpoint())) == (State.DOWN, "status", 302)


@pytest.mark.parametrize(("location", "expected_url"), [
    ("/b?x=1", f"{BASE}/b?x=1"),
    ("b", f"{BASE}/dir/b"),
    ("//other.test/c", "http://other.test/c"),
    ("https://secure.test/d", "https://secure.test/d"),
    ("/caf\u00e9", f"{BASE}/caf%C3%A9"),
])
def test_location_forms(mock: respx.MockRouter, location: str, expected_url: str) -> None:
    mock.get(f"{BASE}/dir/a").respond(302, headers=[(b"Location", location.encode())])
    target = mock.get(expected_url).respond(200)
    assert outcome(probe(endpoint(f"{BASE}/dir/a"))) == (State.UP, None, 200)
    assert target.called


@pytest.mark.parametrize("location", ["http://[::1", "http://x\x7fy/"])
def test_unusable_location_is_redirects(mock: respx.MockRouter, location: str) -> None:
    mock.get(f"{BASE}/").respond(302, headers=[(b"Location", location.encode())])
    result = probe(endpoint())
    assert (result.state, result.reason) == (State.DOWN, "redirects"), result


@pytest.mark.parametrize(("code", "method", "body"), [
    (301, "GET", b""),
    (302, "GET", b""),
    (303, "GET", b""),
    (307, "POST", b'{"foo":"bar"}'),
    (308, "POST", b'{"foo":"bar"}'),
])
def test_post_after_redirect(mock: respx.MockRouter, code: int, method: str,
                             body: bytes) -> None:
    mock.post(f"{BASE}/in").respond(code, headers={"Location": "/out"})
    out = mock.route(url=f"{BASE}/out").respond(200)
    result = probe(endpoint(f"{BASE}/in", method="POST", body='{"foo":"bar"}'))
    assert outcome(result) == (State.UP, None, 200)
    sent = out.calls.last.request
    assert (sent.method, sent.content) == (method, body)


def test_authorization_follows_only_the_same_origin(mock: respx.MockRouter) -> None:
    mock.get(f"{BASE}/a").respond(302, headers={"Location": "/b"})
    same = mock.get(f"{BASE}/b").respond(302, headers={"Location": "http://elsewhere.test/c"})
    other = mock.get("http://elsewhere.test/c").respond(200)
    probe(endpoint(f"{BASE}/a", headers={"Authorization": "Bearer t0ken-value"}))
    assert same.calls.last.request.headers["Authorization"] == "Bearer t0ken-value"
    assert "Authorization" not in other.calls.last.request.headers


@pytest.mark.parametrize(("location", "crosses"), [
    (f"{BASE}/b", False),
    ("http://svc.test:80/b", False),  # the default port written out is the same origin
    ("/b", False),
    ("https://svc.test/b", True),  # scheme
    ("http://svc.test:8080/b", True),  # port
    ("http://other.test/b", True),  # host
    ("http://SVC.test./b", True),  # another spelling of the host: treated as another origin
])
def test_configured_headers_cross_origins_only_with_redirect_keep_headers(
    mock: respx.MockRouter, location: str, crosses: bool,
) -> None:
    mock.get(f"{BASE}/a").respond(307, headers={"Location": location})
    final = mock.get(url__regex=r"/b$").respond(200)
    headers = {"X-Api-Key": "k3y-value", "cookie": "s=1", "Authorization": "Bearer t"}
    for keep in (False, True):
        result = probe(endpoint(f"{BASE}/a", headers=headers, redirect_keep_headers=keep))
        assert outcome(result) == (State.UP, None, 200)
        sent = final.calls.last.request.headers
        expect_sent = keep or not crosses
        for name in headers:  # httpx alone drops a Cookie header even on the same origin
            assert (name in sent) is expect_sent, (location, keep, name)


def test_url_credentials_are_sent_as_basic_auth_percent_decoded(
    mock: respx.MockRouter,
) -> None:
    route = mock.get(f"{BASE}/").respond(200)
    probe(endpoint("http://probe:p%40ss@svc.test/"))
    expected = "Basic " + base64.b64encode(b"probe:p@ss").decode()
    assert route.calls.last.request.headers["Authorization"] == expected


def test_cookies_never_carry_over(mock: respx.MockRouter) -> None:
    mock.get(f"{BASE}/login").respond(302, headers={"Location": "/home",
                                                     "Set-Cookie": "session=abc123"})
    home = mock.get(f"{BASE}/home").respond(200, headers={"Set-Cookie": "more=1"})

    async def twice() -> None:
        prober = Prober()
        try:
            ep = endpoint(f"{BASE}/login")
            await prober.probe(ep)
            await prober.probe(ep)
        finally:
            await prober.aclose()

    asyncio.run(twice())
    assert all("Cookie" not in call.request.headers for call in home.calls)
    assert len(home.calls) == 2


def test_request_as_configured(mock: respx.MockRouter) -> None:
    route = mock.route(method="PATCH", url=f"{BASE}/x").respond(200)
    probe(endpoint(f"{BASE}/x", method="patch", headers={"User-Agent": "mine", "X-N": 7},
                   body="raw \u00e9 text"))
    sent = route.calls.last.request
    assert sent.headers["User-Agent"] == "mine" and sent.headers["X-N"] == "7"
    assert sent.content == "raw \u00e9 text".encode()
    assert sent.headers["Content-Length"] == str(len(sent.content))
    assert sent.headers["Connection"] == "close"
    assert "Accept-Encoding" not in sent.headers


# -- every httpx exception, mapped to its reason -----------------------------------------------
# respx re-raises a side effect's exception ``from`` its own wrapper, which hides the cause that
# tells dns (socket.gaierror) and tls (ssl.SSLError) apart from connect; those two are
# classified against real sockets in test_probe.py, and from built chains just below.

def raising(exc: Callable[[httpx.Request], Exception],
            cause: BaseException | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def side_effect(request: httpx.Request) -> httpx.Response:
        raise exc(request) from cause

    return side_effect


@pytest.mark.parametrize(("make", "cause", "reason"), [
    (lambda r: httpx.ConnectError("refused", request=r), ConnectionRefusedError(111, "x"),
     "connect"),
    (lambda r: httpx.ConnectTimeout("slow connect", request=r), None, "timeout"),
    (lambda r: httpx.ReadTimeout("slow read", request=r), None, "timeout"),
    (lambda r: httpx.WriteTimeout("slow write", request=r), None, "timeout"),
    (lambda r: httpx.PoolTimeout("no slot", request=r), None, "timeout"),
    (lambda r: httpx.RemoteProtocolError("garbage", request=r), None, "protocol"),
    (lambda r: httpx.LocalProtocolError("bad request", request=r), None, "protocol"),
    (lambda r: httpx.ReadError("reset", request=r), ConnectionResetError(104, "x"), "protocol"),
    (lambda r: httpx.WriteError("broken pipe", request=r), None, "protocol"),
    (lambda r: httpx.ProxyError("proxy refused", request=r), None, "connect"),
    (lambda r: httpx.UnsupportedProtocol("gopher", request=r), None, "redirects"),
    (lambda r: httpx.TooManyRedirects("loop", request=r), None, "redirects"),
])
def test_httpx_exceptions_map_to_reasons(
    mock: respx.MockRouter, make: Callable[[httpx.Request], Exception],
    cause: BaseException | None, reason: str,
) -> None:
    mock.get(f"{BASE}/").mock(side_effect=raising(make, cause))
    result = probe(endpoint())
    assert (result.state, result.reason, result.status_code) == (State.DOWN, reason, 0)
    assert result.error


@pytest.mark.parametrize(("cause", "reason"), [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "dns"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls"),
    (ConnectionRefusedError(111, "Connection refused"), "connect"),
])
def test_the_cause_of_a_connect_error_decides(cause: BaseException, reason: str) -> None:
    try:
        try:
            raise cause
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
    except httpx.ConnectError as error:
        assert classify(error) == reason


def test_a_failure_after_a_redirect_is_classified_as_such(mock: respx.MockRouter) -> None:
    mock.get(f"{BASE}/").respond(301, headers={"Location": "http://gone.test/"})
    mock.get("http://gone.test/").mock(side_effect=raising(
        lambda r: httpx.ConnectError("refused", request=r)))
    result = probe(endpoint())
    assert (result.reason, result.status_code) == ("connect", 301)


def test_secrets_in_an_error_are_redacted(mock: respx.MockRouter,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICY_TOKEN", "s3cr3t-policy-token")
    mock.get(f"{BASE}/?k=s3cr3t-policy-token").mock(side_effect=raising(
        lambda r: httpx.RemoteProtocolError(f"bad answer to {r.url}", request=r)))
    result = probe(endpoint(f"{BASE}/?k=${{POLICY_TOKEN}}"))
    assert result.reason == "protocol"
    assert result.error is not None and "s3cr3t" not in result.error
