"""The three clients of the differential test, each reduced to an up/down verdict.

"up" means a complete response with a final 2xx status (after at most 10 redirects) within
`TIMEOUT`; anything else is "down". ``detail`` says why, for failure messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from availability_exporter.config import Defaults, parse_config
from availability_exporter.model import Endpoint, State
from availability_exporter.probe import Prober
from tests.differential.cases import Case, Verdict
from tests.differential.server import ScriptServer, Then

TIMEOUT = 4.0  # per probe, body included; the stall cases end by it
CURL_WORKERS = 16


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class Row:
    """One case as the three clients saw it."""

    case: Case
    exporter: Outcome
    curl: Outcome
    httpx: Outcome

    @property
    def consensus(self) -> Verdict | None:
        """The oracles' common verdict, or None when curl and httpx disagree."""
        return self.curl.verdict if self.curl.verdict == self.httpx.verdict else None

    def describe(self) -> str:
        return (f"{self.case.name}: exporter {self.exporter.verdict} ({self.exporter.detail}); "
                f"curl {self.curl.verdict} ({self.curl.detail}); "
                f"httpx {self.httpx.verdict} ({self.httpx.detail})")


def case_url(server: ScriptServer, case: Case) -> str:
    return server.url(case.path, case.listener, tls=case.tls)


# -- curl ---------------------------------------------------------------------------------


def curl_outcome(curl: str, url: str, case: Case, ca_file: Path,
                 timeout: float = TIMEOUT) -> Outcome:
    """Debian's curl: exit status 0 and a 2xx final ``%{http_code}`` is up."""
    argv = [
        curl, "-q",  # -q first: ignore any ~/.curlrc
        "-sS", "-o", "/dev/null", "-w", "%{http_code}",
        "--max-time", f"{timeout:g}", "-L", "--max-redirs", "10",
        "--cacert", str(ca_file), "--noproxy", "*",
    ]
    if case.method == "HEAD":
        argv.append("-I")
    elif case.body is not None:
        # --data-binary makes a POST that curl itself turns into GET on 301/302/303, as a
        # browser would; -X POST would force POST on every hop.
        argv += ["--data-binary", case.body.decode()]
    argv.append(url)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout + 20, check=False,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return Outcome("down", "curl did not exit")
    code = done.stdout.decode(errors="replace").strip()
    up = done.returncode == 0 and code.isdigit() and 200 <= int(code) < 300
    error = done.stderr.decode(errors="replace").strip().splitlines()
    return Outcome("up" if up else "down",
                   f"exit {done.returncode}, code {code}" + (f", {error[-1]}" if error else ""))


# -- httpx --------------------------------------------------------------------------------


async def httpx_outcome(url: str, case: Case, context: ssl.SSLContext,
                        timeout: float = TIMEOUT) -> Outcome:
    """httpx's default transport (httpcore + h11), whole body read, one overall deadline."""
    try:
        async with asyncio.timeout(timeout):
            # trust_env=False: proxy variables of whoever runs the test must not route
            # 127.0.0.1 elsewhere (the exporter and `curl --noproxy` ignore them too).
            async with httpx.AsyncClient(
                follow_redirects=True, max_redirects=10, verify=context, trust_env=False,
            ) as client, client.stream(case.method, url, content=case.body) as response:
                async for _ in response.aiter_raw():
                    pass
                status = response.status_code
    except TimeoutError:
        return Outcome("down", "timeout")
    except Exception as exc:  # any failure of the client is a "down" verdict; say which
        return Outcome("down", f"{type(exc).__name__}: {exc}"[:200])
    return Outcome("up" if 200 <= status < 300 else "down", f"HTTP {status}")


# -- the exporter -------------------------------------------------------------------------


def endpoint(url: str, case: Case, timeout: float = TIMEOUT) -> Endpoint:
    """The case as a config entry; a latency threshold equal to the timeout, so never slow."""
    lines = [
        "- name: differential\n",
        f"  url: {json.dumps(url)}\n",
        f"  method: {case.method}\n",
        f"  timeout: {timeout:g}\n",
        f"  latency_threshold: {timeout:g}\n",
    ]
    if case.body is not None:
        lines.append(f"  body: {json.dumps(case.body.decode())}\n")
    return parse_config("".join(lines).encode(), "t.yaml", Defaults()).endpoints[0]


async def exporter_outcome(prober: Prober, url: str, case: Case,
                           timeout: float = TIMEOUT) -> Outcome:
    result = await prober.probe(endpoint(url, case, timeout))
    up = result.state in (State.UP, State.DEGRADED)
    return Outcome("up" if up else "down",
                   f"{result.state.value}, reason {result.reason}, status {result.status_code}")


# -- all of them at once ------------------------------------------------------------------


def run_all(server: ScriptServer, cases: Sequence[Case], curl: str, ca_file: Path) -> list[Row]:
    """Every case through the three clients, concurrently: curl in threads, the others on
    one event loop (the server has its own loop in its own thread)."""
    urls = [case_url(server, case) for case in cases]
    # Stall cases first, so their timeouts overlap instead of queueing behind each other.
    order = sorted(range(len(cases)), key=lambda i: cases[i].answer.then is not Then.STALL)
    with ThreadPoolExecutor(CURL_WORKERS, thread_name_prefix="curl") as pool:
        curl_futures = {i: pool.submit(curl_outcome, curl, urls[i], cases[i], ca_file)
                        for i in order}

        async def clients() -> tuple[list[Outcome], list[Outcome]]:
            prober = Prober(ca_file=str(ca_file))
            context = ssl.create_default_context(cafile=str(ca_file))
            try:
                async with asyncio.timeout(TIMEOUT + 60):  # a bound on the whole batch
                    exporter = asyncio.gather(*(exporter_outcome(prober, url, case)
                                                for url, case in zip(urls, cases, strict=True)))
                    oracle = asyncio.gather(*(httpx_outcome(url, case, context)
                                              for url, case in zip(urls, cases, strict=True)))
                    return list(await exporter), list(await oracle)
            finally:
                await prober.aclose()

        exporter, oracle = asyncio.run(clients())
        curled = [curl_futures[i].result() for i in range(len(cases))]
    return [Row(case, e, c, h)
            for case, e, c, h in zip(cases, exporter, curled, oracle, strict=True)]
