"""What a person sees on the status page, in a real headless Chromium driven by Selenium.

The exporter runs as a child process (as in production) probing a local target server; the
browser opens its status page after the first cycle, reads the endpoints table, its strips,
sparklines and since-times, clicks through to one endpoint's page and keeps a screenshot.  A
name made of markup must stay text in the page, the badge and the JSON.

``test_demo_screenshots`` runs ``--demo`` for about 25 one-second cycles and photographs both
pages; with ``SCREENSHOTS_DIR`` set it writes them there (``SCREENSHOTS_DIR=docs`` makes the
README's pictures).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from availability_exporter.badges import LABEL_MAX
from tests.adversarial import refused_port
from tests.needs import binary
from tests.targets import ExporterProcess, Targets

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# A long interval keeps the page's auto refresh (one interval, at least 5 s) from reloading
# it under the test's feet, and leaves exactly one cycle's results on screen.
INTERVAL = 30
# Markup, quotes and an ampersand: if any of it ran, window.pwned would be set.
MARKUP_NAME = """<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> 'q' & co"""
EXPECTED_STATES = {"fast ok": "up", "server error": "down", "slow one": "degraded",
                   "refused": "down", MARKUP_NAME: "up"}
DEMO_INTERVAL = 1
DEMO_CYCLES = 25


def require_browser() -> None:
    binary("chromium")
    binary("chromedriver")


@pytest.fixture()
def exporter(tmp_path: Path) -> Iterator[ExporterProcess]:
    require_browser()
    with Targets() as server:
        config = tmp_path / "endpoints.yaml"
        config.write_text(
            f"- name: fast ok\n  url: {server.url('/ok')}\n"
            f"- name: server error\n  url: {server.url('/error')}\n"
            f"- name: slow one\n  url: {server.url('/slow', host='localhost')}\n"
            f"- name: refused\n  url: http://127.0.0.1:{refused_port()}/\n"
            f"- name: {json.dumps(MARKUP_NAME)}\n  url: {server.url('/ok')}\n"
        )
        with ExporterProcess(config, "-f", str(INTERVAL)) as process:
            process.wait_ready()
            yield process
            process.stop_cleanly()


@pytest.fixture()
def driver(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    # An explicit driver path keeps Selenium Manager from looking for (or downloading) one.
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                               options=options)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


def test_status_page_in_a_real_browser(exporter: ExporterProcess, driver: Any,
                                       tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{exporter.base_url}/")
    assert driver.title == "Availability"
    table = driver.find_element(By.ID, "endpoints")
    states = {
        row.get_attribute("data-endpoint"): row.find_element(By.CSS_SELECTOR, ".state").text
        for row in table.find_elements(By.CSS_SELECTOR, "tr[data-endpoint]")
    }
    assert states == EXPECTED_STATES
    visible = table.text
    for name in EXPECTED_STATES:
        assert name in visible
    assert driver.find_element(By.LINK_TEXT, "metrics").get_attribute("href") == (
        f"{exporter.base_url}/metrics")

    screenshot = tmp_path / "status.png"
    assert driver.save_screenshot(str(screenshot))
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000, len(data)

    table.find_element(By.LINK_TEXT, "server error").click()
    WebDriverWait(driver, 10).until(
        expected_conditions.presence_of_element_located((By.ID, "history")))
    assert driver.current_url == f"{exporter.base_url}/endpoint?name=server%20error"
    assert driver.find_element(By.TAG_NAME, "h1").text == "Endpoint server error"
    rows = driver.find_elements(By.CSS_SELECTOR, "#history tr")
    assert len(rows) == 2  # the header and the one cycle's result
    cells = [cell.text for cell in rows[1].find_elements(By.TAG_NAME, "td")]
    assert (cells[1], cells[2], cells[3], cells[-1]) == (
        "down", "status", "500", "the server answered 500 Internal Server Error")
    driver.save_screenshot(str(tmp_path / "endpoint.png"))
    assert (tmp_path / "endpoint.png").stat().st_size > 10_000


def test_strips_sparklines_and_since_times(exporter: ExporterProcess, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{exporter.base_url}/")
    rows = {row.get_attribute("data-endpoint"): row
            for row in driver.find_elements(By.CSS_SELECTOR, "#endpoints tr[data-endpoint]")}
    assert set(rows) == set(EXPECTED_STATES)
    for name, state in EXPECTED_STATES.items():
        row = rows[name]
        # One cycle: one coloured bar (with its tooltip) after the empty places.
        bars = row.find_elements(By.CSS_SELECTOR, "svg.strip rect:not(.empty)")
        assert [bar.get_attribute("class") for bar in bars] == [state], name
        tooltip = bars[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
        assert "UTC" in tooltip and state in tooltip and " ms" in tooltip, tooltip
        assert bars[0].rect["width"] > 0 and bars[0].rect["height"] > 0
        spark = row.find_element(By.CSS_SELECTOR, "svg.spark")
        assert spark.find_elements(By.CSS_SELECTOR, "polyline.latency")
        assert spark.find_elements(By.CSS_SELECTOR, "line.threshold")
        since = row.find_element(By.CSS_SELECTOR, "td.since").text
        assert since.startswith(f"{state} for "), since
        assert "\nsince " in since and since.endswith(" UTC"), since
    assert "connection refused" in rows["refused"].text

    driver.get(f"{exporter.base_url}/endpoint?name=slow%20one")
    chart = driver.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.find_elements(By.CSS_SELECTOR, "rect.ph-wait")
    cells = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#history tr td")]
    assert "\N{EN DASH}" in cells  # tls on plain HTTP never happened
    assert "slower than the latency threshold" in driver.find_element(By.ID, "history").text


def test_markup_names_are_inert_everywhere(exporter: ExporterProcess, driver: Any) -> None:
    """Page, endpoint page, badge and JSON, each opened as a document in the browser."""
    from selenium.webdriver.common.by import By

    quoted = quote(MARKUP_NAME, safe="")
    for path in ("/", f"/endpoint?name={quoted}", f"/badge/endpoint/{quoted}.svg",
                 "/api/v1/status"):
        driver.get(f"{exporter.base_url}{path}")
        assert driver.execute_script("return window.pwned === undefined"), path
        assert not driver.find_elements(By.TAG_NAME, "script"), path
        assert not driver.find_elements(By.CSS_SELECTOR, "img"), path
        text = driver.execute_script("return document.documentElement.textContent")
        if path == "/api/v1/status":
            assert MARKUP_NAME in [e["name"] for e in json.loads(text)["endpoints"]]
        elif path.startswith("/badge/"):  # a badge cuts long names with an ellipsis
            assert MARKUP_NAME[:LABEL_MAX - 1] + "\N{HORIZONTAL ELLIPSIS}" in text, text
        else:
            assert MARKUP_NAME in text, path


def test_demo_screenshots(driver: Any, tmp_path: Path) -> None:
    """The demo after ~25 cycles, both pages photographed whole (the README's pictures)."""
    from selenium.webdriver.common.by import By

    out = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    with ExporterProcess(None, "--demo", "-f", str(DEMO_INTERVAL)) as demo:
        demo.wait_ready()
        demo.wait_reports(DEMO_CYCLES, timeout=DEMO_CYCLES * DEMO_INTERVAL + 60)
        for path, name, check in (
            ("/", "status-page.png", "#endpoints svg.strip"),
            ("/endpoint?name=demo%20slow", "endpoint-page.png", "svg.chart"),
        ):
            driver.set_window_size(1400, 900)
            driver.get(f"{demo.base_url}{path}")
            assert driver.find_elements(By.CSS_SELECTOR, check)
            # The window's outer size includes the browser's frame: grow it until the whole
            # page fits (the endpoint page is cut after its first rows of results).
            for _ in range(3):
                height = driver.execute_script("return document.documentElement.scrollHeight")
                inner = driver.execute_script("return window.innerHeight")
                if int(inner) >= min(int(height), 1500):
                    break
                outer = driver.get_window_size()["height"]
                driver.set_window_size(1400, outer + min(int(height), 1500) - int(inner))
            assert driver.save_screenshot(str(out / name))
            data = (out / name).read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
        bars = len(driver.find_elements(By.CSS_SELECTOR, "svg.chart g"))
        assert bars >= DEMO_CYCLES - 2, bars
        demo.stop_cleanly()
