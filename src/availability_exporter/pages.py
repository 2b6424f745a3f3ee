"""The HTML status pages (``/`` and ``/endpoint?name=``), rendered from Jinja2 templates.

The templates live in ``templates/`` (package data).  Autoescaping is on for every template,
so an endpoint name, domain, URL or error message can never inject markup: names come from the
config file and error texts from remote servers, and neither is trusted.  This module chooses
what to show (filters, order, the row cap); the templates say how it looks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import quote

import jinja2

from availability_exporter import __version__
from availability_exporter.model import PHASES, State
from availability_exporter.stats import EndpointStats, percentage
from availability_exporter.status import StatusView

# The status page lists the endpoints that need attention first and stops here, so a page
# over 10,000 endpoints stays cheap to render; filters narrow it down.
PAGE_ROWS = 500
_STATE_ORDER = {State.DOWN: 0, State.DEGRADED: 1, State.UP: 2, None: 3}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _quote(text: object) -> str:
    """For a query-string value: every reserved character encoded, ``/`` included."""
    return quote(str(text), safe="")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("availability_exporter", "templates"),
        autoescape=True,  # every template, whatever its name: all of them are HTML
        undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not blank text
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ms=_ms, when=_when, quote=_quote)
    env.globals.update(percentage=percentage, version=__version__, phases=PHASES)
    return env


_ENV = _environment()


def render_index(status: StatusView, query: Mapping[str, list[str]]) -> str:
    """The status page: totals, domains, and the endpoints most in need of attention."""
    stats = status.stats
    domain_filter = query["domain"][0] if query.get("domain") else None
    state_filter = query["state"][0] if query.get("state") else None
    rows = [
        s for s in stats
        if (domain_filter is None or s.endpoint.domain == domain_filter)
        and (state_filter is None or (s.last is not None and s.last.state.value == state_filter))
    ]
    rows.sort(key=lambda s: _STATE_ORDER[s.last.state if s.last else None])
    return _ENV.get_template("index.html.j2").render(
        title="Availability", refresh=status.probe_interval,
        endpoints=len(stats), interval=status.probe_interval, cycle=status.cycle_stats(),
        ready=status.ready(), reload_ok=status.reload_status().successful,
        domains=list(stats.domains()), domain_filter=domain_filter,
        rows=rows[:PAGE_ROWS], matching=len(rows),
    )


def render_endpoint(status: StatusView, s: EndpointStats) -> str:
    """One endpoint: its settings (never header values) and its last results, newest first."""
    return _ENV.get_template("endpoint.html.j2").render(
        title=f"Endpoint {s.endpoint.name}", refresh=status.probe_interval,
        s=s, history=list(reversed(s.history)),
    )


def render_unknown_endpoint(name: str) -> str:
    """The 404 page for ``/endpoint?name=`` with a name that is not configured."""
    return _ENV.get_template("unknown.html.j2").render(
        title="Unknown endpoint", refresh=None, name=name,
    )
