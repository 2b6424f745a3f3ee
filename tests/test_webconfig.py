"""Tests for the --web.config.file: loading, basic auth middleware, and real TLS through uvicorn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme
import uvicorn

from availability_exporter.webconfig import (
    REALM,
    ASGIApp,
    BasicAuthMiddleware,
    ClientAuth,
    Message,
    Receive,
    Scope,
    Send,
    WebConfig,
    WebConfigError,
    load_web_config,
)
from tests.targets import ExporterProcess, wait_for

TESTDATA = Path(__file__).parent / "testdata" / "webconfig"
APP_BODY = b"availability_endpoint_up 1\n"


# ---------------------------------------------------------------------------
# Fixtures: certificates generated per run, so no private key is committed.


@dataclass(frozen=True)
class Pki:
    server_ca: trustme.CA
    clients_ca: trustme.CA
    client: trustme.LeafCert
    stranger: trustme.LeafCert
    """A client certificate from a CA the server does not trust."""


@pytest.fixture(scope="module")
def pki() -> Pki:
    clients_ca = trustme.CA()
    return Pki(
        server_ca=trustme.CA(),
        clients_ca=clients_ca,
        client=clients_ca.issue_cert("prometheus@example.com"),
        stranger=trustme.CA().issue_cert("stranger@example.com"),
    )


@pytest.fixture(scope="module")
def webdir(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the YAML fixtures and the files they name."""
    directory = tmp_path_factory.mktemp("webconfig")
    for yml in TESTDATA.glob("*.yml"):
        shutil.copy(yml, directory / yml.name)
    server = pki.server_ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    pki.server_ca.issue_cert("other.example").private_key_pem.write_to_path(
        str(directory / "other.key")
    )
    pki.clients_ca.cert_pem.write_to_path(str(directory / "clients-ca.pem"))
    (directory / "garbage.pem").write_text("this is not PEM\n")
    return directory


# ---------------------------------------------------------------------------
# Loading


INVALID_FILES: list[tuple[str, list[str]]] = [
    (
        "unknown_key.yml",
        [
            "unknown_key.yml:2: tls_config: unknown key;"
            " allowed: tls_server_config, http_server_config, basic_auth_users"
        ],
    ),
    (
        "unknown_tls_key.yml",
        ["unknown_tls_key.yml:3: tls_server_config.keyfile: unknown key; allowed: cert_file,"],
    ),
    (
        "cert_without_key.yml",
        [
            "cert_without_key.yml:1: tls_server_config: cert_file is set but key_file is not;"
            " set both (TLS) or neither (plain HTTP)"
        ],
    ),
    (
        "key_without_cert.yml",
        ["key_without_cert.yml:1: tls_server_config: key_file is set but cert_file is not"],
    ),
    (
        "missing_file.yml",
        [
            "missing_file.yml:2: tls_server_config.cert_file: cannot read ",
            "missing.pem: No such file or directory (relative paths are relative to the web"
            " config's directory)",
        ],
    ),
    (
        "mismatched.yml",
        [
            "mismatched.yml:3: tls_server_config.key_file: ",
            "other.key is not the private key of the certificate in ",
            "give the key that belongs to cert_file",
        ],
    ),
    (
        "garbage_cert.yml",
        [
            "garbage_cert.yml:2: tls_server_config.cert_file: ",
            "garbage.pem holds no PEM certificate",
        ],
    ),
    (
        "garbage_key.yml",
        [
            "garbage_key.yml:3: tls_server_config.key_file: ",
            "garbage.pem holds no usable PEM private",
        ],
    ),
    (
        "bad_hash.yml",
        [
            "bad_hash.yml:3: basic_auth_users.alice: not a bcrypt hash (value not shown);"
            " allowed: $2a$, $2b$ or $2y$, a two-digit cost 04-31"
        ],
    ),
    ("bad_hash_prefix.yml", ["bad_hash_prefix.yml:2: basic_auth_users.alice: not a bcrypt hash"]),
    (
        "bad_client_auth.yml",
        [
            "bad_client_auth.yml:4: tls_server_config.client_auth_type: unknown value 'Sometimes';"
            " allowed: NoClientCert, RequestClientCert, VerifyClientCertIfGiven,"
            " RequireAndVerifyClientCert"
        ],
    ),
    (
        "verify_without_ca.yml",
        [
            "verify_without_ca.yml:4: tls_server_config.client_auth_type:"
            " RequireAndVerifyClientCert needs client_ca_file (the CA that signs client"
            " certificates)"
        ],
    ),
    (
        "verify_if_given_without_ca.yml",
        [
            "verify_if_given_without_ca.yml:4: tls_server_config.client_auth_type:"
            " VerifyClientCertIfGiven needs client_ca_file"
        ],
    ),
    (
        "require_any.yml",
        [
            "require_any.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert cannot be"
            " enforced",
            "use RequireAndVerifyClientCert with client_ca_file",
        ],
    ),
    (
        "ca_without_policy.yml",
        [
            "ca_without_policy.yml:4: tls_server_config.client_ca_file: client_ca_file is set but"
            " client_auth_type is NoClientCert"
        ],
    ),
    (
        "garbage_ca.yml",
        ["garbage_ca.yml:5: tls_server_config.client_ca_file: ", "garbage.pem holds no PEM cert"],
    ),
    (
        "bad_min_version.yml",
        [
            "bad_min_version.yml:4: tls_server_config.min_version: unknown TLS version 'TLS14';"
            " allowed: TLS12, TLS13"
        ],
    ),
    (
        "old_min_version.yml",
        [
            "old_min_version.yml:4: tls_server_config.min_version: TLS10 is not allowed",
            "allowed: TLS12, TLS13",
        ],
    ),
    (
        "min_above_max.yml",
        ["min_above_max.yml:4: tls_server_config.min_version: min_version is above max_version"],
    ),
    (
        "bad_cipher.yml",
        [
            "bad_cipher.yml:5: tls_server_config.cipher_suites: unknown cipher suite"
            " 'TLS_RSA_WITH_RC4_128_SHA'; allowed: TLS_AES_128_GCM_SHA256,"
        ],
    ),
    (
        "two_curves.yml",
        ["two_curves.yml:4: tls_server_config.curve_preferences: list exactly one curve"],
    ),
    (
        "client_allowed_sans.yml",
        ["client_allowed_sans.yml:6: tls_server_config.client_allowed_sans: not supported"],
    ),
    (
        "inline_key.yml",
        [
            "inline_key.yml:3: tls_server_config.key: inline PEM is not supported;"
            " put it in a file and use key_file",
            "inline_key.yml:1: tls_server_config: cert_file is set but key_file is not",
        ],
    ),
    (
        "bad_header.yml",
        [
            "bad_header.yml:3: http_server_config.headers.X-Frame-Options: invalid value 'allow';"
            " allowed: deny, sameorigin",
            "bad_header.yml:4: http_server_config.headers.X-Powered-By: unknown key;"
            " allowed: Content-Security-Policy,",
        ],
    ),
    ("bad_http2.yml", ["bad_http2.yml:2: http_server_config.http2: must be true or false"]),
    ("rate_limit.yml", ["rate_limit.yml:1: rate_limit: not supported by availability-exporter"]),
    ("duplicate_key.yml", ["duplicate_key.yml:3: basic_auth_users.alice: duplicate user"]),
    (
        "colon_user.yml",
        ["colon_user.yml:2: basic_auth_users.team:ops: user name contains ':' and could never"],
    ),
    (
        "numeric_user.yml",
        ["numeric_user.yml:2: basic_auth_users: user name 1234 must be a string; quote it"],
    ),
    (
        "not_mapping.yml",
        [
            "not_mapping.yml:1: top level: must be a mapping with the keys tls_server_config,"
            " http_server_config, basic_auth_users"
        ],
    ),
    ("bad_yaml.yml", ["bad_yaml.yml:3: not valid YAML: "]),
]


@pytest.mark.parametrize(("name", "fragments"), INVALID_FILES, ids=[n for n, _ in INVALID_FILES])
def test_invalid_file_is_rejected_with_its_reason(
    webdir: Path, name: str, fragments: list[str]
) -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(webdir / name)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert caught.value.path == webdir / name


def test_every_fixture_is_in_a_table() -> None:
    tested = {name for name, _ in INVALID_FILES} | {"good.yml", "empty.yml", "users_only.yml"}
    tested |= {"many_problems.yml"}
    assert {p.name for p in TESTDATA.glob("*.yml")} == tested


def test_all_problems_are_reported_at_once(webdir: Path) -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(webdir / "many_problems.yml")
    problems = caught.value.problems
    assert len(problems) == 4
    assert "many_problems.yml:5: tls_server_config.min_version: unknown TLS version" in problems[0]
    assert "many_problems.yml:7: http_server_config.colour: unknown key" in problems[1]
    assert "many_problems.yml:9: basic_auth_users.alice: not a bcrypt hash" in problems[2]
    assert "many_problems.yml:10: basic_auth_users.bob: not a bcrypt hash" in problems[3]
    assert "(4 problems)" in str(caught.value)


def test_problems_are_listed_in_file_order(webdir: Path) -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(webdir / "bad_header.yml")
    assert [p.split(":")[1] for p in caught.value.problems] == ["3", "4"]


def test_a_bad_hash_is_never_echoed(webdir: Path) -> None:
    """A plaintext password pasted where the hash belongs must not reach the logs."""
    with pytest.raises(WebConfigError) as caught:
        load_web_config(webdir / "bad_hash.yml")
    assert "hunter2" not in str(caught.value)


def test_missing_web_config(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read the web config: No such file"):
        load_web_config(tmp_path / "absent.yml")


def test_valid_file_loads(webdir: Path) -> None:
    web = load_web_config(webdir / "good.yml")
    assert web.tls is not None
    assert web.tls.cert_file == webdir / "server.pem"  # relative to the file's directory
    assert web.tls.key_file == webdir / "server.key"
    assert web.tls.client_ca_file == webdir / "clients-ca.pem"
    assert web.tls.client_auth_type is ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT
    assert web.tls.min_version is ssl.TLSVersion.TLSv1_2
    assert web.tls.max_version is ssl.TLSVersion.TLSv1_3
    # The TLS 1.3 suite is accepted and has no effect, as in Go.
    assert web.tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
    assert web.tls.curve == "X25519"
    assert web.scheme == "https"
    assert dict(web.users) == {
        "prometheus": b"$2b$04$BIHqnfmQLVkZe3qQZz9rEOHE3u3bISbUtWxGoaevsidQTsBei6Y/O",
        "grafana": b"$2y$04$BIHqnfmQLVkZe3qQZz9rEOHE3u3bISbUtWxGoaevsidQTsBei6Y/O",
    }
    # A blank value means "unset", as the toolkit documents.
    assert dict(web.headers) == {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "deny",
        "Content-Security-Policy": "default-src 'self'",
    }
    kwargs = web.uvicorn_ssl_kwargs()
    assert kwargs["ssl_certfile"] == str(webdir / "server.pem")
    assert kwargs["ssl_keyfile"] == str(webdir / "server.key")
    assert kwargs["ssl_ca_certs"] == str(webdir / "clients-ca.pem")
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["ssl_ciphers"] == web.tls.ciphers
    ctx = kwargs["ssl_context_factory"](None, ssl.create_default_context)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_users_only_file_is_plain_http(webdir: Path) -> None:
    web = load_web_config(webdir / "users_only.yml")
    assert web.tls is None
    assert web.scheme == "http"
    assert web.uvicorn_ssl_kwargs() == {}
    assert list(web.users) == ["prometheus"]


def test_empty_file_changes_nothing(webdir: Path, checkpw_calls: list[tuple[bytes, bool]]) -> None:
    web = load_web_config(webdir / "empty.yml")
    assert web == WebConfig()
    assert web.uvicorn_ssl_kwargs() == {}
    # Wrapped all the same, since users may be added to the file later; until then requests
    # pass unchanged.
    (response,) = get(web.wrap(tiny_app), {})
    assert response.status_code == 200
    assert response.content == APP_BODY
    assert response.headers["x-frame-options"] == "sameorigin"
    assert checkpw_calls == []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("never called")

    # Without a file to follow, nothing at all is put in front of the app.
    assert WebConfig().wrap(app) is app


@pytest.mark.parametrize(
    ("client_auth", "cert_reqs"),
    [
        ("NoClientCert", ssl.CERT_NONE),
        ("RequestClientCert", ssl.CERT_NONE),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_type_maps_to_cert_reqs(
    webdir: Path, tmp_path: Path, client_auth: str, cert_reqs: ssl.VerifyMode
) -> None:
    ca_line = "" if cert_reqs is ssl.CERT_NONE else f"  client_ca_file: {webdir}/clients-ca.pem\n"
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {webdir}/server.pem\n"
        f"  key_file: {webdir}/server.key\n"
        f"  client_auth_type: {client_auth}\n" + ca_line
    )
    assert load_web_config(path).uvicorn_ssl_kwargs()["ssl_cert_reqs"] == cert_reqs


# ---------------------------------------------------------------------------
# Basic auth middleware, in process


async def tiny_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-frame-options", b"sameorigin")],
        }
    )
    await send({"type": "http.response.body", "body": APP_BODY})


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def hashed(password: bytes, rounds: int = 4) -> bytes:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=rounds))


@pytest.fixture
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bool]]:
    """Records (stored hash, ran in the main thread) for every bcrypt check."""
    calls: list[tuple[bytes, bool]] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append((hashed_password, threading.current_thread() is threading.main_thread()))
        return real(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


USERS = {"prometheus": hashed(b"s3cret"), "grafana": hashed(b"other", rounds=5)}
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}


def get(middleware: ASGIApp, *requests: dict[str, str]) -> list[httpx.Response]:
    """Send one GET / per headers dict, concurrently, through the middleware."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return list(await asyncio.gather(*(client.get("/", headers=h) for h in requests)))

    return asyncio.run(run())


def protected() -> BasicAuthMiddleware:
    return BasicAuthMiddleware(tiny_app, users=USERS, headers=HEADERS)


def test_right_password_passes(checkpw_calls: list[tuple[bytes, bool]]) -> None:
    (response,) = get(protected(), basic("prometheus", "s3cret"))
    assert response.status_code == 200
    assert response.content == APP_BODY
    assert checkpw_calls == [(USERS["prometheus"], False)]  # never in the event loop's thread


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param(basic("prometheus", "wrong"), id="wrong-password"),
        pytest.param(basic("grafana", "s3cret"), id="another-users-password"),
        pytest.param(basic("PROMETHEUS", "s3cret"), id="user-name-case"),
        pytest.param({"Authorization": "Bearer s3cret"}, id="not-basic"),
        pytest.param({"Authorization": "Basic !!!"}, id="not-base64"),
        pytest.param(
            {"Authorization": "Basic " + base64.b64encode(b"prometheus").decode()}, id="no-colon"
        ),
    ],
)
def test_bad_credentials_get_401(headers: dict[str, str]) -> None:
    (response,) = get(protected(), headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Basic realm="{REALM}"'
    assert response.headers["www-authenticate"] == 'Basic realm="availability-exporter"'
    assert APP_BODY not in response.content


def test_unknown_user_pays_a_decoy_check(checkpw_calls: list[tuple[bytes, bool]]) -> None:
    (response,) = get(protected(), basic("mallory", "s3cret"))
    assert response.status_code == 401
    assert len(checkpw_calls) == 1
    decoy, in_main_thread = checkpw_calls[0]
    assert decoy not in USERS.values()
    assert decoy[4:6] == b"05"  # the highest configured cost, so it takes as long
    assert not in_main_thread


def test_success_is_cached(checkpw_calls: list[tuple[bytes, bool]]) -> None:
    middleware = protected()
    first = get(middleware, basic("prometheus", "s3cret"))
    second = get(middleware, basic("prometheus", "s3cret"))
    assert [r.status_code for r in first + second] == [200, 200]
    assert len(checkpw_calls) == 1
    # A wrong password is not let in by the cached success of the right one.
    (wrong,) = get(middleware, basic("prometheus", "s3cretX"))
    assert wrong.status_code == 401
    assert len(checkpw_calls) == 2


def test_concurrent_first_scrapes_check_once(checkpw_calls: list[tuple[bytes, bool]]) -> None:
    responses = get(protected(), *[basic("prometheus", "s3cret")] * 5)
    assert [r.status_code for r in responses] == [200] * 5
    assert len(checkpw_calls) == 1


def test_failures_are_not_cached(checkpw_calls: list[tuple[bytes, bool]]) -> None:
    responses = get(protected(), basic("prometheus", "nope"), basic("prometheus", "nope"))
    assert [r.status_code for r in responses] == [401, 401]
    assert len(checkpw_calls) == 2


def test_long_password_is_compared_on_its_first_72_bytes() -> None:
    """As Go and htpasswd do; Python's bcrypt would raise, which must not become a 500."""
    password = "p" * 72
    middleware = BasicAuthMiddleware(tiny_app, users={"u": hashed(password.encode())})
    exact, longer, much_longer = get(
        middleware, basic("u", password), basic("u", password + "tail"), basic("u", "p" * 100)
    )
    assert exact.status_code == 200
    # Same first 72 bytes: bcrypt cannot tell these apart.
    assert longer.status_code == 200
    assert much_longer.status_code == 200
    (short,) = get(middleware, basic("u", "p" * 71))
    assert short.status_code == 401


def test_headers_are_added_to_every_response() -> None:
    middleware = protected()
    ok, denied = get(middleware, basic("prometheus", "s3cret"), {})
    for response in (ok, denied):
        assert response.headers["x-content-type-options"] == "nosniff"
        # The configured value replaces the app's own.
        assert response.headers.get_list("x-frame-options") == ["deny"]
    assert ok.headers["content-type"] == "text/plain"


def test_without_users_only_headers_are_added(checkpw_calls: list[tuple[bytes, bool]]) -> None:
    (response,) = get(BasicAuthMiddleware(tiny_app, users={}, headers=HEADERS), {})
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert checkpw_calls == []


def test_lifespan_passes_through_and_websocket_is_refused() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = BasicAuthMiddleware(app, users=USERS)
    asyncio.run(middleware({"type": "lifespan"}, receive, send))
    asyncio.run(middleware({"type": "websocket", "headers": []}, receive, send))
    assert seen == ["lifespan"]
    assert sent == [{"type": "websocket.close", "code": 1008}]


# ---------------------------------------------------------------------------
# Real TLS: uvicorn on 127.0.0.1 with the kwargs from uvicorn_ssl_kwargs()


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(web: WebConfig, app: ASGIApp | None = None) -> AsyncIterator[int]:
    """Serve ``app`` (default: ``tiny_app`` wrapped by ``web``) with web's TLS; yields the port."""
    config = uvicorn.Config(
        web.wrap(tiny_app) if app is None else app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="critical",
        **web.uvicorn_ssl_kwargs(),
    )
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            await task
            raise AssertionError("uvicorn stopped before it started")
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        await asyncio.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def write_web_config(directory: Path, webdir: Path, tls_extra: str = "") -> Path:
    path = directory / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {webdir}/server.pem\n"
        f"  key_file: {webdir}/server.key\n"
        f"{tls_extra}"
        "http_server_config:\n"
        "  headers:\n"
        "    X-Content-Type-Options: nosniff\n"
        "basic_auth_users:\n"
        f"  prometheus: {USERS['prometheus'].decode()}\n"
    )
    return path


def client_context(
    pki: Pki,
    *,
    cert: trustme.LeafCert | None = None,
    maximum_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki.server_ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    return ctx


def run_against(web: WebConfig, scenario: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serving(web) as port:
            await scenario(port)

    asyncio.run(main())


def test_https_with_basic_auth(webdir: Path, tmp_path: Path, pki: Pki) -> None:
    web = load_web_config(write_web_config(tmp_path, webdir))

    async def scenario(port: int) -> None:
        url = f"https://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient(verify=client_context(pki), timeout=5) as client:
            ok = await client.get(url, headers=basic("prometheus", "s3cret"))
            wrong = await client.get(url, headers=basic("prometheus", "wrong"))
        assert ok.status_code == 200
        assert ok.content == APP_BODY
        assert ok.headers["x-content-type-options"] == "nosniff"
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Basic realm="availability-exporter"'

        # Plain HTTP to the TLS port never reaches the app.
        async with httpx.AsyncClient(timeout=5) as plain:
            try:
                response = await plain.get(
                    f"http://127.0.0.1:{port}/metrics", headers=basic("prometheus", "s3cret")
                )
            except httpx.TransportError:
                pass
            else:
                assert response.status_code != 200
                assert APP_BODY not in response.content

    run_against(web, scenario)


def test_mutual_tls(webdir: Path, tmp_path: Path, pki: Pki) -> None:
    web = load_web_config(
        write_web_config(
            tmp_path,
            webdir,
            "  client_auth_type: RequireAndVerifyClientCert\n"
            f"  client_ca_file: {webdir}/clients-ca.pem\n",
        )
    )

    async def fetch(port: int, cert: trustme.LeafCert | None) -> httpx.Response:
        async with httpx.AsyncClient(verify=client_context(pki, cert=cert), timeout=5) as client:
            return await client.get(
                f"https://127.0.0.1:{port}/metrics", headers=basic("prometheus", "s3cret")
            )

    async def scenario(port: int) -> None:
        with pytest.raises(httpx.TransportError):
            await fetch(port, None)
        with pytest.raises(httpx.TransportError):
            await fetch(port, pki.stranger)
        response = await fetch(port, pki.client)
        assert response.status_code == 200
        assert response.content == APP_BODY

    run_against(web, scenario)


def test_min_version_is_enforced(webdir: Path, tmp_path: Path, pki: Pki) -> None:
    """uvicorn has no min_version setting; this proves the context factory is what serves."""
    web = load_web_config(write_web_config(tmp_path, webdir, "  min_version: TLS13\n"))

    async def scenario(port: int) -> None:
        url = f"https://127.0.0.1:{port}/"
        old = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        async with httpx.AsyncClient(verify=old, timeout=5) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url, headers=basic("prometheus", "s3cret"))
        async with httpx.AsyncClient(verify=client_context(pki), timeout=5) as client:
            response = await client.get(url, headers=basic("prometheus", "s3cret"))
        assert response.status_code == 200

    run_against(web, scenario)


# ---------------------------------------------------------------------------
# The file is followed while serving (issue 12, item 3): users and headers on the next
# request, certificates on the next connection; a bad change keeps the last good config.


def users_file(path: Path, **users: bytes) -> Path:
    """Write a plain-HTTP web config with these users (user name -> bcrypt hash)."""
    lines = "".join(f"  {name}: '{digest.decode()}'\n" for name, digest in users.items())
    path.write_text(f"basic_auth_users:\n{lines}")
    return path


def test_a_new_password_works_and_the_old_one_stops_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = users_file(tmp_path / "web.yml", prometheus=hashed(b"old-password"))
    web = load_web_config(path)

    async def scenario(port: int) -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient(timeout=5) as client:

            async def status(password: str) -> int:
                response = await client.get(url, headers=basic("prometheus", password))
                return response.status_code

            assert await status("old-password") == 200  # now also remembered in the cache
            users_file(path, prometheus=hashed(b"new-password"))
            assert await status("new-password") == 200
            assert await status("old-password") == 401

            # A broken file is logged and the last good one stays in force.
            path.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
            assert await status("new-password") == 200
            assert await status("old-password") == 401
            assert "basic_auth_users.prometheus: not a bcrypt hash" in caplog.text
            assert "keeping the last good web config" in caplog.text

            # So does one that would turn TLS on: the listener is plain until a restart.
            path.write_text("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n")
            assert await status("new-password") == 200

            path.unlink()
            assert await status("new-password") == 200
            assert "cannot read the web config" in caplog.text

    run_against(web, scenario)


def test_turning_tls_on_or_off_needs_a_restart(
    webdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_web_config(tmp_path, webdir)
    web = load_web_config(path)
    assert web.source is not None
    users_file(path, prometheus=hashed(b"other"))
    assert web.source.current() is web
    assert "turning TLS off needs a restart" in caplog.text


def test_the_decoy_follows_the_highest_cost_of_the_current_file(
    tmp_path: Path, checkpw_calls: list[tuple[bytes, bool]]
) -> None:
    path = users_file(tmp_path / "web.yml", prometheus=hashed(b"pw", rounds=4))
    app = load_web_config(path).wrap(tiny_app)
    (response,) = get(app, basic("mallory", "pw"))
    assert response.status_code == 401
    users_file(path, prometheus=hashed(b"pw", rounds=4), grafana=hashed(b"pw", rounds=6))
    (response,) = get(app, basic("mallory", "pw"))
    assert response.status_code == 401
    assert [digest[4:6] for digest, _ in checkpw_calls] == [b"04", b"06"]


def issue_server_cert(pki: Pki, directory: Path) -> bytes:
    """Write a fresh certificate and key for 127.0.0.1 where web configs expect them."""
    leaf = pki.server_ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "server.key"))
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


async def served_certificate(port: int, pki: Pki) -> bytes:
    """The certificate a new TLS connection to ``port`` is given (DER)."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki)), timeout=5
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def test_a_rotated_certificate_is_served_to_new_connections(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    first = issue_server_cert(pki, tmp_path)
    web = load_web_config(write_web_config(tmp_path, tmp_path))

    async def scenario(port: int) -> None:
        assert await served_certificate(port, pki) == first
        second = issue_server_cert(pki, tmp_path)
        assert second != first
        assert await served_certificate(port, pki) == second

        # Half-way through a rotation: a new certificate whose key is not there yet.
        pki.server_ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(
            str(tmp_path / "server.pem")
        )
        assert await served_certificate(port, pki) == second
        assert "is not the private key of the certificate" in caplog.text
        assert "still serving the last good certificate" in caplog.text

        third = issue_server_cert(pki, tmp_path)
        assert await served_certificate(port, pki) == third
        async with httpx.AsyncClient(verify=client_context(pki), timeout=5) as client:
            response = await client.get(
                f"https://127.0.0.1:{port}/", headers=basic("prometheus", "s3cret")
            )
        assert response.status_code == 200

    run_against(web, scenario)


def test_settings_of_a_changed_file_apply_to_new_connections(
    webdir: Path, tmp_path: Path, pki: Pki
) -> None:
    """Not just the certificate: a new client-certificate policy applies without a restart."""
    path = write_web_config(tmp_path, webdir)
    web = load_web_config(path)

    async def fetch(port: int) -> httpx.Response:
        async with httpx.AsyncClient(verify=client_context(pki), timeout=5) as client:
            return await client.get(
                f"https://127.0.0.1:{port}/", headers=basic("prometheus", "s3cret")
            )

    async def scenario(port: int) -> None:
        assert (await fetch(port)).status_code == 200
        write_web_config(
            tmp_path,
            webdir,
            "  client_auth_type: RequireAndVerifyClientCert\n"
            f"  client_ca_file: {webdir}/clients-ca.pem\n",
        )
        with pytest.raises(httpx.TransportError):
            await fetch(port)

    run_against(web, scenario)


def test_the_running_exporter_follows_its_web_config(tmp_path: Path, pki: Pki) -> None:
    """The real process: new password and certificate in, old ones out, no restart or reload."""
    first = issue_server_cert(pki, tmp_path)
    web_yml = tmp_path / "web.yml"

    def write(password: bytes) -> None:
        web_yml.write_text(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
            f"basic_auth_users:\n  prometheus: '{hashed(password).decode()}'\n"
        )

    def certificate(port: int) -> bytes:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    def status(port: int, password: str) -> int:
        with httpx.Client(verify=client_context(pki), timeout=10) as client:
            url = f"https://127.0.0.1:{port}/metrics"
            return client.get(url, headers=basic("prometheus", password)).status_code

    write(b"old-password")
    (tmp_path / "endpoints.yaml").write_text("- {name: self, url: 'http://127.0.0.1:9/'}\n")
    with ExporterProcess(
        tmp_path / "endpoints.yaml", "-f", "5", "--web.config.file", str(web_yml)
    ) as proc:

        def serving_old_password() -> bool:
            try:
                return status(proc.port, "old-password") == 200
            except httpx.TransportError:
                return False  # not listening yet

        wait_for("the exporter to serve TLS", serving_old_password)
        assert certificate(proc.port) == first

        write(b"new-password")
        second = issue_server_cert(pki, tmp_path)
        assert status(proc.port, "new-password") == 200
        assert status(proc.port, "old-password") == 401
        assert certificate(proc.port) == second
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------
# Basic auth under load (issue 12, item 7)


def test_a_flood_from_one_client_does_not_hold_up_another() -> None:
    """Bad passwords from 127.0.0.2 queue behind each other, not in front of 127.0.0.1."""
    web = WebConfig(users={"prometheus": hashed(b"s3cret", rounds=9)})
    flood_size = 16

    async def scenario(port: int) -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        attacker = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), timeout=30
        )
        answered: list[int] = []
        first_answer = asyncio.Event()

        async def bad_login() -> None:
            response = await attacker.get(url, headers=basic("prometheus", "guess"))
            answered.append(response.status_code)
            first_answer.set()

        async with attacker, httpx.AsyncClient(timeout=30) as prometheus:
            flood = [asyncio.create_task(bad_login()) for _ in range(flood_size)]
            # Once one bad login is answered the others have long been waiting at the server.
            await asyncio.wait_for(first_answer.wait(), timeout=30)
            before = len(answered)
            response = await prometheus.get(url, headers=basic("prometheus", "s3cret"))
            overtaken_by = len(answered) - before
            await asyncio.wait_for(asyncio.gather(*flood), timeout=60)
        assert response.status_code == 200
        assert answered == [401] * flood_size
        # With one line for everyone, Prometheus waited for all the queued bad logins.
        assert overtaken_by <= 3, f"{overtaken_by} of {flood_size - before} queued checks first"

    run_against(web, scenario)


def test_a_success_is_remembered_for_a_bounded_time(
    checkpw_calls: list[tuple[bytes, bool]],
) -> None:
    app = BasicAuthMiddleware(tiny_app, users=USERS, cache_seconds=1.0)

    async def scenario(port: int) -> None:
        async with httpx.AsyncClient(timeout=5) as client:

            async def scrape() -> None:
                response = await client.get(
                    f"http://127.0.0.1:{port}/", headers=basic("prometheus", "s3cret")
                )
                assert response.status_code == 200

            await scrape()
            await scrape()
            assert len(checkpw_calls) == 1
            await asyncio.sleep(1.1)
            await scrape()
            assert len(checkpw_calls) == 2

    async def main() -> None:
        async with serving(WebConfig(), app) as port:
            await scenario(port)

    asyncio.run(main())
