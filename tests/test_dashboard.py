"""The Grafana dashboard is well formed, and every query in it returns data from a live stack.

The static half needs nothing. The live half starts the exporter (probing local targets that
answer 200, 500, slowly and over TLS) and Debian's Prometheus with deploy/prometheus/rules,
then evaluates every panel's expression through Prometheus's query API. Without the
prometheus binary the live half skips, unless REQUIRE_PROMETHEUS=1 makes that a failure.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.prometheus import StartPrometheus
from tests.targets import ExporterProcess, Targets, wait_for

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "grafana" / "dashboards" / "availability-exporter.json"
RULES = [
    ROOT / "deploy" / "prometheus" / "rules" / name for name in ("recording.yml", "alerts.yml")
]
BUILTINS = {"__rate_interval", "__range", "__interval", "__interval_ms", "__range_s", "__all"}
# Values Grafana would give the variables: every location, domain and endpoint.
SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
    "location": ".*",
    "domain": ".*",
    "endpoint": ".*",
}
# Which variables must filter a series, by the labels it carries.
LEVELS = [
    ("location_domain_endpoint", ("location", "domain", "endpoint")),
    ("location_domain:", ("location", "domain")),
    ("availability_exporter_", ("location",)),
    ("up", ("location",)),
    ("availability_", ("location", "domain", "endpoint")),
]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, and of every Prometheus
    annotation (titled by its name)."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ] + annotation_queries(dashboard)


def annotation_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (annotation["name"], annotation["expr"])
        for annotation in dashboard["annotations"]["list"]
        if annotation.get("datasource", {}).get("type") == "prometheus"
    ]


def test_maintenance_windows_are_an_annotation() -> None:
    dashboard = load_dashboard()
    (annotation,) = [a for a in dashboard["annotations"]["list"]
                     if a["name"] == "Maintenance windows"]
    assert annotation["enable"] is True
    assert annotation["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "availability_endpoint_maintenance" in annotation["expr"]
    assert set(annotation["tagKeys"].split(",")) == {"location", "domain", "endpoint"}


def test_panels_are_placed_and_use_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    kinds = {panel["type"] for panel in panels}
    assert {"state-timeline", "heatmap", "timeseries", "stat", "bargauge", "table"} <= kinds


def test_variables_exist_and_match_series_without_the_label() -> None:
    dashboard = load_dashboard()
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("location", "domain", "endpoint"):
        var = variables[name]
        assert var["query"]["query"].startswith("label_values(")
        assert (var["multi"], var["includeAll"], var["allValue"]) == (True, True, ".*")
    used = set(re.findall(r"\$\{?(\w+)", DASHBOARD.read_text(encoding="utf-8")))
    assert used - BUILTINS <= variables.keys()


def test_every_selector_is_filtered_by_the_variables_of_its_labels() -> None:
    for title, expr in queries(load_dashboard()):
        selectors = re.findall(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", expr)
        bare = re.sub(r"\{[^}]*\}|\[[^]]*\]|\b(?:by|on)\s*\([^)]*\)", "", expr)
        names = {n for n in re.findall(r"[a-zA-Z_:][\w:]*", bare) if ":" in n or "availab" in n}
        # Only the objective, which has no labels, may appear unfiltered.
        assert names - {s for s, _ in selectors} <= {"availability:objective:ratio"}, title
        for name, matchers in selectors:
            required = next(labels for prefix, labels in LEVELS if name.startswith(prefix))
            for label in required:
                assert f'{label}=~"${label}"' in matchers, f"{title}: {name} lacks ${label}"


def tls_context() -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 from a throwaway CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


def substitute(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: SUBSTITUTIONS[match.group(1)], expr)


def test_every_panel_query_returns_data(tmp_path: Path,
                                        start_prometheus: StartPrometheus) -> None:
    if not (ROOT / "src" / "availability_exporter" / "cli.py").exists():
        pytest.skip("the exporter's CLI is not there yet")
    config = tmp_path / "endpoints.yaml"
    now = datetime.datetime.now(datetime.UTC)
    window_start = (now - datetime.timedelta(hours=1)).isoformat()
    window_end = (now + datetime.timedelta(hours=1)).isoformat()
    with Targets() as http, Targets(tls=tls_context()) as https:
        config.write_text(
            f"- name: ok\n  url: {http.url('/ok')}\n"
            f"- name: error\n  url: {http.url('/error')}\n"
            f"- name: slow\n  url: {http.url('/slow')}\n"
            f"- name: tls\n  url: {https.url('/ok')}\n  verify_tls: false\n"
            # Down, but inside a one-off maintenance window around now.
            f"- name: maint\n  url: {http.url('/error?maint')}\n  maintenance:\n"
            f"    - start: {window_start}\n      end: {window_end}\n",
            encoding="utf-8",
        )
        with ExporterProcess(config, "-f", "1") as exporter:
            prometheus = start_prometheus([f"127.0.0.1:{exporter.port}"],
                                          job="availability-exporter", rule_files=RULES)
            exprs = [(title, substitute(expr)) for title, expr in queries(load_dashboard())]

            def empty() -> list[str]:
                return [
                    f"{title}: {expr}"
                    for title, expr in exprs
                    if not prometheus.api("query", query=expr)["result"]
                ]

            deadline = time.monotonic() + 90
            while (missing := empty()) and time.monotonic() < deadline:
                time.sleep(1)
            assert missing == [], "\n".join(missing)

            rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
            # Every rule of the rule files loaded (counted from the files, so a new rule
            # does not need this test changed).
            assert len(rules) == sum(len(group["rules"]) for path in RULES
                                     for group in yaml.safe_load(path.read_text())["groups"])
            assert [r["name"] for r in rules if r["health"] != "ok"] == []

            # The alert expressions match the exporter's real label sets.
            def pending() -> set[tuple[str, str]] | None:
                alerts = {
                    (alert["labels"]["alertname"], alert["labels"].get("endpoint", ""))
                    for alert in prometheus.api("alerts")["alerts"]
                }
                wanted = {("EndpointDown", "error"), ("EndpointDegraded", "slow")}
                return alerts if wanted <= alerts else None

            alerts = wait_for(
                "EndpointDown and EndpointDegraded to be pending", pending, timeout=30, interval=0.5
            )
            assert not {endpoint for _, endpoint in alerts} & {"ok", "tls", "maint"}
            # The maintenance annotation's query returns the window, and only it.
            ((_, annotation),) = annotation_queries(load_dashboard())
            found = prometheus.api("query", query=substitute(annotation))["result"]
            assert [(r["metric"]["endpoint"], r["value"][1]) for r in found] == [("maint", "1")]
            assert ("EndpointDown", "slow") not in alerts  # slow is degraded, not down
