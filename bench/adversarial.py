"""Hostile framing: CPU stays linear in bytes and no callback holds the loop (issue 10's goals).

    .venv/bin/python bench/adversarial.py [--chunks 300000 --head-kib 87 --drip-seconds 10]

Two parts, each side by side with a reference measured in the same run:

1. The parser alone, fed exactly as a socket would feed it, against h11 (the parser under
   httpx's own transport) on the same bytes: a chunked body of ``--chunks`` one-byte chunks in
   64 KiB and in 256 KiB reads (asyncio reads up to 256 KiB at a time), and a ``--head-kib``
   header block dripped one byte per read.  CPU is thread time; the worst callback is the
   longest single ``data_received`` (or deferred parse) call.
   Goals: 300,000 one-byte chunks <= 150 ms CPU; an 87 KiB head dripped a byte at a time
   <= 50 ms CPU; no callback over 5 ms.
2. The whole probe (httpx client, the project's transport) over loopback against a server in
   its own process, with curl on the same URL as the reference: the chunked body sent as fast
   as the socket takes it, and the head dripped a byte per millisecond for ``--drip-seconds``
   (then the rest at once).  Meanwhile 20 healthy probes run every 100 ms and a 1 ms ticker
   records how late the loop wakes it: a hostile answer must not slow other probes.

Every loop is bounded in count and time; the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import h11
from benchlib.options import parse_options, workdir
from benchlib.report import Report, Spread, fmt

from availability_exporter import http1
from availability_exporter.config import Defaults, parse_config
from availability_exporter.model import Endpoint
from availability_exporter.probe import Prober

HOST = "127.0.0.1"
CHUNK_GOAL_MS = 150.0
HEAD_GOAL_MS = 50.0
CALLBACK_GOAL_MS = 5.0


def chunked_response(chunks: int) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * chunks
            + b"0\r\n\r\n")


def big_head(size: int) -> bytes:
    """A 200 response whose header block is ``size`` bytes of 40-byte fields."""
    lines = [b"HTTP/1.1 200 OK"]
    total, i = 17, 0
    while total < size:
        line = b"X-Field-%05d: %s" % (i, b"v" * 40)
        lines.append(line)
        total += len(line) + 2
        i += 1
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- 1. the parsers alone -----------------------------------------------------------------------

class _Wire:
    """The transport a parser-only run gives http1.Connection: it only notes pauses."""

    paused = False

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def ours(pieces: Sequence[bytes], *, timed: bool) -> tuple[float, float, int]:
    """(thread CPU s, worst callback s, body bytes) of http1 reading ``pieces``."""
    loop = asyncio.new_event_loop()
    connection = http1.Connection(loop)
    wire = _Wire()
    connection.connection_made(wire)  # type: ignore[arg-type]
    worst = 0.0
    if timed:  # the deferred parses are loop callbacks too: time them as well
        resume = connection._resume

        def timed_resume() -> None:
            nonlocal worst
            began = time.perf_counter()
            resume()
            worst = max(worst, time.perf_counter() - began)

        connection._resume = timed_resume  # type: ignore[method-assign]

    async def feed() -> tuple[float, int]:
        nonlocal worst
        answer = asyncio.ensure_future(
            connection.exchange(b"GET / HTTP/1.1\r\n\r\n", head_only=False, keep=0, trace=None))
        await asyncio.sleep(0)
        receive = connection.data_received
        began = time.thread_time()
        for piece in pieces:
            while wire.paused:  # reading paused: the loop runs the deferred parse first
                await asyncio.sleep(0)
            if timed:
                start = time.perf_counter()
                receive(piece)
                worst = max(worst, time.perf_counter() - start)
            else:
                receive(piece)
        result = await answer
        return time.thread_time() - began, result.body_bytes

    try:
        cpu, body = loop.run_until_complete(asyncio.wait_for(feed(), 120))
    finally:
        loop.close()
    return cpu, worst, body


def h11_parse(pieces: Sequence[bytes]) -> tuple[float, float]:
    """(thread CPU s, worst single receive_data + next_event round s) of h11 on ``pieces``."""
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "bench")]))
    connection.send(h11.EndOfMessage())
    worst = 0.0
    began = time.thread_time()
    for piece in pieces:
        start = time.perf_counter()
        connection.receive_data(piece)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
                break
        worst = max(worst, time.perf_counter() - start)
    return time.thread_time() - began, worst


def parser_rows(report: Report, chunks: int, head_kib: int) -> dict[str, tuple[float, float]]:
    cases: dict[str, list[bytes]] = {
        f"{chunks:,} one-byte chunks, 64 KiB reads": split(chunked_response(chunks), 65536),
        f"{chunks:,} one-byte chunks, 256 KiB reads": split(chunked_response(chunks), 262144),
        f"{head_kib} KiB head, one byte per read": split(big_head(head_kib * 1024), 1),
    }
    rows: list[list[str]] = []
    figures: dict[str, tuple[float, float]] = {}
    for name, pieces in cases.items():
        cpu = min(ours(pieces, timed=False)[0] for _ in range(3))
        worst = min(ours(pieces, timed=True)[1] for _ in range(3))
        ref_cpu, ref_worst = h11_parse(pieces)
        figures[name] = (cpu, worst)
        rows.append([name, fmt(cpu * 1000), fmt(worst * 1000, 2), fmt(ref_cpu * 1000),
                     fmt(ref_worst * 1000, 2), f"{cpu / ref_cpu:.3f}"])
        report.figures[name] = {"cpu_ms": cpu * 1000, "worst_callback_ms": worst * 1000,
                                "h11_cpu_ms": ref_cpu * 1000,
                                "h11_worst_ms": ref_worst * 1000}
    report.table("1. the parser alone (best of 3), against h11 on the same bytes",
                 ["input", "CPU ms", "worst cb ms", "h11 CPU ms", "h11 worst ms",
                  "ratio"], rows)
    return figures


# -- 2. whole probes over loopback --------------------------------------------------------------

def serve(port_file: str, chunks: int, head_kib: int, drip_seconds: float) -> None:
    """The hostile server (a process of its own): /chunks, /drip, /ok."""
    body = chunked_response(chunks)
    head = big_head(head_kib * 1024)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1]
            if path.startswith(b"/chunks"):
                writer.write(body)
            elif path.startswith(b"/drip"):
                deadline = time.monotonic() + drip_seconds
                sent = 0
                while sent < len(head) and time.monotonic() < deadline:
                    writer.write(head[sent : sent + 1])
                    sent += 1
                    await asyncio.sleep(0.001)
                writer.write(head[sent:])
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await asyncio.sleep(600)  # the bench stops it long before

    asyncio.run(main())


def endpoint(name: str, url: str, timeout: float) -> Endpoint:
    text = f"- name: {name}\n  url: {url}\n  timeout: {timeout}\n  latency_threshold: 0.5\n"
    return parse_config(text.encode(), "bench", Defaults(interval=timeout + 1)).endpoints[0]


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def alone(url: str, timeout: float) -> tuple[bool, float, float]:
    """(complete 2xx?, duration s, process CPU s) of one probe of ``url`` with nothing else."""
    prober = Prober()
    await prober.warm_up()
    began = process_cpu()
    result = await prober.probe(endpoint("hostile", url, timeout))
    cpu = process_cpu() - began
    await prober.aclose()
    return result.status_code == 200 and result.reason in (None, "slow"), result.duration, cpu


async def neighbours(base: str, url: str | None, timeout: float, quiet: float) -> tuple[
        Spread, Spread]:
    """Latencies of 20 healthy probes run every 100 ms, and how late a 1 ms ticker wakes,
    while ``url`` is probed (or, with None, for ``quiet`` seconds: the baseline)."""
    prober = Prober()
    await prober.warm_up()
    healthy = [endpoint(f"ok{i}", f"{base}/ok", 5.0) for i in range(20)]
    latencies: list[float] = []
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not done.is_set():
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            lateness.append(loop.time() - due)

    async def rounds() -> None:
        while not done.is_set():
            results = await asyncio.gather(*(prober.probe(e) for e in healthy))
            latencies.extend(r.duration for r in results)
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(ticker()), asyncio.create_task(rounds())]
    await asyncio.sleep(0.3)  # past the first rounds' start-up
    latencies.clear()
    lateness.clear()
    if url is None:
        await asyncio.sleep(quiet)
    else:
        await prober.probe(endpoint("hostile", url, timeout))
    done.set()
    await asyncio.gather(*tasks)
    await prober.aclose()
    return Spread.of(latencies), Spread.of(lateness)


def curl_cpu(url: str, timeout: float) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", str(timeout), url],
                          capture_output=True, timeout=timeout + 10, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.returncode


def socket_rows(report: Report, work: Path, chunks: int, head_kib: int,
                drip_seconds: float) -> None:
    port_file = work / "port"
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", str(port_file), str(chunks), str(head_kib),
         str(drip_seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("the hostile server did not start")
            time.sleep(0.05)
        base = f"http://{HOST}:{port_file.read_text()}"
        timeout = drip_seconds + 20
        rows: list[list[str]] = []
        near, late = asyncio.run(neighbours(base, None, timeout, 2.0))
        rows.append(["(no hostile probe: baseline, 2 s)", "", "", "", fmt(near.p99 * 1000, 2),
                     fmt(near.max * 1000, 2), fmt(late.max * 1000, 2)])
        runs = [
            ("chunks", f"{chunks:,} one-byte chunks"),
            ("drip", f"{head_kib} KiB head, 1 byte/ms for {drip_seconds:g} s"),
        ]
        for path, name in runs:
            url = f"{base}/{path}"
            complete, duration, cpu = asyncio.run(alone(url, timeout))
            ref, code = curl_cpu(url, timeout)
            near, late = asyncio.run(neighbours(base, url, timeout, 0.0))
            report.check(f"{name}: the probe reads a complete 200", complete)
            report.check(f"{name}: curl succeeds", code == 0)
            rows.append([name, fmt(duration * 1000), fmt(cpu * 1000), fmt(ref * 1000),
                         fmt(near.p99 * 1000, 2), fmt(near.max * 1000, 2),
                         fmt(late.max * 1000, 2)])
            report.figures[f"socket: {name}"] = {
                "duration_s": duration, "cpu_s": cpu, "curl_cpu_s": ref,
                "neighbours": near.as_dict(), "loop_late": late.as_dict()}
        report.table("2. whole probes over loopback, against curl (CPU: the probe alone; "
                     "neighbours: 20 healthy probes every 100 ms during it)",
                     ["input", "probe ms", "CPU ms", "curl CPU ms", "neighbours p99 ms",
                      "neighbours max ms", "loop late max ms"], rows)
    finally:
        server.kill()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, chunks=300_000, head_kib=87, drip_seconds=10.0)
    report = Report("hostile framing: parser CPU and loop stalls")
    figures = parser_rows(report, args.chunks, args.head_kib)
    chunk64 = figures[f"{args.chunks:,} one-byte chunks, 64 KiB reads"]
    chunk256 = figures[f"{args.chunks:,} one-byte chunks, 256 KiB reads"]
    head = figures[f"{args.head_kib} KiB head, one byte per read"]
    scale = 300_000 / args.chunks
    report.verdict("300,000 one-byte chunks <= 150 ms CPU",
                   max(chunk64[0], chunk256[0]) * scale * 1000 <= CHUNK_GOAL_MS,
                   f"{fmt(max(chunk64[0], chunk256[0]) * 1000)} ms for {args.chunks:,}")
    report.verdict(f"{args.head_kib} KiB head dripped <= 50 ms CPU",
                   head[0] * 1000 <= HEAD_GOAL_MS, f"{fmt(head[0] * 1000)} ms")
    worst = max(chunk64[1], chunk256[1], head[1])
    report.verdict("no callback over 5 ms", worst * 1000 <= CALLBACK_GOAL_MS,
                   f"worst {fmt(worst * 1000, 2)} ms")
    with workdir(args.workdir) as work:
        socket_rows(report, work, args.chunks, args.head_kib, args.drip_seconds)
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(main())
