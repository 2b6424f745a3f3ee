"""Response checks (``expect:``): every kind, passing and failing, against a real local server.

Each case is an endpoint config (parsed from YAML like any other) probed with the real Prober
over 127.0.0.1; the server answers each path with a scripted status, headers and body.  A
failed check is down with reason ``content`` and a message naming the check; a status outside
``expect.status`` stays reason ``status``; without ``expect`` the Fetch rule holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx
import pytest

from availability_exporter.checks import BODY_CAP, SHOWN, Expect
from availability_exporter.config import ConfigError, Defaults, parse_config
from availability_exporter.model import Endpoint, ProbeResult, State
from availability_exporter.probe import Prober, judge

SECRET = "s3cr3t-token-value-0042"
BIG = 2 * BODY_CAP  # a body twice the part the checks read


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    body: bytes = b""
    delay: float = 0.0


HEALTH_UP = json.dumps({"status": "UP", "build": {"version": "1.2.3"},
                        "checks": [{"name": "db", "status": "OK"}]}).encode()
ANSWERS: dict[str, Answer] = {
    "/health-up": Answer(body=HEALTH_UP),
    "/health-down": Answer(body=b'{"status": "DOWN", "count": 1}'),
    "/not-json": Answer(body=b"<html>oops</html>"),
    "/truncated-json": Answer(body=b'{"status": "UP", "items": [1, 2'),
    "/page": Answer(headers=(("Content-Type", "text/html; charset=utf-8"),),
                    body=b"<h1>Welcome</h1> all systems go"),
    "/maintenance-page": Answer(headers=(("Content-Type", "text/html"),),
                                body=b"<h1>Down for maintenance</h1>"),
    "/echo-secret": Answer(headers=(("Content-Type", "text/plain"),),
                           body=f"token={SECRET} MAINTENANCE ".encode() + b"x" * 1000),
    "/no-content": Answer(status=204, headers=()),
    "/moved": Answer(status=301, headers=(("Location", "/page"),)),
    "/error": Answer(status=500, body=b'{"status": "UP"}'),
    # The needle sits past the first MiB: body checks must not see it.
    "/big": Answer(headers=(("Content-Type", "text/plain"),),
                   body=b"head-marker " + b"a" * (BODY_CAP + 10) + b" tail-marker"
                   + b"b" * (BIG - BODY_CAP - 34)),
    "/slow-health": Answer(body=HEALTH_UP, delay=0.4),
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        answer = ANSWERS.get(path, Answer(status=404, body=b"{}"))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        lines = [f"HTTP/1.1 {answer.status} X"]
        lines += [f"{k}: {v}" for k, v in answer.headers]
        if answer.status not in (204, 304):
            lines.append(f"Content-Length: {len(answer.body)}")
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        if answer.status not in (204, 304):
            writer.write(answer.body)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[str]:
    srv = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()


def endpoint(base: str, path: str, expect: Mapping[str, object] | None,
             **extra: object) -> Endpoint:
    item: dict[str, object] = {"name": "check", "url": base + path, **extra}
    if expect is not None:
        item["expect"] = expect
    # JSON is YAML: the config goes through the same loader as a user's file.
    return parse_config(json.dumps([item]).encode(), "t.yaml", Defaults()).endpoints[0]


def probe(path: str, expect: Mapping[str, object] | None, **extra: object) -> ProbeResult:
    async def go() -> ProbeResult:
        async with server() as base:
            prober = Prober()
            try:
                return await prober.probe(endpoint(base, path, expect, **extra))
            finally:
                await prober.aclose()

    return asyncio.run(go())


UP = (State.UP, None)

CASES: list[tuple[str, str, dict[str, object], tuple[State, str | None], str]] = [
    # (id, path, expect, (state, reason), a piece of the error message)
    ("status-default-2xx", "/page", {}, UP, ""),
    ("status-204-listed", "/no-content", {"status": [200, 204]}, UP, ""),
    ("status-class-fails", "/no-content", {"status": [200]}, (State.DOWN, "status"), "204"),
    ("status-3xx-no-follow", "/moved", {"status": ["3xx"]}, UP, ""),
    ("status-500-expected", "/error", {"status": [500]}, UP, ""),
    ("body-contains-pass", "/page", {"body_contains": "systems go"}, UP, ""),
    ("body-contains-fail", "/maintenance-page", {"body_contains": ["systems go"]},
     (State.DOWN, "content"), "expect.body_contains 'systems go'"),
    ("body-not-contains-pass", "/page", {"body_not_contains": "maintenance"}, UP, ""),
    ("body-not-contains-fail", "/maintenance-page", {"body_not_contains": "maintenance"},
     (State.DOWN, "content"), "expect.body_not_contains 'maintenance': found"),
    ("body-regex-pass", "/page", {"body_regex": r"<h1>\w+</h1>"}, UP, ""),
    ("body-regex-fail", "/maintenance-page", {"body_regex": r"(?i)welcome"},
     (State.DOWN, "content"), "expect.body_regex '(?i)welcome': no match"),
    ("body-not-regex-pass", "/page", {"body_not_regex": "(?i)maint"}, UP, ""),
    ("body-not-regex-fail", "/maintenance-page", {"body_not_regex": "(?i)maint\\w+"},
     (State.DOWN, "content"), "matched 'maintenance'"),
    ("json-equals-pass", "/health-up", {"json": [{"path": "status", "equals": "UP"}]}, UP, ""),
    ("json-equals-fail", "/health-down", {"json": [{"path": "status", "equals": "UP"}]},
     (State.DOWN, "content"), 'expect.json[0] (status): got DOWN, expected UP'),
    ("json-equals-number-not-bool", "/health-down",
     {"json": [{"path": "count", "equals": True}]}, (State.DOWN, "content"), "got 1"),
    ("json-matches-pass", "/health-up",
     {"json": [{"path": "checks[?name=='db'].status | [0]", "matches": "^(UP|OK)$"}]}, UP, ""),
    ("json-matches-fail", "/health-down", {"json": [{"path": "status", "matches": "^UP$"}]},
     (State.DOWN, "content"), "does not match '^UP$'"),
    ("json-exists-pass", "/health-up", {"json": [{"path": "build.version", "exists": True}]},
     UP, ""),
    ("json-exists-fail", "/health-down", {"json": [{"path": "build.version", "exists": True}]},
     (State.DOWN, "content"), "expect.json[0] (build.version): missing"),
    ("json-absent-pass", "/health-down", {"json": [{"path": "error", "exists": False}]}, UP, ""),
    ("json-absent-fail", "/health-down", {"json": [{"path": "count", "exists": False}]},
     (State.DOWN, "content"), "present (1)"),
    ("json-malformed", "/not-json", {"json": [{"path": "status", "equals": "UP"}]},
     (State.DOWN, "content"), "expect.json: the body is not valid JSON"),
    ("json-truncated", "/truncated-json", {"json": [{"path": "status", "exists": True}]},
     (State.DOWN, "content"), "not valid JSON"),
    ("headers-pass", "/health-up", {"headers": {"content-type": "^application/json"}}, UP, ""),
    ("headers-fail", "/page", {"headers": {"Content-Type": "json"}},
     (State.DOWN, "content"), "expect.headers.Content-Type: the value does not match 'json'"),
    ("headers-missing", "/page", {"headers": {"X-Request-Id": "."}},
     (State.DOWN, "content"), "expect.headers.X-Request-Id: header missing"),
    ("max-body-pass", "/page", {"max_body_bytes": 1000}, UP, ""),
    ("max-body-fail", "/page", {"max_body_bytes": 10}, (State.DOWN, "content"),
     "expect.max_body_bytes: the body has 31 bytes, more than 10"),
    ("status-fails-before-content", "/error", {"json": [{"path": "status", "equals": "UP"}]},
     (State.DOWN, "status"), "HTTP status 500"),
]


@pytest.mark.parametrize(("path", "expect", "verdict", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_check_kind_passes_and_fails(
    path: str, expect: dict[str, object], verdict: tuple[State, str | None], message: str,
) -> None:
    extra: dict[str, object] = {"follow_redirects": False} if path == "/moved" else {}
    result = probe(path, expect, **extra)
    assert (result.state, result.reason) == verdict, result.error
    if message:
        assert result.error is not None and message in result.error, result.error
    else:
        assert result.error is None


def test_big_body_checks_read_only_the_first_mib_but_the_whole_body_is_counted() -> None:
    assert probe("/big", {"body_contains": "head-marker"}).state is State.UP
    past = probe("/big", {"body_contains": "tail-marker"})
    assert (past.state, past.reason) == (State.DOWN, "content")
    assert "not in the body's first 1 MiB" in (past.error or "")
    # The transport still read it all (timing covers the body) and knows its full size.
    over = probe("/big", {"max_body_bytes": BIG - 1})
    assert (over.state, over.reason) == (State.DOWN, "content")
    assert f"the body has {BIG} bytes" in (over.error or "")
    assert probe("/big", {"max_body_bytes": BIG}).state is State.UP


def test_a_slow_answer_that_passes_its_checks_is_degraded_and_a_failing_one_down() -> None:
    expect = {"status": [200], "json": [{"path": "status", "equals": "UP"}]}
    slow = probe("/slow-health", expect, latency_threshold=0.3)
    assert (slow.state, slow.reason) == (State.DEGRADED, "slow")
    fast = probe("/health-up", expect, latency_threshold=0.3)
    assert (fast.state, fast.reason) == UP


def test_without_expect_the_fetch_rule_holds() -> None:
    assert probe("/maintenance-page", None).state is State.UP
    assert probe("/error", None).reason == "status"
    assert probe("/no-content", None).state is State.UP
    moved = probe("/moved", None, follow_redirects=False)
    assert (moved.state, moved.reason) == (State.DOWN, "status")


def test_failure_messages_never_show_secrets_or_much_of_the_body() -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    result = probe("/echo-secret", {"body_not_regex": "token=\\S+ MAINTENANCE x+"},
                   headers=headers)
    assert (result.state, result.reason) == (State.DOWN, "content")
    assert result.error is not None
    assert SECRET not in result.error
    assert len(result.error) <= 200
    # The shown piece of the body is cut to SHOWN characters.
    shown = result.error.split("matched ", 1)[1]
    assert len(shown) <= SHOWN + 2


def test_judge_keeps_the_fetch_default_and_takes_expectations() -> None:
    assert judge(200, 0.5, 0.5) == UP
    assert judge(204, 0.1, 0.5) == UP
    assert judge(301, 0.1, 0.5) == (State.DOWN, "status")
    accepts = Expect(codes=frozenset({301}), classes=frozenset()).status_ok
    assert judge(301, 0.1, 0.5, accepts=accepts) == UP
    assert judge(200, 0.1, 0.5, accepts=accepts) == (State.DOWN, "status")
    assert judge(200, 0.9, 0.5, content="expect.json: x") == (State.DOWN, "content")
    assert judge(500, 0.1, 0.5, content="expect.json: x") == (State.DOWN, "status")


def test_checks_run_on_plain_headers_and_bytes() -> None:
    """The check object alone, without a server: a non-UTF-8 charset and a regex over it."""
    config = [{"name": "x", "url": "http://127.0.0.1/", "expect": {"body_regex": "caf\u00e9"}}]
    checks = parse_config(json.dumps(config).encode(), "t.yaml", Defaults()).endpoints[0].expect
    assert checks is not None
    latin = httpx.Headers({"Content-Type": "text/plain; charset=latin-1"})
    assert checks.failure(latin, "café".encode("latin-1"), 5) is None
    assert checks.failure(httpx.Headers(), b"cafe", 4) is not None


@pytest.mark.parametrize(("expect", "message"), [
    ({"body_regex": "("}, "expect.body_regex '(' is not a valid regular expression"),
    ({"statuss": [200]}, "expect: unknown key 'statuss'"),
    ({"status": ["2xy"]}, "is neither a status code"),
    ({"status": [99]}, "is neither a status code"),
    ({"json": [{"path": "a", "equals": 1, "matches": "x"}]},
     "give exactly one of equals, matches, exists, not equals and matches"),
    ({"json": [{"path": "a["}]}, "is not a valid JMESPath expression"),
    ({"json": [{"equals": 1}]}, "missing required key 'path'"),
    ({"json": [{"path": "a", "exists": "yes please"}]}, "exists must be true or false"),
    ({"headers": {"Content-Type": "["}}, "expect.headers.Content-Type '['"),
    ({"max_body_bytes": 0}, "expect.max_body_bytes must be a whole number of bytes"),
    ({"body_contains": ""}, "expect.body_contains must not be empty"),
    ("yes", "expect must be a mapping"),
])
def test_bad_expectations_are_config_errors_with_a_line(
    expect: object, message: str,
) -> None:
    config = [{"name": "x", "url": "http://127.0.0.1/", "expect": expect}]
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(config, indent=1).encode(), "t.yaml", Defaults())
    problems = info.value.problems
    assert any(message in p for p in problems), problems
    assert all(p.startswith("t.yaml:") and "endpoint 'x'" in p for p in problems), problems


def test_only_endpoints_with_body_checks_keep_the_body() -> None:
    """The transport keeps BODY_CAP bytes for body and JSON checks, nothing otherwise (a
    header or size check needs only the headers and the body's full size)."""
    prober = Prober()
    try:
        kept = {
            name: prober.route(endpoint("http://127.0.0.1:1", "/", expect)).keep
            for name, expect in {
                "none": None,
                "status": {"status": [200]},
                "headers": {"headers": {"Content-Type": "json"}},
                "size": {"max_body_bytes": 10},
                "body": {"body_contains": "ok"},
                "json": {"json": [{"path": "status", "exists": True}]},
            }.items()
        }
    finally:
        asyncio.run(prober.aclose())
    assert kept == {"none": 0, "status": 0, "headers": 0, "size": 0, "body": BODY_CAP,
                    "json": BODY_CAP}
