"""The Alertmanager config is clean, routes by severity and inhibits as documented.

Needs Debian's amtool (and prometheus-alertmanager for the inhibition test);
without them these tests skip, unless REQUIRE_PROMETHEUS=1 makes their absence
a failure.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.needs import binary

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "alertmanager" / "alertmanager.yml"
EXPORTER = {"job": "availability-exporter", "location": "eu-west-1"}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("amtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_amtool_finds_the_config_clean() -> None:
    result = amtool("check-config", str(CONFIG))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output
    assert "warn" not in output.lower()
    assert " - 3 inhibit rules" in output
    assert " - 2 receivers" in output


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=EndpointDown", "domain=example.com"], "pager"),
        (["severity=critical", "alertname=DomainErrorBudgetBurn"], "pager"),
        (["severity=warning", "alertname=EndpointDegraded", "domain=example.com"], "ticket"),
        (["severity=ticket", "alertname=DomainErrorBudgetBurn"], "ticket"),
    ],
)
def test_alerts_route_by_severity(labels: list[str], receiver: str) -> None:
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def api(base: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """Start Alertmanager with the deploy config on 127.0.0.1; yield its base URL."""
    alertmanager_binary = binary("prometheus-alertmanager")
    base = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            alertmanager_binary,
            f"--config.file={CONFIG}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address={base.removeprefix('http://')}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (tmp_path / "alertmanager.log").read_text()
                    pytest.fail(f"alertmanager did not become ready:\n{log}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def alert(**labels: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {"summary": "test"}}


def test_inhibition_follows_domain_and_instance(alertmanager: str) -> None:
    endpoint = {**EXPORTER, "instance": "eu-0:10199", "alertname": "EndpointDown"}
    sent = {
        # A fast burn pages for shop.example.com: its endpoint pages are muted.
        "burn": alert(
            alertname="DomainErrorBudgetBurn", domain="shop.example.com", severity="critical"
        ),
        "shop-down": alert(
            **endpoint, domain="shop.example.com", endpoint="cart", severity="critical"
        ),
        "other-down": alert(**endpoint, domain="example.org", endpoint="home", severity="critical"),
        # A spent 30-day budget mutes warnings, never a fresh EndpointDown page.
        "budget": alert(
            alertname="DomainAvailabilityBelowObjective", domain="slow.example", severity="warning"
        ),
        "slow-down": alert(**endpoint, domain="slow.example", endpoint="api", severity="critical"),
        "slow-degraded": alert(
            **{**endpoint, "alertname": "EndpointDegraded"},
            domain="slow.example",
            endpoint="search",
            severity="warning",
        ),
        # An unscrapable exporter mutes everything else from that instance.
        "dead": alert(
            **EXPORTER, alertname="ExporterDown", instance="dead:10199", severity="critical"
        ),
        "dead-lag": alert(
            **EXPORTER, alertname="ExporterCycleLagging", instance="dead:10199", severity="warning"
        ),
    }
    muted = {"shop-down", "slow-degraded", "dead-lag"}
    api(alertmanager, "/api/v2/alerts", list(sent.values()))
    names = {json.dumps(value["labels"], sort_keys=True): key for key, value in sent.items()}

    def inhibited() -> set[str]:
        listed = api(alertmanager, "/api/v2/alerts")
        return {
            names[json.dumps(item["labels"], sort_keys=True)]
            for item in listed
            if item["status"]["inhibitedBy"]
        }

    # The inhibitor learns of source alerts asynchronously: poll, bounded.
    deadline = time.monotonic() + 20
    while inhibited() != muted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert inhibited() == muted
