"""Cumulative counts, the percentage arithmetic and the console report."""

from __future__ import annotations

from dataclasses import replace

import pytest

from availability_exporter.model import State
from availability_exporter.stats import HISTORY, Stats, percentage
from tests.factories import endpoints, result

PERCENTAGES = [
    (2, 3, 66), (29, 50, 58), (29, 100, 29), (1, 3, 33), (1, 1, 100), (0, 5, 0),
    (2, 4, 50), (199, 200, 99), (999, 1000, 99), (1, 7, 14), (57, 100, 57), (7, 10, 70),
]


@pytest.mark.parametrize(("up", "total", "expected"), PERCENTAGES)
def test_percentage_drops_decimals(up: int, total: int, expected: int) -> None:
    assert percentage(up, total) == expected


def test_report_format_order_and_empty_domains() -> None:
    stats = Stats()
    eps = endpoints("http://b.example:81/", "https://A.example/x", "http://b.example/y",
                    "http://never.example/")
    tracked = stats.apply(eps)
    assert stats.report() == "---\n"  # 0/0 is never printed
    stats.record(tracked[0], result(State.UP))
    stats.record(tracked[1], result(State.DOWN))
    stats.record(tracked[2], result(State.DEGRADED))
    stats.record(tracked[2], result(State.UP))
    assert stats.report() == (
        "b.example has 66% availability percentage\n"
        "a.example has 0% availability percentage\n"
        "---\n"
    )


def test_sample_yaml_figures_are_fifty_percent() -> None:
    stats = Stats()
    tracked = stats.apply(endpoints(*["https://fetch.example/"] * 1, "https://fetch.example/a",
                                    "https://fetch.example/b", "https://fetch.example/c"))
    for es, state in zip(tracked, (State.UP, State.UP, State.DOWN, State.DOWN), strict=True):
        stats.record(es, result(state))
    assert stats.report() == "fetch.example has 50% availability percentage\n---\n"


def test_reload_keeps_counts_of_same_name_and_url_only() -> None:
    stats = Stats()
    a, b, c = stats.apply(endpoints("http://x.example/a", "http://x.example/b",
                                    "http://y.example/"))
    for es in (a, b, c):
        stats.record(es, result(State.UP))
    # e0 keeps its URL, e1 changes URL, e2 is removed.
    kept, changed = stats.apply(endpoints("http://x.example/a", "http://x.example/other"))
    assert kept is a and kept.total == 1
    assert changed is not b and changed.total == 0
    assert stats.domains() == [("x.example", 1, 1)]
    # A late result for a removed or replaced endpoint is dropped.
    assert stats.record(c, result(State.DOWN)) is False
    assert stats.record(b, result(State.DOWN)) is False
    assert stats.domains() == [("x.example", 1, 1)]


def test_history_is_bounded_and_buckets_count() -> None:
    stats = Stats()
    (es,) = stats.apply(endpoints("http://x.example/"))
    for i in range(30):
        stats.record(es, result(State.UP, duration=0.5 if i % 2 else 0.7))
    assert len(es.history) == 30
    for _ in range(HISTORY):
        stats.record(es, result(State.UP))
    assert len(es.history) == HISTORY == 50
    bucket_half = 6  # BUCKETS index of 0.5: exactly 0.5 s falls in the le="0.5" bucket
    assert es.bucket_counts[bucket_half] == 15
    assert es.bucket_counts[bucket_half + 1] == 15
    assert es.up == 30 + HISTORY and es.total == 30 + HISTORY


def test_history_keeps_each_result_packed() -> None:
    stats = Stats()
    (es,) = stats.apply(endpoints("https://x.example/"))
    kept = [
        replace(result(State.DOWN, reason="tls", status=0, duration=0.25, finished_at=1e9 + i),
                cert_not_after=1_900_000_000.0, error=f"error {i % 3}")
        for i in range(HISTORY + 7)
    ]
    for r in kept:
        stats.record(es, r)
    rebuilt = es.history.results()
    assert len(rebuilt) == HISTORY
    assert [r.finished_at for r in rebuilt] == [r.finished_at for r in kept[-HISTORY:]]
    last = rebuilt[-1]
    assert (last.state, last.reason, last.status_code, last.cert_not_after, last.error) == (
        State.DOWN, "tls", 0, 1_900_000_000.0, f"error {(HISTORY + 6) % 3}")
    assert last.duration == pytest.approx(0.25)
    assert last.phases == pytest.approx(kept[-1].phases, rel=1e-6)
    assert next(reversed(es.history)).finished_at == kept[-1].finished_at


def test_since_is_when_the_current_state_began() -> None:
    stats = Stats()
    (es,) = stats.apply(endpoints("http://x.example/"))
    assert es.since is None
    for t, state in ((100.0, State.UP), (115.0, State.UP), (130.0, State.DOWN),
                     (145.0, State.DOWN), (160.0, State.DEGRADED)):
        stats.record(es, result(state, finished_at=t))
        if t == 145.0:
            assert es.since == 130.0
    assert es.since == 160.0


def test_recent_counts_the_last_hour_per_domain() -> None:
    stats = Stats()
    a, b = stats.apply(endpoints("http://x.example/a", "http://x.example/b"))
    start = 1_800_000_000.0
    assert stats.recent("x.example", start) == (0, 0, 0.0)
    for minute in range(90):  # an hour and a half, two probes a minute, b down after 60 min
        t = start + minute * 60
        stats.record(a, result(State.UP, finished_at=t))
        stats.record(b, result(State.UP if minute < 60 else State.DOWN, finished_at=t))
    now = start + 89 * 60
    up, total, span = stats.recent("x.example", now)
    assert (total, span) == (120, 3600.0)
    assert up == 60 + 30  # a always; b only in minutes 30-59 of the window
    up, total, span = stats.recent("x.example", start + 10 * 60)  # while it filled
    assert span == 600.0
    assert stats.recent("nowhere.example", now) == (0, 0, 0.0)
