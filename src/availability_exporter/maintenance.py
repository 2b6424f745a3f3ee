"""Maintenance windows (an endpoint's ``maintenance:``): when its probes are planned downtime.

A window is either recurring, a cron expression (croniter) plus a duration in a named IANA
time zone, or a one-off ``{start, end}``::

    maintenance:
      - cron: "0 2 * * 0"        # every Sunday 02:00 ...
        duration: 3600           # ... for an hour (seconds, > 0)
        time_zone: UTC           # any IANA name; default UTC
      - start: 2026-12-24T18:00:00+01:00
        end: 2026-12-26T08:00:00+01:00   # an ISO 8601 time without offset is in time_zone

A window is active from each fire time ``f`` (inclusive) to ``f + duration`` (exclusive); for
a one-off, from ``start`` to ``end``.  During a window probes still run and show everywhere, but
``stats`` counts them apart (see ``availability_maintenance_probes_total``).

Time is an argument (:meth:`Windows.active` takes a Unix timestamp), so tests drive windows
with any clock.  Each recurring window remembers the span around the last time it was asked
about, so the once-per-probe question costs a comparison, not a cron computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import CroniterError, croniter

from availability_exporter import yamlnodes

CRON_KEYS: Final = ("cron", "duration", "time_zone")
ONE_OFF_KEYS: Final = ("start", "end", "time_zone")
WINDOW_KEYS: Final = ("cron", "duration", "start", "end", "time_zone")
# A window longer than this is a mistake (an "always in maintenance" endpoint hides outages).
MAX_DURATION: Final = 366 * 86400.0

Problem = Callable[[yaml.Node, str], None]


@dataclass(slots=True)
class CronWindow:
    """Every fire time of ``cron`` in ``zone``, for ``duration`` seconds."""

    cron: str
    duration: float
    zone: ZoneInfo
    # [start, end) of the span last computed, and whether the window is active throughout it.
    _span: tuple[float, float, bool] = field(default=(0.0, 0.0, False), repr=False)

    def active(self, when: float) -> bool:
        start, end, active = self._span
        if start <= when < end:
            return active
        self._span = span = self._compute(when)
        return span[2]

    def _compute(self, when: float) -> tuple[float, float, bool]:
        # croniter excludes its start time: fires strictly before floor(when) + 1 are <= when,
        # fires strictly after floor(when) are > when (cron times are whole seconds).
        base = math.floor(when)
        previous = croniter(self.cron, datetime.fromtimestamp(base + 1, self.zone)).get_prev(float)
        following = croniter(self.cron, datetime.fromtimestamp(base, self.zone)).get_next(float)
        # A later fire's window ends later, so only the latest fire can cover ``when``.
        ends = previous + self.duration
        if when < ends:
            return previous, min(ends, following), True
        return ends, following, False


@dataclass(frozen=True, slots=True)
class OneOffWindow:
    """From ``start`` (inclusive) to ``end`` (exclusive), Unix timestamps."""

    start: float
    end: float

    def active(self, when: float) -> bool:
        return self.start <= when < self.end


Window = CronWindow | OneOffWindow


@dataclass(frozen=True, slots=True)
class Windows:
    """An endpoint's windows; it is in maintenance while any of them is active."""

    windows: tuple[Window, ...]

    def active(self, when: float) -> bool:
        return any(window.active(when) for window in self.windows)


# -- the YAML side ------------------------------------------------------------------------------


def compile_windows(
    node: yaml.Node, problem: Problem, cache: dict[int, Window | None] | None = None,
) -> Windows | None:
    """The ``maintenance:`` list compiled; every problem goes to ``problem`` (node, message).

    ``cache`` maps a window node's id to its compiled window, so a window written once with an
    anchor (``&sunday``) and referenced by many endpoints (``*sunday``) is compiled, and its
    problems reported, once.
    """
    if yamlnodes.is_null(node):
        return None
    items = node.value if isinstance(node, yaml.SequenceNode) else None
    if items is None:
        if not isinstance(node, yaml.MappingNode):
            problem(node, f"maintenance must be a list of windows ({{cron, duration, time_zone}} "
                          f"or {{start, end}}), not {yamlnodes.kind(node)}")
            return None
        items = [node]  # one window written without the list
    cache = {} if cache is None else cache
    windows: list[Window] = []
    ok = True
    for index, item in enumerate(items):
        key = id(item)
        if key not in cache:
            cache[key] = _window(item, f"maintenance[{index}]", problem)
        window = cache[key]
        if window is None:
            ok = False
        else:
            windows.append(window)
    if not ok:
        return None
    return Windows(tuple(windows)) if windows else None


def _zone(node: yaml.Node | None, what: str, problem: Problem) -> ZoneInfo | None:
    if node is None:
        return ZoneInfo("UTC")
    name = str(node.value) if isinstance(node, yaml.ScalarNode) else None
    if not name or yamlnodes.is_null(node):
        problem(node, f"{what}.time_zone must be an IANA time zone name such as "
                      f"Europe/Berlin, not {yamlnodes.kind(node)}")
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problem(node, f"{what}.time_zone {yamlnodes.short(name)!r} is not a known IANA time "
                      f"zone (for example UTC or Europe/Berlin)")
        return None


def _window(node: yaml.Node, what: str, problem: Problem) -> Window | None:
    if not isinstance(node, yaml.MappingNode):
        problem(node, f"{what} must be a mapping ({{cron, duration, time_zone}} or "
                      f"{{start, end, time_zone}}), not {yamlnodes.kind(node)}")
        return None
    fields, keys_ok = yamlnodes.nested_fields(node, WINDOW_KEYS, what, problem)
    recurring = [k for k in ("cron", "duration") if k in fields]
    one_off = [k for k in ("start", "end") if k in fields]
    if recurring and one_off:
        problem(node, f"{what}: {' and '.join(recurring)} cannot go with {' and '.join(one_off)}; "
                      f"a window is either {{cron, duration}} or {{start, end}}")
        return None
    zone = _zone(fields.get("time_zone"), what, problem)
    if one_off:
        window: Window | None = _one_off(node, fields, zone, what, problem)
    else:
        window = _cron(node, fields, zone, what, problem)
    return None if not keys_ok or zone is None else window


def _cron(
    node: yaml.Node, fields: dict[str, yaml.Node], zone: ZoneInfo | None, what: str,
    problem: Problem,
) -> CronWindow | None:
    missing = [k for k in ("cron", "duration") if k not in fields]
    if missing:
        problem(node, f"{what}: missing {' and '.join(repr(k) for k in missing)}; a window is "
                      f"{{cron, duration}} or {{start, end}}")
        return None
    cron_node, duration_node = fields["cron"], fields["duration"]
    expression = str(cron_node.value).strip() if isinstance(cron_node, yaml.ScalarNode) else None
    cron_ok = False
    if expression is None or yamlnodes.is_null(cron_node):
        problem(cron_node, f"{what}.cron must be a cron expression such as \"0 2 * * 0\", "
                           f"not {yamlnodes.kind(cron_node)}")
    else:
        try:
            # Probing the expression once catches what is_valid lets through ("0 0 31 2 *").
            croniter(expression, 0).get_next(float)
            cron_ok = True
        except (CroniterError, ValueError, KeyError, TypeError) as exc:
            problem(cron_node, f"{what}.cron {yamlnodes.short(expression)!r} is not a valid "
                               f"cron expression: {yamlnodes.short(str(exc), 80)}")
    duration = yamlnodes.number(duration_node)
    seconds = float(duration) if duration is not None and math.isfinite(duration) else None
    if seconds is None or not 0 < seconds <= MAX_DURATION:
        problem(duration_node, f"{what}.duration must be a number of seconds greater than 0 "
                               f"and at most {MAX_DURATION:.0f} (366 days), not "
                               f"{yamlnodes.short(str(getattr(duration_node, 'value', '')))}")
        return None
    if not cron_ok or zone is None or expression is None:
        return None
    return CronWindow(expression, seconds, zone)


def _instant(node: yaml.Node, what: str, zone: ZoneInfo, problem: Problem) -> float | None:
    text = str(node.value).strip() if isinstance(node, yaml.ScalarNode) else ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        moment = None
    if moment is None:
        problem(node, f"{what} must be an ISO 8601 time such as 2026-12-24T18:00:00Z, "
                      f"not {yamlnodes.kind(node)}")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _one_off(
    node: yaml.Node, fields: dict[str, yaml.Node], zone: ZoneInfo | None, what: str,
    problem: Problem,
) -> OneOffWindow | None:
    missing = [k for k in ("start", "end") if k not in fields]
    if missing:
        problem(node, f"{what}: missing {' and '.join(repr(k) for k in missing)}; a one-off "
                      f"window needs both start and end")
        return None
    usable = zone or ZoneInfo("UTC")
    start = _instant(fields["start"], f"{what}.start", usable, problem)
    end = _instant(fields["end"], f"{what}.end", usable, problem)
    if start is None or end is None:
        return None
    if end <= start:
        problem(fields["end"], f"{what}: end must be after start (the duration must be "
                               f"greater than 0)")
        return None
    if end - start > MAX_DURATION:
        length = timedelta(seconds=end - start)
        problem(fields["end"], f"{what}: the window lasts {length.days} days, more than "
                               f"{MAX_DURATION / 86400:g}")
        return None
    return OneOffWindow(start, end)
