"""The daemon against every way a server can misbehave, for several cycles.

One config holds healthy endpoints and every adversarial target (tests/adversarial); the real
daemon runs as a subprocess at a 2 s interval.  Every endpoint must get its state and reason in
every cycle, reports must keep their rhythm, healthy endpoints stay up, RSS stays bounded, and
nothing prints a traceback.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.certs import CertKind
from tests.adversarial.server import (
    UNRESOLVABLE_HOST,
    RemoteServer,
    refused_port,
    serve_in_process,
)
from tests.targets import ExporterProcess, required_sample

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


def test_every_bad_server_classified_every_cycle(server: RemoteServer, tmp_path: Path) -> None:
    expected = cases(server)
    config = tmp_path / "adversarial.yaml"
    config.write_text("".join(f"- name: {n}\n  url: '{u}'\n" for n, (u, _, _) in expected.items()))
    assert server.ca_path is not None
    with ExporterProcess(config, "-f", str(INTERVAL), "--probe.timeout", str(TIMEOUT),
                         env={"SSL_CERT_FILE": server.ca_path}) as proc:
        reports = proc.wait_reports(CYCLES, timeout=CYCLES * INTERVAL + 15)
        metrics = proc.scrape()
        rss = proc.rss_bytes() / 2**20
        proc.send(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr

    # Reports keep the interval: no drift, no stall behind the hanging targets.
    gaps = [b.at - a.at for a, b in itertools.pairwise(reports[:CYCLES])]
    assert all(abs(gap - INTERVAL) <= 0.05 for gap in gaps), gaps

    def value(name: str, **labels: str) -> float:
        return required_sample(metrics, name, **labels)

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
