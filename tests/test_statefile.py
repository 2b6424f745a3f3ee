"""--state.file: atomic writes, every kind of unusable file, and counts across a SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from availability_exporter import statefile
from availability_exporter.model import REASONS
from availability_exporter.stats import BUCKETS, SavedCounts
from tests.targets import (
    ExporterProcess,
    Metrics,
    Targets,
    endpoint_names,
    probes_total,
    sample,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

SLOTS = len(BUCKETS) + 1


def counts(up: int, degraded: int = 0, down: int = 0) -> SavedCounts:
    """Consistent counts: every probe in the first bucket, failures as status/slow."""
    failures = [0] * len(REASONS)
    failures[REASONS.index("slow")] = degraded
    failures[REASONS.index("status")] = down
    buckets = [0] * SLOTS
    buckets[0] = up + degraded + down
    return SavedCounts(up, degraded, down, tuple(failures), tuple(buckets),
                       0.001 * (up + degraded + down))


def good_document() -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": statefile.FORMAT,
        "reasons": list(REASONS),
        "buckets": list(BUCKETS),
        "endpoints": [{
            "name": "a", "url_sha256": statefile.url_key("http://a/"), "up": 2, "degraded": 1,
            "down": 1, "failures": [1, 1] + [0] * (len(REASONS) - 2),
            "buckets": [4] + [0] * (SLOTS - 1), "duration_sum": 0.5,
        }],
    }
    return document


# -- unit: write and read -------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    snap = [
        ("a", statefile.url_key("http://a/"), counts(5, 1, 2)),
        ("b ünïcode \"quoted\"", statefile.url_key("https://b/x?y=1"), counts(0)),
        ("c", statefile.url_key("http://c/"), counts(10**15, 0, 3)),
    ]
    statefile.write(path, snap)
    assert statefile.read(path) == {(name, key): c for name, key, c in snap}


def test_urls_are_stored_hashed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    url = "http://h/?token=not-in-the-file"
    statefile.write(path, [("a", statefile.url_key(url), counts(1))])
    assert "not-in-the-file" not in path.read_text()


def test_write_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    statefile.write(path, [("a", "k", counts(1))])
    first_inode = path.stat().st_ino
    statefile.write(path, [("a", "k", counts(2))])
    # A rename, not an overwrite in place: a reader never sees a half-written file.
    assert path.stat().st_ino != first_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert statefile.read(path)[("a", "k")].up == 2


def test_failed_write_keeps_the_previous_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    statefile.write(path, [("a", "k", counts(1))])
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        statefile.write(path, [("a", "k", counts(2))])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "state.json"
    statefile.write(path, [("a", "k", counts(1))])
    assert statefile.read(path) == {("a", "k"): counts(1)}


def test_missing_file_is_a_quiet_fresh_start(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert statefile.read(tmp_path / "absent.json") == {}
    assert caplog.records == []


def _broken(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    endpoint = {**document["endpoints"][0], **changes}
    return {**document, "endpoints": [endpoint]}


GOOD = good_document()
UNUSABLE: dict[str, bytes] = {
    "empty": b"",
    "binary garbage": bytes(range(256)) * 4,
    "truncated": json.dumps(GOOD).encode()[:-20],
    "not utf-8": b'{"format": "\xff\xfe"}',
    "a json list": b"[]",
    "a json number": b"42",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "wrong format": json.dumps({**GOOD, "format": "something/else/v9"}).encode(),
    "no format": json.dumps({k: v for k, v in GOOD.items() if k != "format"}).encode(),
    "other reasons": json.dumps({**GOOD, "reasons": ["slow"]}).encode(),
    "other buckets": json.dumps({**GOOD, "buckets": [1, 2, 3]}).encode(),
    "endpoints not a list": json.dumps({**GOOD, "endpoints": 5}).encode(),
    "endpoint not a mapping": json.dumps({**GOOD, "endpoints": [7]}).encode(),
    "missing count": json.dumps(
        {**GOOD, "endpoints": [{k: v for k, v in GOOD["endpoints"][0].items() if k != "up"}]}
    ).encode(),
    "negative count": json.dumps(_broken(GOOD, up=-1)).encode(),
    "float count": json.dumps(_broken(GOOD, up=2.5)).encode(),
    "boolean count": json.dumps(_broken(GOOD, down=True)).encode(),
    "string count": json.dumps(_broken(GOOD, up="2")).encode(),
    "buckets do not add up": json.dumps(_broken(GOOD, up=3)).encode(),
    "too few failures": json.dumps(_broken(GOOD, failures=[0])).encode(),
    "too many buckets": json.dumps(_broken(GOOD, buckets=[4] + [0] * SLOTS)).encode(),
    "negative duration": json.dumps(_broken(GOOD, duration_sum=-1.0)).encode(),
    "infinite duration": json.dumps(_broken(GOOD, duration_sum=1e999)).encode(),
    "nan duration": json.dumps(_broken(GOOD, duration_sum=float("nan"))).encode(),
    "text duration": json.dumps(_broken(GOOD, duration_sum="soon")).encode(),
}


def test_the_good_document_is_usable(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(GOOD))
    assert statefile.read(path) == {("a", statefile.url_key("http://a/")): SavedCounts(
        2, 1, 1, (1, 1) + (0,) * (len(REASONS) - 2), (4,) + (0,) * (SLOTS - 1), 0.5)}


@pytest.mark.parametrize("content", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_unusable_file_is_moved_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="availability_exporter.statefile"):
        assert statefile.read(path) == {}
    assert not path.exists()
    assert (tmp_path / "state.json.corrupt").read_bytes() == content
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "state.json.corrupt" in warnings[0] and "starting from zero" in warnings[0]
    # The next write starts a fresh, usable file beside the kept-aside one.
    statefile.write(path, [("a", "k", counts(1))])
    assert statefile.read(path) == {("a", "k"): counts(1)}


def test_unreadable_file_is_a_warning_and_stays_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory in the file's place cannot be read, even by root (tests may run as root,
    # where chmod 000 would not stop the read).
    path = tmp_path / "state.json"
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="availability_exporter.statefile"):
        assert statefile.read(path) == {}
    assert path.is_dir()
    assert not (tmp_path / "state.json.corrupt").exists()
    assert any("cannot read state file" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(GOOD))
    path.chmod(0)
    with caplog.at_level(logging.WARNING, logger="availability_exporter.statefile"):
        assert statefile.read(path) == {}
    assert path.exists()
    assert any("cannot read state file" in r.getMessage() for r in caplog.records)


# -- end to end: SIGKILL and restart --------------------------------------------------------

INTERVAL = "0.5"
TIMEOUT = "0.4"


def state_counts(path: Path) -> dict[str, int]:
    """Probes per endpoint name in a state file, read without touching the file."""
    document = json.loads(path.read_text())
    return {e["name"]: e["up"] + e["degraded"] + e["down"] for e in document["endpoints"]}


def state_up(path: Path) -> dict[str, int]:
    return {e["name"]: e["up"] for e in json.loads(path.read_text())["endpoints"]}


def scrape_and_kill(process: ExporterProcess, cycles: int) -> tuple[Metrics, int]:
    """After ``cycles`` reports, scrape and SIGKILL at once.

    Returns the scrape and how many reports were printed between the scrape and the kill
    (normally 0: a cycle has just ended and the next one is an interval away).
    """
    seen = len(process.wait_reports(cycles))
    metrics = process.scrape()
    process.proc.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    return metrics, len(process.reports) - seen


def restored_scrape(process: ExporterProcess) -> Metrics:
    process.wait_serving()
    return process.scrape()


def test_counts_survive_sigkill_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state" / "state.json"
    config = tmp_path / "endpoints.yaml"
    args = ("-f", INTERVAL, "--probe.timeout", TIMEOUT, "--state.file", str(state))
    with Targets() as targets:
        endpoints = [
            ("ok-1", targets.url("/ok?id=1")),
            ("ok-2", targets.url("/ok?id=2")),
            ("ok-3", targets.url("/ok?id=3")),
            ("error", targets.url("/error")),
            ("switch", targets.url("/switch")),
        ]
        write_config(config, endpoints)
        names = [name for name, _ in endpoints]

        # First life: every cycle 4 of 5 up.
        with ExporterProcess(config, *args) as first:
            before, extra = scrape_and_kill(first, 4)
        saved = state_counts(state)
        saved_up = sum(state_up(state).values())
        assert set(saved) == set(names)
        for name in names:
            scraped = probes_total(before, name)
            assert scraped is not None
            # At most one cycle lost; nothing counted that had not been scraped, unless a
            # cycle ended between the scrape and the kill (``extra``).
            assert scraped - 1 <= saved[name] <= scraped + extra, (name, scraped, saved)
        assert min(saved.values()) >= 3

        # Second life: the switch now fails, so a fresh start would report 60 % (3 of 5 up)
        # where the continued figure is (restored up + 3) / (restored total + 5).
        targets.switch_status = 500
        with ExporterProcess(config, *args) as second:
            restored = restored_scrape(second)
            cycles = sample(restored, "availability_exporter_cycles_total")
            assert cycles is not None
            for name in names:
                now = probes_total(restored, name)
                assert now is not None
                assert saved[name] + cycles <= now <= saved[name] + cycles + 1, (name, now)
            first_report = second.wait_reports(1)[0].domains["127.0.0.1"]
            assert first_report == 100 * (saved_up + 3) // (sum(saved.values()) + 5)
            assert first_report > 60
            second.wait_stderr("restored counts of 5 endpoints")
            scrape_and_kill(second, 2)
        saved2 = state_counts(state)
        for name in names:
            assert saved2[name] >= saved[name] + 1

        # Third life: "error" leaves the config and "ok-3" changes its URL.
        changed = [(n, u) for n, u in endpoints if n != "error"]
        changed[2] = ("ok-3", targets.url("/ok?id=3&v=2"))
        write_config(config, changed)
        with ExporterProcess(config, *args) as third:
            metrics = restored_scrape(third)
            cycles = sample(metrics, "availability_exporter_cycles_total")
            assert cycles is not None
            assert endpoint_names(metrics) == {"ok-1", "ok-2", "ok-3", "switch"}
            ok3 = probes_total(metrics, "ok-3")
            assert ok3 is not None and ok3 <= cycles + 1  # the changed URL starts from zero
            for name in ("ok-1", "ok-2", "switch"):
                kept = probes_total(metrics, name)
                assert kept is not None and kept >= saved2[name]
            third.wait_stderr("restored counts of 3 endpoints")
            third.wait_reports(1)
            # The state write after a report runs in the background; a clean stop always
            # writes it (a SIGKILL right after the report could beat that write).
            third.send(signal.SIGTERM)
            assert third.wait() == 0
        final = json.loads(state.read_text())
        assert {e["name"] for e in final["endpoints"]} == {"ok-1", "ok-2", "ok-3", "switch"}
