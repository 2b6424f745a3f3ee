"""Stopping: SIGTERM/SIGINT mid-cycle, a second signal, --once exit codes, -r.

DESIGN: on SIGINT or SIGTERM the cycle in flight is cancelled and not counted, the final report
is printed, the state file written, and the process exits 0 within a second or two; a second
signal exits at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from availability_exporter import statefile
from availability_exporter.config import Defaults, load_config
from availability_exporter.model import REASONS
from availability_exporter.stats import BUCKETS, SavedCounts
from tests.targets import ExporterProcess, Targets, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

SLOW_ENDPOINTS = 1000
SLOW_MS = 3000
SLOW_ARGS = ("-f", "10", "--probe.timeout", "8", "--probe.concurrency", "2000")
# Restored counts per endpoint: 3 up, 1 down, so the report reads 75 %.
RESTORED = SavedCounts(
    up=3, degraded=0, down=1,
    failures=tuple(1 if reason == "status" else 0 for reason in REASONS),
    buckets=(4,) + (0,) * len(BUCKETS), duration_sum=0.004,
)


def saved_state(config: Path, state: Path) -> None:
    """A state file as an earlier run would have left it, for every endpoint of ``config``."""
    endpoints = load_config(config, Defaults(interval=10.0, timeout=8.0)).endpoints
    statefile.write(state, [(e.name, statefile.url_key(e.url), RESTORED) for e in endpoints])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_during_a_slow_cycle(tmp_path: Path, sig: signal.Signals) -> None:
    config = tmp_path / "endpoints.yaml"
    state = tmp_path / "state.json"
    with Targets() as targets:
        write_config(config, [(f"slow-{i}", targets.url(f"/slow?ms={SLOW_MS}&i={i}"))
                              for i in range(SLOW_ENDPOINTS)])
        saved_state(config, state)
        inode = state.stat().st_ino
        with ExporterProcess(config, *SLOW_ARGS, "--state.file", str(state)) as proc:
            proc.wait_stderr("restored counts of 1000 endpoints")
            # Nearly every probe of the first cycle is waiting on its 3 s answer.
            wait_for("probes in flight", lambda: targets.in_flight >= 0.9 * SLOW_ENDPOINTS,
                     timeout=20)
            signalled = time.monotonic()
            proc.send(sig)
            status = proc.wait(timeout=10)
            took = time.monotonic() - signalled
        assert status == 0, proc.stderr[-3000:]
        assert took < 2.0, f"took {took:.2f}s to stop"
        # Nothing left hanging on the targets' side either.
        wait_for("the targets to see the probes go", lambda: targets.in_flight == 0, timeout=5)

    document = json.loads(state.read_text())
    assert state.stat().st_ino != inode, "the state file was not rewritten at exit"
    totals = [e["up"] + e["degraded"] + e["down"] for e in document["endpoints"]]
    ups = [e["up"] for e in document["endpoints"]]
    assert len(totals) == SLOW_ENDPOINTS
    # The cancelled cycle is not counted; only a probe that completed before the signal (none,
    # unless this machine took 3 s to get here) could add to the restored four.
    assert all(4 <= t <= 5 for t in totals)
    assert ups == [3] * SLOW_ENDPOINTS
    # The final report is printed, and it shows exactly what the state file keeps.
    reports = proc.reports
    assert len(reports) == 1, proc.stdout
    assert reports[-1].domains == {"127.0.0.1": 100 * sum(ups) // sum(totals)}
    assert proc.stdout.endswith("---\n")
    assert "Traceback" not in proc.stderr


def _wait_channels(pid: int) -> list[str]:
    channels = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            channels.append((task / "wchan").read_text())
        except OSError:
            continue  # the thread ended meanwhile
    return channels


def kernel_shows_wait_channels(pid: int) -> bool:
    """Some kernels hide wait channels (every wchan reads "0")."""
    return any(channel not in ("", "0") for channel in _wait_channels(pid))


def blocked_in_fifo_open(pid: int) -> bool:
    return any(channel in ("wait_for_partner", "fifo_open") for channel in _wait_channels(pid))


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    """A second signal exits even while the graceful shutdown is stuck.

    The config path is swapped for a FIFO and a reload requested: the reload's reader thread
    blocks in open() until a writer appears, which never happens, so a graceful exit would
    wait for that thread.
    """
    config = tmp_path / "endpoints.yaml"
    with Targets() as targets:
        write_config(config, [("ok", targets.url("/ok"))])
        with ExporterProcess(config, "-f", "1") as proc:
            proc.wait_reports(1)
            fifo = tmp_path / "fifo"
            os.mkfifo(fifo)
            os.replace(fifo, config)
            proc.send(signal.SIGHUP)
            if kernel_shows_wait_channels(proc.proc.pid):
                wait_for("the reload to block on the FIFO",
                         lambda: blocked_in_fifo_open(proc.proc.pid), timeout=10)
            proc.send(signal.SIGTERM)
            proc.wait_stderr("stop requested")
            signalled = time.monotonic()
            proc.send(signal.SIGINT)
            status = proc.wait(timeout=10)
            took = time.monotonic() - signalled
        assert took < 1.0, f"took {took:.2f}s after the second signal"
        assert status == 1, proc.stderr[-3000:]
        assert "second stop signal" in proc.stderr


def test_once_exit_codes(tmp_path: Path) -> None:
    with Targets() as targets:
        cases = {
            "all-up": ([("a", targets.url("/ok?id=1")), ("b", targets.url("/ok?id=2"))], 0),
            "one-500": ([("a", targets.url("/ok?id=1")), ("b", targets.url("/error"))], 1),
            "one-refused": ([("a", targets.url("/ok?id=1")), ("b", "http://127.0.0.1:1/")], 1),
            "one-slow": ([("a", targets.url("/slow?ms=700"))], 1),
        }
        for case, (endpoints, expected) in cases.items():
            config = write_config(tmp_path / f"{case}.yaml", endpoints)
            with ExporterProcess(config, "--once", listen=False) as proc:
                status = proc.wait(timeout=30)
            assert status == expected, (case, proc.stderr[-2000:])
            assert len(proc.reports) == 1, (case, proc.stdout)


def test_run_duration_stops_by_itself(tmp_path: Path) -> None:
    with Targets() as targets:
        config = write_config(tmp_path / "endpoints.yaml", [("a", targets.url("/ok"))])
        started = time.monotonic()
        with ExporterProcess(config, "-f", "0.5", "-r", "2") as proc:
            status = proc.wait(timeout=20)
        took = time.monotonic() - started
    assert status == 0, proc.stderr[-2000:]
    # Start-up (imports, warm-up) comes on top of the 2 s.
    assert 2.0 <= took < 10.0
    # Cycles at 0, 0.5, 1 and 1.5 s (the one at 2 s may be cut off), then the final report.
    assert 4 <= len(proc.reports) <= 6, proc.stdout
    assert all(r.domains == {"127.0.0.1": 100} for r in proc.reports)
