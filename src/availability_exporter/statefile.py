"""``--state.file``: cumulative counts that survive restarts and upgrades.

Written after every cycle atomically (temp file, fsync, rename, fsync of the directory), so a
crash at any instant leaves either the previous or the new file, never a torn one: at most the
last cycle is lost and nothing is counted twice.  Keyed by (name, url), the same rule that keeps
counts across a reload.  A corrupt file is moved aside as ``.corrupt`` and the run starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from availability_exporter.model import REASONS
from availability_exporter.stats import BUCKETS, SavedCounts, Stats

log = logging.getLogger(__name__)

FORMAT = "availability-exporter/state/v1"

Snapshot = list[tuple[str, str, SavedCounts]]


def url_key(url: str) -> str:
    """URLs are stored hashed: an expanded ${VAR} in a query string is a secret."""
    return hashlib.sha256(url.encode()).hexdigest()


def snapshot(stats: Stats) -> Snapshot:
    """Copy the counts now (cheap, in the event loop); write them later off the loop."""
    return [(s.endpoint.name, url_key(s.endpoint.url), SavedCounts.of(s)) for s in stats]


def write(path: Path, snap: Snapshot) -> None:
    """Atomically replace ``path`` with the snapshot."""
    document = {
        "format": FORMAT,
        "reasons": list(REASONS),
        "buckets": list(BUCKETS),
        "endpoints": [
            {
                "name": name, "url_sha256": url, "up": c.up, "degraded": c.degraded, "down": c.down,
                "failures": list(c.failures), "buckets": list(c.buckets),
                "duration_sum": c.duration_sum,
            }
            for name, url, c in snap
        ],
    }
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(path: Path) -> dict[tuple[str, str], SavedCounts]:
    """Saved counts by (name, url_key(url)); {} when there is no usable file (never raises)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read state file %s (%s); starting from zero", path, exc.strerror)
        return {}
    try:
        return _parse(json.loads(raw))
    # RecursionError: json.loads of a deeply nested (corrupt) document.
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        log.warning("state file %s is unusable (%s); kept aside as %s, starting from zero",
                    path, exc, aside)
        try:
            os.replace(path, aside)
        except OSError as move_error:
            log.warning("could not move %s aside: %s", path, move_error.strerror)
        return {}


def _parse(document: Any) -> dict[tuple[str, str], SavedCounts]:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("not an availability-exporter state file")
    if document.get("reasons") != list(REASONS) or document.get("buckets") != list(BUCKETS):
        raise ValueError("written with different reasons or buckets")
    saved: dict[tuple[str, str], SavedCounts] = {}
    for item in document["endpoints"]:
        counts = SavedCounts(
            up=_count(item["up"]), degraded=_count(item["degraded"]), down=_count(item["down"]),
            failures=tuple(_count(v) for v in item["failures"]),
            buckets=tuple(_count(v) for v in item["buckets"]),
            duration_sum=float(item["duration_sum"]),
        )
        if len(counts.failures) != len(REASONS) or len(counts.buckets) != len(BUCKETS) + 1:
            raise ValueError(f"endpoint {item['name']!r} has the wrong number of counts")
        if sum(counts.buckets) != counts.up + counts.degraded + counts.down or not (
            math.isfinite(counts.duration_sum) and counts.duration_sum >= 0
        ):
            raise ValueError(f"endpoint {item['name']!r} has inconsistent counts")
        saved[(str(item["name"]), str(item["url_sha256"]))] = counts
    return saved


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a count must be a non-negative integer, not {value!r}")
    return value
