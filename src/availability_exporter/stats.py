"""Cumulative counts per endpoint and per domain, and the console report.

Only endpoints of the current config count.  A result is recorded against the exact
``EndpointStats`` object that was probed, so a result arriving for an endpoint that a reload
removed or changed is dropped and its series never come back.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from availability_exporter.model import REASONS, STATES, Endpoint, ProbeResult, State

HISTORY = 20
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REASON_INDEX = {reason: i for i, reason in enumerate(REASONS)}


_RECORD = struct.Struct("<dd5dHBb")  # finished_at, duration, phases, status, state, reason
_STATE_LIST = list(STATES)
_ERRORS: dict[str, str] = {}  # one shared copy of each distinct error message


class History:
    """The last HISTORY results of one endpoint, packed: ~70 bytes each instead of ~350.

    10,000 endpoints x 20 full ProbeResult objects would cost about 60 MB; the status page is
    the only reader, and it rebuilds the few results it shows.
    """

    __slots__ = ("_certs", "_count", "_errors", "_packed")

    def __init__(self) -> None:
        self._packed = bytearray(_RECORD.size * HISTORY)
        self._errors: list[str | None] = [None] * HISTORY
        self._certs: list[float | None] = [None] * HISTORY
        self._count = 0

    def __len__(self) -> int:
        return min(self._count, HISTORY)

    def append(self, result: ProbeResult) -> None:
        slot = self._count % HISTORY
        reason = _REASON_INDEX[result.reason] if result.reason is not None else -1
        _RECORD.pack_into(
            self._packed, slot * _RECORD.size, result.finished_at, result.duration,
            *result.phases, result.status_code, _STATE_LIST.index(result.state), reason,
        )
        error = result.error
        if error is not None:
            if len(_ERRORS) > 10_000:
                _ERRORS.clear()
            error = _ERRORS.setdefault(error, error)
        self._errors[slot] = error
        self._certs[slot] = result.cert_not_after
        self._count += 1

    def __iter__(self) -> Iterator[ProbeResult]:
        """Oldest first."""
        first = self._count - len(self)
        for n in range(first, self._count):
            slot = n % HISTORY
            values = _RECORD.unpack_from(self._packed, slot * _RECORD.size)
            finished, duration, p0, p1, p2, p3, p4, status, state, reason = values
            yield ProbeResult(
                state=_STATE_LIST[state], reason=REASONS[reason] if reason >= 0 else None,
                status_code=status, duration=duration, phases=(p0, p1, p2, p3, p4),
                finished_at=finished, cert_not_after=self._certs[slot],
                error=self._errors[slot],
            )

    def __reversed__(self) -> Iterator[ProbeResult]:
        return reversed(list(self))


class EndpointStats:
    """Everything counted for one endpoint since it (with this name and URL) entered the config."""

    __slots__ = (
        "bucket_counts", "cert_not_after", "degraded", "down", "duration_sum", "endpoint",
        "failures", "history", "last", "up",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.up = 0
        self.degraded = 0
        self.down = 0
        self.failures = [0] * len(REASONS)
        # Non-cumulative counts per bucket; the last one is +Inf.
        self.bucket_counts = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.last: ProbeResult | None = None
        self.cert_not_after: float | None = None
        self.history = History()

    @property
    def total(self) -> int:
        return self.up + self.degraded + self.down

    def add(self, result: ProbeResult) -> None:
        if result.state is State.UP:
            self.up += 1
        elif result.state is State.DEGRADED:
            self.degraded += 1
        else:
            self.down += 1
        if result.reason is not None:
            self.failures[_REASON_INDEX[result.reason]] += 1
        self.bucket_counts[bisect.bisect_left(BUCKETS, result.duration)] += 1
        self.duration_sum += result.duration
        if result.cert_not_after is not None:
            self.cert_not_after = result.cert_not_after
        self.last = result
        self.history.append(result)

    def restore(self, counts: SavedCounts) -> None:
        """Take over counts saved by an earlier run (see statefile.py)."""
        self.up, self.degraded, self.down = counts.up, counts.degraded, counts.down
        self.failures = list(counts.failures)
        self.bucket_counts = list(counts.buckets)
        self.duration_sum = counts.duration_sum


@dataclass(frozen=True, slots=True)
class SavedCounts:
    """The cumulative part of EndpointStats, as kept in the state file."""

    up: int
    degraded: int
    down: int
    failures: tuple[int, ...]
    buckets: tuple[int, ...]
    duration_sum: float

    @classmethod
    def of(cls, stats: EndpointStats) -> SavedCounts:
        return cls(
            stats.up, stats.degraded, stats.down, tuple(stats.failures),
            tuple(stats.bucket_counts), stats.duration_sum,
        )


def percentage(up: int, total: int) -> int:
    """floor(100 * up / total) in integer arithmetic.

    The exercise drops decimals (2/3 is 66, never 67); integer division is exact where a
    float product could land a hair under a whole number.
    """
    return 100 * up // total


class Stats:
    """The counts of the current config's endpoints, in config order."""

    def __init__(self) -> None:
        self._endpoints: dict[str, EndpointStats] = {}
        self._domains: dict[str, list[int]] = {}  # domain -> [up, total], first-seen order

    def __len__(self) -> int:
        return len(self._endpoints)

    def __iter__(self) -> Iterator[EndpointStats]:
        return iter(self._endpoints.values())

    def get(self, name: str) -> EndpointStats | None:
        return self._endpoints.get(name)

    def apply(self, endpoints: Iterable[Endpoint]) -> list[EndpointStats]:
        """Switch to a new endpoint list; those with the same name and URL keep their counts."""
        old = self._endpoints
        new: dict[str, EndpointStats] = {}
        for endpoint in endpoints:
            kept = old.get(endpoint.name)
            if kept is not None and kept.endpoint.url == endpoint.url:
                kept.endpoint = endpoint
                new[endpoint.name] = kept
            else:
                new[endpoint.name] = EndpointStats(endpoint)
        self._endpoints = new
        self._recount_domains()
        return list(new.values())

    def _recount_domains(self) -> None:
        domains: dict[str, list[int]] = {}
        for stats in self._endpoints.values():
            counts = domains.setdefault(stats.endpoint.domain, [0, 0])
            counts[0] += stats.up
            counts[1] += stats.total
        self._domains = domains

    def record(self, stats: EndpointStats, result: ProbeResult) -> bool:
        """Count a result; False (and nothing counted) if the endpoint left the config."""
        if self._endpoints.get(stats.endpoint.name) is not stats:
            return False
        stats.add(result)
        counts = self._domains[stats.endpoint.domain]
        counts[0] += result.state is State.UP
        counts[1] += 1
        return True

    def restore(
        self, saved: dict[tuple[str, str], SavedCounts], key: Callable[[str], str]
    ) -> int:
        """Restore counts keyed by (name, key(url)); returns how many endpoints were restored."""
        restored = 0
        for stats in self._endpoints.values():
            counts = saved.get((stats.endpoint.name, key(stats.endpoint.url)))
            if counts is not None:
                stats.restore(counts)
                restored += 1
        self._recount_domains()
        return restored

    def domains(self) -> list[tuple[str, int, int]]:
        """(domain, up, total) in first-seen config order, domains with probes only."""
        return [(d, c[0], c[1]) for d, c in self._domains.items() if c[1] > 0]

    def report(self) -> str:
        """The console report: one line per domain in the exercise's format, then ---."""
        lines = [
            f"{domain} has {percentage(up, total)}% availability percentage"
            for domain, up, total in self.domains()
        ]
        lines.append("---")
        return "\n".join(lines) + "\n"
