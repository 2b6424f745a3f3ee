"""Local HTTP targets and the exporter as a child process, for the end-to-end tests.

``Targets`` is a tiny HTTP/1.1 server on 127.0.0.1 (asyncio, in a daemon thread, so it
answers while the test or an exporter in the test's own process waits) with predictable
answers; every response closes its connection, as the exporter opens a fresh connection per
probe anyway:

| path             | answer                                                          |
|------------------|-----------------------------------------------------------------|
| ``/ok``          | 200 at once                                                     |
| ``/error``       | 500 at once                                                     |
| ``/slow?ms=N``   | 200 after N ms; without ``ms`` after ``SLOW_MS``                |
| ``/hang``        | never answers; ends when the client leaves or the server stops  |
| ``/flap``        | 200 and 500 alternately, 200 first                              |
| ``POST /body``   | 200 for the JSON ``{"foo":"bar"}``, else 422                    |
| ``/switch``      | ``Targets.switch_status`` (200 unless a test changes it)        |
| ``/bounce``      | 302 to itself, query string included: a redirect loop          |
| ``/bounce-ftp``  | 302 to an ftp:// URL carrying the query string                  |
| anything else    | 404                                                             |

The query string is ignored except for ``ms``, so ``/ok?id=7`` gives distinct URLs that behave
alike.  The last 1000 requests are kept (``seen``), head and parsed headers, so a test can
check that a header or a secret really reached the wire before it checks that it shows
nowhere else.

``ExporterProcess`` runs ``python -m availability_exporter`` with its stdout and stderr read by
threads, so a test can wait for reports, scrape /metrics and send signals.  Ports for it come
from ``free_port``; a port that refuses connections from ``tests.adversarial.refused_port``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
# The longest a test waits for anything the exporter should do "soon".
WAIT_SECONDS = 20.0
# Over the default 0.5 s latency threshold (degraded) and well under any timeout the tests use
# (0.8 s at -f 1), so a bare /slow is degraded, never a timeout.
SLOW_MS = 600
_MAX_HEAD_BYTES = 64 * 1024
_MAX_SLOW_MS = 600_000
_SEEN_KEPT = 1000
_REPORT_LINE = re.compile(r"^(\S+) has (\d+)% availability percentage$")

T = TypeVar("T")


def free_port() -> int:
    """A 127.0.0.1 port that was free a moment ago, for programs that insist on being told one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], *, timeout: float = WAIT_SECONDS,
             interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something but None or False, and return that.

    AssertionError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- the targets -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as it reached the target server."""

    method: str
    target: str  # path and query, as on the request line
    path: str
    headers: dict[str, str]  # names as sent; the last of a repeated header wins
    head: bytes  # request line and headers, byte for byte


class Targets:
    """The local target server; use as a context manager (``with Targets() as t:``)."""

    def __init__(self) -> None:
        self.switch_status = 200
        self._lock = threading.Lock()
        self._seen: collections.deque[SeenRequest] = collections.deque(maxlen=_SEEN_KEPT)
        self._flaps = 0
        self._in_flight = 0
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

    @property
    def seen(self) -> list[SeenRequest]:
        """The last 1000 requests read, oldest first."""
        with self._lock:
            return list(self._seen)

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
        request_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), 0))
        body = await reader.readexactly(length) if length else b""
        parts = urlsplit(target)
        with self._lock:
            self._seen.append(SeenRequest(method, target, parts.path, headers, head))
            self._in_flight += 1
            if parts.path == "/flap":
                self._flaps += 1
            flap_status = 200 if self._flaps % 2 else 500
        try:
            status = await self._answer(method, parts.path, parse_qs(parts.query), body,
                                        flap_status, reader)
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
        payload = b"" if method == "HEAD" else f"status {status}\n".encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(payload)}\r\n{location}Connection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()

    async def _answer(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
                      flap_status: int, reader: asyncio.StreamReader) -> int | None:
        if path == "/ok":
            return 200
        if path == "/error":
            return 500
        if path == "/flap":
            return flap_status
        if path == "/body" and method == "POST":
            try:
                return 200 if json.loads(body) == {"foo": "bar"} else 422
            except ValueError:
                return 422
        if path == "/switch":
            return self.switch_status
        if path in ("/bounce", "/bounce-ftp"):
            return 302
        if path == "/slow":
            ms = min(max(int((query.get("ms") or [str(SLOW_MS)])[0]), 0), _MAX_SLOW_MS)
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


def write_config(path: Path, endpoints: Sequence[tuple[str, str]]) -> Path:
    """Write an endpoints file of (name, url) pairs."""
    # JSON strings are valid YAML double-quoted scalars, whatever they contain.
    lines = [f"- name: {json.dumps(name)}\n  url: {json.dumps(url)}" for name, url in endpoints]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- what the exporter prints and serves ------------------------------------------------------


def report_line(line: str) -> tuple[str, int] | None:
    """(domain, percentage) of a console report line; None for any other line."""
    match = _REPORT_LINE.match(line)
    return (match[1], int(match[2])) if match is not None else None


def parse_reports(text: str) -> list[dict[str, int]]:
    """The complete console reports of ``text`` in order, each as {domain: percentage}.

    Lines after the last ``---`` (a report being printed) are left out; any line that is
    neither a report line nor ``---``, or a domain twice in one report, fails the test.
    """
    reports: list[dict[str, int]] = []
    current: dict[str, int] = {}
    for line in text.splitlines():
        if line == "---":
            reports.append(current)
            current = {}
            continue
        parsed = report_line(line)
        if parsed is None:
            raise AssertionError(f"unexpected line on stdout: {line!r}")
        assert parsed[0] not in current, f"{parsed[0]} twice in one report: {text!r}"
        current[parsed[0]] = parsed[1]
    return reports


@dataclass(frozen=True, slots=True)
class Report:
    """One console report: when its ``---`` line arrived and each domain's percentage."""

    at: float
    domains: dict[str, int]


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Metrics:
    """Every sample of a text exposition, keyed by (sample name, sorted label pairs)."""
    samples: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of the sample with exactly these labels, None when there is none."""
    return metrics.get((name, tuple(sorted(labels.items()))))


def required_sample(metrics: Metrics, name: str, **labels: str) -> float:
    """Like ``sample``, but a missing sample fails the test."""
    value = sample(metrics, name, **labels)
    if value is None:
        raise AssertionError(f"{name}{labels or ''} is missing from /metrics")
    return value


def probe_counts(metrics: Metrics) -> dict[str, int]:
    """All probes (up + degraded + down) of every endpoint that has series."""
    counts: dict[str, float] = {}
    for (name, labels), value in metrics.items():
        if name == "availability_probes_total":
            endpoint = dict(labels)["endpoint"]
            counts[endpoint] = counts.get(endpoint, 0.0) + value
    return {endpoint: int(total) for endpoint, total in counts.items()}


def probes_total(metrics: Metrics, endpoint: str) -> int | None:
    """All probes of one endpoint, None when it has no series."""
    return probe_counts(metrics).get(endpoint)


def endpoint_names(metrics: Metrics) -> set[str]:
    return set(probe_counts(metrics))


# -- the exporter ----------------------------------------------------------------------------


def exporter_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without AVAILABILITY_*, plus ``extra``.

    Settings read AVAILABILITY_EXPORTER_*; a stray one in the caller's environment must not
    change what a test runs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
    env.update(extra or {})
    return env


def run_exporter(*args: str, timeout: float = 30, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    """``python -m availability_exporter ARGS`` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "availability_exporter", *args],
        capture_output=True, text=True, timeout=timeout, env=exporter_env(env), check=False,
    )


class ExporterProcess:
    """``python -m availability_exporter CONFIG ARGS...`` listening on a free local port.

    A context manager; leaving it kills the process if it still runs.
    """

    def __init__(self, config: Path | None, *args: str, env: dict[str, str] | None = None,
                 listen: bool = True) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        command = [sys.executable, "-m", "availability_exporter"]
        if config is not None:
            command.append(str(config))
        if listen:
            command += ["--web.listen-address", f"{HOST}:{self.port}"]
        command += list(args)
        self.command = command
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=exporter_env(env),
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
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0, trust_env=False)

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
            text = raw.decode("utf-8", "replace")
            now = time.monotonic()
            with self._lock:
                if not is_stdout:
                    self._stderr.append(text)
                    continue
                self._stdout.append(text)
                line = text.rstrip("\n")
                if line == "---":
                    self._reports.append(Report(at=now, domains=self._pending))
                    self._pending = {}
                elif (parsed := report_line(line)) is not None:
                    self._pending[parsed[0]] = parsed[1]

    # -- output ---------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        """Everything printed on stdout so far, exactly."""
        with self._lock:
            return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    @property
    def reports(self) -> list[Report]:
        with self._lock:
            return list(self._reports)

    def wait_reports(self, count: int, timeout: float = WAIT_SECONDS) -> list[Report]:
        """Wait until at least ``count`` reports have been printed; return them all."""
        wait_for(f"{count} reports",
                 lambda: len(self.reports) >= count or self.proc.poll() is not None,
                 timeout=timeout)
        reports = self.reports
        assert len(reports) >= count, f"exited early ({self.proc.returncode}):\n{self.stderr}"
        return reports

    def wait_stderr(self, text: str, timeout: float = WAIT_SECONDS) -> None:
        wait_for(f"{text!r} on stderr", lambda: text in self.stderr, timeout=timeout)

    # -- web ------------------------------------------------------------------------------

    def _wait_answer(self, path: str, accept: Callable[[httpx.Response], bool], what: str,
                     timeout: float) -> None:
        def answered() -> bool:
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}):\n{self.stderr}"
            try:
                return accept(self.client.get(path, timeout=2.0))
            except httpx.TransportError:
                return False

        wait_for(what, answered, timeout=timeout)

    def wait_serving(self, timeout: float = WAIT_SECONDS) -> None:
        """Wait until /-/healthy answers (any status)."""
        self._wait_answer("/-/healthy", lambda _: True, "the web server", timeout)

    def wait_ready(self, timeout: float = WAIT_SECONDS) -> None:
        """Wait until /-/ready answers 200, i.e. the first check cycle completed."""
        self._wait_answer("/-/ready", lambda response: response.status_code == 200,
                          "the exporter's first cycle (/-/ready)", timeout)

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def scrape(self) -> Metrics:
        response = self.client.get("/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    def wait_metrics(self, predicate: Callable[[Metrics], bool],
                     timeout: float = WAIT_SECONDS, what: str = "metrics") -> Metrics:
        """Scrape until ``predicate`` holds for a scrape; return that scrape."""
        def check() -> Metrics | None:
            metrics = self.scrape()
            return metrics if predicate(metrics) else None

        return wait_for(what, check, timeout=timeout)

    # -- life -----------------------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT_SECONDS) -> int:
        """Wait for the exit; return the status (TimeoutExpired if it takes longer)."""
        status = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return status

    def stop_cleanly(self, timeout: float = 5.0) -> None:
        """SIGTERM, and check DESIGN's promise: exit 0, the final report, no traceback."""
        self.send(signal.SIGTERM)
        assert self.wait(timeout) == 0, self.stderr
        assert self.stdout.endswith("---\n"), self.stdout[-2000:]
        assert "Traceback" not in self.stderr, self.stderr

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")
