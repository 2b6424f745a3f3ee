"""What a person sees on the status page, in a real headless Chromium driven by Selenium.

The exporter runs as a child process (as in production) probing a local target server; the
browser opens its status page after the first cycle, reads the endpoints table, clicks through
to one endpoint's page and keeps a screenshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial import refused_port
from tests.needs import binary
from tests.targets import ExporterProcess, Targets

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# A long interval keeps the page's auto refresh (one interval, at least 5 s) from reloading
# it under the test's feet, and leaves exactly one cycle's results on screen.
INTERVAL = 30
EXPECTED_STATES = {"fast ok": "up", "server error": "down", "slow one": "degraded",
                   "refused": "down"}


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
