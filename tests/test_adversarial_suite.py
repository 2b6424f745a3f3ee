"""The daemon against every way a server can misbehave, for several cycles.

One config holds healthy endpoints and every adversarial target (tests/adversarial); the real
daemon runs as a subprocess at a 2 s interval.  Every endpoint must get its state and reason in
every cycle, reports must keep their rhythm, healthy endpoints stay up, RSS stays bounded, and
nothing prints a traceback.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.adversarial.certs import CertKind
from tests.adversarial.server import (
    UNRESOLVABLE_HOST,
    RemoteServer,
    refused_port,
    serve_in_process,
)

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 2.0
TIMEOUT = 1.5
CYCLES = 5
RSS_BOUND_MB = 150


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    with serve_in_process(str(tmp_path_factory.mktemp("certs"))) as srv:
        yield srv


def cases(server: RemoteServer) -> dict[str, tuple[str, str, str | None]]:
    """name -> (url, expected result, expected reason)."""
    return {
        "healthy-a": (server.url("/ok"), "up", None),
        "healthy-b": (server.url("/status?code=204"), "up", None),
        "healthy-c": (server.url("/slow?ms=50"), "up", None),
        "slow": (server.url("/slow?ms=700"), "degraded", "slow"),
        "error": (server.url("/error"), "down", "status"),
        "hang": (server.url("/hang"), "down", "timeout"),
        "hang-accept": (server.hang_accept_url(), "down", "timeout"),
        "drip": (server.url("/drip"), "down", "timeout"),
        "huge-body": (server.url("/huge"), "up", None),
        "reset": (server.url("/reset"), "down", "protocol"),
        "garbage": (server.url("/garbage"), "down", "protocol"),
        "big-header": (server.url("/bigheader"), "down", "protocol"),
        "half-status": (server.url("/half-status"), "down", "protocol"),
        "http10": (server.url("/http10"), "up", None),
        "redirect-loop": (server.url("/redirect-loop"), "down", "redirects"),
        "redirect-3": (server.url("/redirect?n=3"), "up", None),
        "refused": (f"http://127.0.0.1:{refused_port()}/", "down", "connect"),
        "dns": (f"http://{UNRESOLVABLE_HOST}/", "down", "dns"),
        "tls-good": (server.url("/ok", tls=CertKind.GOOD), "up", None),
        "tls-expired": (server.url("/ok", tls=CertKind.EXPIRED), "down", "tls"),
        "tls-self-signed": (server.url("/ok", tls=CertKind.SELF_SIGNED), "down", "tls"),
        "tls-wrong-host": (server.url("/ok", tls=CertKind.WRONG_HOST), "down", "tls"),
        "tls-hang": (server.hang_accept_url(tls=True), "down", "timeout"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_every_bad_server_classified_every_cycle(server: RemoteServer, tmp_path: Path) -> None:
    expected = cases(server)
    config = tmp_path / "adversarial.yaml"
    config.write_text("".join(f"- name: {n}\n  url: '{u}'\n" for n, (u, _, _) in expected.items()))
    port = free_port()
    assert server.ca_path is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "availability_exporter", str(config), "-f", str(INTERVAL),
         "--probe.timeout", str(TIMEOUT), "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "SSL_CERT_FILE": server.ca_path},
    )
    report_times: list[float] = []
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True).start()
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + CYCLES * INTERVAL + 15
        while len(report_times) < CYCLES and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line == "---\n":
                report_times.append(time.monotonic())
        assert len(report_times) == CYCLES, "".join(stderr)
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0
    assert "Traceback" not in "".join(stderr)

    # Reports keep the interval: no drift, no stall behind the hanging targets.
    gaps = [b - a for a, b in itertools.pairwise(report_times)]
    assert all(abs(gap - INTERVAL) <= 0.05 for gap in gaps), gaps

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(scrape.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    cycles = value("availability_exporter_cycles_total")
    assert cycles == CYCLES
    problems = []
    for name, (_url, result, reason) in expected.items():
        domain = "unresolvable.invalid" if name == "dns" else "127.0.0.1"
        got = {r: value("availability_probes_total", endpoint=name, domain=domain, result=r)
               for r in ("up", "degraded", "down")}
        if got[result] != cycles or sum(got.values()) != cycles:
            problems.append(f"{name}: {got}, expected {cycles} {result}")
        if reason is not None:
            failures = value("availability_probe_failures_total", endpoint=name, domain=domain,
                             reason=reason)
            if failures != cycles:
                problems.append(f"{name}: {failures} {reason} failures, expected {cycles}")
    assert not problems, problems
    for kind in (CertKind.GOOD, CertKind.EXPIRED, CertKind.SELF_SIGNED, CertKind.WRONG_HOST):
        got_expiry = value("availability_tls_cert_expiry_timestamp_seconds",
                           endpoint=f"tls-{kind.value}", domain="127.0.0.1")
        assert got_expiry == int(server.not_after[kind.value]), kind
    assert value("availability_http_status_code", endpoint="drip", domain="127.0.0.1") == 200
    assert rss < RSS_BOUND_MB, rss
