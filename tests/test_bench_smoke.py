"""Every benchmark in bench/, run small: it works and what it checks holds (never its timings).

Each benchmark runs as the command a reader would type, with a few hundred endpoints and
intervals of a few seconds, and writes its figures as JSON.  The assertions are about
correctness only: every endpoint probed exactly once in every cycle (by the target's own log
and by the exporter's counters), classifications right with delays far from the threshold, a
scrape that prometheus_client's parser reads with every series the design names.  Timing
verdicts (MET / NOT MET) are printed by the benchmarks and deliberately not asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.needs import binary

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BLACKBOX = "prometheus-blackbox-exporter"
BENCHMARKS = ("capacity", "accuracy", "scrape", "memory", "startup", "scaling", "run_all",
              "held_connections", "page", "adversarial", "soak")
PER_ENDPOINT_FAMILIES = (
    "availability_endpoint_up",
    "availability_endpoint_state",
    "availability_probes",  # the parser names counter families without _total
    "availability_probe_failures",
    "availability_probe_duration_seconds",
    "availability_probe_phase_duration_seconds",
    "availability_http_status_code",
    "availability_endpoint_last_probe_timestamp_seconds",
)


def blackbox_args() -> list[str]:
    """Compare with blackbox_exporter when installed; without it, leave that part out.

    Under REQUIRE_BLACKBOX=1 a missing binary fails the test instead (tests.needs decides).
    """
    if shutil.which(BLACKBOX) is not None:
        return []
    if os.environ.get("REQUIRE_BLACKBOX") == "1":
        binary(BLACKBOX)
    return ["--no-blackbox"]


def run_bench(name: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run ``bench/NAME.py ARGS --json ...``; its JSON figures and its printed output."""
    out = tmp_path / f"{name}.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args, "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )
    printed = done.stdout + done.stderr
    assert out.exists(), f"{name} wrote no figures (exit {done.returncode}):\n{printed[-4000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    failed = [check for check, ok in data["checks"].items() if not ok]
    assert data["checks"], f"{name} checked nothing:\n{printed[-4000:]}"
    assert not failed, f"{name}: {failed}\n{printed[-4000:]}"
    assert done.returncode == 0, printed[-4000:]
    assert data["verdicts"], printed[-4000:]
    for verdict in data["verdicts"]:
        assert f"{verdict['goal']}: " in done.stdout  # one verdict line per goal
    return data, printed


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_is_a_command(name: str) -> None:
    done = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_held_connections_make_no_endpoint_down(tmp_path: Path) -> None:
    data, printed = run_bench("held_connections", tmp_path, "--endpoints", "100", "--sizes",
                              "300", "--nofile", "512", "--cycles", "1", "--interval", "2",
                              "--timeout", "1")
    phases = data["figures"]["phases"]
    assert [(p["kind"], p["held"]) for p in phases] == [("idle", 300), ("half-sent", 300)]
    for phase in phases:
        assert phase["probes"] >= 100, printed
        assert phase["false_downs"] == 0, printed
        assert phase["failed_scrapes"] == 0, printed


def test_capacity_probes_every_endpoint_every_cycle(tmp_path: Path) -> None:
    binary("nginx")
    extra = blackbox_args()
    data, printed = run_bench("capacity", tmp_path, "--endpoints", "300", "--interval", "2",
                              "--cycles", "2", *extra)
    ours = data["figures"]["ours"]
    # nginx's log: 1 warm-up + 2 measured cycles, each endpoint exactly once in each.
    assert ours["coverage"] == [300] * 3, printed
    assert ours["probes_seen"] == 900
    if not extra:
        theirs = data["figures"]["blackbox"]
        assert theirs["probes"] == 600
        assert theirs["cpu_us_per_probe"] > 0
        assert data["figures"]["cpu_ratio"] > 0


def test_accuracy_classifies_far_from_the_threshold(tmp_path: Path) -> None:
    # 20 ms must be up and 1,200 ms degraded (threshold 0.5 s, timeout 2.4 s at -f 3): wide
    # margins, so only a wrong classification, not a slow machine, can fail this.
    data, printed = run_bench(
        "accuracy", tmp_path, "--endpoints", "300", "--interval", "3", "--cycles", "2",
        "--delay-ms", "20", "--up-ms", "20", "--degraded-ms", "1200", *blackbox_args(),
    )
    threshold = data["figures"]["threshold"]
    assert (threshold["up"], threshold["up_total"]) == (300, 300), printed
    assert (threshold["degraded"], threshold["degraded_total"]) == (300, 300), printed
    assert threshold["fastest_degraded_ms"] >= 1200
    assert data["figures"]["ours_in_process"]["error_ms"]["count"] == 600
    assert data["figures"]["ours_daemon"]["error_ms"]["count"] == 600
    # The delay server answered no earlier than asked.
    assert data["figures"]["ours_in_process"]["error_ms"]["p50"] >= 0


def test_scrape_parses_with_every_series(tmp_path: Path) -> None:
    saved = tmp_path / "metrics.txt"
    data, printed = run_bench("scrape", tmp_path, "--endpoints", "300", "--interval", "2",
                              "--cycles", "1", "--delay-ms", "20", "--save-scrape", str(saved))
    families = {f.name: f for f in text_string_to_metric_families(saved.read_text())}
    for name in PER_ENDPOINT_FAMILIES:
        endpoints = {s.labels["endpoint"] for s in families[name].samples}
        assert len(endpoints) == 300, (name, printed)
    totals: dict[str, float] = {}
    for sample in families["availability_probes"].samples:
        endpoint = sample.labels["endpoint"]
        totals[endpoint] = totals.get(endpoint, 0.0) + sample.value
    # Scraped between cycles: 1 warm-up + 1 quiet + 1 gzip-scraped + 1 plain-scraped cycle,
    # every endpoint alike.
    assert set(totals.values()) == {4.0}, printed
    assert data["figures"]["series_per_endpoint"] >= 30
    # The latency error of each phase, side by side: every probe of the phase has one.
    for phase in ("error_quiet_ms", "error_scraped_ms", "error_plain_scraped_ms"):
        assert data["figures"][phase]["count"] == 300, (phase, printed)
    assert data["figures"]["plain_scrape_ms"]["count"] > 0
    assert data["figures"]["scrape_ms"]["count"] > 0
    assert data["figures"]["bytes_gzip"] < data["figures"]["bytes_plain"]


def test_memory_runs_its_cycles(tmp_path: Path) -> None:
    binary("nginx")
    data, _ = run_bench("memory", tmp_path, "--endpoints", "300", "--cycles", "4",
                        "--checkpoint", "2", "--interval", "1", "--timeout", "0.5")
    assert len(data["figures"]["rss"]) == 4
    assert all(rss > 0 for rss in data["figures"]["rss"])


def test_startup_reaches_the_target(tmp_path: Path) -> None:
    binary("nginx")
    data, _ = run_bench("startup", tmp_path, "--endpoints", "300", "--repeat", "1")
    assert len(data["figures"]["first_probe_s"]) == 1


def test_scaling_shards_and_loses_nothing(tmp_path: Path) -> None:
    data, printed = run_bench("scaling", tmp_path, "--sizes", "40,300", "--per-process", "200",
                              "--cycles", "1", "--interval", "2", "--delay-ms", "20")
    curve = {p["endpoints"]: p for p in data["figures"]["curve"]}
    assert curve[40]["processes"] == 1
    assert curve[300]["processes"] == 2  # split with --shard 0/2 and 1/2
    assert all(p["every_cycle"] for p in curve.values()), printed


def test_page_benchmark_runs_and_paginates(tmp_path: Path) -> None:
    data, printed = run_bench("page", tmp_path, "--endpoints", "450", "--repeat", "1")
    figures = data["figures"]
    assert figures["endpoints"] == 450
    assert figures["/ (worst 200 first)"]["status"] == 200, printed
    assert figures["/api/v1/status"]["bytes"] > figures["/api/v1/status?state=down"]["bytes"]
