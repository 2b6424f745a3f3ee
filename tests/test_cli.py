"""End to end through a subprocess and a pipe: what a user sees on stdout, stderr and $?."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from availability_exporter.settings import Settings, load_settings
from tests.adversarial.server import serve_in_process
from tests.targets import parse_reports, run_exporter

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "tests" / "testdata"


def reports(stdout: str) -> list[list[tuple[str, int]]]:
    """Every report on stdout in order, as (domain, percentage) pairs; stdout ends with one."""
    assert stdout.splitlines()[-1:] in ([], ["---"]), "stdout must end with ---"
    return [list(report.items()) for report in parse_reports(stdout)]


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve_in_process() as server:
        yield server.base_url


def write(tmp_path: Path, text: str, name: str = "endpoints.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


INVALID = sorted(TESTDATA.glob("invalid-*.yaml"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_bad_config_exits_2_with_every_message(path: Path) -> None:
    for args in (["--config.check", str(path)], ["--once", str(path)]):
        proc = run_exporter(*args)
        assert proc.returncode == 2, proc
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""
        for line in path.read_text().splitlines():
            if line.startswith("# expect: "):
                assert line[len("# expect: "):].replace("{file}", str(path)) in proc.stderr


def test_missing_config_file_exits_2() -> None:
    proc = run_exporter("--once", "/nonexistent/endpoints.yaml")
    assert proc.returncode == 2
    assert "/nonexistent/endpoints.yaml: cannot read the config file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_check_ok() -> None:
    proc = run_exporter("--config.check", str(ROOT / "examples" / "sample.yaml"))
    assert proc.returncode == 0
    assert proc.stdout.endswith("OK, 4 endpoints, 1 domains\n")


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
    (["-f", "5", "--probe.timeout", "5", "x.yaml"], {},
     "--probe.timeout (5s) must be shorter than --probe.interval (5s)"),
    (["-f", "abc", "x.yaml"], {}, "--probe.interval: Input should be a valid number"),
    (["--web.listen-address", "nowhere", "x.yaml"], {}, "--web.listen-address must be HOST:PORT"),
    (["--shard", "3/3", "x.yaml"], {}, "--shard must be INDEX/COUNT with 0 <= INDEX < COUNT"),
    (["--log.format", "xml", "x.yaml"], {}, "--log.format: Input should be 'text' or 'json'"),
    ([], {}, "no endpoints file given: pass CONFIG (a YAML file) or --demo"),
    (["x.yaml"], {"AVAILABILITY_EXPORTER_PROBE_INTERVAL": "-3"},
     "--probe.interval: Input should be greater than 0"),
    (["--web.allowed-hosts", "localhost:80", "x.yaml"], {},
     "--web.allowed-hosts must be a comma-separated list of host names"),
    (["x.yaml"], {"AVAILABILITY_EXPORTER_WEB_ALLOWED_HOSTS": "*.example.com"},
     "--web.allowed-hosts must be a comma-separated list of host names"),
    (["--web.max-connections", "0", "x.yaml"], {},
     "--web.max-connections: Input should be greater than or equal to 1"),
])
def test_bad_flags_and_env_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    proc = run_exporter(*args, env=env)
    assert proc.returncode == 2, proc
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_sets_flags(base: str, tmp_path: Path) -> None:
    config = write(tmp_path, f"- {{name: ok, url: '{base}/ok'}}\n")
    proc = run_exporter(env={"AVAILABILITY_EXPORTER_CONFIG": str(config),
                         "AVAILABILITY_EXPORTER_ONCE": "true"})
    assert proc.returncode == 0, proc.stderr
    assert reports(proc.stdout) == [[("127.0.0.1", 100)]]


def test_web_flags_from_the_environment() -> None:
    settings = Settings.model_validate({
        "demo": True, "web_enable_lifecycle": "true",
        "web_allowed_hosts": "LocalHost, [::1],127.0.0.1", "web_max_connections": "64",
    })
    assert settings.web_enable_lifecycle is True
    assert settings.allowed_hosts == frozenset({"localhost", "::1", "127.0.0.1"})
    assert settings.web_max_connections == 64
    env = {"AVAILABILITY_EXPORTER_WEB_ENABLE_LIFECYCLE": "1",
           "AVAILABILITY_EXPORTER_WEB_ALLOWED_HOSTS": "localhost",
           "AVAILABILITY_EXPORTER_WEB_MAX_CONNECTIONS": "100"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from_env = load_settings(["--demo"])
    assert from_env.web_enable_lifecycle and from_env.allowed_hosts == frozenset({"localhost"})
    assert from_env.web_max_connections == 100


def test_once_prints_one_report_per_domain_in_config_order(base: str, tmp_path: Path) -> None:
    port = base.rsplit(":", 1)[1]
    config = write(tmp_path, "".join([
        f"- {{name: b1, url: 'http://localhost:{port}/ok'}}\n",
        f"- {{name: a1, url: '{base}/ok'}}\n",
        f"- {{name: a2, url: '{base}/error'}}\n",
        f"- {{name: b2, url: 'http://LOCALHOST:{port}/status?code=201'}}\n",
        f"- {{name: a3, url: '{base}/ok'}}\n",
    ]))
    proc = run_exporter("--once", str(config))
    assert proc.returncode == 1  # a2 is down
    assert reports(proc.stdout) == [[("localhost", 100), ("127.0.0.1", 66)]]


def test_port_in_use_exits_2(base: str, tmp_path: Path) -> None:
    config = write(tmp_path, f"- {{name: ok, url: '{base}/ok'}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = run_exporter("-r", "1", "--web.listen-address", address, str(config))
    assert proc.returncode == 2
    assert f"cannot listen on {address}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_reports_both_domains() -> None:
    proc = run_exporter("--demo", "-f", "1", "-r", "2.5", "--web.listen-address", "127.0.0.1:0")
    assert proc.returncode == 0, proc.stderr
    got = reports(proc.stdout)
    assert len(got) >= 3  # at least two cycles plus the final report
    first = got[0]
    assert first[0] == ("127.0.0.1", 50)  # the sample.yaml figure
    assert first[1][0] == "localhost"
    assert "Traceback" not in proc.stderr


def test_json_logs_are_json(base: str, tmp_path: Path) -> None:
    import json

    config = write(tmp_path, f"- {{name: ok, url: '{base}/ok'}}\n")
    proc = run_exporter("--once", "--log.format", "json", "--log.level", "debug", str(config))
    assert proc.returncode == 0
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
