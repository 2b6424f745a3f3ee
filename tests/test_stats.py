"""Cumulative counts, the percentage arithmetic and the console report."""

from __future__ import annotations

import pytest

from availability_exporter.model import State
from availability_exporter.stats import Stats, percentage
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
    assert len(es.history) == 20
    bucket_half = 6  # BUCKETS index of 0.5: exactly 0.5 s falls in the le="0.5" bucket
    assert es.bucket_counts[bucket_half] == 15
    assert es.bucket_counts[bucket_half + 1] == 15
    assert es.up == 30 and es.total == 30
