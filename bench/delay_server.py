"""A target that answers after exactly N ms, on several ports, and says how exact it was.

Run as its own process so its timers never wait behind the prober being measured:

    .venv/bin/python bench/delay_server.py --ports 4 [--loop asyncio|uvloop]

It prints one JSON line ``{"ports": [...], "control": PORT, "pid": PID}`` and serves until
SIGTERM/SIGINT.  The server is the package's local target server
(``availability_exporter.target_server``): a request for ``/d/<ms>/<anything>`` is answered
``<ms>`` milliseconds after its headers arrived (timed on ``time.perf_counter``, never early);
here every other path after ``--default-ms``.  Every answer closes the connection, as a
fresh-connection probe expects.

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
import sys

from availability_exporter.target_server import Recorder, Reply, Request, Route, TargetServer


def control_routes(recorder: Recorder) -> dict[str, Route]:
    """The control port's paths: the recorder's figures, its arrivals, and a reset."""

    def as_json(value: object) -> Reply:
        return Reply(200, body=json.dumps(value).encode())

    def reset(_: Request) -> Reply:
        recorder.reset()
        return as_json({})

    return {
        "/__stats": lambda _: as_json(recorder.stats()),
        "/__arrivals": lambda _: as_json(recorder.arrivals),
        "/__reset": reset,
    }


async def serve(ports: int, host: str, default_ms: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    recorder = Recorder()
    targets = TargetServer(default_ms=default_ms, recorder=recorder)
    control = TargetServer(routes=control_routes(recorder))
    await targets.start(host, ports=ports)
    await control.start(host)
    sys.stdout.write(json.dumps({
        "ports": targets.ports, "control": control.port, "pid": os.getpid(),
    }) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await targets.stop()
    await control.stop()


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
            uvloop.run(serve(args.ports, args.host, args.default_ms))
            return 0
    asyncio.run(serve(args.ports, args.host, args.default_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
