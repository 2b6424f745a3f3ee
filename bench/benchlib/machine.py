"""The machine and its processes: binaries, versions, ports, /proc figures, stopping."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import io
import os
import platform
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
NGINX_BIN = "/usr/sbin/nginx"
BLACKBOX_BIN = "/usr/bin/prometheus-blackbox-exporter"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
# How long a target, the exporter or blackbox_exporter may take to listen.
START_TIMEOUT = 20.0


def which(path: str) -> str | None:
    """The binary at ``path``, else the same name on PATH, else None."""
    if os.access(path, os.X_OK):
        return path
    return shutil.which(Path(path).name)


def require_binary(path: str, env: str) -> str | None:
    """The binary, or None when absent and the benchmark should skip that part.

    With ``env`` (e.g. REQUIRE_NGINX) set to 1, a missing binary is an error instead.
    """
    found = which(path)
    if found is None and os.environ.get(env) == "1":
        raise SystemExit(f"{path} is required ({env}=1) but is not installed")
    return found


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, Python and package versions, the reference binaries' versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages: dict[str, str] = {}
    for name in ("availability-exporter", "httpx", "httpcore", "anyio", "h11", "uvloop",
                 "prometheus-client", "uvicorn", "pyyaml"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "absent"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "packages": packages,
        "nginx": _version([NGINX_BIN, "-v"]),
        "blackbox": _version([BLACKBOX_BIN, "--version"]),
        "loadavg": os.getloadavg()[0],
    }


def _version(argv: list[str]) -> str:
    binary = which(argv[0])
    if binary is None:
        return "absent"
    try:
        done = subprocess.run([binary, *argv[1:]], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "unknown"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``port`` accepts a connection; raises when ``deadline`` passes or ``proc`` dies."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


def readline_within(stream: io.BufferedReader | Any, timeout: float) -> bytes:
    """One line from a pipe, or b"" if none arrives within ``timeout``."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


class ChildProcess:
    """A process a benchmark starts beside the exporter (a target, the reference): subclasses
    start it in ``__enter__``; leaving the ``with`` stops it (:func:`stop`)."""

    proc: subprocess.Popen[bytes] | None = None

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def run_loop(coro: Any) -> Any:
    """Run ``coro`` to completion on uvloop, as the daemon does (asyncio without uvloop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
