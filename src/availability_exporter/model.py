"""The vocabulary every layer shares: an endpoint to probe, probe states, failure reasons,
phases, one probe's result.

It imports nothing from the package, so any module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import httpx


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


STATES: tuple[State, ...] = (State.UP, State.DEGRADED, State.DOWN)
# The closed set of reasons a probe is not up (the `reason` label of the failure counter).
REASONS: tuple[str, ...] = (
    "slow", "status", "timeout", "dns", "connect", "tls", "protocol", "redirects", "content",
)
# A probe that failed on the exporter's own resources (descriptors, buffers, memory, local
# ports): not one of REASONS, since it is never counted against the endpoint.
EXPORTER_REASON = "exporter"
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


class ResponseChecks(Protocol):
    """An endpoint's compiled ``expect:`` (``checks.Expect``): what a good answer looks like."""

    @property
    def needs_body(self) -> bool: ...

    def status_ok(self, status: int) -> bool: ...

    def failure(self, headers: httpx.Headers, body: bytes, body_bytes: int) -> str | None: ...


class MaintenanceWindows(Protocol):
    """An endpoint's compiled ``maintenance:`` (``maintenance.Windows``)."""

    def active(self, when: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """An endpoint's own TLS material: a private CA, a client certificate, another name."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One validated endpoint with every default resolved."""

    name: str
    url: str
    display_url: str
    domain: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout: float
    latency_threshold: float
    follow_redirects: bool
    verify_tls: bool
    line: int
    # The URL to request, parsed once by httpx; it keeps any userinfo, which httpx turns into
    # basic auth (``url`` is the same without it).
    request: httpx.URL = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    http2: bool = False
    proxy: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    ip_family: str = "any"
    # `expect:` and `maintenance:`; None keeps the Fetch rule and counts every probe.
    expect: ResponseChecks | None = field(default=None, compare=False)
    maintenance: MaintenanceWindows | None = field(default=None, compare=False)
    # Configured headers (and a 307/308 body) also go to another origin on a redirect.
    redirect_keep_headers: bool = False

    @property
    def is_https(self) -> bool:
        return self.request.scheme == "https"
