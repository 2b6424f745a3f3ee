"""The daemon's life in four visible steps: capture signals, start up, run cycles, shut down.

The first SIGINT/SIGTERM asks to stop (in-flight probes are cancelled, the final report is
printed, the state file written); a second one exits at once.  SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from availability_exporter import shard, statefile
from availability_exporter.config import Config, ConfigError, Defaults, load_config, parse_config
from availability_exporter.demo import DemoServer, demo_config
from availability_exporter.metrics import exporter_registry
from availability_exporter.model import State
from availability_exporter.probe import Prober
from availability_exporter.scheduler import Observer, Scheduler
from availability_exporter.snapshot import GzipSnapshot
from availability_exporter.stats import Stats
from availability_exporter.status import ReloadStatus, StatusView

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None on other C libraries (musl, macOS).

    Bursts (a large scrape, a slow minute where cycles overlap, worker threads) raise glibc's heap
    high-water marks, and glibc keeps freed pages mapped: the soak saw RSS step up by 10 MiB
    during a busy minute and stay there.  Handing free pages back once per cycle keeps RSS
    tracking what is in use (~2 ms for a 100 MB heap, in a worker thread).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library already loaded in this process
    except (OSError, AttributeError):
        return None

    def release() -> None:
        trim(0)

    return release


RELEASE_FREE_MEMORY = _malloc_trim()

# How often the config file's content is checked for a change (a ConfigMap swap, an edit).
CONFIG_POLL_SECONDS = 5.0


T = TypeVar("T")


async def off_loop(func: Callable[..., T], *args: Any) -> T:
    """Run blocking file I/O in a daemon thread.

    Unlike asyncio.to_thread, a read stuck on a hung mount (or a FIFO) cannot keep the
    process from exiting: the default executor's threads are joined at shutdown.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def succeed(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        try:
            value = func(*args)
        except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
            loop.call_soon_threadsafe(fail, exc)
        else:
            loop.call_soon_threadsafe(succeed, value)

    threading.Thread(target=work, name="availability-exporter-io", daemon=True).start()
    return await future


# Descriptors kept beyond one per probe in flight: 64 for the state file, the config reads,
# DNS threads, the listening socket, stdio and the interpreter's own; 3 x 64 for the batches of
# web connections asyncio accepts before the web server's limit sees them (web.ACCEPT_BACKLOG).
FD_HEADROOM = 64 + 3 * 64
# The descriptor limit never lowers the web connections below this (the flag can).
MIN_WEB_CONNECTIONS = 16


def web_connection_limit(wanted: int, concurrency: int) -> int:
    """How many web connections may be open at once: ``wanted``, lowered so that the soft
    RLIMIT_NOFILE keeps a descriptor for every probe in flight plus FD_HEADROOM.

    Without this reserve, connections held open against the web port take the descriptors
    the probes need, and every probe then fails (issue 12: 2,100 idle connections at a
    2,048 limit made every endpoint look down).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    spare = soft - concurrency - FD_HEADROOM
    return min(wanted, max(MIN_WEB_CONNECTIONS, spare))


@dataclass(frozen=True, slots=True)
class Options:
    """What the daemon runs with: the flags, parsed and checked once (``Settings.options()``)."""

    config: Path | None = None
    demo: bool = False
    defaults: Defaults = field(default_factory=Defaults)
    concurrency: int = 1000
    keep_alive: bool = False
    shard: tuple[int, int] = (0, 1)  # (index, count)
    state_file: Path | None = None
    run_duration: float | None = None
    once: bool = False


class Exporter:
    """The running daemon: config, stats, scheduler, report; the web side sees ``status`` only."""

    def __init__(self, options: Options, *, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.defaults = options.defaults
        self.shard = options.shard
        self.stats = Stats()
        self.prober = Prober(keep_alive=options.keep_alive, max_connections=options.concurrency)
        self.scheduler = Scheduler(
            stats=self.stats, probe=self.prober.probe, interval=options.defaults.interval,
            concurrency=options.concurrency,
            observers=[Observer(on_cycle_end=self._cycle_done)],
        )
        self.reload_status = ReloadStatus()
        # What the web side sees of this object: read-only figures and the reload action.
        self.status = StatusView(
            stats=self.stats, probe_interval=options.defaults.interval,
            latency_threshold=options.defaults.latency_threshold,
            cycle_stats=lambda: self.scheduler.cycle_stats,
            reload_status=lambda: self.reload_status,
            ready=lambda: self.ready, healthy=self.healthy, reload=self.reload,
        )
        self.registry = exporter_registry(self.status)
        self.snapshot = GzipSnapshot(self.stats)
        self.config: Config | None = None
        self.config_path: Path | None = options.config
        self.demo: DemoServer | None = None
        self.stop = asyncio.Event()
        self.started = time.monotonic()
        self._seen_digest: str | None = None
        self._state_write: asyncio.Task[None] | None = None
        self.state = (
            statefile.StateFile(options.state_file) if options.state_file is not None else None
        )
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._exporter_errors_logged = 0

    # -- config -------------------------------------------------------------------------

    def load(self) -> Config:
        """Read the endpoints file (or the demo's); raises ConfigError."""
        if self.demo is not None:
            return parse_config(demo_config(self.demo.port).encode(), "<demo>", self.defaults)
        assert self.config_path is not None
        return load_config(self.config_path, self.defaults)

    def apply(self, config: Config) -> None:
        index, count = self.shard
        endpoints = shard.select(config.endpoints, index, count)
        before = {(s.endpoint.name, s.endpoint.url) for s in self.stats}
        removed = len(before - {(e.name, e.url) for e in endpoints})
        if removed * 2 > len(before):
            # Applied all the same (it may be meant), but a half-written or wrong file looks
            # like this; with --state.file the removed counts are kept 24 h for an undo.
            log.warning("the new config removes %d of the %d endpoints (by name and URL)",
                        removed, len(before))
        if self.state is not None:
            self.state.apply(self.stats, endpoints)
        else:
            self.stats.apply(endpoints)
        self.snapshot.config_applied()
        self.config = config
        self._seen_digest = config.digest
        self.reload_status = ReloadStatus(successful=True, last_success=time.time())
        log.info("config loaded: %d endpoints (%d in shard %d/%d)",
                 len(config.endpoints), len(endpoints), index, count)

    async def reload(self) -> None:
        """Re-read the config off the event loop; a bad file keeps the old one probing."""
        async with self._reload_lock:
            try:
                config = await off_loop(self.load)
            except ConfigError as exc:
                self.reload_status.successful = False
                self.reload_status.last_error = str(exc)
                log.error("config reload failed, keeping the running config:\n%s", exc)
                raise
            self.apply(config)

    async def _watch_config(self) -> None:
        """Reload when the file's content changes (by hash, so a symlink swap is seen)."""
        if self.config_path is None:
            return
        path = self.config_path
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), CONFIG_POLL_SECONDS)
                return
            try:
                data = await off_loop(path.read_bytes)
            except OSError:
                continue  # a reload reports it; a ConfigMap swap may be in progress
            digest = hashlib.sha256(data).hexdigest()
            if digest != self._seen_digest:
                self._seen_digest = digest  # try each new content once
                log.info("config file %s changed; reloading", path)
                with contextlib.suppress(ConfigError):
                    await self.reload()

    # -- cycles -------------------------------------------------------------------------

    def _cycle_done(self, cycle: int) -> None:
        # The report goes out now, on the beat (the scheduler calls this in cycle order); the
        # gzip copy of /metrics is rebuilt afterwards in the background, and scrapes meanwhile
        # get the previous copy.
        self._log_exporter_errors()
        self._publish()
        self.snapshot.cycle_completed()

    def _log_exporter_errors(self) -> None:
        """One line per cycle (not per probe) when probes failed on this process's resources."""
        total = sum(self.stats.exporter_errors.values())
        new = total - self._exporter_errors_logged
        self._exporter_errors_logged = total
        if new > 0:
            log.error(
                "%d probes failed on the exporter's own resources, not counted against their "
                "endpoints (availability_exporter_probe_errors_total); last: %s",
                new, self.stats.last_exporter_error,
            )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task nobody awaits."""
        # The loop keeps only a weak reference to tasks: hold it until it is done.
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _publish(self) -> None:
        self.print_report()
        if RELEASE_FREE_MEMORY is not None:
            self._spawn(asyncio.to_thread(RELEASE_FREE_MEMORY))
        if self.state is not None and (
            self._state_write is None or self._state_write.done()
        ):
            self._state_write = asyncio.get_running_loop().create_task(self._write_state())

    async def _write_state(self) -> None:
        """Copy the counts (on the loop, in slices) and write them (off it)."""
        assert self.state is not None
        try:
            await off_loop(self.state.write, await self.state.pending(self.stats))
        except OSError as exc:
            log.error("cannot write state file %s: %s", self.options.state_file, exc)

    def print_report(self) -> None:
        self.out.write(self.stats.report())
        self.out.flush()

    def all_up(self) -> bool:
        return all(s.last is not None and s.last.state is State.UP for s in self.stats)

    @property
    def ready(self) -> bool:
        return self.scheduler.cycle_stats.cycles > 0

    def healthy(self) -> bool:
        """False when no cycle has completed for three intervals."""
        last = self.scheduler.cycle_stats.last_completed
        since = asyncio.get_running_loop().time() - last if last is not None else (
            time.monotonic() - self.started
        )
        return since <= 3 * self.defaults.interval

    # -- life -----------------------------------------------------------------------------

    async def run(
        self, *, web: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None,
    ) -> int:
        """Start up, cycle until stopped, shut down; returns the exit status.

        ``web`` serves HTTP until the event it is given (this daemon's stop) is set.
        """
        options = self.options
        loop = asyncio.get_running_loop()
        self._capture_signals(loop)
        if self.state is not None:
            try:
                self.state.lock()
            except statefile.StateFileLocked as exc:
                # Before anything starts: two exporters on one file would each overwrite the
                # other's counts every cycle.  Exit status 2, as for any unusable start-up input.
                log.error("%s", exc)
                return 2
        if options.demo:
            self.demo = DemoServer()
            await self.demo.start()
        self.apply(await off_loop(self.load))
        if self.state is not None:
            saved = await off_loop(statefile.load, self.state.path)
            # No gzip copy exists before the web server starts: the first one has these counts.
            restored = self.state.restore(self.stats, saved)
            if saved.counts:
                log.info("restored counts of %d endpoints from %s", restored, options.state_file)
        await self.prober.warm_up()
        tasks: list[asyncio.Task[None]] = []
        if web is not None:
            tasks.append(loop.create_task(web(self.stop)))
        tasks.append(loop.create_task(self._watch_config()))
        if options.run_duration is not None:
            loop.call_later(options.run_duration, self.stop.set)
        # Start-up garbage is permanent; keep the collector from rescanning it every cycle.
        gc.collect()
        gc.freeze()
        try:
            await self.scheduler.run(self.stop, max_cycles=1 if options.once else None,
                                     spread=not options.once)
        finally:
            self.stop.set()
            await self._shutdown(tasks)
        if options.once:
            return 0 if self.all_up() else 1
        self.print_report()
        return 0

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.5)
        await self.prober.aclose()
        if self.demo is not None:
            await self.demo.stop()
        if self._state_write is not None:
            await asyncio.wait([self._state_write], timeout=2.0)
        if self.state is not None:
            await self._write_state()
            self.state.close()

    def _capture_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_stop() -> None:
            if self.stop.is_set():
                log.warning("second stop signal: exiting now")
                sys.stdout.flush()
                os._exit(1)
            log.info("stop requested: finishing")
            self.stop.set()

        def on_hup() -> None:
            async def reload() -> None:
                with contextlib.suppress(ConfigError):
                    await self.reload()

            self._spawn(reload())

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_stop)
        if not self.options.once:
            loop.add_signal_handler(signal.SIGHUP, on_hup)
