"""``--state.file``: cumulative counts that survive restarts and upgrades.

Written after every cycle atomically (temp file, fsync, rename, fsync of the directory), so a
crash at any instant leaves either the previous or the new file, never a torn one: at most the
last cycle is lost and nothing is counted twice.  Keyed by (name, url), the same rule that keeps
counts across a reload.  A corrupt file is moved aside as ``.corrupt`` and the run starts fresh.

What the file is trusted with (issue 12, item 6), all in :class:`StateFile`:

- **Size**: at most 64 MiB is read; a larger file (or a symlink to ``/dev/zero``, a FIFO) is
  moved aside with a warning, never read into memory.
- **Values**: restored counts are clamped to 2**53, the largest integer a float64 holds exactly
  (Prometheus reads every sample as one); a 400-digit count would make the scrape unparseable.
- **Salt**: URLs are stored as SHA-256 of a per-file random salt and the URL, so a short
  ${VAR} in a URL cannot be recovered by hashing guesses.  Files without a salt (older
  versions) still restore, and are rewritten with one.
- **Lock**: an exclusive ``flock`` on ``<file>.lock`` (beside it, since each write replaces the
  file itself) for the process's life; a second exporter on the same file exits 2.
- **Removed endpoints**: counts of endpoints a reload removed stay in the file (``removed_at``)
  for 24 h, so a reload that is undone, in this run or the next, restores them.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import math
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from availability_exporter.model import REASONS, Endpoint
from availability_exporter.stats import BUCKETS, SavedCounts, Stats

log = logging.getLogger(__name__)

FORMAT = "availability-exporter/state/v1"

Snapshot = list[tuple[str, str, SavedCounts]]
# (name, url key, counts, when a reload removed the endpoint)
Retired = list[tuple[str, str, SavedCounts, float]]

MAX_FILE_BYTES = 64 * 1024 * 1024
# Prometheus parses every sample as a float64: integers up to 2**53 survive exactly (and at one
# probe a second, 285 million years of them).  Anything larger was not written by us.
MAX_COUNT = 2**53
RETIRED_SECONDS = 24 * 3600
# Endpoints whose counts are copied per turn of the event loop: ~1 ms of copying (at ~3 µs
# each), after which the probes' callbacks run; copying 10,000 at once held the loop 20-80 ms
# after every cycle, which the probes answered in that time would have counted as latency.
COPY_SLICE = 300


class StateFileLocked(Exception):
    """Another process holds the state file's lock."""


@dataclass(slots=True)
class Saved:
    """A state file's content: its salt ("" in files without one), counts, removal times."""

    salt: str = ""
    counts: dict[tuple[str, str], SavedCounts] = field(default_factory=dict)
    removed_at: dict[tuple[str, str], float] = field(default_factory=dict)


def url_key(url: str, salt: str = "") -> str:
    """URLs are stored hashed, with the file's salt: an expanded ${VAR} in a URL is a secret.

    An empty salt gives the unsalted hash of files written before salts existed.
    """
    return hashlib.sha256(salt.encode() + url.encode()).hexdigest()


def _entry(name: str, url: str, c: SavedCounts) -> dict[str, Any]:
    return {
        "name": name, "url_sha256": url, "up": c.up, "degraded": c.degraded, "down": c.down,
        "failures": list(c.failures), "buckets": list(c.buckets),
        "duration_sum": c.duration_sum, "maintenance": c.maintenance,
    }


def write(path: Path, snap: Snapshot, *, salt: str = "",
          retired: Sequence[tuple[str, str, SavedCounts, float]] = ()) -> None:
    """Atomically replace ``path`` with the snapshot (and the removed endpoints' counts)."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "reasons": list(REASONS),
        "buckets": list(BUCKETS),
        "endpoints": [_entry(name, url, c) for name, url, c in snap] + [
            {**_entry(name, url, c), "removed_at": removed_at}
            for name, url, c, removed_at in retired
        ],
    }
    if salt:
        document["salt"] = salt
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
    """Saved counts by (name, url_key(url, salt)); {} when there is no usable file."""
    return load(path).counts


def _move_aside(path: Path, suffix: str, why: str) -> None:
    aside = path.with_name(path.name + suffix)
    log.warning("state file %s %s; kept aside as %s, starting from zero", path, why, aside)
    try:
        os.replace(path, aside)
    except OSError as move_error:
        log.warning("could not move %s aside: %s", path, move_error.strerror)


def _read_bounded(path: Path) -> bytes | None:
    """The file's bytes, or None (with a warning, moved aside) when it is not a regular file
    of at most MAX_FILE_BYTES.  O_NONBLOCK: opening a FIFO must not wait for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory")
        if not stat.S_ISREG(info.st_mode):
            _move_aside(path, ".corrupt", "is not a regular file")
            return None
        raw = fh.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        _move_aside(path, ".too-large", f"is larger than the limit of {MAX_FILE_BYTES} bytes")
        return None
    return raw


def load(path: Path) -> Saved:
    """The file's salt, counts and removal times; empty when there is no usable file (a
    corrupt one is moved aside as ``.corrupt``, an oversized one as ``.too-large``)."""
    try:
        raw = _read_bounded(path)
    except FileNotFoundError:
        return Saved()
    except OSError as exc:
        log.warning("cannot read state file %s (%s); starting from zero", path, exc.strerror)
        return Saved()
    if raw is None:
        return Saved()
    try:
        return _parse(json.loads(raw))
    # RecursionError: json.loads of a deeply nested (corrupt) document.
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        _move_aside(path, ".corrupt", f"is unusable ({exc})")
        return Saved()


def _parse(document: Any) -> Saved:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("not an availability-exporter state file")
    reasons = document.get("reasons")
    # REASONS only ever grows at its end (content came with expect:): a file written before a
    # new reason keeps its counts, the new reason starting at zero.
    if (not isinstance(reasons, list) or not reasons
            or reasons != list(REASONS[: len(reasons)])
            or document.get("buckets") != list(BUCKETS)):
        raise ValueError("written with different reasons or buckets")
    new_reasons = (0,) * (len(REASONS) - len(reasons))
    salt = document.get("salt", "")
    if not isinstance(salt, str) or len(salt) > 256:
        raise ValueError("the salt is not a short string")
    saved = Saved(salt=salt)
    clamped = 0
    for item in document["endpoints"]:
        counts = SavedCounts(
            up=_count(item["up"]), degraded=_count(item["degraded"]), down=_count(item["down"]),
            failures=tuple(_count(v) for v in item["failures"]) + new_reasons,
            buckets=tuple(_count(v) for v in item["buckets"]),
            duration_sum=float(item["duration_sum"]),
            # Files written before maintenance windows have no such count.
            maintenance=_count(item.get("maintenance", 0)),
        )
        if len(counts.failures) != len(REASONS) or len(counts.buckets) != len(BUCKETS) + 1:
            raise ValueError(f"endpoint {item['name']!r} has the wrong number of counts")
        if sum(counts.buckets) != counts.up + counts.degraded + counts.down or not (
            math.isfinite(counts.duration_sum) and counts.duration_sum >= 0
        ):
            raise ValueError(f"endpoint {item['name']!r} has inconsistent counts")
        key = (str(item["name"]), str(item["url_sha256"]))
        fitted = _clamp(counts)
        clamped += fitted is not counts
        saved.counts[key] = fitted
        removed_at = item.get("removed_at")
        if removed_at is not None:
            if not isinstance(removed_at, int | float) or not math.isfinite(removed_at):
                raise ValueError(f"endpoint {item['name']!r} has a bad removed_at")
            saved.removed_at[key] = float(removed_at)
    if clamped:
        log.warning("state file: counts of %d endpoints were larger than %d and are restored "
                    "as %d", clamped, MAX_COUNT, MAX_COUNT)
    return saved


def _clamp(counts: SavedCounts) -> SavedCounts:
    """The counts with every value at most MAX_COUNT (the same object when none is over)."""
    values = (counts.up, counts.degraded, counts.down, counts.maintenance, *counts.failures,
              *counts.buckets)
    if max(values) <= MAX_COUNT and counts.duration_sum <= MAX_COUNT:
        return counts
    return SavedCounts(
        up=min(counts.up, MAX_COUNT), degraded=min(counts.degraded, MAX_COUNT),
        down=min(counts.down, MAX_COUNT),
        failures=tuple(min(v, MAX_COUNT) for v in counts.failures),
        buckets=tuple(min(v, MAX_COUNT) for v in counts.buckets),
        duration_sum=min(counts.duration_sum, float(MAX_COUNT)),
        maintenance=min(counts.maintenance, MAX_COUNT),
    )


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a count must be a non-negative integer, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Pending:
    """What to write, copied in the event loop; :meth:`StateFile.write` runs off it."""

    snap: Snapshot
    retired: Retired
    salt: str


class StateFile:
    """The state file of one running exporter: its lock, its salt, and the counts of the
    endpoints that reloads removed in the last 24 h (kept so that an undo restores them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.salt = ""
        # (name, url key) -> (counts, removed at); only endpoints that were probed.
        self.retired: dict[tuple[str, str], tuple[SavedCounts, float]] = {}
        self._lock_fd: int | None = None
        self._keys: dict[str, str] = {}  # url -> key under self.salt; emptied on each apply

    def lock(self) -> None:
        """Hold an exclusive lock on ``<file>.lock`` for this process's life.

        Raises StateFileLocked when another process holds it: two exporters writing one file
        would each overwrite the other's counts every cycle.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as exc:
            # The writes will fail and say so each cycle; the probes still run.
            log.warning("cannot lock state file %s (%s: %s)", self.path, lock_path,
                        exc.strerror or exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateFileLocked(
                f"state file {self.path} is in use by another process (it holds {lock_path}); "
                "each exporter needs its own --state.file"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (the lock file stays: removing it would race a new owner)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def key(self, url: str) -> str:
        """The URL's key in this file (cached: a write hashes every endpoint's URL)."""
        key = self._keys.get(url)
        if key is None:
            key = self._keys[url] = url_key(url, self.salt)
        return key

    def restore(self, stats: Stats, saved: Saved) -> int:
        """Restore the current endpoints' counts from the file's content (:func:`load`); the
        others are kept as removed (since their ``removed_at``, or now).  Returns how many
        endpoints were restored."""
        restored = stats.restore(saved.counts, lambda url: url_key(url, saved.salt))
        self._keys.clear()
        if saved.salt:
            self.salt = saved.salt
            now = time.time()
            current = {(s.endpoint.name, self.key(s.endpoint.url)) for s in stats}
            self.retired = {
                key: (counts, saved.removed_at.get(key, now))
                for key, counts in saved.counts.items() if key not in current
            }
        else:
            # A file from before salts (or none): from now on a fresh salt.  Its entries for
            # endpoints not in this config cannot be re-keyed and are not kept.
            self.salt = secrets.token_hex(16)
        return restored

    def apply(self, stats: Stats, endpoints: Sequence[Endpoint]) -> None:
        """``stats.apply(endpoints)``, keeping the counts of the endpoints it removes and
        restoring those of endpoints coming back within 24 h."""
        now = time.time()
        incoming = {(e.name, e.url) for e in endpoints}
        for s in stats:
            if (s.endpoint.name, s.endpoint.url) not in incoming and (s.total or s.maintenance):
                self.retired[(s.endpoint.name, self.key(s.endpoint.url))] = (
                    SavedCounts.of(s), now)
        kept = {(s.endpoint.name, s.endpoint.url) for s in stats}
        stats.apply(endpoints)
        back = {}
        for e in endpoints:
            key = (e.name, self.key(e.url))
            if (e.name, e.url) not in kept and key in self.retired:
                back[key] = self.retired.pop(key)[0]
        if back:
            stats.restore(back, self.key)
        self._expire(now)
        # Only the current endpoints' URLs stay cached, so reloads cannot grow the cache.
        self._keys = {e.url: self.key(e.url) for e in endpoints}

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, at) in self.retired.items() if now - at > RETIRED_SECONDS]:
            del self.retired[key]

    async def pending(self, stats: Stats) -> Pending:
        """Copy what to write now, on the event loop (the counts change there), in slices of
        :data:`COPY_SLICE` endpoints with the probes' turn between them.  Each endpoint's counts
        are copied whole; a probe counted between two slices is in the file or not, as one
        counted a moment after the copy would be."""
        self._expire(time.time())
        retired = [(name, key, counts, at) for (name, key), (counts, at) in self.retired.items()]
        salt = self.salt
        current = list(stats)  # the endpoints of this moment, whatever a reload does meanwhile
        snap: Snapshot = []
        for start in range(0, len(current), COPY_SLICE):
            if start:
                await asyncio.sleep(0)
            snap.extend((s.endpoint.name, self.key(s.endpoint.url), SavedCounts.of(s))
                        for s in current[start:start + COPY_SLICE])
        return Pending(snap, retired, salt)

    def write(self, pending: Pending) -> None:
        """Write a copy taken by :meth:`pending` (off the event loop)."""
        write(self.path, pending.snap, salt=pending.salt, retired=pending.retired)
