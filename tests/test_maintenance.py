"""Maintenance windows: cron and one-off windows in a time zone, and how they move the counts.

Time is an argument everywhere (``Windows.active(when)``, a result's ``finished_at``), so the
clock here is a list of chosen instants around a window's start and end: no waiting.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from availability_exporter import statefile
from availability_exporter.config import ConfigError, Defaults, parse_config
from availability_exporter.maintenance import CronWindow, OneOffWindow, Windows
from availability_exporter.model import Endpoint, ProbeResult, State
from availability_exporter.stats import SavedCounts, Stats
from tests.factories import exposition, load_examples_file


def ts(text: str, zone: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


# 2026-11-29 is a Sunday.
SUNDAY_0200 = ts("2026-11-29T02:00:00")


def endpoints(yaml_text: str) -> tuple[Endpoint, ...]:
    return parse_config(yaml_text.encode(), "t.yaml", Defaults()).endpoints


SUNDAY = """\
- name: a
  url: http://shop.example.com/a
  maintenance: &sunday
    - cron: "0 2 * * 0"
      duration: 3600
      time_zone: UTC
- name: b
  url: http://shop.example.com/b
  maintenance: *sunday
- name: c
  url: http://other.example.com/
"""


@pytest.mark.parametrize(("when", "active"), [
    ("2026-11-29T01:59:59", False),
    ("2026-11-29T02:00:00", True),   # the start is inside
    ("2026-11-29T02:30:00", True),
    ("2026-11-29T02:59:59.999", True),
    ("2026-11-29T03:00:00", False),  # the end is outside
    ("2026-11-28T02:30:00", False),  # a Saturday
    ("2026-12-06T02:15:00", True),   # next Sunday
])
def test_sunday_two_to_three_utc(when: str, active: bool) -> None:
    (a, *_) = endpoints(SUNDAY)
    assert a.maintenance is not None
    assert a.maintenance.active(ts(when)) is active


def test_answers_stay_right_when_time_goes_back_and_forth() -> None:
    window = CronWindow("0 2 * * 0", 3600.0, ZoneInfo("UTC"))
    instants = [SUNDAY_0200 + d for d in (-1, 0, 1800, 3599, 3600, -7 * 86400, 1800, -1)]
    assert [window.active(t) for t in instants] == [
        False, True, True, True, False, True, True, False]


def test_a_named_time_zone_follows_daylight_saving() -> None:
    # 02:00-03:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
    window = Windows((CronWindow("0 2 * * *", 3600.0, ZoneInfo("Europe/Berlin")),))
    assert window.active(ts("2026-01-15T01:30:00"))
    assert not window.active(ts("2026-01-15T00:30:00"))
    assert window.active(ts("2026-07-15T00:30:00"))
    assert not window.active(ts("2026-07-15T01:30:00"))


def test_a_window_longer_than_its_period_stays_active() -> None:
    window = CronWindow("0 * * * *", 5400.0, ZoneInfo("UTC"))  # hourly, 90 minutes each
    assert all(window.active(SUNDAY_0200 + m * 60) for m in range(0, 180, 7))


def test_one_off_window_with_and_without_offset() -> None:
    (ep,) = endpoints("""\
- name: a
  url: http://x.example.com/
  maintenance:
    - start: 2026-12-24T18:00:00+01:00
      end: "2026-12-26T08:00:00"
      time_zone: Europe/Berlin
""")
    assert ep.maintenance is not None
    assert not ep.maintenance.active(ts("2026-12-24T16:59:59"))
    assert ep.maintenance.active(ts("2026-12-24T17:00:00"))
    assert ep.maintenance.active(ts("2026-12-26T06:59:59"))
    assert not ep.maintenance.active(ts("2026-12-26T07:00:00"))
    assert OneOffWindow(1.0, 2.0).active(1.0) and not OneOffWindow(1.0, 2.0).active(2.0)


def result(when: float, state: State = State.DOWN) -> ProbeResult:
    reason = {State.UP: None, State.DEGRADED: "slow", State.DOWN: "status"}[state]
    return ProbeResult(state=state, reason=reason, status_code=500 if reason else 200,
                       duration=0.0625, phases=(0.0, 0.0, 0.0, 0.0625, 0.0),
                       finished_at=when, cert_not_after=None, error=None)


def samples(stats: Stats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = b"".join(exposition(stats, CollectorRegistry())).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_the_window_moves_probes_between_the_two_counters() -> None:
    stats = Stats()
    stats.apply(endpoints(SUNDAY))
    a, b, c = (stats.get(n) for n in "abc")
    assert a is not None and b is not None and c is not None
    labels = {"endpoint": "a", "domain": "shop.example.com"}
    # Every series exists, zero, before the first probe.
    found = samples(stats)
    assert metric(found, "availability_maintenance_probes_total", **labels) == 0
    assert metric(found, "availability_endpoint_maintenance", **labels) == 0
    clock = [SUNDAY_0200 - 30, SUNDAY_0200 - 15]  # before the window: counted as usual
    for now in clock:
        for tracked in (a, b, c):
            assert stats.record(tracked, result(now, State.UP))
    assert stats.report() == (
        "shop.example.com has 100% availability percentage\n"
        "other.example.com has 100% availability percentage\n---\n")
    for now in (SUNDAY_0200, SUNDAY_0200 + 15, SUNDAY_0200 + 3599):  # inside: an outage
        for tracked in (a, b, c):
            assert stats.record(tracked, result(now, State.DOWN))
    found = samples(stats)
    assert metric(found, "availability_probes_total", result="up", **labels) == 2
    assert metric(found, "availability_probes_total", result="down", **labels) == 0
    assert metric(found, "availability_probe_failures_total", reason="status", **labels) == 0
    assert metric(found, "availability_maintenance_probes_total", **labels) == 3
    assert metric(found, "availability_endpoint_maintenance", **labels) == 1
    # The state still shows what the probe found.
    assert metric(found, "availability_endpoint_state", state="down", **labels) == 1
    assert metric(found, "availability_ratio", domain="shop.example.com") == 1.0
    assert metric(found, "availability_ratio", domain="other.example.com") == 2 / 5
    # The domain whose endpoints are all in maintenance is marked; its figure stands still.
    assert stats.report() == (
        "shop.example.com has 100% availability percentage (maintenance)\n"
        "other.example.com has 40% availability percentage\n---\n")
    stats.record(a, result(SUNDAY_0200 + 3600, State.DOWN))  # the window has ended
    found = samples(stats)
    assert metric(found, "availability_probes_total", result="down", **labels) == 1
    assert metric(found, "availability_maintenance_probes_total", **labels) == 3
    assert metric(found, "availability_endpoint_maintenance", **labels) == 0
    # b's last probe was in the window, a's was not: the domain is no longer all resting.
    assert stats.report().splitlines()[0] == "shop.example.com has 80% availability percentage"


def test_a_domain_only_probed_in_maintenance_is_reported_as_such() -> None:
    stats = Stats()
    stats.apply(endpoints(SUNDAY))
    for name in "ab":
        tracked = stats.get(name)
        assert tracked is not None
        stats.record(tracked, result(SUNDAY_0200 + 60))
    assert stats.report() == "shop.example.com is in maintenance (no probes counted yet)\n---\n"


def test_the_examples_file_honours_both_sentences(tmp_path: Path) -> None:
    """"healthy means 200 and $.status == "UP" and under 300 ms" and "Sunday 02:00-03:00 UTC
    is planned downtime", as written in examples/endpoints.yaml."""
    config = load_examples_file(tmp_path)
    by_name = {e.name: e for e in config.endpoints}
    orders = by_name["orders health"]
    assert orders.latency_threshold == 0.3
    assert orders.expect is not None
    assert orders.expect.status_ok(200) and not orders.expect.status_ok(204)
    json_headers = httpx.Headers({"Content-Type": "application/json"})
    assert orders.expect.failure(json_headers, b'{"status": "UP"}', 16) is None
    failed = orders.expect.failure(json_headers, b'{"status": "DOWN"}', 18)
    assert failed is not None and failed.startswith("expect.json[0] ($.status)")
    for name in ("billing api", "billing web"):
        windows = by_name[name].maintenance
        assert windows is not None
        assert windows.active(SUNDAY_0200) and windows.active(SUNDAY_0200 + 3599)
        assert not windows.active(SUNDAY_0200 + 3600)
        assert not windows.active(SUNDAY_0200 - 1)
    assert by_name["homepage"].maintenance is None and by_name["homepage"].expect is None


@pytest.mark.parametrize(("window", "message"), [
    ({"cron": "61 2 * * 0", "duration": 60}, "maintenance[0].cron '61 2 * * 0' is not a valid"),
    ({"cron": "0 2 * *", "duration": 60}, "is not a valid cron expression"),
    ({"cron": "0 2 * * 0", "duration": 0}, "maintenance[0].duration must be a number of "
                                           "seconds greater than 0"),
    ({"cron": "0 2 * * 0", "duration": -5}, "greater than 0"),
    ({"cron": "0 2 * * 0"}, "maintenance[0]: missing 'duration'"),
    ({"cron": "0 2 * * 0", "duration": 60, "time_zone": "Mars/Olympus"},
     "maintenance[0].time_zone 'Mars/Olympus' is not a known IANA time zone"),
    ({"cron": "0 2 * * 0", "duration": 60, "every": "week"},
     "maintenance[0]: unknown key 'every'"),
    ({"cron": "0 2 * * 0", "duration": 60, "start": "2026-01-01T00:00:00Z"},
     "maintenance[0]: cron and duration cannot go with start"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
     "end must be after start"),
    ({"start": "2026-01-02T00:00:00Z"}, "missing 'end'"),
    ({"start": "tomorrow", "end": "2026-01-01T00:00:00Z"}, "maintenance[0].start must be an "
                                                           "ISO 8601 time"),
])
def test_bad_windows_are_config_errors_with_a_line(
    window: dict[str, object], message: str,
) -> None:
    config = [{"name": "x", "url": "http://127.0.0.1/", "maintenance": [window]}]
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(config, indent=1).encode(), "t.yaml", Defaults())
    problems = info.value.problems
    assert any(message in p for p in problems), problems
    assert all(re.match(r"t\.yaml:\d+: endpoint 'x': ", p) for p in problems), problems


def test_a_bad_anchored_window_is_reported_once() -> None:
    text = SUNDAY.replace('"0 2 * * 0"', '"0 25 * * 0"')
    with pytest.raises(ConfigError) as info:
        endpoints(text)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("t.yaml:4: endpoint 'a': maintenance[0].cron")



@pytest.mark.parametrize("name", ["invalid-expect.yaml", "invalid-maintenance.yaml"])
def test_config_check_reports_every_bad_check_and_window(name: str) -> None:
    path = Path(__file__).parent / "testdata" / name
    expected = [line.removeprefix("# expect: ").replace("{file}", str(path))
                for line in path.read_text().splitlines() if line.startswith("# expect: ")]
    run = subprocess.run([sys.executable, "-m", "availability_exporter", "--config.check",
                          str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert run.stderr.splitlines()[1:] == expected
    assert "Traceback" not in run.stderr


def test_config_check_accepts_both_sentences(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.yaml"
    config.write_text("""\
- name: orders health
  url: https://orders.example.com/health
  latency_threshold: 0.3
  expect:
    status: [200]
    json:
      - {path: $.status, equals: UP}
- name: billing api
  url: https://billing.example.com/api/health
  maintenance:
    - {cron: "0 2 * * 0", duration: 3600, time_zone: UTC}
""")
    run = subprocess.run([sys.executable, "-m", "availability_exporter", "--config.check",
                          str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stderr) == (0, "")


def test_counts_after_a_window_survive_the_state_file(tmp_path: Path) -> None:
    """Probes in a window stay out of every cumulative count, the histogram included, so the
    state file's consistency check (histogram count == up + degraded + down) still holds."""
    stats = Stats()
    stats.apply(endpoints(SUNDAY))
    a = stats.get("a")
    assert a is not None
    for when, state in ((SUNDAY_0200 - 15, State.UP), (SUNDAY_0200, State.DOWN),
                        (SUNDAY_0200 + 15, State.DEGRADED), (SUNDAY_0200 + 3600, State.DOWN)):
        stats.record(a, result(when, state))
    assert (a.up, a.degraded, a.down, a.maintenance) == (1, 0, 1, 2)
    assert sum(a.bucket_counts) == a.total == 2
    path = tmp_path / "state.json"
    key = statefile.url_key(a.endpoint.url)
    statefile.write(path, [("a", key, SavedCounts.of(a))])
    assert statefile.read(path) == {("a", key): SavedCounts.of(a)}
