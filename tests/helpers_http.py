"""Local HTTP targets and an exporter subprocess for the web, Prometheus and browser tests.

The target server runs in its own threads, so it answers while an event loop in the test (or
an exporter subprocess) probes it, and a slow answer never holds up a fast one.  Everything
binds 127.0.0.1 only.
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx

# Over the default 0.5 s latency threshold (degraded) and well under any timeout the tests use
# (0.8 s at -f 1), so the slow path is degraded, never a timeout.
SLOW_SECONDS = 0.6
_REPORT_LINE = re.compile(r"^(\S+) has (\d+)% availability percentage$")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass(slots=True)
class _State:
    seen: collections.deque[SeenRequest] = field(
        default_factory=lambda: collections.deque(maxlen=1000)
    )
    flaps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class TargetServer:
    """What the exporter probes.

    ``/ok`` 200 at once, ``/error`` 500, ``/slow`` 200 after SLOW_SECONDS, ``/flap`` 200 and
    500 alternately (200 first), ``POST /body`` 200 for ``{"foo":"bar"}`` else 422, anything
    else 404.  Every request's headers are kept (the last 1000), so a test can check that a
    header really was sent before it checks that the header's value is shown nowhere.
    """

    def __init__(self) -> None:
        self._state = _State()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self._state))
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def seen(self) -> list[SeenRequest]:
        with self._state.lock:
            return list(self._state.seen)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_class(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # a probe every second would drown the test output

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(self.rfile.read(min(length, 65536)))

        def _answer(self, body: bytes) -> None:
            path = self.path.split("?", 1)[0]
            flap_status = 500
            with state.lock:
                state.seen.append(SeenRequest(self.command, path, dict(self.headers.items())))
                if path == "/flap":
                    state.flaps += 1
                    flap_status = 200 if state.flaps % 2 else 500
            if path == "/ok":
                status = 200
            elif path == "/error":
                status = 500
            elif path == "/slow":
                time.sleep(SLOW_SECONDS)
                status = 200
            elif path == "/flap":
                status = flap_status
            elif path == "/body" and self.command == "POST":
                try:
                    status = 200 if json.loads(body) == {"foo": "bar"} else 422
                except ValueError:
                    status = 422
            else:
                status = 404
            payload = f'{{"status": {status}}}\n'.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(payload)
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def target_server() -> Iterator[TargetServer]:
    server = TargetServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses connections for as long as the context lasts.

    The socket stays bound but never listens, so no other process can take the port and turn
    "connection refused" into an answer halfway through a test.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def free_port() -> int:
    """A port that was free a moment ago, for programs that insist on being told one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], T | None], *, timeout: float,
             interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something other than None; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def parse_reports(text: str) -> list[dict[str, int]]:
    """The console's complete reports in order, each as {domain: percentage}."""
    reports: list[dict[str, int]] = []
    current: dict[str, int] = {}
    for line in text.splitlines():
        if line == "---":
            reports.append(current)
            current = {}
            continue
        match = _REPORT_LINE.match(line)
        if match is None:
            raise AssertionError(f"unexpected line on stdout: {line!r}")
        current[match.group(1)] = int(match.group(2))
    return reports


class ExporterProcess:
    """``python -m availability_exporter`` as a child process, stdout and stderr in files."""

    def __init__(self, config: Path, workdir: Path, *, interval: float) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / "exporter.stdout"
        self.stderr_path = workdir / "exporter.stderr"
        # Settings also read AVAILABILITY_EXPORTER_*; a stray one in the caller's environment
        # must not change what the test runs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_EXPORTER_")}
        self._stdout = self.stdout_path.open("wb")
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "availability_exporter", str(config),
             "-f", f"{interval:g}", "--web.listen-address", f"127.0.0.1:{self.port}"],
            stdout=self._stdout, stderr=self._stderr, stdin=subprocess.DEVNULL, env=env,
        )

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self, *, timeout: float = 20.0) -> None:
        """Until /-/ready answers 200, i.e. the first check cycle completed."""
        def ready() -> bool | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"exporter exited with {self.process.returncode}:\n{self.stderr()}"
                )
            try:
                response = httpx.get(f"{self.base_url}/-/ready", timeout=2.0)
            except httpx.TransportError:
                return None
            return True if response.status_code == 200 else None

        wait_for("the exporter's first cycle (/-/ready)", ready, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM (the final report is printed), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._stdout.close()
        self._stderr.close()

    def stop_cleanly(self) -> None:
        """Stop, and check DESIGN's promise: exit 0, the final report, no traceback."""
        self.stop()
        assert self.process.returncode == 0, self.stderr()
        assert self.stdout().endswith("---\n")
        assert "Traceback" not in self.stderr(), self.stderr()


@contextlib.contextmanager
def exporter_process(config: Path, workdir: Path, *, interval: float) -> Iterator[ExporterProcess]:
    exporter = ExporterProcess(config, workdir, interval=interval)
    try:
        yield exporter
    finally:
        exporter.stop()
