"""/api/v1/status through httpx.ASGITransport against a real Exporter and real probes.

Every answer, good or bad, is validated against the package's JSON Schema
(``schemas/status-v1.json``): the schema is the contract scripts rely on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from availability_exporter import api
from availability_exporter.explain import explain
from availability_exporter.model import ProbeResult, State
from tests.web_harness import (
    ENV_SECRET,
    MARKUP_NAME,
    SECRET,
    Endpoints,
    exporter_client,
    run,
    run_cycles,
    write,
)

# Every test here has ${WEB_TEST_TOKEN} set (the "fast ok" endpoint's header uses it).
pytestmark = pytest.mark.usefixtures("web_token")

VALIDATOR = jsonschema.Draft202012Validator(api.schema())


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(api.schema())


async def get_status(client: httpx.AsyncClient, **params: str) -> tuple[int, dict[str, Any]]:
    response = await client.get("/api/v1/status", params=params)
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    document: dict[str, Any] = response.json()
    VALIDATOR.validate(document)
    return response.status_code, document


def test_status_before_and_after_a_cycle(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config(
        "fast ok", "server error", "slow one", "refused") + (
        f"- name: token in url\n  url: {web_targets.server.url('/ok')}?t=${{WEB_TEST_TOKEN}}\n"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            code, before = await get_status(client)
            assert code == 200 and before["version"] == 1
            assert {e["state"] for e in before["endpoints"]} == {"pending"}
            assert before["cycle"]["number"] == 0 and before["config"]["ready"] is False
            assert [d["availability"] for d in before["domains"]] == [None, None]

            await run_cycles(exporter, 2)
            code, after = await get_status(client)
            assert code == 200
            endpoints = {e["name"]: e for e in after["endpoints"]}
            assert {name: (e["state"], e["reason"], e["last_status"])
                    for name, e in endpoints.items()} == {
                "fast ok": ("up", None, 200), "server error": ("down", "status", 500),
                "slow one": ("degraded", "slow", 200), "refused": ("down", "connect", None),
                "token in url": ("up", None, 200)}
            # Most urgent first: down, then degraded, then up.
            assert [e["state"] for e in after["endpoints"]] == [
                "down", "down", "degraded", "up", "up"]
            error = endpoints["refused"]
            assert error["error"]["summary"].startswith("connection refused")
            assert error["error"]["detail"]  # the technical text, kept
            assert endpoints["server error"]["error"] == {
                "summary": "the server answered 500 Internal Server Error", "detail": None}
            results = exporter.stats.get("server error")
            assert results is not None and results.history.results()[0].finished_at == (
                endpoints["server error"]["since"])  # down since the first of its two probes
            assert endpoints["fast ok"]["probes"] == {"up": 2, "degraded": 0, "down": 0}
            assert endpoints["fast ok"]["last_latency_seconds"] > 0
            assert after["cycle"]["number"] == 2
            assert after["cycle"]["interval_seconds"] == 5.0
            assert after["config"] == {"ready": True, "healthy": True,
                                       "last_reload_successful": True,
                                       "last_reload_success_timestamp": pytest.approx(
                                           after["config"]["last_reload_success_timestamp"])}
            domains = {d["domain"]: d for d in after["domains"]}
            assert domains["127.0.0.1"]["probes"] == {"up": 4, "total": 8}
            assert domains["127.0.0.1"]["availability"] == 0.5
            assert domains["127.0.0.1"]["endpoints"] == 4
            assert domains["localhost"]["availability"] == 0.0
            # The last hour: counted, but not shown as a figure until 5 minutes are covered.
            assert domains["127.0.0.1"]["last_hour"]["probes"] == {"up": 4, "total": 8}
            assert domains["127.0.0.1"]["last_hour"]["availability"] is None
            # The URL as configured: the ${VAR} stays a name, its value never appears.
            assert endpoints["token in url"]["url"].endswith("?t=${WEB_TEST_TOKEN}")
            text = json.dumps(after)
            assert SECRET not in text and ENV_SECRET not in text

    run(body())


def test_filters_and_bad_filter_values(web_targets: Endpoints, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config(
        "fast ok", "server error", "slow one", "second ok"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            _, down = await get_status(client, state="down")
            assert [e["name"] for e in down["endpoints"]] == ["server error"]
            assert down["filters"] == {"state": "down", "domain": None}
            assert len(down["domains"]) == 2  # a state filter narrows endpoints only
            _, local = await get_status(client, domain="localhost")
            assert sorted(e["name"] for e in local["endpoints"]) == ["second ok", "slow one"]
            assert [d["domain"] for d in local["domains"]] == ["localhost"]
            _, both = await get_status(client, domain="localhost", state="up")
            assert [e["name"] for e in both["endpoints"]] == ["second ok"]
            _, none = await get_status(client, state="pending")
            assert none["endpoints"] == []

            for params in ({"state": "sideways"}, {"domain": "nowhere.example"},
                           {"colour": "red"}, {"state": "<script>alert(1)</script>"}):
                code, error = await get_status(client, **params)
                assert code == 400, params
                assert set(error) == {"version", "error"}
            # Streamed in batches (2 here): the pieces make the same document.
            monkeypatch.setattr(api, "BATCH", 2)
            whole = await client.get("/api/v1/status")
            VALIDATOR.validate(whole.json())
            assert len(whole.json()["endpoints"]) == 4
            pieces = b"".join(api.status_pieces(exporter.status, {}, now=1.0))
            assert json.loads(pieces) == api.status_document(exporter.status, {}, now=1.0)
            response = await client.get("/api/v1/status?state=up&state=down")
            assert response.status_code == 400 and "once" in response.json()["error"]
            code, error = await get_status(client, state="sideways")
            assert "up" in error["error"] and "pending" in error["error"]

    run(body())


def test_maintenance_shows_in_the_answer(web_targets: Endpoints, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error") + (
        f"  maintenance:\n    - start: {start}\n      end: {end}\n"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            _, document = await get_status(client)
            endpoints = {e["name"]: e for e in document["endpoints"]}
            assert endpoints["server error"]["in_maintenance"] is True
            assert endpoints["server error"]["state"] == "down"  # shown, not counted
            assert endpoints["server error"]["probes"] == {"up": 0, "degraded": 0, "down": 0}
            assert endpoints["fast ok"]["in_maintenance"] is False
            page = (await client.get("/")).text
            assert page.count("in maintenance") == 1

    run(body())


def test_names_are_inert_in_json(web_targets: Endpoints, tmp_path: Path) -> None:
    name = "<script>alert('x')</script> " + MARKUP_NAME
    config = write(tmp_path / "e.yaml", (
        f"- name: {json.dumps(name)}\n  url: {web_targets.server.url('/error')}\n"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            response = await client.get("/api/v1/status")
            assert "<" not in response.text and ">" not in response.text
            assert "&" not in response.text  # \u0026: nothing an HTML sniffer could read
            VALIDATOR.validate(response.json())
            assert [e["name"] for e in response.json()["endpoints"]] == [name]

    run(body())


@pytest.mark.parametrize(("error", "reason", "summary"), [
    ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate (_ssl.c:1006)", "tls", "certificate not trusted (self-signed)"),
    ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate in certificate chain (_ssl.c:1006)", "tls",
     "certificate not trusted (self-signed CA in the chain)"),
    ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "certificate has expired (_ssl.c:1006)", "tls", "certificate expired"),
    ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "Hostname mismatch, certificate is not valid for 'localhost'. (_ssl.c:1006)", "tls",
     "certificate is for another host name (wrong host)"),
    ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "IP address mismatch, certificate is not valid for '127.0.0.1'. (_ssl.c:1006)", "tls",
     "certificate is for another host name (wrong host)"),
    ("SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "unable to get local issuer certificate (_ssl.c:1006)", "tls",
     "certificate not trusted (unknown certificate authority)"),
    ("SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "tls",
     "TLS handshake failed: the port does not speak TLS (plain HTTP?)"),
    ("SSLError: [SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure", "tls",
     "TLS handshake refused by the server"),
    ("SSLError: something new", "tls", "TLS handshake or certificate check failed"),
    ("gaierror: [Errno -2] Name or service not known", "dns", "host name not found (DNS)"),
    ("gaierror: [Errno -3] Temporary failure in name resolution", "dns",
     "DNS lookup failed for now (resolver unreachable or timed out)"),
    ("gaierror: [Errno -9] no address for example.test", "dns",
     "host name has no address of the requested IP family"),
    ("ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 9)", "connect",
     "connection refused (nothing listens on that port)"),
    ("ConnectError: [Errno 101] Network is unreachable", "connect",
     "host unreachable (no network route)"),
    ("OSError: [Errno 113] No route to host", "connect", "host unreachable (no network route)"),
    ("ConnectionResetError: [Errno 104] Connection reset by peer", "connect",
     "connection reset while connecting"),
    ("ProtocolError: server closed the connection before the end of the body", "protocol",
     "response body cut short or badly framed"),
    ("RemoteProtocolError: Server disconnected without sending a response.", "protocol",
     "server closed the connection before a complete response"),
    ("ProtocolError: not an HTTP status line: b'garbage'", "protocol",
     "not a valid HTTP response"),
    ("ProtocolError: response header block larger than 65536 bytes", "protocol",
     "response headers too large"),
    ("ReadError: [Errno 104] Connection reset by peer", "protocol",
     "connection reset before a complete response"),
    ("no complete response within the 10s timeout", "timeout",
     "no complete response in time (timeout)"),
    ("more than 10 redirects", "redirects", "too many redirects"),
    ("unusable redirect location: bad", "redirects",
     "redirect to a location that cannot be followed"),
    ("took 700 ms, over the 500 ms threshold", "slow",
     "answered, but slower than the latency threshold"),
])
def test_every_reason_reads_in_words(error: str, reason: str, summary: str) -> None:
    state = State.DEGRADED if reason == "slow" else State.DOWN
    words = explain(ProbeResult(state=state, reason=reason, status_code=0, duration=0.1,
                                phases=(0.0,) * 5, finished_at=0.0, cert_not_after=None,
                                error=error))
    assert words is not None
    assert (words.summary, words.detail) == (summary, error)
