"""The gzip copy of /metrics' per-endpoint series, double-buffered so a gzip scrape never waits.

Every scrape is served from it: a gzip one (what Prometheus sends) as it is, a plain one
inflated slice by slice (:meth:`GzipSnapshot.plain`), which costs a sixth of rendering again.

At 10,000 endpoints the per-endpoint part of /metrics is ~33 MB of text; compressing it per
scrape would take longer than a scrape may.  So it is rendered and compressed once per completed
cycle, in slices of ~0.5 ms between which the probes run, and a gzip scrape (what Prometheus
sends) sends those bytes.  The small, live part (the registry: the exporter's own and the process
metrics) is compressed per scrape onto a *copy* of the kept compressor, so every response is one
ordinary gzip stream that any client decodes.

Two buffers per format (text, OpenMetrics): the *front* copy, complete, which scrapes are served
from, and the one being built, which replaces it atomically when its last slice is compressed.
A scrape that arrives during a build is served the front copy at once, so it shows the series as
of the cycle before (the design allows a lag of one cycle).  Builds never queue up: counts that
change during a build (the next cycle completed) mark it stale, and one more build follows it.

The daemon tells this module two things, one call each: :meth:`GzipSnapshot.cycle_completed`
and :meth:`GzipSnapshot.config_applied`.  Only formats scraped at least once are built, so an
exporter nobody scrapes pays nothing.

Two moments have no complete copy of the current endpoints; what a scrape gets then:

- **Before the first copy of a format** there is nothing to serve but a fresh build, so the
  first scrape of each format waits for it (~0.4 s at 10,000 endpoints, once per process).
  Rendering that one plain instead would cost about the same, and concurrent first scrapes
  share the one build.
- **After a reload** the front copy may name endpoints that left the config and miss new ones.
  The reload starts a build of the new endpoints at once (abandoning one under way) and a scrape
  waits for it at most :data:`RELOAD_WAIT`; past that it is served the previous copy.  So small
  configs (a build in a few milliseconds) show a reload in the very next scrape, and large ones
  keep scrapes within the latency budget while a removed endpoint lingers for one build at most
  (~0.4 s at 10,000 endpoints, against a 15 s scrape interval).  Waiting for the whole build
  would make every scrape after a reload as slow as the first one; serving the old copy with no
  wait at all would show removed endpoints even where a fresh copy is milliseconds away.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from availability_exporter.metrics import BUILD_CHUNK, endpoint_chunks, registry_text
from availability_exporter.stats import Stats

log = logging.getLogger(__name__)

# Level 1: a 30 MB exposition compresses ~18x at a fraction of level 6's CPU.
GZIP_LEVEL = 1
# How long a scrape after a reload waits for a copy of the new endpoints before it is served the
# previous one: well inside the 50 ms a scrape may take at 10,000 endpoints.
RELOAD_WAIT = 0.02
# Compressed bytes inflated per chunk of a plain scrape: ~60 KiB of text at the copy's ~15x,
# ~0.1 ms of CPU, after which the web layer hands the loop back to the probes.
INFLATE_SLICE = 4 * 1024
# ... and never more text than this per chunk, however well a slice compressed.
TEXT_SLICE = 128 * 1024


@dataclass(frozen=True, slots=True)
class _Copy:
    generation: int  # of the config it shows (GzipSnapshot._generation when it was built)
    head: bytes  # the gzip stream of endpoint_chunks(), not yet flushed
    compressor: Any  # the zlib compress object that produced it, copied per scrape


class GzipSnapshot:
    """The last complete gzip copy of the per-endpoint series, per format, and the next one."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._generation = 0  # raised by every config_applied()
        self._wanted: set[bool] = set()  # formats scraped so far (True: OpenMetrics)
        self._front: dict[bool, _Copy] = {}
        self._builders: dict[bool, asyncio.Task[None]] = {}
        self._stale: set[bool] = set()  # formats whose counts changed during their build
        self._published: dict[bool, asyncio.Event] = {}  # set (and dropped) at each publish
        self._failure: dict[bool, Exception] = {}  # the last build's error, until one succeeds

    def cycle_completed(self) -> None:
        """A cycle completed: rebuild every format scraped so far, in the background."""
        for openmetrics in self._wanted:
            if self._building(openmetrics):
                self._stale.add(openmetrics)
            else:
                self._start(openmetrics)

    def config_applied(self) -> None:
        """The set of endpoints changed: build copies of the new set now, dropping older builds."""
        self._generation += 1
        for openmetrics in self._wanted:
            builder = self._builders.get(openmetrics)
            if builder is not None:
                builder.cancel()  # it renders endpoints that may be gone; its copy would be too
            self._start(openmetrics)

    async def body(self, registry: CollectorRegistry, *, openmetrics: bool) -> list[bytes]:
        """The whole gzip-encoded /metrics body, as pieces to send in order."""
        copy = await self._current(openmetrics)
        compressor = copy.compressor.copy()
        live = registry_text(registry, openmetrics=openmetrics)
        return [copy.head, compressor.compress(live) + compressor.flush()]

    async def plain(self, registry: CollectorRegistry, *, openmetrics: bool) -> Iterator[bytes]:
        """The whole uncompressed /metrics body, as chunks to send in order.

        Inflated from the gzip copy, not rendered again from the counts: inflating ~33 MB costs
        ~60 ms of CPU where rendering it costs ~340 ms, and the probes share the two cores with
        every scraper.  Unlike a gzip scrape it waits for a build under way, so it always shows
        the last completed cycle: a person or script reading /metrics right after a report line
        sees that cycle, and nothing holds Prometheus, whose scrapes ask for gzip.
        """
        copy = await self._current(openmetrics)
        while self._building(openmetrics):
            await self._published.setdefault(openmetrics, asyncio.Event()).wait()
            # The build's copy; after a failed build, the last good one.
            copy = self._front.get(openmetrics) or copy
        return _inflated(copy, registry_text(registry, openmetrics=openmetrics))

    async def settled(self) -> None:
        """Wait until no build is under way (tests, measurements)."""
        while running := [task for task in self._builders.values() if not task.done()]:
            await asyncio.wait(running)

    async def _current(self, openmetrics: bool) -> _Copy:
        """The copy to serve now (see the module's docstring for the two moments it waits)."""
        self._wanted.add(openmetrics)
        copy = self._front.get(openmetrics)
        if copy is None or copy.generation != self._generation:
            copy = await self._wait_for_current(openmetrics, copy)
        return copy

    async def _wait_for_current(self, openmetrics: bool, previous: _Copy | None) -> _Copy:
        """A copy of the current endpoints; past RELOAD_WAIT, ``previous`` if there is one."""
        if not self._building(openmetrics):
            self._start(openmetrics)
        loop = asyncio.get_running_loop()
        deadline = None if previous is None else loop.time() + RELOAD_WAIT
        while True:
            published = self._published.setdefault(openmetrics, asyncio.Event())
            try:
                async with asyncio.timeout_at(deadline):
                    # Waits on an event, not on the build: a client that hangs up cancels only
                    # its own wait, never the build others are waiting for.
                    await published.wait()
            except TimeoutError:
                assert previous is not None  # a deadline is only set when there is one
                return previous
            copy = self._front.get(openmetrics)
            if copy is not None and copy.generation == self._generation:
                return copy
            failure = self._failure.get(openmetrics)
            if failure is not None:
                if copy is not None:
                    return copy
                raise failure
            previous = copy or previous

    def _building(self, openmetrics: bool) -> bool:
        builder = self._builders.get(openmetrics)
        return builder is not None and not builder.done()

    def _start(self, openmetrics: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._run_builds(openmetrics))
        self._builders[openmetrics] = task  # also keeps the task from being collected

    async def _run_builds(self, openmetrics: bool) -> None:
        """Build, publish, and build again while the counts changed during the last build."""
        try:
            while True:
                self._stale.discard(openmetrics)
                generation = self._generation
                try:
                    copy = await self._build(openmetrics, generation)
                except Exception as exc:
                    log.exception("building the gzip copy of /metrics failed")
                    self._failure[openmetrics] = exc
                    return
                self._failure.pop(openmetrics, None)
                if generation == self._generation:  # else config_applied() started a newer one
                    self._front[openmetrics] = copy
                if openmetrics not in self._stale:
                    return
        finally:
            # Wake the scrapes waiting for a copy: they take this one, or wait on the next event.
            published = self._published.pop(openmetrics, None)
            if published is not None:
                published.set()

    async def _build(self, openmetrics: bool, generation: int) -> _Copy:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        out: list[bytes] = []
        for chunk in endpoint_chunks(self._stats, openmetrics=openmetrics,
                                     chunk_size=BUILD_CHUNK):
            # On the loop, in slices of ~0.5 ms (rendering and deflate), with a turn for the
            # probes after each: a worker thread per slice would cost more in hand-offs than
            # the deflate it moves, and a probe answer never waits more than one slice.
            out.append(compressor.compress(chunk))
            await asyncio.sleep(0)
        return _Copy(generation, b"".join(out), compressor)


def _inflated(copy: _Copy, live: bytes) -> Iterator[bytes]:
    """``copy``'s text, inflated ``INFLATE_SLICE`` compressed bytes at a time, then ``live``."""
    # The copy's compressor still holds the last bytes it was given: a copy of it flushes them
    # (and the gzip trailer) without touching the one gzip scrapes go on from.
    tail = copy.compressor.copy().flush()
    inflater = zlib.decompressobj(31)
    for part in (memoryview(copy.head), memoryview(tail)):
        for start in range(0, len(part), INFLATE_SLICE):
            # Input in slices: max_length alone would keep the unconsumed rest of the copy as a
            # fresh bytes object per call, a copy of up to 2 MB for every chunk of output.
            data: bytes | memoryview = part[start:start + INFLATE_SLICE]
            while data:
                text = inflater.decompress(data, TEXT_SLICE)
                data = inflater.unconsumed_tail
                if text:
                    yield text
    yield inflater.flush() + live
