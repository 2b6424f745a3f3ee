"""The Prometheus rules, their promtool unit tests and the scrape config are valid.

Needs Debian's promtool; without it these tests skip, unless REQUIRE_PROMETHEUS=1
makes its absence a failure.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.needs import binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULE_FILES = ("rules/recording.yml", "rules/alerts.yml")
UNIT_TEST_FILES = ("rules.test.yaml", "rules-long-windows.test.yaml")
ALERTS = {
    "EndpointDown",
    "EndpointDegraded",
    "DomainAvailabilityBelowObjective",
    "DomainErrorBudgetBurn",
    "TLSCertificateExpiringSoon",
    "ExporterCycleLagging",
    "ExporterOutOfResources",
    "ExporterConfigReloadFailed",
    "ExporterDown",
    "ExporterAbsent",
}
ENDPOINT_ALERTS = {"EndpointDown", "EndpointDegraded", "TLSCertificateExpiringSoon"}
DOMAIN_ALERTS = {"DomainAvailabilityBelowObjective", "DomainErrorBudgetBurn"}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(relative: str) -> Any:
    return yaml.safe_load((PROMETHEUS_DIR / relative).read_text(encoding="utf-8"))


def rules_of(relative: str) -> list[dict[str, Any]]:
    return [rule for group in load(relative)["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule_file", RULE_FILES)
def test_promtool_checks_every_rule(rule_file: str) -> None:
    result = promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules_of(rule_file))} rules found" in result.stdout


def test_rule_files_hold_the_expected_rules() -> None:
    recorded = rules_of("rules/recording.yml")
    alerts = rules_of("rules/alerts.yml")
    assert all("record" in rule for rule in recorded)
    assert all("alert" in rule for rule in alerts)
    # 21 recordings; 14 alert rules: 4 burn-rate windows, 2 TLS severities.
    assert (len(recorded), len(alerts)) == (21, 14)
    assert {rule["alert"] for rule in alerts} == ALERTS


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *UNIT_TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TEST_FILES), result.stdout


def test_promtool_checks_the_scrape_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout
    config = load("prometheus.yml")
    assert config["rule_files"] == list(RULE_FILES)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "availability-exporter"
    groups = job["static_configs"]
    assert all("location" in group["labels"] for group in groups)
    assert max(len(group["targets"]) for group in groups) > 1, "no sharded example"


def check_scrape_configs(directory: Path, scrape_configs: list[dict[str, Any]]) -> str:
    """Run promtool check config on a config holding only these jobs; return its output."""
    config = yaml.safe_dump({"scrape_configs": scrape_configs})
    (directory / "prometheus.yml").write_text(config, encoding="utf-8")
    result = promtool("check", "config", "prometheus.yml", cwd=directory)
    output = result.stdout + result.stderr
    return output if result.returncode else ""


def test_commented_kubernetes_example_is_valid(tmp_path: Path) -> None:
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8")
    block = re.search(
        r"# --- kubernetes example begin\n(.*?)\n\s*# --- kubernetes example end", text, re.S
    )
    assert block is not None
    uncommented = "\n".join(line.replace("# ", "", 1) for line in block.group(1).splitlines())
    (job,) = yaml.safe_load(textwrap.dedent(uncommented))
    assert job["job_name"] == "availability-exporter"
    # The relabelling is checked with static targets in place of discovery.
    static = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    static["static_configs"] = [{"targets": ["availability-exporter-0:10199"]}]
    assert check_scrape_configs(tmp_path, [static]) == ""
    failure = check_scrape_configs(tmp_path, [job])
    if "kubernetes_sd_configs not found" in failure:
        pytest.skip("this promtool is built without Kubernetes discovery (Debian's is)")
    assert failure == ""


def test_every_alert_is_labelled_and_explained() -> None:
    for rule in rules_of("rules/alerts.yml"):
        name, labels, annotations = rule["alert"], rule["labels"], rule["annotations"]
        assert labels["severity"] in {"critical", "warning", "ticket"}, name
        assert {"summary", "description"} <= annotations.keys(), name
        description = annotations["description"]
        if name in DOMAIN_ALERTS | ENDPOINT_ALERTS:
            assert "$labels.domain" in description, name
        if name in ENDPOINT_ALERTS:
            assert "$labels.endpoint" in description, name
        if name in DOMAIN_ALERTS:
            # Domain alerts aggregate to `domain` only, so Alertmanager can
            # group and inhibit on it.
            assert "domain:" in rule["expr"] and "availability:objective:ratio" in rule["expr"]


def test_the_objective_is_set_in_one_place() -> None:
    objective = [
        r for r in rules_of("rules/recording.yml") if r["record"].endswith("objective:ratio")
    ]
    assert [rule["expr"] for rule in objective] == ["vector(0.999)"]
    for path in PROMETHEUS_DIR.glob("rules/*.yml"):
        for number in ("0.999", "0.001", "99.9"):
            occurrences = path.read_text(encoding="utf-8").count(number)
            assert occurrences == (1 if (path.name, number) == ("recording.yml", "0.999") else 0)


def test_every_alert_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: list[tuple[str, dict[str, str]]] = []
    quiet: set[str] = set()
    for case in load("rules.test.yaml")["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            if not expected:
                quiet.add(check["alertname"])
            firing += [(check["alertname"], alert["exp_labels"]) for alert in expected]
    for rule in rules_of("rules/alerts.yml"):
        name, labels = rule["alert"], rule["labels"]
        assert name in quiet, f"{name} has no case where it stays quiet"
        assert any(fired == name and labels.items() <= got.items() for fired, got in firing), (
            f"{name} {labels} never fires in rules.test.yaml"
        )


def test_readme_lists_every_recorded_name() -> None:
    readme = (PROMETHEUS_DIR / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z_:0-9]+)`", readme, re.M))
    recorded = {rule["record"] for rule in rules_of("rules/recording.yml")}
    assert listed == recorded
