"""Secrets in the config never show: not in logs, pages, metrics, errors or the state file.

Three ways a secret gets into a config (a literal header value, a ${VAR} expanded into the
URL query and a header, a URL userinfo password) and the places an exporter might let one
slip: debug logs in both formats, probe errors of failing targets (refused, 500, timeout,
redirect loops, bad redirect locations), a failed reload, every HTTP page, config errors.
"""

from __future__ import annotations

import base64
import contextlib
import signal
from pathlib import Path

import pytest

from tests.adversarial import refused_port
from tests.targets import ExporterProcess, Targets

pytestmark = pytest.mark.timeout(120)

HEADER_SECRET = "hdrS3cretQ7w8e9r0t"
ENV_SECRET = "envS3cretZ1x2c3v4b"
PASSWORD = "pwdS3cretM5n6b7v8c"
BASIC_TOKEN = base64.b64encode(f"probe:{PASSWORD}".encode()).decode()
SECRETS = (HEADER_SECRET, ENV_SECRET, PASSWORD, BASIC_TOKEN)
ENV = {"PROBE_TOKEN": ENV_SECRET, "PROBE_PASSWORD": PASSWORD}


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} found in {where}"


def runtime_config(targets: Targets, refused: int) -> str:
    ok = targets.url
    userinfo = f"http://probe:{PASSWORD}@127.0.0.1"
    bearer = f"{{Authorization: 'Bearer {HEADER_SECRET}'}}"
    token = "{X-Token: '${PROBE_TOKEN}'}"
    return f"""\
- {{name: header-ok, url: '{ok("/ok?id=1")}', headers: {bearer}}}
- {{name: header-error, url: '{ok("/error?id=2")}', headers: {bearer}}}
- {{name: env-ok, url: '{ok("/ok?id=3&token=${PROBE_TOKEN}")}', headers: {token}}}
- {{name: env-refused, url: 'http://127.0.0.1:{refused}/?token=${{PROBE_TOKEN}}', headers: {token}}}
- {{name: env-timeout, url: '{ok("/slow?ms=5000&token=${PROBE_TOKEN}")}', headers: {token}}}
- {{name: env-bounce, url: '{ok("/bounce?token=${PROBE_TOKEN}")}', headers: {token}}}
- {{name: env-bounce-ftp, url: '{ok("/bounce-ftp?token=${PROBE_TOKEN}")}', headers: {token}}}
- {{name: userinfo-ok, url: '{userinfo}:{targets.port}/ok?id=4'}}
- {{name: userinfo-error, url: '{userinfo}:{targets.port}/error?id=5'}}
- {{name: userinfo-refused, url: '{userinfo}:{refused}/'}}
- {{name: userinfo-hang, url: '{userinfo}:{targets.port}/hang'}}
- {{name: userinfo-env, url: 'http://probe:${{PROBE_PASSWORD}}@127.0.0.1:{targets.port}/ok?id=6'}}
"""


NAMES = [
    "header-ok", "header-error", "env-ok", "env-refused", "env-timeout", "env-bounce",
    "env-bounce-ftp", "userinfo-ok", "userinfo-error", "userinfo-refused", "userinfo-hang",
    "userinfo-env",
]

# Invalid files that carry the secrets next to their mistakes.
INVALID: dict[str, str] = {
    "unknown key beside a secret header": f"""\
- name: a
  url: http://127.0.0.1:1/
  headers: {{Authorization: 'Bearer {HEADER_SECRET}'}}
  retries: 3
""",
    "secret header value with a line break": f"""\
- name: a
  url: http://127.0.0.1:1/
  headers: {{X-Token: "{HEADER_SECRET}\\nsecond line"}}
""",
    "secret under an invalid header name": f"""\
- name: a
  url: http://127.0.0.1:1/
  headers: {{"Bad Header": '{HEADER_SECRET}'}}
""",
    "duplicate secret header": f"""\
- name: a
  url: http://127.0.0.1:1/
  headers: {{X-Token: '{HEADER_SECRET}', x-token: '{HEADER_SECRET}'}}
""",
    "password in a URL with a bad port": f"""\
- name: a
  url: http://probe:{PASSWORD}@127.0.0.1:99999/
""",
    "password in a non-http URL": f"""\
- name: a
  url: ftp://probe:{PASSWORD}@127.0.0.1/
""",
    "expanded token in a URL with a bad port": """\
- name: a
  url: http://127.0.0.1:99999/?token=${PROBE_TOKEN}
  headers: {X-Token: '${PROBE_TOKEN}'}
""",
    "expanded password in a bad URL": """\
- name: a
  url: http://probe:${PROBE_PASSWORD}@[::1/
""",
    "YAML error after a secret": f"""\
- name: a
  url: http://127.0.0.1:1/
  headers: {{Authorization: 'Bearer {HEADER_SECRET}'}}
  timeout: [1
""",
    "secret header and a duplicate name": f"""\
- {{name: a, url: 'http://127.0.0.1:1/', headers: {{X-Token: '{HEADER_SECRET}'}}}}
- {{name: a, url: 'http://probe:{PASSWORD}@127.0.0.1:1/'}}
""",
}


def test_config_errors_never_show_a_secret(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        runs: list[tuple[str, ExporterProcess]] = []
        for index, (case, content) in enumerate(INVALID.items()):
            path = tmp_path / f"invalid-{index}.yaml"
            path.write_text(content, encoding="utf-8")
            for extra in ("--config.check", "--once"):
                runs.append((f"{case} {extra}", stack.enter_context(
                    ExporterProcess(path, extra, env=ENV, listen=False))))
        for case, proc in runs:
            status = proc.wait(timeout=60)
            text = proc.stdout + proc.stderr
            assert status == 2, (case, text)
            assert "invalid config" in text and "Traceback" not in text, (case, text)
            assert_no_secret(case, text)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_stay_out_of_everything(tmp_path: Path, log_format: str) -> None:
    config = tmp_path / "endpoints.yaml"
    state = tmp_path / "state.json"
    refused = refused_port()
    with Targets() as targets:
        good = runtime_config(targets, refused)
        config.write_text(good, encoding="utf-8")
        with ExporterProcess(
            config, "-f", "1", "--probe.timeout", "0.8", "--log.level", "debug",
            "--log.format", log_format, "--state.file", str(state), env=ENV,
        ) as proc:
            proc.wait_reports(2)
            bodies: dict[str, str] = {}
            for path in ("/metrics", "/", "/?state=down", "/-/healthy", "/-/ready",
                         "/endpoint?name=nowhere"):
                bodies[path] = proc.get(path).text
            openmetrics = proc.client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            bodies["/metrics (OpenMetrics)"] = openmetrics.text
            for name in NAMES:
                page = proc.get(f"/endpoint?name={name}")
                assert page.status_code == 200, name
                bodies[f"/endpoint?name={name}"] = page.text
            # The failing probes really failed, so their error messages were rendered.
            for name, reason in (("env-refused", "connect"), ("userinfo-refused", "connect"),
                                 ("env-timeout", "timeout"), ("userinfo-hang", "timeout"),
                                 ("env-bounce", "redirects"), ("env-bounce-ftp", "redirects"),
                                 ("header-error", "status"), ("userinfo-error", "status")):
                assert f"<td>{reason}</td>" in bodies[f"/endpoint?name={name}"], name

            # A reload that fails on a file full of secrets, by HTTP and by SIGHUP.
            config.write_text(good + INVALID["unknown key beside a secret header"]
                              .replace("name: a", "name: extra"), encoding="utf-8")
            reload = proc.client.post("/-/reload")
            assert reload.status_code == 500
            bodies["POST /-/reload"] = reload.text
            proc.send(signal.SIGHUP)
            proc.wait_stderr("config reload failed")
            config.write_text(good, encoding="utf-8")
            proc.wait_reports(len(proc.reports) + 1)
            proc.send(signal.SIGTERM)
            assert proc.wait() == 0

        for where, body in bodies.items():
            assert_no_secret(where, body)
        assert_no_secret("stdout", proc.stdout)
        assert_no_secret("stderr", proc.stderr)
        assert_no_secret("the state file", state.read_text())
        assert "DEBUG" in proc.stderr or '"level": "debug"' in proc.stderr

        # Positive control: the secrets did reach the targets, so the checks above could
        # have found them had they leaked.
        wire = b"\n".join(request.head for request in targets.seen).decode("latin-1")
        for secret in SECRETS:
            if secret != PASSWORD:  # sent only inside the Basic token
                assert secret in wire, secret
