"""A target that answers after exactly N ms, on several ports, and says how exact it was.

Run as its own process so its timers never wait behind the prober being measured:

    .venv/bin/python bench/delay_server.py --ports 4 [--loop asyncio|uvloop]

It prints one JSON line ``{"ports": [...], "control": PORT, "pid": PID}`` and serves until
SIGTERM/SIGINT.  A request for ``/d/<ms>/<anything>`` is answered ``<ms>`` milliseconds after
its headers arrived (timed on ``time.perf_counter``, never early); other paths after
``--default-ms``.  Every answer closes the connection, as a fresh-connection probe expects.

The control port answers at once: ``/__stats`` (requests served and how late each answer left
compared with arrival + delay: p50/p99/max), ``/__arrivals`` (wall-clock arrival time and path
of every request, to check which endpoint was probed when) and ``/__reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import time
from typing import Any, cast

# Bounded bookkeeping: a long soak must not turn the target into the memory hog.
MAX_RECORDS = 2_000_000
MAX_HEADER_BYTES = 64 * 1024
# uvloop (libuv) timers count whole milliseconds from a cached clock: they may fire up to 1 ms
# before the float deadline.  Padding by 1 ms makes an early answer rare; _answer re-arms it.
UVLOOP_TIMER_PAD = 0.001
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok"
)


class Recorder:
    """What the server did: lateness of each answer, arrival of each request."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.arrivals: list[tuple[float, str]] = []
        self.first_arrival: float | None = None
        self.served = 0

    def reset(self) -> None:
        self.lateness.clear()
        self.arrivals.clear()
        self.first_arrival = None
        self.served = 0

    def stats(self) -> dict[str, Any]:
        values = sorted(self.lateness)

        def pct(q: float) -> float:
            if not values:
                return 0.0
            return values[min(len(values) - 1, int(q * len(values)))]

        return {
            "served": self.served,
            "recorded": len(values),
            "lateness_p50_ms": pct(0.50) * 1000,
            "lateness_p99_ms": pct(0.99) * 1000,
            "lateness_max_ms": (values[-1] if values else 0.0) * 1000,
            "first_arrival": self.first_arrival,
        }


def parse_delay(path: bytes, default_ms: float) -> float:
    """Seconds to wait before answering ``path`` (``/d/<ms>/...``)."""
    if path.startswith(b"/d/"):
        part = path[3:].split(b"/", 1)[0]
        try:
            return max(float(part), 0.0) / 1000
        except ValueError:
            return default_ms / 1000
    return default_ms / 1000


class DelayProtocol(asyncio.Protocol):
    """One connection: read the request head, answer after the delay, close."""

    def __init__(self, recorder: Recorder, default_ms: float, control: bool,
                 pad: float = 0.0) -> None:
        self.recorder = recorder
        self.default_ms = default_ms
        self.control = control
        self.pad = pad
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answered or self.timer is not None:
            return  # a body or pipelined bytes after the head: ignored
        # The clock first: everything below is bookkeeping that must not count.  perf_counter,
        # not loop.time(): uvloop's loop clock is cached and whole milliseconds.
        arrival = time.perf_counter()
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES and self.transport is not None:
                self.transport.close()
            return
        line = self.buffer.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        path = parts[1] if len(parts) >= 2 else b"/"
        if self.control:
            self._control(path)
            return
        recorder = self.recorder
        recorder.served += 1
        if len(recorder.arrivals) < MAX_RECORDS:
            wall = time.time()
            if recorder.first_arrival is None:
                recorder.first_arrival = wall
            recorder.arrivals.append((wall, path.decode("latin-1")))
        due = arrival + parse_delay(path, self.default_ms)
        self._arm(due)

    def _arm(self, due: float) -> None:
        wait = due - time.perf_counter() + self.pad
        self.timer = asyncio.get_running_loop().call_later(max(wait, 0.0), self._answer, due)

    def _answer(self, due: float) -> None:
        late = time.perf_counter() - due
        if late < 0:  # a timer rounded to whole milliseconds fired early: never answer early
            self._arm(due)
            return
        self.answered = True
        if len(self.recorder.lateness) < MAX_RECORDS:
            self.recorder.lateness.append(late)
        if self.transport is not None:
            self.transport.write(ANSWER)
            self.transport.close()

    def _control(self, path: bytes) -> None:
        recorder = self.recorder
        if path.startswith(b"/__stats"):
            body = json.dumps(recorder.stats()).encode()
        elif path.startswith(b"/__arrivals"):
            body = json.dumps(recorder.arrivals).encode()
        elif path.startswith(b"/__reset"):
            recorder.reset()
            body = b"{}"
        else:
            body = b'{"error": "unknown control path"}'
        self.answered = True
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None and not self.answered:
            self.timer.cancel()


def _listening_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(ports: int, host: str, default_ms: float, pad: float) -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.base_events.Server] = []
    numbers: list[int] = []
    for _ in range(ports):
        sock = _listening_socket(host)
        numbers.append(sock.getsockname()[1])
        servers.append(await loop.create_server(
            lambda: DelayProtocol(recorder, default_ms, control=False, pad=pad), sock=sock,
        ))
    control_sock = _listening_socket(host)
    servers.append(await loop.create_server(
        lambda: DelayProtocol(recorder, default_ms, control=True), sock=control_sock,
    ))
    sys.stdout.write(json.dumps({
        "ports": numbers, "control": control_sock.getsockname()[1], "pid": os.getpid(),
    }) + "\n")
    sys.stdout.flush()
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ports", type=int, default=4, help="listening ports (default 4)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--default-ms", type=float, default=200.0,
                        help="delay for paths not of the form /d/<ms>/ (default 200)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop",
                        help="event loop (default uvloop: accepting and reading cost a "
                             "fraction of asyncio's, which a 667 requests/s target adds to "
                             "every answer; its timers are whole milliseconds, so each is "
                             "padded by 1 ms and re-armed if it still fires early)")
    parser.add_argument("--nice", type=int, default=-10,
                        help="scheduling priority to ask for (default -10; kept when not "
                             "permitted)")
    args = parser.parse_args(argv)
    # The recorder keeps up to millions of tuples: full collections over them paused this
    # server for 30+ ms, which the probers measured as latency.  Nothing here makes cycles.
    gc.disable()
    with contextlib.suppress(PermissionError):
        # Ahead of the probers under test: a target that answers late would be blamed on them.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("delay_server: uvloop is not installed, using asyncio", file=sys.stderr)
        else:
            uvloop.run(serve(args.ports, args.host, args.default_ms, pad=UVLOOP_TIMER_PAD))
            return 0
    asyncio.run(serve(args.ports, args.host, args.default_ms, pad=0.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
