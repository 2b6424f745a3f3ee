"""Differential test: the exporter's up/down verdict against curl's and httpx's.

One scripted raw HTTP server (tests/differential/server.py) plays every case of
tests/differential/cases.py: framing, status lines, redirects, TLS. Each case is probed by

- the exporter: ``Prober().probe(endpoint)``, up = ``State.UP`` or ``State.DEGRADED`` (the
  latency threshold equals the timeout, so "degraded" cannot hide a slow "up");
- Debian's curl: ``-sS -L --max-redirs 10 --max-time T -o /dev/null -w '%{http_code}'``,
  up = exit status 0 and a 2xx code (a Content-Length body cut short is exit 18: down);
- httpx's default transport: ``httpx.AsyncClient(follow_redirects=True, max_redirects=10)``,
  whole body read under one overall timeout, up = no exception and a 2xx final status.

Where curl and httpx agree, the exporter must agree with them, except for the deliberate
differences in `DIFFERENCES` (also in the README), where it must give its documented verdict.
Where they disagree, nothing is asserted about the exporter (the case is skipped, saying so).
Every case also names the verdict RFC 9110/9112 calls for; the oracles' common verdict must be
it, so a case that does not test what its name says fails loudly instead of passing quietly.

All cases run at once (curl in threads, the exporter and httpx on one event loop, the server
on its own loop in a thread), so the module takes about one timeout plus start-up, not the sum.

`test_no_traceback_in_log` runs the nastiest cases through ``Prober().probe`` under asyncio
and under uvloop and requires a clean log: no "Traceback" in logging or on stderr/stdout, and
no call of the loop's exception handler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from availability_exporter.probe import Prober
from tests.adversarial.certs import CertSet, make_certs
from tests.differential.cases import CASES, Verdict, routes
from tests.differential.oracles import Row, case_url, exporter_outcome, run_all
from tests.differential.server import ScriptServer

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Difference:
    """A case where the exporter deliberately answers otherwise than curl and/or httpx."""

    exporter: Verdict
    oracles: str  # what curl and httpx say
    rfc: str
    why: str


# The exporter's deliberate differences. Keep the README's table ("Differential testing
# against curl and httpx") in step: test_readme_lists_every_difference checks it.
DIFFERENCES: Mapping[str, Difference] = {
    "head-150kib": Difference(
        "down", "curl up (300 KiB limit), httpx down (100 KiB)", "RFC 9110 §5.4",
        "a 100 KiB cap on the response head, the value httpcore gives h11: memory per probe "
        "stays bounded"),
    "cl-conflicting": Difference(
        "down", "curl up (uses one value), httpx down", "RFC 9112 §6.3",
        "two different Content-Length values are an unrecoverable framing error: the "
        "response is discarded"),
    "cl-plus-sign": Difference(
        "down", "curl up, httpx down", "RFC 9110 §8.6",
        "Content-Length is 1*DIGIT; '+5' makes the framing invalid"),
    "cl-too-big": Difference(
        "down", "curl up, httpx down", "RFC 9110 §8.6",
        "a Content-Length past 18 digits cannot be honoured; a recipient must not let it "
        "overflow"),
    "chunked-bare-lf": Difference(
        "down", "curl up, httpx down (waits for CRLF)", "RFC 9112 §7.1",
        "chunk lines end in CRLF; the bare-LF leniency of §2.2 covers the head only"),
    "te-not-chunked": Difference(
        "up", "curl up, httpx down (refuses any coding but chunked)", "RFC 9112 §6.3",
        "a final transfer coding other than chunked means the body runs until close; the "
        "probe discards it undecoded"),
    "status-http12": Difference(
        "up", "curl down (refuses HTTP/1.2), httpx up", "RFC 9110 §2.5",
        "a higher minor version is processed as the highest one implemented, 1.1"),
    "status-http2": Difference(
        "down", "curl up, httpx down", "RFC 9112 §2.3",
        "'HTTP/2' is not HTTP-version (DIGIT '.' DIGIT) on an HTTP/1.1 connection"),
    "status-lowercase-http": Difference(
        "down", "curl up, httpx down", "RFC 9112 §2.3",
        "HTTP-name is case-sensitive"),
}


@pytest.fixture(scope="module")
def curl() -> str:
    path = shutil.which("curl")
    if path is not None:
        return path
    if os.environ.get("REQUIRE_CURL") == "1":
        pytest.fail("curl is not installed (Debian package curl) but REQUIRE_CURL=1")
    pytest.skip("curl is not installed: apt-get install curl (or set REQUIRE_CURL=1 to fail)")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("differential-certs"))


@pytest.fixture(scope="module")
def server(certs: CertSet) -> Iterator[ScriptServer]:
    script = ScriptServer(routes(), certs)
    script.start()
    try:
        yield script
    finally:
        script.stop()


@pytest.fixture(scope="module")
def rows(server: ScriptServer, curl: str, certs: CertSet) -> dict[str, Row]:
    return {row.case.name: row for row in run_all(server, CASES, curl, certs.ca_path)}


def test_case_table_is_sound() -> None:
    names = [case.name for case in CASES]
    assert len(names) >= 60
    assert len(set(names)) == len(names), "case names must be unique (they are paths)"
    assert set(DIFFERENCES) <= set(names), "every difference names a case"


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_exporter_agrees_with_curl_and_httpx(rows: dict[str, Row], name: str) -> None:
    row = rows[name]
    difference = DIFFERENCES.get(name)
    if row.consensus is not None and difference is None:
        # The oracles agreeing on something else than the RFC's verdict means the case (or
        # the harness) is wrong, not the exporter: say that, not "exporter disagrees".
        assert row.consensus == row.case.expect, f"case does not test what it says: " \
            f"{row.describe()}; expected {row.case.expect} ({row.case.about})"
    if difference is not None:
        assert row.exporter.verdict == difference.exporter, \
            f"deliberate difference no longer holds: {row.describe()} ({difference.why})"
        # The table lists real differences only: one that both oracles now share is stale.
        assert difference.exporter in {row.curl.verdict, row.httpx.verdict}, \
            f"not a difference (any more): {row.describe()}; drop it from DIFFERENCES and README"
    elif row.consensus is None:
        pytest.skip(f"curl and httpx disagree, nothing to compare: {row.describe()}")
    else:
        assert row.exporter.verdict == row.consensus, \
            f"exporter disagrees with curl and httpx: {row.describe()} ({row.case.about})"


def test_oracles_agree_on_most_cases(rows: dict[str, Row]) -> None:
    """A harness fault (curl flags, a dead server) would make the oracles agree on nothing or
    on "down" only; this keeps the comparison meaningful."""
    agreed = [row for row in rows.values() if row.consensus is not None]
    disagreed = "\n".join(row.describe() for row in rows.values() if row.consensus is None)
    assert len(agreed) >= 60, f"only {len(agreed)} cases with a consensus:\n{disagreed}"
    assert {row.consensus for row in agreed} == {"up", "down"}


def test_readme_lists_every_difference() -> None:
    section = README.read_text(encoding="utf-8").split(
        "### Differential testing against curl and httpx", 1)
    assert len(section) == 2, "README lacks the differential-testing subsection"
    table = section[1].split("\n#", 1)[0]
    for name, difference in DIFFERENCES.items():
        line = next((line for line in table.splitlines() if f"`{name}`" in line), None)
        assert line is not None, f"README's table lacks `{name}`"
        assert difference.rfc in line, f"README's row for `{name}` lacks {difference.rfc}"


# -- no traceback in the log, under asyncio and uvloop ------------------------------------

NASTY = (
    "tls-close-on-accept", "close-on-accept", "tls-self-signed", "tls-wrong-host",
    "tls-good-cl-short", "cl-10mib-cut-at-1.5mib", "cl-10mib-stall-at-1.5mib",
    "cl-short-then-stall", "chunked-no-last-chunk-stall", "chunked-underscore-size",
    "chunked-size-overflow", "chunked-no-crlf-after-data", "status-garbage", "empty-answer",
    "head-400kib", "cl-conflicting", "header-without-colon", "redirect-loop",
    "redirect-to-closed", "redirect-utf8", "http09-body-only", "close-delimited-stall",
)
NASTY_TIMEOUT = 1.5  # the stall cases end by it


def _runners() -> dict[str, Callable[[Coroutine[Any, Any, None]], None]]:
    import uvloop  # in the test extra; imported here so a missing one fails only this test

    return {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_no_traceback_in_log(server: ScriptServer, certs: CertSet, loop_name: str,
                             caplog: pytest.LogCaptureFixture,
                             capfd: pytest.CaptureFixture[str]) -> None:
    cases = [case for case in CASES if case.name in NASTY]
    assert len(cases) == len(NASTY)
    handler_calls: list[str] = []

    async def probe_all() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(
            lambda _loop, context: handler_calls.append(
                f"{context.get('message')}: {context.get('exception')!r}"))
        prober = Prober(ca_file=str(certs.ca_path))
        try:
            await asyncio.gather(*(
                exporter_outcome(prober, case_url(server, case), case, NASTY_TIMEOUT)
                for case in cases))
        finally:
            await prober.aclose()
        # Let callbacks scheduled by closing transports run while the handler is ours.
        for _ in range(10):
            await asyncio.sleep(0)

    caplog.set_level(logging.DEBUG)
    _runners()[loop_name](probe_all())
    captured = capfd.readouterr()
    logged = caplog.text
    assert not handler_calls, f"loop exception handler called under {loop_name}: {handler_calls}"
    for where, text in (("log", logged), ("stderr", captured.err), ("stdout", captured.out)):
        assert "Traceback" not in text, f"traceback in {where} under {loop_name}:\n{text}"
        assert not re.search(r"Exception in callback|exception was never retrieved", text), \
            f"unhandled error in {where} under {loop_name}:\n{text}"

