"""--web.config.file through the real daemon: TLS and basic auth with real credentials."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme

from tests.targets import ExporterProcess, wait_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def exporter(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("protected")
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp / "server.key"))
    digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{digest}'\n"
    )
    (tmp / "endpoints.yaml").write_text("- {name: self, url: 'http://127.0.0.1:9/'}\n")
    with ExporterProcess(tmp / "endpoints.yaml", "-f", "5",
                         "--web.config.file", str(tmp / "web.yml")) as proc:
        # Only TCP: a plain HTTP readiness check would not get through the TLS listener.
        wait_for("the exporter to listen", lambda: listening(proc.port), timeout=15)
        yield f"127.0.0.1:{proc.port}"


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def client(ca: trustme.CA) -> httpx.Client:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return httpx.Client(verify=context, timeout=5)


def test_right_password_over_tls(exporter: str, ca: trustme.CA) -> None:
    with client(ca) as c:
        response = c.get(f"https://{exporter}/metrics", auth=("prometheus", PASSWORD))
    assert response.status_code == 200
    assert "availability_endpoint_up" in response.text


@pytest.mark.parametrize("auth", [("prometheus", "wrong"), ("nobody", PASSWORD), None])
def test_wrong_or_missing_credentials_get_401(exporter: str, ca: trustme.CA,
                                              auth: tuple[str, str] | None) -> None:
    with client(ca) as c:
        response = c.get(f"https://{exporter}/", auth=auth)
    assert response.status_code == 401
    assert "availability_endpoint" not in response.text
    assert response.headers["www-authenticate"].startswith("Basic")


def test_plain_http_is_refused(exporter: str) -> None:
    try:
        response = httpx.get(f"http://{exporter}/metrics", auth=("prometheus", PASSWORD),
                             timeout=5)
    except httpx.HTTPError:
        return  # the TLS port dropped the plain request: refused
    assert response.status_code != 200
    assert "availability_endpoint_up" not in response.text


def test_invalid_web_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "web.yml").write_text("basic_auth_users:\n  a: not-a-hash\nbogus: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "availability_exporter", "--demo",
         "--web.config.file", str(tmp_path / "web.yml")],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bogus" in proc.stderr and "basic_auth_users" in proc.stderr


@pytest.mark.parametrize("path", ["/api/v1/status", "/badge/endpoint/self.svg",
                                  "/badge/domain/127.0.0.1.svg"])
def test_api_and_badges_need_credentials(exporter: str, ca: trustme.CA, path: str) -> None:
    with client(ca) as c:
        refused = c.get(f"https://{exporter}{path}")
        allowed = c.get(f"https://{exporter}{path}", auth=("prometheus", PASSWORD))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert "self" not in refused.text and "127.0.0.1" not in refused.text
    assert allowed.status_code == 200
