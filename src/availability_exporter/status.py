"""The read-only view of the running daemon that the web side reads: status, not control.

``web``, ``pages`` and ``metrics`` see the daemon only through :class:`StatusView`, which the
daemon builds once.  It hands out live references (the stats, the scheduler's cycle figures) and
small callables, so readers always see the current values without holding the daemon; the one
action it offers is ``reload`` (``POST /-/reload``).  This module imports nothing of ours but
``stats``, so nothing on the web side pulls in the daemon, the scheduler or the settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from availability_exporter.stats import Stats


@dataclass(slots=True)
class ReloadStatus:
    """How the last config load or reload went."""

    successful: bool = True
    last_success: float = 0.0  # Unix time
    last_error: str | None = None


class CycleFigures(Protocol):
    """What the scheduler reports about its cycles (``scheduler.CycleStats`` has these)."""

    @property
    def cycles(self) -> int: ...
    @property
    def missed(self) -> int: ...
    @property
    def last_lag(self) -> float: ...
    @property
    def last_duration(self) -> float: ...
    @property
    def duration_buckets(self) -> Sequence[int]: ...
    @property
    def duration_sum(self) -> float: ...


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything the web side may read of the daemon, plus its one action, ``reload``.

    ``reload()`` re-reads the config; it raises ``config.ConfigError`` when the new file is bad
    (the old config keeps running).  The callables are evaluated on each read, so a view built
    at start-up stays current for the process's life.
    """

    stats: Stats
    probe_interval: float  # seconds, as configured (the pages refresh at this rhythm)
    latency_threshold: float  # seconds, the default for endpoints that set none
    cycle_stats: Callable[[], CycleFigures]
    reload_status: Callable[[], ReloadStatus]
    ready: Callable[[], bool]  # the first cycle has completed
    healthy: Callable[[], bool]  # a cycle completed within the last three intervals
    reload: Callable[[], Awaitable[None]]
