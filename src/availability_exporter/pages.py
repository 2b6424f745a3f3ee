"""The HTML status pages (``/`` and ``/endpoint?name=``), rendered from Jinja2 templates.

The templates live in ``templates/`` (package data).  Autoescaping is on for every template,
so an endpoint name, domain, URL or error message can never inject markup: names come from the
config file and error texts from remote servers, and neither is trusted.  The small SVG
pictures (the strip of the last results, the latency sparkline, the stacked phase chart) are
built here as strings, every text in them escaped with ``markupsafe.escape``: thousands of
rectangles are much cheaper to format in Python than through template loops.

The status page lists the endpoints most in need of attention first (see ``overview``), 200
to a page, and is produced in pieces (:func:`index_pieces`) so the web server can hand the
event loop back to the probes between them.  No JavaScript, no external asset: the pages work
offline and through any proxy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup, escape

from availability_exporter import __version__
from availability_exporter.explain import Explanation, explain, phases_seen
from availability_exporter.model import PHASES, ProbeResult
from availability_exporter.overview import (
    PENDING,
    STATE_VALUES,
    FilterError,
    Filters,
    configured_domains,
    domain_figures,
    duration_words,
    most_urgent_first,
    parse_filters,
    state_of,
)
from availability_exporter.stats import HISTORY, EndpointStats, percentage
from availability_exporter.status import StatusView

# Rows per page of the status page: the worst 200 first, the rest on the next pages.
PAGE_ROWS = 200
STRIP_CELL = 5  # px per result in the strip (4 px bar, 1 px gap)
STRIP_HEIGHT = 18
SPARK_WIDTH = 120
SPARK_HEIGHT = 24
CHART_BAR = 12
CHART_HEIGHT = 160
NOT_HAPPENED = "\N{EN DASH}"  # shown for a phase the probe never went through


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _moment(timestamp: float, now: float) -> str:
    """A past moment, short: the time of day within the last 24 hours, else the date too."""
    pattern = "%H:%M:%S UTC" if now - timestamp < 86_400 else "%Y-%m-%d %H:%M UTC"
    return time.strftime(pattern, time.gmtime(timestamp))


def _quote(text: object) -> str:
    """For a query-string value: every reserved character encoded, ``/`` included."""
    return quote(str(text), safe="")


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("availability_exporter", "templates"),
        autoescape=True,  # every template, whatever its name: all of them are HTML
        undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not blank text
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ms=_ms, when=_when, moment=_moment, quote=_quote, yes_no=_yes_no,
                       duration=duration_words)
    env.globals.update(percentage=percentage, version=__version__, phases=PHASES,
                       history_size=HISTORY)
    return env


_ENV = _environment()
# Compiled at import (the daemon imports this before its first cycle), so the first page a
# user asks for does not hold the loop for the ~20 ms of compiling them.
for _name in ("index.html.j2", "endpoint.html.j2", "unknown.html.j2", "bad_query.html.j2"):
    _ENV.get_template(_name)


# -- the pictures -------------------------------------------------------------------------------

def tooltip(result: ProbeResult) -> str:
    """One result in a line: time, state, reason in words, latency."""
    words = explain(result)
    state = result.state.value
    if words is not None:
        state = f"{state}: {words.summary}"
    return f"{_when(result.finished_at)} · {state} · {_ms(result.duration)}"


def strip_svg(results: Sequence[ProbeResult]) -> Markup:
    """The last results as a row of bars coloured by state, newest on the right, each with a
    tooltip (an SVG <title>); empty places on the left until HISTORY results are kept."""
    width = HISTORY * STRIP_CELL
    first = HISTORY - len(results)
    parts = [f'<svg class="strip" width="{width}" height="{STRIP_HEIGHT}" '
             f'viewBox="0 0 {width} {STRIP_HEIGHT}" role="img" '
             f'aria-label="last {len(results)} results">']
    if first > 0:
        parts.append(f'<rect class="empty" x="0" y="0" width="{first * STRIP_CELL - 1}" '
                     f'height="{STRIP_HEIGHT}" rx="1"><title>no result yet</title></rect>')
    for i, result in enumerate(results):
        parts.append(
            f'<rect class="{result.state.value}" x="{(first + i) * STRIP_CELL}" y="0" '
            f'width="{STRIP_CELL - 1}" height="{STRIP_HEIGHT}" rx="1">'
            f"<title>{escape(tooltip(result))}</title></rect>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _y(value: float, top: float, height: float) -> float:
    return round(height - 2 - (height - 4) * min(value / top, 1.0), 1)


def _scale(durations: Sequence[float], threshold: float) -> tuple[float, bool]:
    """The value at the top of a chart, and whether the threshold is on that scale.

    Scaled to the threshold, results far below it would all lie flat on the bottom line;
    so when every result is under a third of it, the chart is scaled to the results and the
    threshold line is drawn along the top edge, lighter, marked as off the scale.
    """
    highest = max(durations)
    if highest >= threshold / 3:
        return max(highest, threshold) * 1.1, True
    return max(highest * 1.2, 1e-6), False


def _threshold_label(threshold: float, on_scale: bool) -> str:
    if on_scale:
        return f"threshold {_ms(threshold)}"
    return f"threshold {_ms(threshold)}, far above these results (not to scale)"


def sparkline_svg(results: Sequence[ProbeResult], threshold: float) -> Markup:
    """Latency of the kept results as a line, with the threshold as a dashed red line."""
    if not results:
        return Markup("")
    durations = [r.duration for r in results]
    top, on_scale = _scale(durations, threshold)
    step = SPARK_WIDTH / max(HISTORY - 1, 1)
    first = HISTORY - len(results)
    points = " ".join(f"{round((first + i) * step, 1)},{_y(d, top, SPARK_HEIGHT)}"
                      for i, d in enumerate(durations))
    line_y = _y(threshold, top, SPARK_HEIGHT) if on_scale else 0.5
    ordered = sorted(durations)
    label = (f"latency of the last {len(durations)} results: min {_ms(ordered[0])}, "
             f"median {_ms(ordered[len(ordered) // 2])}, max {_ms(ordered[-1])}; "
             f"{_threshold_label(threshold, on_scale)}")
    return Markup(
        f'<svg class="spark" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
        f'viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<line class="threshold{"" if on_scale else " off"}" x1="0" y1="{line_y}" '
        f'x2="{SPARK_WIDTH}" y2="{line_y}"/>'
        f'<polyline class="latency" points="{points}"/></svg>')


def phase_chart_svg(results: Sequence[ProbeResult], threshold: float) -> Markup:
    """Each kept result as a bar stacked by phase (plus the time between phases), oldest on
    the left, with the threshold line; each bar's tooltip lists its phases."""
    if not results:
        return Markup("")
    width = HISTORY * CHART_BAR
    top, on_scale = _scale([r.duration for r in results], threshold)
    scale = (CHART_HEIGHT - 4) / top
    first = HISTORY - len(results)
    parts = [f'<svg class="chart" width="{width}" height="{CHART_HEIGHT}" '
             f'viewBox="0 0 {width} {CHART_HEIGHT}" role="img" '
             f'aria-label="latency by phase of the last {len(results)} results">']
    for i, result in enumerate(results):
        x = (first + i) * CHART_BAR
        seen = phases_seen(result)
        lines = [tooltip(result)]
        y = float(CHART_HEIGHT)
        bars = []
        for phase, value, happened in zip(PHASES, result.phases, seen, strict=True):
            lines.append(f"{phase}: {_ms(value) if happened else NOT_HAPPENED}")
            if happened:
                h = min(value * scale, y)
                y -= h
                bars.append(f'<rect class="ph-{phase}" x="{x}" y="{y:.1f}" '
                            f'width="{CHART_BAR - 2}" height="{h:.1f}"/>')
        other = result.duration - sum(result.phases)
        if other > 0:
            h = min(other * scale, y)
            y -= h
            bars.append(f'<rect class="ph-other" x="{x}" y="{y:.1f}" '
                        f'width="{CHART_BAR - 2}" height="{h:.1f}"/>')
        parts.append(f"<g><title>{escape(chr(10).join(lines))}</title>{''.join(bars)}</g>")
    line_y = CHART_HEIGHT - threshold * scale if on_scale else 1.0
    parts.append(f'<line class="threshold{"" if on_scale else " off"}" x1="0" '
                 f'y1="{line_y:.1f}" x2="{width}" y2="{line_y:.1f}">'
                 f"<title>{escape(_threshold_label(threshold, on_scale))}</title></line>")
    parts.append("</svg>")
    return Markup("".join(parts))


# -- what a row shows -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Row:
    """One endpoint as the status page shows it; built when the row is rendered."""

    stats: EndpointStats
    state: str
    last: ProbeResult | None
    words: Explanation | None
    since: float | None
    strip: Markup
    sparkline: Markup


def row(s: EndpointStats) -> Row:
    results = s.history.results()  # one copy, taken at once
    last = s.last
    return Row(
        stats=s, state=state_of(s), last=last,
        words=explain(last) if last is not None else None,
        since=s.since, strip=strip_svg(results),
        sparkline=sparkline_svg(results, s.endpoint.latency_threshold),
    )


def _page_number(query: Mapping[str, Sequence[str]]) -> int:
    values = query.get("page") or ["1"]
    try:
        number = int(values[0])
    except ValueError:
        number = 0
    if number < 1 or len(values) > 1:
        raise FilterError("page must be one whole number, 1 or more")
    return number


def index_pieces(status: StatusView, query: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """The status page in pieces; raises ``overview.FilterError`` (before any piece) for a
    query it does not accept."""
    filters = parse_filters(query, configured_domains(status),
                            allowed=("state", "domain", "page"))
    page = _page_number(query)
    now = time.time()
    matching = most_urgent_first(status, filters)
    start = (page - 1) * PAGE_ROWS
    shown = matching[start:start + PAGE_ROWS]
    return _ENV.get_template("index.html.j2").generate(
        title="Availability", refresh=status.probe_interval,
        endpoints=len(status.stats), interval=status.probe_interval,
        cycle=status.cycle_stats(), ready=status.ready(),
        reload_ok=status.reload_status().successful,
        domains=domain_figures(status, now), filters=filters, states=STATE_VALUES,
        rows=(row(s) for s in shown), shown=len(shown), first=start + 1,
        matching=len(matching), now=now,
        next_page=_link(filters, page + 1) if start + PAGE_ROWS < len(matching) else None,
        previous_page=_link(filters, page - 1) if page > 1 else None,
    )


def _link(filters: Filters, page: int) -> str:
    query = {k: v for k, v in (("state", filters.state), ("domain", filters.domain)) if v}
    if page > 1:
        query["page"] = str(page)
    return "/?" + urlencode(query, quote_via=quote) if query else "/"


def render_index(status: StatusView, query: Mapping[str, Sequence[str]]) -> str:
    """The whole status page at once (tests, small configs); the server streams the pieces."""
    return "".join(index_pieces(status, query))


def render_endpoint(status: StatusView, s: EndpointStats) -> str:
    """One endpoint: state and since, the phase chart, its settings in words (never header
    values) and its last results, newest first, errors in words over the technical text."""
    results = s.history.results()
    return _ENV.get_template("endpoint.html.j2").render(
        title=f"Endpoint {s.endpoint.name}", refresh=status.probe_interval,
        s=s, state=state_of(s), pending=PENDING, now=time.time(),
        chart=phase_chart_svg(results, s.endpoint.latency_threshold),
        threshold_on_scale=not results or _scale(
            [r.duration for r in results], s.endpoint.latency_threshold)[1],
        history=[(r, explain(r), phases_seen(r)) for r in reversed(results)],
    )


def render_unknown_endpoint(name: str) -> str:
    """The 404 page for ``/endpoint?name=`` with a name that is not configured."""
    return _ENV.get_template("unknown.html.j2").render(
        title="Unknown endpoint", refresh=None, name=name,
    )


def render_bad_query(message: str) -> str:
    """The 400 page for a filter value the status page does not accept."""
    return _ENV.get_template("bad_query.html.j2").render(
        title="Bad request", refresh=None, message=message, states=STATE_VALUES,
    )
