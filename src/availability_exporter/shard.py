"""Which endpoints this process probes: rendezvous (highest-random-weight) hashing on the name.

Each endpoint goes to the shard with the highest hash of (shard, name).  Going from N to N+1
shards moves only the ~1/(N+1) of endpoints whose new shard wins; nothing else moves, so most
series stay on the replica that already had them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TypeVar

from availability_exporter.model import Endpoint

T = TypeVar("T", bound=Endpoint)


def _weight(shard: int, name: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that owns the endpoint called ``name``."""
    return max(range(count), key=lambda shard: _weight(shard, name))


def select(endpoints: Iterable[T], index: int, count: int) -> list[T]:
    """The endpoints of shard ``index`` of ``count``, in their original order."""
    if count == 1:
        return list(endpoints)
    return [e for e in endpoints if shard_of(e.name, count) == index]
