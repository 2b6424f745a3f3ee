"""Small builders shared by the unit tests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from availability_exporter.config import Config, Defaults, load_config, parse_config
from availability_exporter.metrics import BUILD_CHUNK, endpoint_chunks, registry_text
from availability_exporter.model import Endpoint, ProbeResult, State
from availability_exporter.probe import Prober
from availability_exporter.stats import Stats


def endpoints(*urls: str, interval: float = 15.0) -> tuple[Endpoint, ...]:
    """Endpoints named e0, e1, ... for the given URLs."""
    text = "".join(f"- name: e{i}\n  url: '{url}'\n" for i, url in enumerate(urls))
    return parse_config(text.encode(), "test.yaml", Defaults(interval=interval)).endpoints


def endpoint(url: str, **extra: object) -> Endpoint:
    """One endpoint for ``url`` (named probe-test unless ``name`` is given), through the real
    loader; each extra key is written as JSON (which is YAML), e.g.
    ``endpoint(url, timeout=5, expect={"status": [200]})``."""
    item = {"name": "probe-test", "url": url, **extra}
    return parse_config(json.dumps([item]).encode(), "t.yaml", Defaults()).endpoints[0]


def probe_once(ep: Endpoint, prober: Prober | None = None) -> ProbeResult:
    """One probe of ``ep`` in a fresh event loop (a new Prober unless one is given)."""

    async def go() -> ProbeResult:
        used = prober or Prober()
        try:
            return await used.probe(ep)
        finally:
            await used.aclose()

    return asyncio.run(go())


def result(state: State, *, duration: float = 0.01, status: int = 200,
           reason: str | None = None, finished_at: float = 1_800_000_000.0) -> ProbeResult:
    if reason is None and state is State.DEGRADED:
        reason = "slow"
    if reason is None and state is State.DOWN:
        reason = "status"
    return ProbeResult(
        state=state, reason=reason, status_code=status, duration=duration,
        phases=(0.001, 0.0, 0.0005, duration / 2, 0.0001), finished_at=finished_at,
        cert_not_after=None, error=None if state is State.UP else "failed",
    )


def exposition(stats: Stats, registry: CollectorRegistry, *, openmetrics: bool = False,
               chunk_size: int = BUILD_CHUNK) -> list[bytes]:
    """The whole /metrics body rendered at once, in ``chunk_size`` chunks: what every scrape's
    copy (``snapshot``) must equal."""
    return [*endpoint_chunks(stats, openmetrics=openmetrics, chunk_size=chunk_size),
            registry_text(registry, openmetrics=openmetrics)]


EXAMPLES = Path(__file__).parent.parent / "examples"


def load_examples_file(tmp_path: Path) -> Config:
    """examples/endpoints.yaml as a user would load it: the TLS files it names (under
    /etc/availability-exporter) made in ``tmp_path`` by a throwaway CA, its ${VAR}s set."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "internal-ca.pem"))
    client = ca.issue_cert("probe.client.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "probe-client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "probe-client.key"))
    text = (EXAMPLES / "endpoints.yaml").read_text()
    example = tmp_path / "endpoints.yaml"
    example.write_text(text.replace("/etc/availability-exporter/", f"{tmp_path}/"))
    env = {"PARTNER_TOKEN": "example-token", "API_KEY": "example-api-key",
           "PROXY_PASSWORD": "example-password"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return load_config(example)
