"""Local HTTP targets and the exporter as a child process, for the end-to-end tests.

``Targets`` runs the package's local target server
(``availability_exporter.target_server``, whose docstring has the table of paths: ``/ok``,
``/error``, ``/slow?ms=N``, ``/hang``, ``/flap``, ``POST /body``, ``/switch``, ``/bounce``,
``/bounce-ftp``, 404 for anything else) on its own event loop in a daemon thread, so it
answers while the test or an exporter in the test's own process waits.  A bare ``/slow``
answers after ``SLOW_MS``: over the default 0.5 s latency threshold (degraded) and well under
any timeout the tests use (0.8 s at -f 1), so it is degraded, never a timeout.  The last 1000
requests are kept (``seen``), head and parsed headers, so a test can check that a header or a
secret really reached the wire before it checks that it shows nowhere else.

``ExporterProcess`` runs ``python -m availability_exporter`` with its stdout and stderr read by
threads, so a test can wait for reports, scrape /metrics and send signals.  Ports for it come
from ``free_port``; a port that refuses connections from ``tests.adversarial.refused_port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from availability_exporter.target_server import HOST, SLOW_MS, Request, TargetServer

# The longest a test waits for anything the exporter should do "soon".
WAIT_SECONDS = 20.0
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


class Targets:
    """The local target server on a thread; use as a context manager (``with Targets() as t:``).

    ``tls``: serve https with that context instead of http.
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._server = TargetServer(slow_ms=SLOW_MS, seen_kept=_SEEN_KEPT, tls=tls)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="targets",
                                        daemon=True)
        self.port = 0

    def __enter__(self) -> Targets:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(HOST), self._loop).result(timeout=10)
        self.port = self._server.port
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def url(self, path: str = "/ok", *, host: str = HOST) -> str:
        return self._server.url(path, host=host)

    @property
    def switch_status(self) -> int:
        """What ``/switch`` answers (200 unless a test changes it)."""
        return self._server.switch_status

    @switch_status.setter
    def switch_status(self, status: int) -> None:
        # One attribute store, read by the server's loop on its next /switch: no lock needed.
        self._server.switch_status = status

    @property
    def seen(self) -> list[Request]:
        """The last 1000 requests read, oldest first."""
        return self._call(lambda: list(self._server.seen))

    @property
    def in_flight(self) -> int:
        """Requests read and not yet answered (or abandoned)."""
        return self._call(lambda: self._server.in_flight)

    def _call(self, read: Callable[[], T]) -> T:
        """``read()`` on the server's loop, so it sees a consistent state."""
        async def call() -> T:
            return read()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)


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


def _limit_fds(nofile: int) -> Callable[[], None]:
    """A ``preexec_fn`` setting the child's soft and hard RLIMIT_NOFILE to ``nofile`` (the
    exporter lifts its soft limit to the hard one, so both are set)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return limit


class ExporterProcess:
    """``python -m availability_exporter CONFIG ARGS...`` listening on a free local port.

    A context manager; leaving it kills the process if it still runs.  ``nofile`` runs it at
    that descriptor limit (a reduced ``ulimit -n``).
    """

    def __init__(self, config: Path | None, *args: str, env: dict[str, str] | None = None,
                 listen: bool = True, nofile: int | None = None) -> None:
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
            env=exporter_env(env), preexec_fn=None if nofile is None else _limit_fds(nofile),
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
        """/metrics as the exporter knows it now: plain, not the gzip copy.

        A gzip scrape is served from the copy made after the last cycle whose copy is complete,
        which lags the report and the live counters by a build; the tests mean the present.
        """
        response = self.client.get("/metrics", headers={"Accept-Encoding": "identity"})
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
