"""The HTTP interface through httpx.ASGITransport, against a real Exporter and real probes.

Each test builds a daemon.Exporter from Settings and a temporary endpoints file, drives its
scheduler for whole cycles against a local target server, and asks web.App what an SRE or
Prometheus would ask.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import cast
from urllib.parse import quote

import httpx
import pytest

from tests.targets import Metrics, parse_metrics, sample
from tests.test_metrics import parse_openmetrics
from tests.web_harness import (
    ENV_SECRET,
    INTERVAL,
    MARKUP_NAME,
    SECRET,
    Endpoints,
    exporter_client,
    run,
    run_cycles,
    write,
)

# Every test here has ${WEB_TEST_TOKEN} set (the "fast ok" endpoint's header uses it).
pytestmark = pytest.mark.usefixtures("web_token")

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


async def get_metrics(client: httpx.AsyncClient) -> Metrics:
    response = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    return parse_metrics(response.text)


def probes(found: Metrics, endpoint: str, domain: str) -> dict[str, float | None]:
    return {result: sample(found, "availability_probes_total", endpoint=endpoint, domain=domain,
                           result=result) for result in ("up", "degraded", "down")}


@dataclass
class Row:
    attrs: dict[str, str | None]
    cells: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """What a person reads on a page: tables by id (rows of cell texts), links, meta tags."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[Row]] = {}
        self.links: list[str] = []
        self.metas: list[dict[str, str | None]] = []
        self._table: str | None = None
        self._row: Row | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        elif tag == "meta":
            self.metas.append(attributes)
        elif tag == "table":
            self._table = attributes.get("id") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr":
            self._row = Row(attributes)
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def endpoint_states(self) -> dict[str, str]:
        """endpoint name -> the state column, from the rows that carry data-endpoint."""
        return {
            row.attrs["data-endpoint"] or "": row.cells[2]
            for row in self.tables["endpoints"] if "data-endpoint" in row.attrs
        }


# -- /metrics ---------------------------------------------------------------------------------

def test_metrics_text_by_default(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error", "slow one",
                                                       "refused"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            before = await get_metrics(client)
            assert probes(before, "fast ok", "127.0.0.1") == {"up": 0, "degraded": 0, "down": 0}
            await run_cycles(exporter)
            response = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
            assert response.status_code == 200
            # prometheus-client >= 0.22 says version=1.0.0 for the same classic text syntax.
            content_type = response.headers["content-type"]
            assert content_type.startswith(("text/plain; version=0.0.4",
                                            "text/plain; version=1.0.0")), content_type
            assert "content-encoding" not in response.headers
            assert "# EOF" not in response.text
            assert SECRET not in response.text and ENV_SECRET not in response.text
            found = await get_metrics(client)
            assert probes(found, "fast ok", "127.0.0.1") == {"up": 1, "degraded": 0, "down": 0}
            assert probes(found, "slow one", "localhost") == {"up": 0, "degraded": 1, "down": 0}
            for name, reason in (("server error", "status"), ("slow one", "slow"),
                                 ("refused", "connect")):
                domain = "localhost" if name == "slow one" else "127.0.0.1"
                assert sample(found, "availability_probe_failures_total", endpoint=name,
                              domain=domain, reason=reason) == 1, name
            assert sample(found, "availability_http_status_code", endpoint="server error",
                          domain="127.0.0.1") == 500
            assert sample(found, "availability_ratio", domain="127.0.0.1") == 1 / 3
            assert sample(found, "availability_ratio", domain="localhost") == 0.0
            assert sample(found, "availability_exporter_cycles_total") == 1
            assert sample(found, "availability_exporter_endpoints") == 4

    run(body())


def test_metrics_openmetrics_when_asked(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            response = await client.get("/metrics", headers={
                "Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "identity"})
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/openmetrics-text")
            assert response.text.endswith("# EOF\n")
            assert response.text.count("# EOF") == 1
            families = {f.name: f for f in parse_openmetrics(response.text)}
            up = [s for s in families["availability_probes"].samples
                  if s.labels == {"endpoint": "fast ok", "domain": "127.0.0.1", "result": "up"}]
            assert [s.value for s in up] == [1]

    run(body())


def _without_process_metrics(text: str) -> list[str]:
    # CPU seconds, memory and open fds change between two scrapes; everything else must not.
    return [line for line in text.splitlines() if "process_" not in line]


def test_metrics_gzip_decompresses_to_the_same_text(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
            async with client.stream("GET", "/metrics",
                                     headers={"Accept-Encoding": "gzip"}) as response:
                assert response.status_code == 200
                assert response.headers["content-encoding"] == "gzip"
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            assert raw[:2] == b"\x1f\x8b"
            assert _without_process_metrics(gzip.decompress(raw).decode()) == (
                _without_process_metrics(plain.text))

    run(body())


def test_gzip_scrape_after_a_report_shows_that_cycle(
        web_targets: Endpoints, tmp_path: Path) -> None:
    """Gzip scrapes are served from a copy rebuilt after each cycle; the report never waits.

    The report is out as soon as the cycle's last probe is counted.  A gzip scrape while the
    copy is rebuilt gets the previous one at once (the cycle before, never older); once the
    build is done it shows the cycle.
    """
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error"))

    async def gzip_counts(client: httpx.AsyncClient) -> list[float | None]:
        response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip"
        found = parse_metrics(response.text)
        return [sum(v or 0.0 for v in probes(found, name, "127.0.0.1").values())
                for name in ("fast ok", "server error")]

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            out = exporter.out
            assert isinstance(out, io.StringIO)
            assert await gzip_counts(client) == [0.0, 0.0]  # from now on gzip is rebuilt
            for cycle in (1, 2, 3):
                await run_cycles(exporter)
                assert out.getvalue().count("---") == cycle  # on the beat
                assert await gzip_counts(client) in ([cycle - 1] * 2, [cycle] * 2)
                await exporter.snapshot.settled()
                assert await gzip_counts(client) == [cycle, cycle]
            await exporter.snapshot.settled()

    run(body())


# -- the status pages ---------------------------------------------------------------------------

def test_index_lists_every_endpoint_and_its_state(web_targets: Endpoints, tmp_path: Path) -> None:
    names = ("fast ok", "server error", "slow one", "refused")
    config = write(tmp_path / "e.yaml", web_targets.config(*names))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            response = await client.get("/")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert Page(response.text).endpoint_states() == dict.fromkeys(names, "pending")
            await run_cycles(exporter)
            response = await client.get("/")
            page = Page(response.text)
            assert page.endpoint_states() == {
                "fast ok": "up", "server error": "down", "slow one": "degraded",
                "refused": "down"}
            assert "/metrics" in page.links
            for name in names:
                assert f"/endpoint?name={quote(name, safe='')}" in page.links
            refresh = [m for m in page.metas if m.get("http-equiv") == "refresh"]
            assert len(refresh) == 1 and int(refresh[0]["content"] or "0") >= INTERVAL
            domains = {row.attrs["data-domain"]: row.cells[1] for row in page.tables["domains"]
                       if "data-domain" in row.attrs}
            assert domains == {"127.0.0.1": "33%", "localhost": "0%"}
        # The header really went out, so its absence from the page means something.
        sent = [r.headers for r in web_targets.server.seen if r.path == "/ok"]
        assert any(h.get("Authorization") == f"Bearer {SECRET}" for h in sent)
        assert any(h.get("X-Api-Key") == ENV_SECRET for h in sent)
        assert SECRET not in response.text and ENV_SECRET not in response.text

    run(body())


def test_endpoint_page_shows_results_reasons_and_errors(web_targets: Endpoints,
                                                         tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error", "refused"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            response = await client.get("/endpoint", params={"name": "server error"})
            assert response.status_code == 200
            assert "Not probed yet" in response.text
            await run_cycles(exporter, 2)

            page = Page((await client.get("/endpoint",
                                          params={"name": "server error"})).text)
            history = [row.cells for row in page.tables["history"][1:]]
            assert len(history) == 2
            # finished, state, reason, status, duration, five phases, message
            assert [(c[1], c[2], c[3], c[-1]) for c in history] == [
                ("down", "status", "500", "the server answered 500 Internal Server Error")] * 2

            page = Page((await client.get("/endpoint", params={"name": "refused"})).text)
            last = page.tables["history"][1].cells
            assert (last[1], last[2]) == ("down", "connect")
            assert "refused" in last[-1].lower(), last[-1]

            response = await client.get("/endpoint", params={"name": "fast ok"})
            page = Page(response.text)
            assert [row.cells[1] for row in page.tables["history"][1:]] == ["up", "up"]
            assert "Authorization" in response.text  # the header's name, never its value
            assert SECRET not in response.text and ENV_SECRET not in response.text
            assert any(m.get("http-equiv") == "refresh" for m in page.metas)

            missing = await client.get("/endpoint", params={"name": "no such endpoint"})
            assert missing.status_code == 404
            assert "no such endpoint" in missing.text

    run(body())


def test_pages_escape_names_errors_and_query_values(web_targets: Endpoints, tmp_path: Path) -> None:
    """Names come from the config and errors from remote servers: neither may become markup."""
    config = write(tmp_path / "e.yaml", (
        f"- name: {json.dumps(MARKUP_NAME)}\n  url: {web_targets.server.url('/error')}\n"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            pages = [
                await client.get("/"),
                await client.get("/", params={"domain": MARKUP_NAME}),
                await client.get("/endpoint", params={"name": MARKUP_NAME}),
                await client.get("/endpoint", params={"name": "<i>" + MARKUP_NAME}),
            ]
            # An unknown domain filter is refused (400), its value echoed, escaped.
            assert [p.status_code for p in pages] == [200, 400, 200, 404]
            for response in pages:
                assert "<img" not in response.text and "<i>" not in response.text
                assert "&lt;img src=x onerror=&#39;alert(1)&#39;&gt; &#34;quoted&#34; &amp; co" \
                    in response.text
            # What a browser shows is the name itself, and the link leads to its page.
            page = Page(pages[0].text)
            assert page.endpoint_states() == {MARKUP_NAME: "down"}
            assert f"/endpoint?name={quote(MARKUP_NAME, safe='')}" in page.links
            history = Page(pages[2].text).tables["history"][1].cells
            assert (history[1], history[-1]) == (
                "down", "the server answered 500 Internal Server Error")

    run(body())


# -- health, readiness --------------------------------------------------------------------------

def test_healthy_until_three_intervals_without_a_cycle(web_targets: Endpoints,
                                                       tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            assert (await client.get("/-/healthy")).status_code == 200  # just started
            await run_cycles(exporter)
            assert (await client.get("/-/healthy")).status_code == 200
            cycle = exporter.scheduler.cycle_stats
            now = asyncio.get_running_loop().time()
            cycle.last_completed = now - 3 * INTERVAL + 1
            assert (await client.get("/-/healthy")).status_code == 200
            cycle.last_completed = now - 3 * INTERVAL - 1
            response = await client.get("/-/healthy")
            assert response.status_code == 503
            assert "3 intervals" in response.text
            # Never completed a cycle, long after start: just as unhealthy.
            cycle.last_completed = None
            exporter.started -= 3 * INTERVAL + 1
            assert (await client.get("/-/healthy")).status_code == 503

    run(body())


def test_ready_after_the_first_cycle(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            assert (await client.get("/-/ready")).status_code == 503
            await run_cycles(exporter)
            assert (await client.get("/-/ready")).status_code == 200

    run(body())


# -- reload -------------------------------------------------------------------------------------

def test_reload_adds_and_removes_endpoints_and_keeps_counts(web_targets: Endpoints,
                                                            tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            write(config, web_targets.config("fast ok", "second ok"))
            response = await client.post("/-/reload")
            assert response.status_code == 200, response.text
            found = await get_metrics(client)
            assert probes(found, "fast ok", "127.0.0.1") == {"up": 1, "degraded": 0, "down": 0}
            assert probes(found, "second ok", "localhost") == {"up": 0, "degraded": 0, "down": 0}
            assert probes(found, "server error", "127.0.0.1") == dict.fromkeys(
                ("up", "degraded", "down"))
            assert not any(dict(labels).get("endpoint") == "server error"
                           for _, labels in found)
            # The domain now counts only endpoints of the current config: 1 up of 1.
            assert sample(found, "availability_ratio", domain="127.0.0.1") == 1.0
            assert sample(found, "availability_exporter_config_last_reload_successful") == 1
            await run_cycles(exporter)
            found = await get_metrics(client)
            assert probes(found, "fast ok", "127.0.0.1")["up"] == 2
            assert probes(found, "second ok", "localhost")["up"] == 1
            assert cast(io.StringIO, exporter.out).getvalue().splitlines()[-3:] == [
                "127.0.0.1 has 100% availability percentage",
                "localhost has 100% availability percentage", "---"]

    run(body())


def test_bad_reload_keeps_the_old_config_running(web_targets: Endpoints, tmp_path: Path) -> None:
    good = web_targets.config("fast ok", "server error")
    config = write(tmp_path / "e.yaml", good)

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            write(config, good + "  colour: red\n")
            response = await client.post("/-/reload")
            assert response.status_code == 500
            # A short answer: no path and no config text (they can hold a URL password).
            assert str(tmp_path) not in response.text and "colour" not in response.text
            assert response.text == "failed to reload config: see the exporter's log\n"
            # The details are in the log; the page says only that the reload failed.
            found = await get_metrics(client)
            assert sample(found, "availability_exporter_config_last_reload_successful") == 0
            assert "reload failed" in (await client.get("/")).text
            await run_cycles(exporter)
            found = await get_metrics(client)
            assert probes(found, "fast ok", "127.0.0.1")["up"] == 2
            assert probes(found, "server error", "127.0.0.1")["down"] == 2
            write(config, good)
            assert (await client.post("/-/reload")).status_code == 200
            found = await get_metrics(client)
            assert sample(found, "availability_exporter_config_last_reload_successful") == 1
            assert probes(found, "fast ok", "127.0.0.1")["up"] == 2

    run(body())


def test_reload_needs_post_and_unknown_paths_are_404(
        web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok"))

    async def body() -> None:
        async with exporter_client(config) as (_, client):
            for method in ("GET", "PUT", "DELETE"):
                response = await client.request(method, "/-/reload")
                assert response.status_code == 405, method
                assert response.headers["allow"] == "POST"
            assert (await client.get("/nope")).status_code == 404

    run(body())


# -- issue 14: strips, sparklines, since-times, pages, words ------------------------------------

def test_index_strips_sparklines_since_and_pages(web_targets: Endpoints, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from availability_exporter import pages

    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "server error", "slow one",
                                                       "refused"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter, 3)
            text = (await client.get("/")).text
            page = Page(text)
            rows = {row.attrs["data-endpoint"]: row.cells for row in page.tables["endpoints"]
                    if "data-endpoint" in row.attrs}
            # Most urgent first: the down ones (the longest down first), degraded, then up.
            assert set(list(rows)[:2]) == {"server error", "refused"}
            assert list(rows)[2:] == ["slow one", "fast ok"]
            first_down = [exporter.stats.get(name or "") for name in list(rows)[:2]]
            assert [s.since for s in first_down if s] == sorted(s.since or 0 for s in first_down
                                                               if s)
            assert rows["server error"][3].startswith("down for ")
            assert rows["slow one"][3].startswith("degraded for ")
            assert "since " in rows["fast ok"][3] and rows["fast ok"][3].endswith("UTC")
            assert rows["refused"][6].startswith("connection refused")
            # Three bars per strip, each with its tooltip; one sparkline per row.
            assert text.count('<rect class="down"') == 6
            assert text.count('<rect class="degraded"') == 3
            assert text.count('<rect class="up"') == 3
            assert text.count('class="spark"') == 4
            assert "<script" not in text.lower()

            monkeypatch.setattr(pages, "PAGE_ROWS", 3)
            first = Page((await client.get("/")).text)
            assert len(first.endpoint_states()) == 3 and "/?page=2" in first.links
            second = Page((await client.get("/", params={"page": "2"})).text)
            assert second.endpoint_states() == {"fast ok": "up"}
            down = Page((await client.get("/", params={"state": "down"})).text)
            assert set(down.endpoint_states()) == {"server error", "refused"}
            for bad in ({"state": "sideways"}, {"page": "0"}, {"colour": "red"}):
                response = await client.get("/", params=bad)
                assert response.status_code == 400, bad
                assert "state" in response.text

    run(body())


def test_endpoint_page_dashes_words_and_chart(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("slow one", "refused"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            response = await client.get("/endpoint", params={"name": "slow one"})
            page = Page(response.text)
            settings = {row.cells[0]: row.cells[1] for row in page.tables["settings"]}
            assert settings["follow redirects"] == "yes (at most 10)"
            assert settings["verify TLS"].startswith("yes")
            assert settings["HTTP/2"] == "no" and settings["proxy"] == "no"
            header = page.tables["history"][0].cells
            cells = dict(zip(header, page.tables["history"][1].cells, strict=True))
            assert cells["tls"] == "\N{EN DASH}"  # plain HTTP: no TLS phase at all
            assert cells["wait"].endswith(" ms")
            assert cells["message"].startswith("answered, but slower than the latency")
            assert "over the 500 ms threshold" in cells["message"]  # the technical line
            assert 'class="chart"' in response.text and 'class="ph-wait"' in response.text

            page = Page((await client.get("/endpoint", params={"name": "refused"})).text)
            header = page.tables["history"][0].cells
            cells = dict(zip(header, page.tables["history"][1].cells, strict=True))
            # Refused while connecting: nothing after connect happened.
            assert [cells[p] for p in ("tls", "request", "wait", "transfer")] == (
                ["\N{EN DASH}"] * 4)
            assert cells["message"].startswith("connection refused (nothing listens")

    run(body())


def test_shutdown_cancellations_are_not_logged_as_crashes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn logs a response task our shutdown cancels as "Exception in ASGI application"
    with a traceback; that one record is dropped, every other error still shows."""
    logger = logging.getLogger("uvicorn.error")  # web (imported above) filters it
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    for error in (asyncio.CancelledError(), ValueError("a real bug")):
        try:
            raise error
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
    assert [r.exc_info[1].__class__ for r in caplog.records if r.exc_info] == [ValueError]
