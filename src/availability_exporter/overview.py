"""What the status page, the JSON API and the badges compute from a StatusView, in one place.

Filters (``?state=``, ``?domain=``) are parsed and checked here, so the page and the API accept
exactly the same values; the order "most urgent first" (down, degraded, pending, up; the
longest-running trouble first) is defined once; domain figures (since start and over the
last hour) come from :meth:`stats.Stats.recent`.  Nothing here renders anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from availability_exporter.model import State
from availability_exporter.stats import EndpointStats, RecentWindow, percentage
from availability_exporter.status import StatusView

PENDING = "pending"  # not probed yet: the state an endpoint shows before its first result
STATE_VALUES: tuple[str, ...] = (State.DOWN.value, State.DEGRADED.value, PENDING,
                                 State.UP.value)
_URGENCY = {value: rank for rank, value in enumerate(STATE_VALUES)}
# The last hour is shown once the window holds at least this much (else "since start" alone
# would be repeated under another name).
RECENT_MIN_SPAN = 300.0


class FilterError(ValueError):
    """A query value the page or the API does not accept; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The endpoints asked for: one state and/or one domain (None: any)."""

    state: str | None = None
    domain: str | None = None

    def matches(self, stats: EndpointStats) -> bool:
        return ((self.domain is None or stats.endpoint.domain == self.domain)
                and (self.state is None or state_of(stats) == self.state))


def parse_filters(query: Mapping[str, Sequence[str]], domains: Sequence[str],
                  allowed: Sequence[str] = ("state", "domain")) -> Filters:
    """``?state=`` and ``?domain=`` checked: one value each, a known state and domain.

    ``allowed`` names the keys the caller takes (others may add ``page``); any other key is
    an error too, so a misspelt filter is never silently ignored.
    """
    for key in query:
        if key not in allowed:
            raise FilterError(f"unknown query parameter {key!r}; allowed: "
                              + ", ".join(allowed))
    for key, values in query.items():
        if len(values) > 1:
            raise FilterError(f"{key} given {len(values)} times; give it once")
    state = query["state"][0] if query.get("state") else None
    domain = query["domain"][0] if query.get("domain") else None
    if state is not None and state not in _URGENCY:
        raise FilterError(f"state must be one of {', '.join(STATE_VALUES)}")
    if domain is not None and domain not in domains:
        raise FilterError(f"no configured endpoint has the domain \N{LEFT DOUBLE QUOTATION MARK}"
                          f"{domain}\N{RIGHT DOUBLE QUOTATION MARK}")
    return Filters(state=state, domain=domain)


def state_of(stats: EndpointStats) -> str:
    """The endpoint's current state as text; ``pending`` before its first result."""
    return stats.last.state.value if stats.last is not None else PENDING


def most_urgent_first(status: StatusView, filters: Filters) -> list[EndpointStats]:
    """The matching endpoints: down, degraded, pending, up.

    Down and degraded ones in the order their trouble began (the longest first); pending and
    up ones in config order (the sort is stable).
    """
    rows = [s for s in status.stats if filters.matches(s)]

    def key(s: EndpointStats) -> tuple[int, float]:
        rank = _URGENCY[state_of(s)]
        return rank, (s.since or 0.0) if rank < _URGENCY[PENDING] else 0.0

    rows.sort(key=key)
    return rows


def configured_domains(status: StatusView) -> list[str]:
    """Every domain of the current config, in first-seen order (with or without probes)."""
    return list(dict.fromkeys(s.endpoint.domain for s in status.stats))


@dataclass(frozen=True, slots=True)
class DomainFigures:
    """A domain's availability since start and over its recent window."""

    domain: str
    endpoints: int
    up: int
    total: int
    recent_up: int
    recent_total: int
    recent_span: float  # seconds the recent window covers (an hour once full)

    @property
    def percent(self) -> int | None:
        """floor(100 * up / total), the console's figure; None before the first probe."""
        return percentage(self.up, self.total) if self.total else None

    @property
    def ratio(self) -> float | None:
        return self.up / self.total if self.total else None

    @property
    def recent_ratio(self) -> float | None:
        """Over the last hour (or what there is of it); None while too little is kept."""
        if self.recent_total == 0 or self.recent_span < RECENT_MIN_SPAN:
            return None
        return self.recent_up / self.recent_total

    @property
    def recent_percent(self) -> int | None:
        ratio = self.recent_ratio
        return None if ratio is None else percentage(self.recent_up, self.recent_total)

    @property
    def recent_is_full_hour(self) -> bool:
        return self.recent_span >= RecentWindow.SPAN


def domain_figures(status: StatusView, now: float | None = None) -> list[DomainFigures]:
    """One entry per configured domain, in first-seen config order."""
    now = time.time() if now is None else now
    stats = status.stats
    counts = {domain: (up, total) for domain, up, total in stats.domains()}
    members: dict[str, int] = {}
    for s in stats:
        members[s.endpoint.domain] = members.get(s.endpoint.domain, 0) + 1
    out = []
    for domain, endpoints in members.items():
        up, total = counts.get(domain, (0, 0))
        recent_up, recent_total, span = stats.recent(domain, now)
        out.append(DomainFigures(domain, endpoints, up, total, recent_up, recent_total, span))
    return out


def duration_words(seconds: float) -> str:
    """A duration as a person says it: "45 s", "12 min", "3 h 20 min", "2 d 4 h"."""
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
