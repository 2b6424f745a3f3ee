"""Fixtures more than one test module uses.

* ``certs``: the test PKI of tests/adversarial (good, expired, self-signed, wrong-host ...),
  made once per session: only files, which no test changes.
* ``server``: the adversarial target server on its own thread, one per module, so a module's
  request log and counters are its own.
* ``start_prometheus``: starts Prometheus scraping given targets (skips without the binary);
  every server started is stopped when the module ends.
* ``web_targets``: the local target server and a refused port, one per module, as endpoint
  entries (tests.web_harness.Endpoints) for the HTTP-interface tests.
* ``web_token``: ``${WEB_TEST_TOKEN}`` set for one test (web_harness.ENV_SECRET).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.adversarial import (
    AdversarialServer,
    CertSet,
    make_certs,
    refused_port,
    serve_in_thread,
)
from tests.needs import binary
from tests.prometheus import Prometheus, StartPrometheus
from tests.targets import Targets
from tests.web_harness import ENV_SECRET, Endpoints


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(certs: CertSet) -> Iterator[AdversarialServer]:
    with serve_in_thread(certs=certs) as running:
        yield running


@pytest.fixture(scope="module")
def start_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartPrometheus]:
    started: list[Prometheus] = []

    def start(targets: Sequence[str], *, job: str,
              rule_files: Sequence[Path] = ()) -> Prometheus:
        """A ready Prometheus scraping ``targets`` every second as job ``job``."""
        path = binary("prometheus")
        prometheus = Prometheus(path, tmp_path_factory.mktemp("prometheus"), targets, job=job,
                                rule_files=rule_files)
        started.append(prometheus)
        prometheus.wait_ready()
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


@pytest.fixture(scope="module")
def web_targets() -> Iterator[Endpoints]:
    with Targets() as server:
        yield Endpoints(server, refused_port())


@pytest.fixture
def web_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_TEST_TOKEN", ENV_SECRET)
