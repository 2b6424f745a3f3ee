"""Shields-style SVG badges: ``/badge/endpoint/{name}.svg`` and ``/badge/domain/{domain}.svg``.

A badge is the flat two-part picture READMEs and wikis show (shields.io's "flat" style): a
grey label on the left, a coloured message on the right.  The endpoint badge says the current
state; the domain badge the availability since start, as the console prints it.

Colours: up green (#4c1), degraded amber (#dfb317), down red (#e05d44), pending (no probe
yet) grey (#9f9f9f).  A domain's availability is green from 99 %, amber from 95 %, red below;
grey with "no data" before its first probe.  A name that is not configured gets a 404 with a
grey "not found" badge, so a stale README shows why instead of a broken image.

Every text is XML-escaped (names come from the config, domains from it too); widths come from
a table of Verdana's character widths at 11 px, as shields computes them, roughly.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote
from xml.sax.saxutils import escape

from availability_exporter.overview import PENDING, domain_figures, state_of
from availability_exporter.status import StatusView

CONTENT_TYPE = b"image/svg+xml; charset=utf-8"
GREEN, AMBER, RED, GREY = "#4c1", "#dfb317", "#e05d44", "#9f9f9f"
STATE_COLOURS = {"up": GREEN, "degraded": AMBER, "down": RED, PENDING: GREY}
GREEN_FROM, AMBER_FROM = 99, 95  # availability % thresholds of the domain badge
LABEL_MAX = 60  # characters of a name shown before an ellipsis

# Verdana 11 px advance widths, rounded; others count as 7.
_NARROW = dict.fromkeys("il.,:;!|'", 3.5)
_SEMI = dict.fromkeys("fjrt ()[]-/", 4.5)
_WIDE = dict.fromkeys("mwMW%", 10.5)
_WIDTHS = {**_NARROW, **_SEMI, **_WIDE}


def text_width(text: str) -> float:
    return sum(_WIDTHS.get(c, 7.5 if c.isupper() else 6.8) for c in text)


@dataclass(frozen=True, slots=True)
class Badge:
    """What a badge says and its HTTP status."""

    label: str
    message: str
    colour: str
    status: int = 200

    def svg(self) -> bytes:
        label = self.label if len(self.label) <= LABEL_MAX else self.label[:LABEL_MAX - 1] + "…"
        left = round(text_width(label) + 10)
        right = round(text_width(self.message) + 10)
        width = left + right
        title = escape(f"{label}: {self.message}", {'"': "&quot;"})
        lab, msg = escape(label), escape(self.message)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
            f'aria-label="{title}"><title>{title}</title>'
            '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
            'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
            f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
            f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
            f'<rect x="{left}" width="{right}" height="20" fill="{self.colour}"/>'
            f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
            '<g fill="#fff" text-anchor="middle" '
            'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
            f'<text x="{left / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{lab}</text>'
            f'<text x="{left / 2:.1f}" y="14">{lab}</text>'
            f'<text x="{left + right / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{msg}</text>'
            f'<text x="{left + right / 2:.1f}" y="14">{msg}</text></g></svg>\n'
        ).encode()


def availability_colour(percent: int) -> str:
    if percent >= GREEN_FROM:
        return GREEN
    return AMBER if percent >= AMBER_FROM else RED


def endpoint_badge(status: StatusView, name: str) -> Badge:
    stats = status.stats.get(name)
    if stats is None:
        return Badge(name or "endpoint", "not found", GREY, 404)
    state = state_of(stats)
    return Badge(name, state, STATE_COLOURS[state])


def domain_badge(status: StatusView, domain: str) -> Badge:
    for figures in domain_figures(status):
        if figures.domain == domain:
            percent = figures.percent
            if percent is None:
                return Badge(domain, "no data", GREY)
            return Badge(domain, f"{percent}%", availability_colour(percent))
    return Badge(domain or "domain", "not found", GREY, 404)


def badge_for_path(status: StatusView, raw_path: str) -> Badge | None:
    """The badge a ``/badge/...`` path asks for (percent-decoded from the raw path, so an
    endpoint name with ``/`` in it works as ``%2F``); None when the path is no badge's."""
    for kind, make in (("endpoint", endpoint_badge), ("domain", domain_badge)):
        prefix = f"/badge/{kind}/"
        if raw_path.startswith(prefix) and raw_path.endswith(".svg"):
            return make(status, unquote(raw_path[len(prefix):-len(".svg")]))
    return None
