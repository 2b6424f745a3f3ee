"""The endpoints file: good files load to the expected models, every invalid file gives its
exact messages (each file in testdata/ carries them as ``# expect:`` lines)."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from availability_exporter.config import (
    ConfigError,
    Defaults,
    _safe_url,
    default_timeout,
    domain_of,
    load_config,
    parse_config,
    redact,
)
from tests.factories import load_examples_file

TESTDATA = Path(__file__).parent / "testdata"
INVALID = sorted(TESTDATA.glob("invalid-*.yaml"))
EXAMPLES = Path(__file__).parent.parent / "examples"


def expected_problems(path: Path) -> list[str]:
    prefix = "# expect: "
    lines = path.read_text().splitlines()
    return [line[len(prefix):].replace("{file}", str(path)) for line in lines
            if line.startswith(prefix)]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_gives_exact_messages(path: Path) -> None:
    expected = expected_problems(path)
    assert expected, f"{path} has no '# expect:' lines"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == expected


def test_invalid_files_cover_the_contract() -> None:
    stems = {p.stem for p in INVALID}
    for case in ("not-a-list", "empty-list", "empty-file", "yaml", "missing-name-url",
                 "unknown-key", "duplicate-name", "scheme"):
        assert f"invalid-{case}" in stems


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TESTDATA / "no-such-file.yaml")
    assert info.value.problems == [
        f"{TESTDATA / 'no-such-file.yaml'}: cannot read the config file: No such file or directory"
    ]


def test_sample_yaml_loads_like_the_exercise() -> None:
    config = load_config(EXAMPLES / "sample.yaml")
    names = [e.name for e in config.endpoints]
    assert names == ["sample body up", "sample index up", "sample body down", "sample error down"]
    first, second, third, _ = config.endpoints
    assert first.method == "POST"
    assert first.body == b'{"foo":"bar"}'  # sent byte for byte, not re-encoded
    assert third.body == b"{}"
    assert second.method == "GET" and second.body is None
    assert first.headers == (("content-type", "application/json"),)
    assert {e.domain for e in config.endpoints} == {
        "dev-sre-take-home-exercise-rubric.us-east-1.recruiting-public.fetchrewards.com"
    }
    assert all(e.timeout == 10.0 and e.latency_threshold == 0.5 for e in config.endpoints)


def test_commented_example_loads(tmp_path: Path) -> None:
    config = load_examples_file(tmp_path)
    assert len(config.endpoints) >= 8
    mtls = next(e for e in config.endpoints if e.tls is not None)
    assert mtls.tls is not None and mtls.tls.server_name == "api.internal.example"
    edge = next(e for e in config.endpoints if e.http2)
    assert edge.ip_family == "ipv6" and "example-password" in edge.secrets
    api = next(e for e in config.endpoints if ("X-Api-Key", "example-api-key") in e.headers)
    assert api.redirect_keep_headers is False


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("false", False), (None, False),
])
def test_redirect_keep_headers(text: str | None, expected: bool) -> None:
    extra = f"  redirect_keep_headers: {text}\n" if text is not None else ""
    data = f"- name: a\n  url: http://127.0.0.1/\n{extra}".encode()
    (endpoint,) = parse_config(data, "t.yaml", Defaults()).endpoints
    assert endpoint.redirect_keep_headers is expected


@pytest.mark.parametrize("text", ["'true'", "1", "yes please", "[]"])
def test_redirect_keep_headers_is_a_strict_bool(text: str) -> None:
    data = f"- name: a\n  url: http://127.0.0.1/\n  redirect_keep_headers: {text}\n".encode()
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "t.yaml", Defaults())
    assert "t.yaml:3: endpoint 'a': redirect_keep_headers must be true or false" in str(
        caught.value)


def test_every_extension_and_scalar_coercion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVAILABILITY_TEST_TOKEN", "s3cret-token-value")
    config = load_config(TESTDATA / "good-sample-extended.yaml", Defaults(interval=15))
    first, plain = config.endpoints
    assert first.name == "404"
    assert first.method == "POST"
    assert first.domain == "example.com"
    token = base64.b64encode(b"User:pw").decode()
    # URL credentials stay in the URL: httpx sends them as basic auth (percent-decoded).
    assert first.headers == (
        ("X-Num", "42"), ("X-Bool", "true"), ("X-Token", "s3cret-token-value"),
    )
    assert (first.request.username, first.request.password) == ("User", "pw")
    assert token in first.secrets
    assert (first.timeout, first.latency_threshold) == (2.0, 0.25)
    assert first.follow_redirects is False and first.verify_tls is False
    assert first.request.port == 8443
    assert first.request.raw_path == b"/a//b?next=http://other.example/x"
    assert first.request.netloc == b"example.com.:8443"
    assert "pw" not in first.url and "xxxxx" in first.display_url
    assert "s3cret-token-value" in first.secrets and "pw" not in first.display_url
    assert plain.domain == "::1"
    assert plain.request.netloc == b"[::1]:8080"
    assert plain.follow_redirects is True and plain.verify_tls is True


def test_env_expansion_in_url_and_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_HOST", "api.example.com")
    monkeypatch.setenv("AE_KEY", "k-123456")
    config = parse_config(
        b"- name: e\n  url: https://${AE_HOST}/v1?key=${AE_KEY}\n  body: '{\"k\":\"${AE_KEY}\"}'\n",
        "x.yaml", Defaults(),
    )
    (endpoint,) = config.endpoints
    assert endpoint.domain == "api.example.com"
    assert endpoint.body == b'{"k":"k-123456"}'
    assert endpoint.display_url == "https://${AE_HOST}/v1?key=${AE_KEY}"
    assert "k-123456" in endpoint.secrets


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(b"- name: a\n- url: ftp://x/\n- name: a\n  url: http://x/\n"
                     b"- name: a\n  url: http://y/\n", "f.yaml", Defaults())
    assert len(info.value.problems) == 4


def test_default_timeout_follows_the_interval() -> None:
    assert default_timeout(15) == 10.0
    assert default_timeout(12.5) == 10.0
    assert default_timeout(10) == 8.0
    assert default_timeout(1) == 0.8


def test_digest_changes_with_content() -> None:
    a = parse_config(b"- {name: a, url: 'http://a/'}\n", "a", Defaults())
    b = parse_config(b"- {name: a, url: 'http://a/'}  \n", "a", Defaults())
    assert a.digest != b.digest


DOMAINS = [
    ("https://example.com/x", "example.com"),
    ("https://Example.COM:8443/x", "example.com"),
    ("http://example.com:80/", "example.com"),
    ("http://example.com./", "example.com"),
    ("http://user:pass@example.com/", "example.com"),
    ("http://user@Example.com:8080/a", "example.com"),
    ("http://[::1]:80/", "::1"),
    ("http://[2001:DB8::1]/", "2001:db8::1"),
    ("http://[::1]/", "::1"),
    ("http://127.0.0.1:8080/", "127.0.0.1"),
    ("http://localhost:9000/health", "localhost"),
    ("https://www.fetch.com/", "www.fetch.com"),
    ("https://fetch.com/", "fetch.com"),
    ("http://example.com//double//slash", "example.com"),
    ("http://example.com/redirect?to=http://other.com:81/", "example.com"),
    ("http://example.com?next=https://evil.example/", "example.com"),
    ("http://example.com#frag@other.com", "example.com"),
    ("HTTPS://API.Example.Org:443", "api.example.org"),
    ("https://dev-sre-take-home-exercise-rubric.us-east-1.recruiting-public.fetchrewards.com/body",
     "dev-sre-take-home-exercise-rubric.us-east-1.recruiting-public.fetchrewards.com"),
]


@pytest.mark.parametrize(("url", "domain"), DOMAINS)
def test_domain_of(url: str, domain: str) -> None:
    assert domain_of(url) == domain


SECRET = "Zq9 s3cret/value+with@odd&chars-0042"


@pytest.mark.parametrize("echo", [
    SECRET,
    SECRET[:8],
    SECRET[:30] + "…",
    quote(SECRET, safe=""),
    quote(SECRET, safe="").lower(),
    quote(SECRET)[:12],
    quote_plus(SECRET),
    base64.b64encode(SECRET.encode()).decode(),
    base64.urlsafe_b64encode(SECRET.encode()).decode()[:10],
    "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode(),
    "Basic " + base64.b64encode(f"u:{SECRET}".encode()).decode(),
    "Basic " + base64.b64encode(f"us:{SECRET}".encode()).decode(),
])
def test_redact_finds_encoded_and_cut_secrets(echo: str) -> None:
    shown = redact(f"the target said: {echo} (end)", [SECRET])
    assert shown.startswith("the target said: ") and shown.endswith(" (end)")
    assert "<redacted>" in shown
    for form in (SECRET, quote(SECRET, safe=""), base64.b64encode(SECRET.encode()).decode()):
        assert form[:8] not in shown


def test_redact_leaves_ordinary_text_and_short_secrets_only_as_tokens() -> None:
    assert redact("nothing to hide here", [SECRET, ""]) == "nothing to hide here"
    # A 7-character prefix is not enough to tell a secret from text.
    assert redact(f"x {SECRET[:7]} y", [SECRET]) == f"x {SECRET[:7]} y"
    assert redact("Invalid port: 'ab' in tab", ["ab"]) == "Invalid port: '<redacted>' in tab"


@pytest.mark.parametrize(("url", "shown"), [
    ("http://u:pw@h/", "http://u:xxxxx@h/"),
    ("http://u:pw@h:99999/", "http://u:xxxxx@h:99999/"),
    ("http://u:p@ss@[::1/x?q=a:b@c", "http://u:xxxxx@[::1/x?q=a:b@c"),
    ("u:pw@host/x", "u:xxxxx@host/x"),
    ("http://u:${PASSWORD}@h/", "http://u:xxxxx@h/"),
    ("http://u@h/", "http://u@h/"),
    ("http://h/x?a=b:c@d", "http://h/x?a=b:c@d"),
])
def test_safe_url_masks_passwords_in_any_url(url: str, shown: str) -> None:
    assert _safe_url(url) == shown
