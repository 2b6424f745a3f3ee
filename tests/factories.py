"""Small builders shared by the unit tests."""

from __future__ import annotations

from availability_exporter.config import Defaults, parse_config
from availability_exporter.model import Endpoint, ProbeResult, State


def endpoints(*urls: str, interval: float = 15.0) -> tuple[Endpoint, ...]:
    """Endpoints named e0, e1, ... for the given URLs."""
    text = "".join(f"- name: e{i}\n  url: '{url}'\n" for i, url in enumerate(urls))
    return parse_config(text.encode(), "test.yaml", Defaults(interval=interval)).endpoints


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
