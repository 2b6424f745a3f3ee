"""The SVG badges through httpx.ASGITransport, against a real Exporter and real probes.

Every badge is parsed as XML: a badge that does not parse is a broken image in a README.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from availability_exporter.badges import (
    AMBER,
    GREEN,
    GREY,
    RED,
    availability_colour,
)
from tests.web_harness import (
    INTERVAL,
    MARKUP_NAME,
    Endpoints,
    exporter_client,
    run,
    run_cycles,
    write,
)

# Every test here has ${WEB_TEST_TOKEN} set (the "fast ok" endpoint's header uses it).
pytestmark = pytest.mark.usefixtures("web_token")

SVG_NS = "{http://www.w3.org/2000/svg}"


def parse(response: httpx.Response) -> tuple[list[str], str]:
    """The badge's texts (label, message) and its message colour, from the parsed XML."""
    assert response.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert response.headers["cache-control"] == f"max-age={int(INTERVAL)}"
    root = ET.fromstring(response.content)  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG_NS}svg"
    assert not list(root.iter(f"{SVG_NS}script"))
    texts = [t.text or "" for t in root.iter(f"{SVG_NS}text")]
    # Each text is drawn twice (shadow, then text), label first.
    assert texts[0] == texts[1] and texts[2] == texts[3]
    rects = [r for r in root.iter(f"{SVG_NS}rect") if r.get("fill", "").startswith("#")]
    colour = rects[-1].get("fill") or ""  # the clip rect is white; the message is last
    return [texts[1], texts[3]], colour


def endpoint_badge(name: str) -> str:
    return f"/badge/endpoint/{quote(name, safe='')}.svg"


def test_endpoint_badges_say_the_state_in_its_colour(
        web_targets: Endpoints, tmp_path: Path) -> None:
    names = ("fast ok", "server error", "slow one")
    config = write(tmp_path / "e.yaml", web_targets.config(*names))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            response = await client.get(endpoint_badge("fast ok"))
            assert response.status_code == 200
            assert parse(response) == (["fast ok", "pending"], GREY)
            await run_cycles(exporter)
            found = {}
            for name in names:
                response = await client.get(endpoint_badge(name))
                assert response.status_code == 200
                found[name] = parse(response)
            assert found == {"fast ok": (["fast ok", "up"], GREEN),
                             "server error": (["server error", "down"], RED),
                             "slow one": (["slow one", "degraded"], AMBER)}

    run(body())


def test_domain_badges_show_availability(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok", "second ok", "server error"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            response = await client.get("/badge/domain/localhost.svg")
            assert parse(response) == (["localhost", "no data"], GREY)
            await run_cycles(exporter)
            response = await client.get("/badge/domain/localhost.svg")
            assert response.status_code == 200
            assert parse(response) == (["localhost", "100%"], GREEN)
            response = await client.get("/badge/domain/127.0.0.1.svg")
            assert parse(response) == (["127.0.0.1", "50%"], RED)

    run(body())


def test_unknown_names_get_a_not_found_badge(web_targets: Endpoints, tmp_path: Path) -> None:
    config = write(tmp_path / "e.yaml", web_targets.config("fast ok"))

    async def body() -> None:
        async with exporter_client(config) as (_, client):
            for path, label in ((endpoint_badge("nope"), "nope"),
                                ("/badge/domain/nowhere.example.svg", "nowhere.example")):
                response = await client.get(path)
                assert response.status_code == 404
                assert parse(response) == ([label, "not found"], GREY)
            assert (await client.get("/badge/endpoint/fast ok.png")).status_code == 404
            assert (await client.get("/badge/other/x.svg")).status_code == 404
            assert (await client.post(endpoint_badge("fast ok"))).status_code == 405

    run(body())


def test_names_are_inert_in_svg(web_targets: Endpoints, tmp_path: Path) -> None:
    """A name with markup, quotes, an ampersand and a slash is text in the badge, nothing else."""
    name = "<script>alert('x')</script>/" + MARKUP_NAME
    config = write(tmp_path / "e.yaml", (
        f"- name: {json.dumps(name)}\n  url: {web_targets.server.url('/ok')}\n"))

    async def body() -> None:
        async with exporter_client(config) as (exporter, client):
            await run_cycles(exporter)
            response = await client.get(endpoint_badge(name))
            assert response.status_code == 200
            assert "<script" not in response.text and "<img" not in response.text
            texts, colour = parse(response)
            # Long names are cut with an ellipsis; what shows is the name's own text.
            assert name.startswith(texts[0].rstrip("…")) and texts[1] == "up"
            assert colour == GREEN
            title = ET.fromstring(response.content).find(
                "{http://www.w3.org/2000/svg}title")
            assert title is not None and (title.text or "").endswith(": up")

    run(body())


@pytest.mark.parametrize(("percent", "colour"), [
    (100, GREEN), (99, GREEN), (98, AMBER), (95, AMBER), (94, RED), (0, RED)])
def test_availability_thresholds(percent: int, colour: str) -> None:
    assert availability_colour(percent) == colour
