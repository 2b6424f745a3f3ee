"""Local HTTP targets and a running exporter process, for the reliability tests.

``Targets`` is a tiny HTTP/1.1 server on 127.0.0.1 (asyncio, in a daemon thread) with
predictable answers; every response closes its connection, as the exporter opens a fresh
connection per probe anyway:

| path            | answer                                                           |
|-----------------|------------------------------------------------------------------|
| ``/ok``         | 200 at once                                                      |
| ``/error``      | 500 at once                                                      |
| ``/slow?ms=N``  | 200 after N ms                                                   |
| ``/hang``       | never answers; ends when the client leaves or the server stops   |
| ``/switch``     | ``Targets.switch_status`` (200 unless a test changes it)         |
| ``/bounce``     | 302 to itself, query string included: a redirect loop            |
| ``/bounce-ftp`` | 302 to an ftp:// URL carrying the query string                   |
| anything else   | 404                                                              |

The query string is ignored except for ``ms``, so ``/ok?id=7`` gives distinct URLs that behave
alike.  The last request head per request target is kept (``heads()``), so a test can check
what reached the wire.

``ExporterProcess`` runs ``python -m availability_exporter`` with its stdout and stderr read by
threads, so a test can wait for reports, scrape /metrics and send signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
# The longest a test waits for anything the exporter should do "soon".
WAIT_SECONDS = 20.0
_MAX_HEAD_BYTES = 64 * 1024
_MAX_SLOW_MS = 600_000


def free_port() -> int:
    """A 127.0.0.1 port that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def refused_port() -> int:
    """A 127.0.0.1 port where a connection is refused right now (checked, not assumed)."""
    for _ in range(20):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((HOST, port)) != 0:
                return port
    raise RuntimeError("found no refused port on 127.0.0.1 in 20 attempts")


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_SECONDS,
             what: str = "condition") -> None:
    """Poll ``predicate`` every 20 ms until it holds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


class Targets:
    """The local target server; use as a context manager (``with Targets() as t:``)."""

    def __init__(self) -> None:
        self.switch_status = 200
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._in_flight = 0
        self._heads: dict[str, bytes] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="targets",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()
        self.port = 0

    def __enter__(self) -> Targets:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def url(self, path: str = "/ok", *, host: str = HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def requests(self, path: str | None = None) -> int:
        """Requests read so far, for one path or all."""
        with self._lock:
            return self._requests[path] if path is not None else sum(self._requests.values())

    def heads(self) -> list[bytes]:
        """The last request head (request line and headers) received per request target."""
        with self._lock:
            return list(self._heads.values())

    @property
    def in_flight(self) -> int:
        """Requests read and not yet answered (or abandoned)."""
        with self._lock:
            return self._in_flight

    async def _start(self) -> int:
        # A large backlog: a cycle opens up to thousands of connections within a second.
        self._server = await asyncio.start_server(self._accept, HOST, 0, backlog=8192)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        # Aborting (not cancelling) the handlers: on Python 3.11 asyncio's stream callback
        # reports a cancelled handler task as an unhandled exception.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent nonsense; nothing to answer
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD_BYTES:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        parts = urlsplit(target)
        with self._lock:
            self._requests[parts.path] += 1
            self._heads[target] = head
            self._in_flight += 1
        try:
            status = await self._answer(parts.path, parse_qs(parts.query), reader)
        finally:
            with self._lock:
                self._in_flight -= 1
        if status is None:
            return
        location = ""
        if parts.path == "/bounce":
            location = f"Location: {target}\r\n"
        elif parts.path == "/bounce-ftp":
            location = f"Location: ftp://{HOST}/?{parts.query}\r\n"
        body = b"" if method == "HEAD" else f"status {status}\n".encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"{location}Connection: close\r\n\r\n".encode() + body
        )
        await writer.drain()

    async def _answer(self, path: str, query: dict[str, list[str]],
                      reader: asyncio.StreamReader) -> int | None:
        if path == "/ok":
            return 200
        if path == "/error":
            return 500
        if path == "/switch":
            return self.switch_status
        if path in ("/bounce", "/bounce-ftp"):
            return 302
        if path == "/slow":
            ms = min(max(int((query.get("ms") or ["1000"])[0]), 0), _MAX_SLOW_MS)
            return 200 if await self._hold(reader, ms / 1000) else None
        if path == "/hang":
            await self._hold(reader, None)
            return None
        return 404

    async def _hold(self, reader: asyncio.StreamReader, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: for ever); False if the client left or the server stops.

        A probe that gave up must not leave its request "in flight" here, or a later test
        waiting for in-flight requests would count a previous process's connections.
        """
        async def client_gone() -> None:
            while await reader.read(4096):
                pass  # a request body or pipelined bytes; only the end matters

        waiters = [asyncio.ensure_future(client_gone()),
                   asyncio.ensure_future(self._closing.wait())]
        done, pending = await asyncio.wait(waiters, timeout=seconds,
                                           return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        await asyncio.wait(waiters)
        for waiter in done:
            waiter.exception()  # retrieved, so a reset connection is not reported as unhandled
        return not done


# -- the exporter ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """One console report: when its ``---`` line arrived and each domain's percentage."""

    at: float
    domains: dict[str, int]


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Metrics:
    """Every sample of an exposition, keyed by (sample name, sorted label pairs)."""
    samples: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def probes_total(metrics: Metrics, endpoint: str) -> int | None:
    """All probes of one endpoint (up + degraded + down), None when it has no series."""
    values = [
        value for (name, labels), value in metrics.items()
        if name == "availability_probes_total" and ("endpoint", endpoint) in labels
    ]
    return int(sum(values)) if values else None


def endpoint_names(metrics: Metrics) -> set[str]:
    return {
        dict(labels)["endpoint"] for (name, labels) in metrics
        if name == "availability_probes_total"
    }


class ExporterProcess:
    """``python -m availability_exporter CONFIG ARGS...`` listening on a free local port."""

    def __init__(self, config: Path | None, *args: str, env: dict[str, str] | None = None,
                 listen: bool = True) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "availability_exporter"]
        if config is not None:
            command.append(str(config))
        if listen:
            command += ["--web.listen-address", f"{HOST}:{self.port}"]
        command += list(args)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
        full_env.update(env or {})
        self.command = command
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
        )
        self._lock = threading.Lock()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._reports: list[Report] = []
        self._pending: dict[str, int] = {}
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.client = httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=10.0,
                                   trust_env=False)

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Kill the process if it still runs and collect its output."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=10)
        self.client.close()

    def _read(self, stream: IO[bytes], is_stdout: bool) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            now = time.monotonic()
            with self._lock:
                if not is_stdout:
                    self._stderr.append(line)
                    continue
                self._stdout.append(line)
                if line == "---":
                    self._reports.append(Report(at=now, domains=self._pending))
                    self._pending = {}
                elif line.endswith("% availability percentage"):
                    domain, _, rest = line.partition(" has ")
                    self._pending[domain] = int(rest.split("%")[0])

    # -- output ---------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self._stdout)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self._stderr)

    @property
    def reports(self) -> list[Report]:
        with self._lock:
            return list(self._reports)

    def wait_reports(self, count: int, timeout: float = WAIT_SECONDS) -> list[Report]:
        """Wait until at least ``count`` reports have been printed; return them all."""
        wait_for(lambda: len(self.reports) >= count or self.proc.poll() is not None,
                 timeout, f"{count} reports")
        reports = self.reports
        assert len(reports) >= count, f"exited early ({self.proc.returncode}):\n{self.stderr}"
        return reports

    def wait_stderr(self, text: str, timeout: float = WAIT_SECONDS) -> None:
        wait_for(lambda: text in self.stderr, timeout, f"{text!r} on stderr")

    # -- web ------------------------------------------------------------------------------

    def wait_serving(self, timeout: float = WAIT_SECONDS) -> None:
        """Wait until /-/healthy answers (any status)."""
        def answers() -> bool:
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}):\n{self.stderr}"
            try:
                self.client.get("/-/healthy", timeout=1.0)
            except httpx.TransportError:
                return False
            return True

        wait_for(answers, timeout, "the web server")

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def scrape(self) -> Metrics:
        response = self.client.get("/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    def wait_metrics(self, predicate: Callable[[Metrics], bool],
                     timeout: float = WAIT_SECONDS, what: str = "metrics") -> Metrics:
        """Scrape until ``predicate`` holds for a scrape; return that scrape."""
        found: list[Metrics] = []

        def check() -> bool:
            metrics = self.scrape()
            if predicate(metrics):
                found.append(metrics)
                return True
            return False

        wait_for(check, timeout, what)
        return found[0]

    # -- life -----------------------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT_SECONDS) -> int:
        """Wait for the exit; return the status (TimeoutExpired if it takes longer)."""
        status = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return status

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")


def write_config(path: Path, endpoints: Sequence[tuple[str, str]]) -> Path:
    """Write an endpoints file of (name, url) pairs."""
    # JSON strings are valid YAML double-quoted scalars, whatever they contain.
    lines = [f"- name: {json.dumps(name)}\n  url: {json.dumps(url)}" for name, url in endpoints]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

