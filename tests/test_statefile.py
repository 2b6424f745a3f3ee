"""--state.file: atomic writes, every kind of unusable file, and counts across a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from availability_exporter import statefile
from availability_exporter.config import Defaults, parse_config
from availability_exporter.model import REASONS, Endpoint, State
from availability_exporter.stats import BUCKETS, SavedCounts, Stats
from tests.factories import endpoints, result
from tests.needs import binary
from tests.targets import (
    ExporterProcess,
    Metrics,
    Targets,
    endpoint_names,
    parse_metrics,
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


def make_endpoint(name: str, url: str) -> Endpoint:
    text = f"- name: {name}\n  url: '{url}'\n"
    return parse_config(text.encode(), "t.yaml", Defaults()).endpoints[0]


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
    "negative maintenance count": json.dumps(_broken(GOOD, maintenance=-1)).encode(),
    "text maintenance count": json.dumps(_broken(GOOD, maintenance="3")).encode(),
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
        current = [e for e in final["endpoints"] if "removed_at" not in e]
        assert {e["name"] for e in current} == {"ok-1", "ok-2", "ok-3", "switch"}
        # What left the config (and ok-3's old URL) stays 24 h, so an undo restores it.
        removed = [e for e in final["endpoints"] if "removed_at" in e]
        assert sorted(e["name"] for e in removed) == ["error", "ok-3"]


# -- issue 12 item 6: size, values, salt, lock, removed endpoints ------------------------------


def test_urls_are_hashed_with_a_per_file_salt(tmp_path: Path) -> None:
    # A 6-digit ${PIN} in a URL must not be recoverable by hashing the million guesses.
    stats = Stats()
    stats.apply([make_endpoint("a", "http://a/?pin=123456")])
    documents = []
    for index in range(2):
        state = statefile.StateFile(tmp_path / f"state-{index}.json")
        state.restore(stats, statefile.load(state.path))
        state.write(asyncio.run(state.pending(stats)))
        documents.append(json.loads(state.path.read_text()))
    salts = [d["salt"] for d in documents]
    assert len(set(salts)) == 2 and all(len(s) == 32 for s in salts)
    for document, salt in zip(documents, salts, strict=True):
        (entry,) = document["endpoints"]
        assert entry["url_sha256"] == statefile.url_key("http://a/?pin=123456", salt)
        assert entry["url_sha256"] != statefile.url_key("http://a/?pin=123456")
    # The salt is the file's own: a restart keeps it, so the counts come back.
    state = statefile.StateFile(tmp_path / "state-0.json")
    again = Stats()
    again.apply([make_endpoint("a", "http://a/?pin=123456")])
    assert state.restore(again, statefile.load(state.path)) == 1
    assert state.salt == salts[0]


def test_the_copy_for_a_write_hands_the_loop_to_the_probes_between_slices(
        tmp_path: Path) -> None:
    """Copying 10,000 endpoints' counts at once held the loop 20-80 ms after every cycle; a
    probe answered meanwhile would have counted that as its latency."""
    count = 5 * statefile.COPY_SLICE
    stats = Stats()
    stats.apply(endpoints(*(f"http://h{i}.example.org/" for i in range(count))))
    for index, tracked in enumerate(stats):
        for _ in range(index % 3):
            stats.record(tracked, result(State.DOWN))
    state = statefile.StateFile(tmp_path / "state.json")
    state.restore(stats, statefile.load(state.path))

    async def go() -> tuple[statefile.Pending, int]:
        turns = 0
        copying = asyncio.ensure_future(state.pending(stats))
        while not copying.done():
            turns += 1
            await asyncio.sleep(0)
        return copying.result(), turns

    pending, turns = asyncio.run(go())
    assert turns >= count // statefile.COPY_SLICE
    assert [(name, counts.down) for name, _, counts in pending.snap] == [
        (f"e{i}", i % 3) for i in range(count)]
    assert [key for _, key, _ in pending.snap] == [
        statefile.url_key(f"http://h{i}.example.org/", state.salt) for i in range(count)]


def test_a_file_without_salt_still_restores_and_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(GOOD))  # written by a version without salts
    stats = Stats()
    stats.apply([make_endpoint("a", "http://a/")])
    state = statefile.StateFile(path)
    assert state.restore(stats, statefile.load(path)) == 1
    assert stats.get("a") is not None and stats.get("a").up == 2  # type: ignore[union-attr]
    state.write(asyncio.run(state.pending(stats)))
    assert len(json.loads(path.read_text())["salt"]) == 32


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo", "over the size limit"])
def test_a_file_too_big_or_not_regular_is_moved_aside_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    path = tmp_path / "state.json"
    if kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
        aside = "state.json.corrupt"
    elif kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would hang here
        aside = "state.json.corrupt"
    else:
        monkeypatch.setattr(statefile, "MAX_FILE_BYTES", 1000)
        path.write_bytes(b" " * 1001)
        aside = "state.json.too-large"
    with caplog.at_level(logging.WARNING, logger="availability_exporter.statefile"):
        assert statefile.read(path) == {}
    assert not os.path.lexists(path) and os.path.lexists(tmp_path / aside)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert aside in warning and "starting from zero" in warning
    if kind == "over the size limit":
        assert "is larger than the limit of 1000 bytes" in warning


def test_the_real_size_limit_is_64_mib() -> None:
    assert statefile.MAX_FILE_BYTES == 64 * 1024 * 1024


def test_huge_counts_are_clamped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    huge = 10**400
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_broken(GOOD, up=huge, degraded=0, down=0, failures=[0] * len(
        REASONS), buckets=[huge] + [0] * (SLOTS - 1), duration_sum=1e300)))
    with caplog.at_level(logging.WARNING, logger="availability_exporter.statefile"):
        saved = statefile.read(path)
    (counts,) = saved.values()
    assert counts.up == statefile.MAX_COUNT and counts.buckets[0] == statefile.MAX_COUNT
    assert counts.duration_sum == statefile.MAX_COUNT
    assert any("larger than" in r.getMessage() for r in caplog.records)


def test_restored_huge_counts_still_make_a_scrape_promtool_accepts(tmp_path: Path) -> None:
    promtool = binary("promtool")
    huge = 10**400
    with Targets() as targets:
        url = targets.url("/ok")
        config = write_config(tmp_path / "endpoints.yaml", [("a", url)])
        document = good_document()
        document["endpoints"][0].update(
            url_sha256=statefile.url_key(url), up=huge, degraded=0, down=0,
            failures=[0] * len(REASONS), buckets=[huge] + [0] * (SLOTS - 1))
        state = tmp_path / "state.json"
        state.write_text(json.dumps(document))
        with ExporterProcess(config, "-f", INTERVAL, "--state.file", str(state)) as proc:
            proc.wait_stderr("restored counts of 1 endpoints")
            proc.wait_serving()
            text = proc.get("/metrics").text
            proc.send(signal.SIGTERM)
            assert proc.wait() == 0
    total = probes_total(parse_metrics(text), "a")
    assert total is not None and statefile.MAX_COUNT <= total < statefile.MAX_COUNT + 100
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60, check=False)
    assert "error" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr


def test_a_second_instance_on_the_same_state_file_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Targets() as targets:
        config = write_config(tmp_path / "endpoints.yaml", [("a", targets.url("/ok"))])
        args = ("-f", INTERVAL, "--state.file", str(state))
        with ExporterProcess(config, *args) as first:
            first.wait_reports(1)
            with ExporterProcess(config, *args) as second:
                assert second.wait(timeout=60) == 2
            assert "is in use by another process" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
            first.wait_reports(len(first.reports) + 1)  # the first goes on
            first.send(signal.SIGTERM)
            assert first.wait() == 0
        # Released on exit: the next instance starts.
        with ExporterProcess(config, *args) as third:
            third.wait_reports(1)
            third.send(signal.SIGTERM)
            assert third.wait() == 0


def test_removed_endpoints_are_kept_24_hours_for_an_undo(tmp_path: Path) -> None:
    stats = Stats()
    a, b = make_endpoint("a", "http://a/"), make_endpoint("b", "http://b/")
    state = statefile.StateFile(tmp_path / "state.json")
    state.restore(stats, statefile.Saved())
    state.apply(stats, [a, b])
    stats.restore({("b", state.key("http://b/")): counts(7, 1, 1)}, state.key)
    state.apply(stats, [a])  # b removed: kept, and written
    state.write(asyncio.run(state.pending(stats)))
    assert [e["name"] for e in json.loads(state.path.read_text())["endpoints"]] == ["a", "b"]
    # A restart in between keeps it too (the file says since when).
    state = statefile.StateFile(state.path)
    again = Stats()
    state.apply(again, [a])
    state.restore(again, statefile.load(state.path))
    state.apply(again, [a, b])  # the undo
    restored = again.get("b")
    assert restored is not None and (restored.up, restored.degraded, restored.down) == (7, 1, 1)
    # After 24 h it is gone.
    state.apply(again, [a])
    ((key, (saved, _)),) = state.retired.items()
    state.retired[key] = (saved, time.time() - statefile.RETIRED_SECONDS - 1)
    state.write(asyncio.run(state.pending(again)))
    assert [e["name"] for e in json.loads(state.path.read_text())["endpoints"]] == ["a"]


def test_maintenance_probes_survive_a_restart_and_a_removal(tmp_path: Path) -> None:
    """Probes inside maintenance windows are counts too (availability_maintenance_probes_total):
    written and restored like the others, and kept for an undo even for an endpoint that was
    only ever probed in maintenance.  A file from before them (GOOD has no such count)
    restores them as 0 (test_the_good_document_is_usable)."""
    a, b = make_endpoint("a", "http://a/"), make_endpoint("b", "http://b/")
    stats = Stats()
    state = statefile.StateFile(tmp_path / "state.json")
    state.restore(stats, statefile.Saved())
    state.apply(stats, [a, b])
    for name, count in (("a", 3), ("b", 2)):
        tracked = stats.get(name)
        assert tracked is not None
        for _ in range(count):
            tracked.add(result(State.DOWN), maintenance=True)
    state.apply(stats, [a])  # b removed, only ever probed in maintenance: kept
    state.write(asyncio.run(state.pending(stats)))
    again = Stats()
    state = statefile.StateFile(state.path)
    state.apply(again, [a])
    state.restore(again, statefile.load(state.path))
    state.apply(again, [a, b])  # the undo
    restored = {name: again.get(name) for name in ("a", "b")}
    assert {name: (s.maintenance, s.total) for name, s in restored.items() if s} == {
        "a": (3, 0), "b": (2, 0)}


def test_a_file_from_before_a_new_reason_keeps_its_counts(tmp_path: Path) -> None:
    """REASONS grows at its end (``content`` came with response checks): a state file
    written with the older, shorter list still restores, the new reasons at zero."""
    older = REASONS[: REASONS.index("content")]
    document = {**GOOD, "reasons": list(older)}
    document = _broken(document, failures=[1, 1] + [0] * (len(older) - 2))
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document))
    assert statefile.read(path) == {("a", statefile.url_key("http://a/")): SavedCounts(
        2, 1, 1, (1, 1) + (0,) * (len(REASONS) - 2), (4,) + (0,) * (SLOTS - 1), 0.5)}
    # Not a prefix (reordered or renamed): still unusable.
    path.write_text(json.dumps({**GOOD, "reasons": list(reversed(REASONS))}))
    assert statefile.read(path) == {}
