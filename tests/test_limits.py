"""Issue 12 items 1, 4 and 5 against the real process, through its socket, on 127.0.0.1 only.

1. The exporter's own failures are never the endpoint's: connections held open against the
   web port (idle, or with a half-sent head) at a reduced ``ulimit -n`` neither stop scrapes
   nor turn probes into downs; a half-sent head is cut off; a probe that fails because the
   process ran out of descriptors is counted in ``availability_exporter_probe_errors_total``,
   not against its endpoint, with one log line per cycle.
4. ``POST /-/reload`` only with ``--web.enable-lifecycle``; only POST; a failed reload says
   nothing of the file; ``--web.allowed-hosts``; security headers; no ``server`` header.
5. ``/endpoint`` shows the real error under asyncio (uvloop not importable) and under uvloop.

Every loop here is bounded (a count or a deadline).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import httpx
import pytest

from availability_exporter.target_server import HOST
from availability_exporter.web import HEAD_TIMEOUT_SECONDS
from tests.adversarial.server import refused_port
from tests.targets import (
    ExporterProcess,
    Targets,
    required_sample,
    sample,
    wait_for,
    write_config,
)

ERRORS = "availability_exporter_probe_errors_total"
NOFILE = 256  # the reduced `ulimit -n` of the held-connections tests
CLOSED = "availability_exporter_web_connections_closed_total"
HALF_HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 1024


def down_probes(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(value for (name, labels), value in metrics.items()
               if name == "availability_probes_total" and ("result", "down") in labels)


def hold(port: int, count: int, *, half_sent: bool) -> list[socket.socket]:
    """Open ``count`` connections to the exporter and keep them; some may be refused."""
    held: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(2.0)
        try:
            sock.connect((HOST, port))
            if half_sent:
                sock.sendall(HALF_HEAD)
        except OSError:
            sock.close()
            continue
        held.append(sock)
    return held


def wait_closed(sock: socket.socket) -> tuple[bytes, float]:
    """What ``sock`` reads before the server closes it (b"" for a close or a reset, TLS's
    included) and how long that took; it gives up 5 s past the head deadline."""
    sock.settimeout(HEAD_TIMEOUT_SECONDS + 5)
    started = time.monotonic()
    try:
        data = sock.recv(1024)
    except (ConnectionResetError, ssl.SSLError):
        data = b""
    return data, time.monotonic() - started


def block_uvloop(tmp_path: Path) -> Path:
    """A directory whose ``sitecustomize`` makes ``import uvloop`` fail (see BLOCK_UVLOOP):
    the exporter then runs as on a plain install, on asyncio's loop."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_UVLOOP, encoding="utf-8")
    return site


@pytest.fixture
def targets() -> Iterator[Targets]:
    with Targets() as running:
        yield running


# -- 1. the exporter's own trouble --------------------------------------------------------------

@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("half_sent", [False, True], ids=["idle", "half-sent"])
def test_held_connections_cause_no_false_downs(targets: Targets, tmp_path: Path,
                                              half_sent: bool, loop: str) -> None:
    """600 connections against a 256-descriptor process: scrapes answer, no probe fails.

    Before issue 12 the connections took every descriptor: /metrics stopped answering and
    every probe failed as ``connect``.  Under asyncio (uvloop blocked) too, which accepts a
    batch of connections before the server sees any of them.
    """
    env: dict[str, str] = {}
    if loop == "asyncio":
        env["PYTHONPATH"] = str(block_uvloop(tmp_path))
    config = write_config(tmp_path / "e.yaml",
                          [(f"ok-{i}", targets.url(f"/ok?id={i}")) for i in range(10)])
    with ExporterProcess(config, "-f", "1", "--probe.concurrency", "20",
                         nofile=NOFILE, env=env) as proc:
        proc.wait_ready()
        held: list[socket.socket] = []
        try:
            held = hold(proc.port, 600, half_sent=half_sent)
            first = len(proc.reports)
            proc.wait_reports(first + 3)
            # A scrape while the connections are held: it gets a slot (an idle one is evicted).
            with httpx.Client(timeout=5.0, trust_env=False) as client:
                response = client.get(f"{proc.base_url}/-/healthy")
            assert response.status_code == 200, response.text
            metrics = proc.scrape()
        finally:
            for sock in held:
                sock.close()
        assert down_probes(metrics) == 0, proc.stderr[-3000:]
        assert required_sample(metrics, ERRORS, reason="exporter") == 0
        assert proc.fds() < NOFILE
        # The attack shows on /metrics: idle or half-sent connections were evicted.
        assert required_sample(metrics, CLOSED, reason="evicted") > 0
        limit = required_sample(metrics, "availability_exporter_web_connections_limit")
        assert 0 < required_sample(metrics, "availability_exporter_web_connections") <= limit
        proc.stop_cleanly()


def test_clients_that_stop_reading_do_not_keep_scrapes_out(targets: Targets,
                                                           tmp_path: Path) -> None:
    """Every slot taken by a /metrics answer nobody reads: the next scrape evicts one."""
    # 2,000 endpoints make a ~6 MB plain exposition, more than the socket buffers hold.
    config = write_config(tmp_path / "e.yaml",
                          [(f"ok-{i}", targets.url(f"/ok?id={i}")) for i in range(2000)])
    with ExporterProcess(config, "-f", "10", "--web.max-connections", "3") as proc:
        proc.wait_serving()
        readers: list[socket.socket] = []
        try:
            for _ in range(3):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(5.0)
                sock.connect((HOST, proc.port))
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                readers.append(sock)  # and never read

            def healthy() -> bool | None:
                try:
                    with httpx.Client(timeout=3.0, trust_env=False) as client:
                        return client.get(f"{proc.base_url}/-/healthy").status_code == 200
                except httpx.TransportError:
                    return None  # refused while the stalled answers still flowed

            wait_for("a scrape to get a slot", healthy, timeout=15.0)
            metrics = proc.scrape()
        finally:
            for sock in readers:
                sock.close()
        assert required_sample(metrics, CLOSED, reason="evicted_stalled") >= 1
        proc.stop_cleanly()


def ask(sock: socket.socket, client: h11.Connection, path: str) -> int:
    """One request on a kept-alive connection (h11 keeps its state); its status, once the
    whole answer is read."""
    if client.our_state is h11.DONE:
        client.start_next_cycle()
    sock.sendall(client.send(h11.Request(method="GET", target=path,
                                         headers=[("Host", "127.0.0.1")])) or b"")
    sock.sendall(client.send(h11.EndOfMessage()) or b"")
    status = 0
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))  # b"" (closed) makes h11 raise
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            return status


@pytest.mark.parametrize("half_sent", [False, True], ids=["idle", "half-sent"])
def test_a_flood_of_held_connections_leaves_a_kept_alive_scraper_its_connection(
        targets: Targets, tmp_path: Path, half_sent: bool) -> None:
    """Prometheus keeps its scrape connection open between scrapes.  Held connections beyond
    the limit evict each other, never that answered connection (failed before: it was the
    oldest idle one, evicted first, and the scraper's next SYN queued behind the flood)."""
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1", "--web.max-connections", "4") as proc:
        proc.wait_serving()
        scraper = socket.create_connection((HOST, proc.port), timeout=5.0)
        client = h11.Connection(h11.CLIENT)
        held: list[socket.socket] = []
        try:
            assert ask(scraper, client, "/-/ready") in (200, 503)
            held = hold(proc.port, 40, half_sent=half_sent)
            metrics = proc.wait_metrics(
                lambda m: (sample(m, CLOSED, reason="evicted") or 0) >= 30, 10.0,
                "the held connections to evict each other")
            # The same connection, still open.
            assert ask(scraper, client, "/-/healthy") in (200, 503)
            assert ask(scraper, client, "/metrics") == 200
        finally:
            scraper.close()
            for sock in held:
                sock.close()
        assert required_sample(metrics, "availability_exporter_web_connections") <= 4
        proc.stop_cleanly()


def test_half_sent_head_is_cut_off(targets: Targets, tmp_path: Path) -> None:
    """A connection that never finishes its request head is closed after the head deadline."""
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1") as proc:
        proc.wait_serving()
        with socket.create_connection((HOST, proc.port), timeout=2.0) as sock:
            sock.sendall(HALF_HEAD)
            data, waited = wait_closed(sock)
        assert data == b"", data
        assert waited < HEAD_TIMEOUT_SECONDS + 4
        assert required_sample(proc.scrape(), CLOSED, reason="timeout") >= 1
        proc.stop_cleanly()


def test_out_of_descriptors_is_the_exporters_error(targets: Targets, tmp_path: Path) -> None:
    """Probes that cannot get a socket (EMFILE) count as reason ``exporter``, not as downs."""
    config = write_config(tmp_path / "e.yaml",
                          [(f"slow-{i}", targets.url(f"/slow?ms=300&id={i}")) for i in range(80)])
    with ExporterProcess(config, "-f", "1", "--probe.concurrency", "80", "--probe.timeout",
                         "0.8", nofile=48) as proc:
        proc.wait_stderr("failed on the exporter's own resources")
        proc.wait_reports(len(proc.reports) + 2)
        metrics = proc.wait_metrics(lambda m: (sample(m, ERRORS, reason="exporter") or 0) > 0,
                                    10.0, "exporter errors counted")
        assert down_probes(metrics) == 0, proc.stderr[-3000:]
        assert not any(name == "availability_probe_failures_total" and value
                       for (name, _), value in metrics.items())
        # One log line per cycle, not one per failed probe.
        lines = proc.stderr.count("failed on the exporter's own resources")
        cycles = required_sample(metrics, "availability_exporter_cycles_total")
        assert lines <= cycles + 1
        assert "Too many open files" in proc.stderr


def test_idle_tls_session_is_closed(tmp_path: Path) -> None:
    """A TLS connection that completes its handshake and then says nothing is closed too,
    and so is one that never completes its handshake."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
    config = write_config(tmp_path / "e.yaml", [("self", f"http://{HOST}:{refused_port()}/")])
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with ExporterProcess(config, "-f", "5", "--web.config.file",
                         str(tmp_path / "web.yml")) as proc:
        proc.wait_stderr("serving /metrics")
        raw = socket.create_connection((HOST, proc.port), timeout=5.0)
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            data, waited = wait_closed(tls)
        assert data == b"", data
        assert waited < HEAD_TIMEOUT_SECONDS + 4
        # A handshake that never starts (no ClientHello) is cut as soon (asyncio: 60 s).
        with socket.create_connection((HOST, proc.port), timeout=5.0) as stalled:
            data, waited = wait_closed(stalled)
        assert data == b"", data
        assert waited < HEAD_TIMEOUT_SECONDS + 4


# -- 4. the lifecycle API and the pages' headers ----------------------------------------------

def test_reload_needs_the_lifecycle_flag(targets: Targets, tmp_path: Path) -> None:
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1") as proc:
        proc.wait_serving()
        response = proc.client.post("/-/reload")
        assert response.status_code == 403
        assert "--web.enable-lifecycle" in response.text
        proc.stop_cleanly()


def test_reload_only_by_post_and_a_failure_says_nothing_of_the_file(targets: Targets,
                                                                   tmp_path: Path) -> None:
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1", "--web.enable-lifecycle") as proc:
        proc.wait_serving()
        for method in ("PUT", "GET", "DELETE", "PATCH"):
            response = proc.client.request(method, "/-/reload")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "POST"
        assert proc.client.post("/-/reload").status_code == 200
        config.write_text(
            "- name: leak\n  url: http://user:literal-pass@127.0.0.1:1/\n  colour: red\n",
            encoding="utf-8")
        response = proc.client.post("/-/reload")
        assert response.status_code == 500
        for leaked in (str(tmp_path), "e.yaml", "colour", "literal-pass", "leak"):
            assert leaked not in response.text, leaked
        proc.wait_stderr("config reload failed")
        assert "colour" in proc.stderr  # the details are in the log
        assert "literal-pass" not in proc.stderr
        proc.stop_cleanly()


def test_cross_site_reload_is_refused_even_with_the_flag(targets: Targets,
                                                         tmp_path: Path) -> None:
    """A form on another site's page POSTing to /-/reload: the browser says where it came from."""
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1", "--web.enable-lifecycle") as proc:
        proc.wait_serving()
        for headers in ({"Origin": "http://attacker.example"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            response = proc.client.post("/-/reload", headers=headers)
            assert response.status_code == 403, headers
        same = {"Origin": proc.base_url, "Sec-Fetch-Site": "same-origin"}
        assert proc.client.post("/-/reload", headers=same).status_code == 200
        assert proc.client.post("/-/reload").status_code == 200  # curl, Prometheus tooling
        proc.stop_cleanly()


def test_allowed_hosts_refuse_other_host_headers(targets: Targets, tmp_path: Path) -> None:
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1", "--web.allowed-hosts",
                         "localhost,127.0.0.1") as proc:
        proc.wait_serving()
        for host in ("rebind.attacker.example", "rebind.attacker.example:80", ""):
            response = proc.client.get("/metrics", headers={"Host": host})
            assert response.status_code == 421, host
        for host in ("localhost", f"127.0.0.1:{proc.port}", f"LOCALHOST:{proc.port}"):
            assert proc.client.get("/-/healthy", headers={"Host": host}).status_code == 200
        proc.stop_cleanly()


def test_pages_carry_security_headers_and_no_server_header(targets: Targets,
                                                           tmp_path: Path) -> None:
    config = write_config(tmp_path / "e.yaml", [("ok", targets.url("/ok"))])
    with ExporterProcess(config, "-f", "1") as proc:
        proc.wait_ready()
        for path in ("/", "/endpoint?name=ok", "/endpoint?name=nowhere"):
            response = proc.get(path)
            assert "text/html" in response.headers["content-type"], path
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp, path
            assert "frame-ancestors 'none'" in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "<script" not in response.text
        for path in ("/", "/metrics", "/-/healthy", "/nope"):
            assert "server" not in proc.get(path).headers, path
        proc.stop_cleanly()


# -- 5. diagnostics -----------------------------------------------------------------------------

BLOCK_UVLOOP = '''\
import sys


class _NoUvloop:
    """Makes ``import uvloop`` fail as it does where the `fast` extra is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "uvloop" or name.startswith("uvloop."):
            raise ModuleNotFoundError("No module named 'uvloop'", name="uvloop")
        return None


sys.meta_path.insert(0, _NoUvloop())
'''


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_endpoint_page_shows_the_real_error(tmp_path: Path, loop: str) -> None:
    env: dict[str, str] = {}
    if loop == "asyncio":
        env["PYTHONPATH"] = str(block_uvloop(tmp_path))
    else:
        pytest.importorskip("uvloop")
    config = write_config(tmp_path / "e.yaml",
                          [("refused", f"http://{HOST}:{refused_port()}/")])
    with ExporterProcess(config, "-f", "1", env=env) as proc:
        proc.wait_ready()
        page = proc.get("/endpoint?name=refused").text
        assert "uvloop" not in page
        assert "ModuleNotFoundError" not in page
        assert "Connection refused" in page or "connection refused" in page.lower(), page
        proc.stop_cleanly()
    assert "uvloop" not in proc.stderr


def test_uvloop_is_really_blocked(tmp_path: Path) -> None:
    """The asyncio case above runs without uvloop (the block works), or it proves nothing."""
    import subprocess
    import sys

    site = block_uvloop(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c",
         "from availability_exporter.cli import loop_runner; import asyncio; "
         "print(loop_runner() is asyncio.run)"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == "True", done.stderr


def test_describe_names_the_telling_cause_not_an_unrelated_context() -> None:
    """An error raised while an ImportError was being handled is described by its own cause."""
    import httpx as _httpx

    from availability_exporter import http1
    from availability_exporter.probe import classify, describe

    def connect_failure() -> BaseException:
        try:
            try:
                raise ModuleNotFoundError("No module named 'uvloop'", name="uvloop")
            except ImportError:
                try:
                    raise ConnectionRefusedError(111, "Connection refused")
                except OSError as refused:
                    try:
                        raise http1.ConnectError(str(refused)) from refused
                    except http1.ConnectError as wrapped:
                        raise _httpx.ConnectError(str(wrapped)) from wrapped
        except _httpx.ConnectError as exc:
            return exc
        raise AssertionError("unreachable")

    exc = connect_failure()
    assert describe(exc) == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert classify(exc) == "connect"
    emfile = _httpx.ConnectError("out")
    emfile.__cause__ = OSError(24, "Too many open files")
    assert classify(emfile) == "exporter"
    assert "Too many open files" in describe(emfile)
