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

from availability_exporter.model import (
    EXPORTER_REASON,
    REASONS,
    STATES,
    Endpoint,
    ProbeResult,
    State,
)

HISTORY = 50
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REASON_INDEX = {reason: i for i, reason in enumerate(REASONS)}


# finished_at (double: a Unix time needs its 53 bits), duration and phases (float32: 7 digits
# are plenty for a latency), certificate notAfter (whole seconds, 0 = none seen), status,
# state, reason: 40 bytes a result.
_RECORD = struct.Struct("<d6fIHBb")
_STATE_LIST = list(STATES)
_ERRORS: dict[str, str] = {}  # one shared copy of each distinct error message


class History:
    """The last HISTORY results of one endpoint, packed: 40-48 bytes each instead of ~350.

    10,000 endpoints x 50 full ProbeResult objects would cost about 175 MB; packed they cost
    about 25 MB (bench/memory.py).  The pages and the API are the only readers, and they
    rebuild the few results they show.  Error texts are shared between endpoints.
    """

    __slots__ = ("_count", "_errors", "_packed")

    def __init__(self) -> None:
        self._packed = bytearray(_RECORD.size * HISTORY)
        # Made at the first error: an endpoint that never failed keeps no list (4 MB saved
        # at 10,000 healthy endpoints).
        self._errors: list[str | None] | None = None
        self._count = 0

    def __len__(self) -> int:
        return min(self._count, HISTORY)

    def append(self, result: ProbeResult) -> None:
        slot = self._count % HISTORY
        reason = _REASON_INDEX[result.reason] if result.reason is not None else -1
        cert = result.cert_not_after
        _RECORD.pack_into(
            self._packed, slot * _RECORD.size, result.finished_at, result.duration,
            *result.phases, min(max(int(cert), 1), 0xFFFFFFFF) if cert is not None else 0,
            result.status_code, _STATE_LIST.index(result.state), reason,
        )
        error = result.error
        if error is not None:
            if len(_ERRORS) > 10_000:
                _ERRORS.clear()
            error = _ERRORS.setdefault(error, error)
            if self._errors is None:
                self._errors = [None] * HISTORY
        if self._errors is not None:
            self._errors[slot] = error
        self._count += 1

    def results(self) -> list[ProbeResult]:
        """The kept results, oldest first, rebuilt at once (no await can interleave)."""
        first = self._count - len(self)
        errors = self._errors or [None] * HISTORY
        out: list[ProbeResult] = []
        for n in range(first, self._count):
            slot = n % HISTORY
            values = _RECORD.unpack_from(self._packed, slot * _RECORD.size)
            finished, duration, p0, p1, p2, p3, p4, cert, status, state, reason = values
            out.append(ProbeResult(
                state=_STATE_LIST[state], reason=REASONS[reason] if reason >= 0 else None,
                status_code=status, duration=duration, phases=(p0, p1, p2, p3, p4),
                finished_at=finished, cert_not_after=float(cert) if cert else None,
                error=errors[slot],
            ))
        return out

    def __iter__(self) -> Iterator[ProbeResult]:
        """Oldest first."""
        return iter(self.results())

    def __reversed__(self) -> Iterator[ProbeResult]:
        return reversed(self.results())


class EndpointStats:
    """Everything counted for one endpoint since it (with this name and URL) entered the config."""

    __slots__ = (
        "bucket_counts", "cert_not_after", "degraded", "down", "duration_sum", "endpoint",
        "failures", "history", "in_maintenance", "last", "maintenance", "since", "up",
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
        # Probes that ran inside a maintenance window (not in up/degraded/down), and whether
        # the last one did.
        self.maintenance = 0
        self.in_maintenance = False
        # When the current state began: the end of the first probe in a row with this state
        # (kept here, not read from the history, so "down since" can be older than 50 results).
        self.since: float | None = None

    @property
    def total(self) -> int:
        return self.up + self.degraded + self.down

    def add(self, result: ProbeResult, *, maintenance: bool = False) -> None:
        """Count a result; one inside a maintenance window counts only as ``maintenance``
        (its state, last-probe gauges and history are kept all the same).

        The cumulative counts (up/degraded/down, failures, the latency histogram) take only
        probes outside windows, so the histogram's count stays their sum (the state file
        checks it) and every cumulative figure means the same set of probes.
        """
        self.in_maintenance = maintenance
        if maintenance:
            self.maintenance += 1
        else:
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
        if self.last is None or self.last.state is not result.state:
            self.since = result.finished_at
        self.last = result
        self.history.append(result)

    def restore(self, counts: SavedCounts) -> None:
        """Take over counts saved by an earlier run (see statefile.py)."""
        self.up, self.degraded, self.down = counts.up, counts.degraded, counts.down
        self.failures = list(counts.failures)
        self.bucket_counts = list(counts.buckets)
        self.duration_sum = counts.duration_sum
        self.maintenance = counts.maintenance


@dataclass(frozen=True, slots=True)
class SavedCounts:
    """The cumulative part of EndpointStats, as kept in the state file."""

    up: int
    degraded: int
    down: int
    failures: tuple[int, ...]
    buckets: tuple[int, ...]
    duration_sum: float
    maintenance: int = 0  # probes inside maintenance windows (files before them: 0)

    @classmethod
    def of(cls, stats: EndpointStats) -> SavedCounts:
        return cls(
            stats.up, stats.degraded, stats.down, tuple(stats.failures),
            tuple(stats.bucket_counts), stats.duration_sum, stats.maintenance,
        )


def percentage(up: int, total: int) -> int:
    """floor(100 * up / total) in integer arithmetic.

    The exercise drops decimals (2/3 is 66, never 67); integer division is exact where a
    float product could land a hair under a whole number.
    """
    return 100 * up // total


class RecentWindow:
    """A domain's probes over the last hour, in one-minute buckets (60 of them, reused).

    The per-endpoint history keeps 50 results, 12.5 minutes at the default 15 s interval: too
    short for "the last hour", so each domain also counts its probes per minute.  Cheap: three
    lists of 60 ints per domain, one bucket touched per probe.
    """

    __slots__ = ("_minutes", "_totals", "_ups", "first")

    SPAN = 3600.0

    def __init__(self) -> None:
        self._minutes = [-1] * 60
        self._ups = [0] * 60
        self._totals = [0] * 60
        self.first: float | None = None  # the first probe counted here (Unix time)

    def add(self, up: bool, when: float) -> None:
        minute = int(when // 60)
        slot = minute % 60
        if self._minutes[slot] != minute:
            self._minutes[slot], self._ups[slot], self._totals[slot] = minute, 0, 0
        self._ups[slot] += up
        self._totals[slot] += 1
        if self.first is None:
            self.first = when

    def counts(self, now: float) -> tuple[int, int, float]:
        """(up, total, seconds covered) over the hour before ``now`` (the current minute
        included); the span is shorter than an hour while the window is still filling."""
        newest = int(now // 60)
        up = total = 0
        for minute, ups, totals in zip(self._minutes, self._ups, self._totals, strict=True):
            if newest - 60 < minute <= newest:
                up += ups
                total += totals
        span = 0.0 if self.first is None else min(self.SPAN, max(0.0, now - self.first))
        return up, total, span


class Stats:
    """The counts of the current config's endpoints, in config order."""

    def __init__(self) -> None:
        self._endpoints: dict[str, EndpointStats] = {}
        self._domains: dict[str, list[int]] = {}  # domain -> [up, total], first-seen order
        # Probes that failed on the exporter's own resources, by reason (never an endpoint's).
        self.exporter_errors: dict[str, int] = {}
        self.last_exporter_error: str | None = None
        self._recent: dict[str, RecentWindow] = {}  # domain -> its last hour

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
        # A domain that stays keeps its last hour; one that left the config forgets it.
        self._recent = {domain: self._recent.get(domain) or RecentWindow() for domain in domains}

    def record(self, stats: EndpointStats, result: ProbeResult) -> bool:
        """Count a result; False (and nothing counted) if the endpoint left the config.

        A result with reason ``exporter`` (this process ran out of descriptors, buffers,
        memory or ports) says nothing about the endpoint: it is counted in
        ``exporter_errors`` only, and the endpoint's counts, state and history stay as they were.
        A result that finished inside one of the endpoint's maintenance windows counts as
        ``maintenance`` only: not in up/degraded/down, failures or its domain's figures.
        """
        if self._endpoints.get(stats.endpoint.name) is not stats:
            return False
        if result.reason == EXPORTER_REASON:
            errors = self.exporter_errors
            errors[EXPORTER_REASON] = errors.get(EXPORTER_REASON, 0) + 1
            self.last_exporter_error = result.error
            return True
        windows = stats.endpoint.maintenance
        if windows is not None and windows.active(result.finished_at):
            stats.add(result, maintenance=True)  # planned downtime: not the domain's figure
            return True
        stats.add(result)
        counts = self._domains[stats.endpoint.domain]
        counts[0] += result.state is State.UP
        counts[1] += 1
        self._recent[stats.endpoint.domain].add(result.state is State.UP, result.finished_at)
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

    def recent(self, domain: str, now: float) -> tuple[int, int, float]:
        """(up, total, seconds covered) of ``domain`` over the last hour; zeros if unknown."""
        window = self._recent.get(domain)
        return window.counts(now) if window is not None else (0, 0, 0.0)

    def domains_in_maintenance(self) -> set[str]:
        """Domains whose endpoints' last probes all ran inside a maintenance window."""
        resting: dict[str, bool] = {}
        for stats in self._endpoints.values():
            domain = stats.endpoint.domain
            resting[domain] = resting.get(domain, True) and stats.in_maintenance
        return {domain for domain, all_resting in resting.items() if all_resting}

    def report(self) -> str:
        """The console report: one line per domain in the exercise's format, then ---.

        A domain whose endpoints are all in maintenance gets " (maintenance)" after the
        exercise's line (its figure then stands still), or a line of its own while none of
        its probes has counted yet.
        """
        resting = self.domains_in_maintenance()
        lines: list[str] = []
        for domain, (up, total) in self._domains.items():
            mark = " (maintenance)" if domain in resting else ""
            if total:
                lines.append(f"{domain} has {percentage(up, total)}% availability "
                             f"percentage{mark}")
            elif mark:
                lines.append(f"{domain} is in maintenance (no probes counted yet)")
        lines.append("---")
        return "\n".join(lines) + "\n"
