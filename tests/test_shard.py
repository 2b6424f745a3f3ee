"""Rendezvous hashing: every endpoint in exactly one shard; resharding moves few."""

from __future__ import annotations

from availability_exporter.config import Defaults, parse_config
from availability_exporter.shard import select, shard_of


def many(n: int) -> list[str]:
    return [f"endpoint-{i}" for i in range(n)]


def test_three_shards_cover_each_endpoint_exactly_once() -> None:
    names = many(1000)
    owners = [shard_of(name, 3) for name in names]
    counts = [owners.count(s) for s in range(3)]
    assert sum(counts) == 1000
    assert all(250 <= c <= 420 for c in counts), counts


def test_three_to_four_moves_about_a_quarter() -> None:
    names = many(1000)
    moved = [n for n in names if shard_of(n, 3) != shard_of(n, 4)]
    assert 180 <= len(moved) <= 320, len(moved)
    # Everything that moved went to the new shard: nothing shuffles between old shards.
    assert all(shard_of(n, 4) == 3 for n in moved)


def test_select_keeps_config_order_and_partitions() -> None:
    text = "".join(f"- {{name: n{i}, url: 'http://h{i % 7}.example/'}}\n" for i in range(200))
    eps = parse_config(text.encode(), "t.yaml", Defaults()).endpoints
    parts = [select(eps, i, 3) for i in range(3)]
    seen = [e.name for part in parts for e in part]
    assert sorted(seen) == sorted(e.name for e in eps)
    assert len(seen) == len(set(seen))
    for part in parts:
        order = [eps.index(e) for e in part]
        assert order == sorted(order)
    assert select(eps, 0, 1) == list(eps)
