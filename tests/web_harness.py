"""The harness of the HTTP-interface tests (test_web, test_api, test_badges): a real Exporter
built from Settings and an endpoints file, probing the local target server, behind web.App
through httpx.ASGITransport.  Its fixtures (``web_targets``, ``web_token``) are in conftest."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from availability_exporter.daemon import Exporter
from availability_exporter.settings import Settings
from availability_exporter.web import App
from tests.targets import Targets

INTERVAL = 5.0
SECRET = "planted-secret-5e1f0c"
ENV_SECRET = "env-secret-a93d27"  # reaches the config through ${WEB_TEST_TOKEN}
MARKUP_NAME = """<img src=x onerror='alert(1)'> "quoted" & co"""


@dataclass(frozen=True)
class Endpoints:
    """The module's target server and refused port, as endpoint entries for config files."""

    server: Targets
    refused: int

    def entries(self) -> dict[str, str]:
        """Endpoint snippets by name, to mix into config files."""
        return {
            "fast ok": (
                f"- name: fast ok\n  url: {self.server.url('/ok')}\n  headers:\n"
                f"    Authorization: Bearer {SECRET}\n    X-Api-Key: ${{WEB_TEST_TOKEN}}\n"
            ),
            "server error": f"- name: server error\n  url: {self.server.url('/error')}\n",
            "slow one": (
                f"- name: slow one\n  url: {self.server.url('/slow', host='localhost')}\n"
            ),
            "refused": f"- name: refused\n  url: http://127.0.0.1:{self.refused}/\n",
            "second ok": (
                f"- name: second ok\n  url: {self.server.url('/ok', host='localhost')}\n"
            ),
        }

    def config(self, *names: str) -> str:
        entries = self.entries()
        return "".join(entries[name] for name in names)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


@contextlib.asynccontextmanager
async def exporter_client(config: Path) -> AsyncIterator[tuple[Exporter, httpx.AsyncClient]]:
    # model_validate skips AVAILABILITY_EXPORTER_* from the environment: the test decides.
    settings = Settings.model_validate({"config": config, "probe_interval": INTERVAL,
                                        "web_listen_address": "127.0.0.1:0"})
    exporter = Exporter(settings.options(), out=io.StringIO())
    exporter.apply(exporter.load())
    # web.App types its ASGI messages as MutableMapping; httpx's alias wants dict.
    app = App(exporter.status, registry=exporter.registry, snapshot=exporter.snapshot,
              enable_lifecycle=True)
    transport = httpx.ASGITransport(app=cast(Any, app))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
            yield exporter, client
    finally:
        await exporter.prober.aclose()



async def run_cycles(exporter: Exporter, count: int = 1) -> None:
    """Complete ``count`` more check cycles, back to back.

    One run() per cycle: each run starts its first tick at once, where a single run of several
    cycles would wait a whole interval between them.
    """
    for _ in range(count):
        target = exporter.scheduler.cycle_stats.cycles + 1
        await exporter.scheduler.run(exporter.stop, max_cycles=1)
        assert exporter.scheduler.cycle_stats.cycles == target



def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

