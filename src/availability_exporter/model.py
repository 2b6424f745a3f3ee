"""The vocabulary every layer shares: probe states, failure reasons, phases, one probe's result.

It imports nothing from the package, so any module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


STATES: tuple[State, ...] = (State.UP, State.DEGRADED, State.DOWN)
# The closed set of reasons a probe is not up (the `reason` label of the failure counter).
REASONS: tuple[str, ...] = (
    "slow", "status", "timeout", "dns", "connect", "tls", "protocol", "redirects",
)
PHASES: tuple[str, ...] = ("connect", "tls", "request", "wait", "transfer")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe found; ``phases`` follows PHASES, summed over redirect hops."""

    state: State
    reason: str | None
    status_code: int
    duration: float
    phases: tuple[float, float, float, float, float]
    finished_at: float
    cert_not_after: float | None
    error: str | None
    redirects: int = 0
