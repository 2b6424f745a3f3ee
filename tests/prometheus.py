"""A throwaway Prometheus server (Debian's binary) scraping local targets every second.

The live tests (tests/test_prometheus.py, tests/test_dashboard.py) start one through the
``start_prometheus`` fixture of tests/conftest.py, which skips without the binary and stops
every server it started when the module ends.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.targets import free_port, wait_for

# What the fixture hands out: start(targets, *, job, rule_files=()) -> a ready Prometheus.
StartPrometheus = Callable[..., "Prometheus"]


class Prometheus:
    """Prometheus on 127.0.0.1: one scrape job over ``targets``; scrapes and rules every 1 s."""

    def __init__(self, binary: str, workdir: Path, targets: Sequence[str], *, job: str,
                 rule_files: Sequence[Path] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        # JSON is YAML: no quoting rules to get wrong for paths and targets.
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_ready(self) -> None:
        def ready() -> bool | None:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                return True if httpx.get(f"{self.url}/-/ready", timeout=2).is_success else None
            except httpx.TransportError:
                return None

        wait_for("Prometheus to be ready", ready, timeout=30)

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful answer from ``/api/v1/<path>``."""
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> dict[str, float]:
        """An instant query: {the domain label (or "") -> value}."""
        data = self.api("query", query=promql,
                        time=f"{at if at is not None else time.time():.3f}")
        return {item["metric"].get("domain", ""): float(item["value"][1])
                for item in data["result"]}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()
