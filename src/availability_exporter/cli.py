"""Settings -> objects -> run: wiring only.

Exit statuses: 0 success (or ``--once`` with every endpoint up), 1 ``--once`` with an endpoint
not up, 2 bad input (flags, environment, config file, web config, listen address).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from availability_exporter.config import ConfigError, load_config
from availability_exporter.daemon import Exporter, web_connection_limit
from availability_exporter.settings import Settings, SettingsError, load_settings
from availability_exporter.web import App, ConnectionCollector, WebServer
from availability_exporter.webconfig import WebConfig, WebConfigError, load_web_config

log = logging.getLogger("availability_exporter")

EXIT_USAGE = 2
T = TypeVar("T")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # uvicorn narrates every request at debug level: far too much at 10k endpoints.
    for noisy in ("uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # httpx and httpcore log every probe's full URL (credentials and ${VAR} values included)
    # at INFO and DEBUG: never, whatever the level asked for.
    for leaky in ("httpx", "httpcore"):
        logging.getLogger(leaky).setLevel(max(logging.WARNING, root.level))


def fail(message: str) -> int:
    sys.stderr.write(f"availability-exporter: {message}\n")
    return EXIT_USAGE


def raise_fd_limit() -> None:
    """Each probe in flight holds a socket; lift the soft descriptor limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen(host: str, port: int) -> socket.socket:
    """Bind the web socket before starting, so a taken port is a clear start-up error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        return fail(str(exc))
    setup_logging(settings)
    web_config = WebConfig()
    if settings.web_config_file is not None:
        try:
            web_config = load_web_config(settings.web_config_file)
        except WebConfigError as exc:
            return fail(str(exc))
    if settings.config_check:
        return check_config(settings)
    sock: socket.socket | None = None
    if not settings.once:
        try:
            sock = listen(*settings.listen_address)
        except OSError as exc:
            return fail(f"cannot listen on {settings.web_listen_address}: {exc.strerror or exc}")
    raise_fd_limit()
    try:
        return run(settings, sock, web_config)
    except ConfigError as exc:
        return fail(f"invalid config:\n{exc}")
    except KeyboardInterrupt:
        return 0


def check_config(settings: Settings) -> int:
    if settings.config is None:
        return fail("--config.check needs CONFIG")
    try:
        config = load_config(settings.config, settings.options().defaults)
    except ConfigError as exc:
        return fail(f"invalid config:\n{exc}")
    domains = len({e.domain for e in config.endpoints})
    sys.stdout.write(f"{settings.config}: OK, {len(config.endpoints)} endpoints, "
                     f"{domains} domains\n")
    return 0


def run(settings: Settings, sock: socket.socket | None, web_config: WebConfig) -> int:
    """Build the daemon and, given a bound socket, its web server; run them."""
    async def serve() -> int:
        exporter = Exporter(settings.options())
        if sock is None:  # --once serves nothing
            return await exporter.run()
        app = App(exporter.status, registry=exporter.registry, snapshot=exporter.snapshot,
                  enable_lifecycle=settings.web_enable_lifecycle,
                  allowed_hosts=settings.allowed_hosts)
        host, port = sock.getsockname()[:2]
        # Called after raise_fd_limit(), so the reserve is taken from the limit in force.
        max_connections = web_connection_limit(settings.web_max_connections,
                                               settings.probe_concurrency)
        if max_connections < settings.web_max_connections:
            log.info("at most %d web connections, keeping file descriptors for %d probes",
                     max_connections, settings.probe_concurrency)
        server = WebServer(web_config.wrap(app), sock, host=host, port=port,
                           ssl=web_config.uvicorn_ssl_kwargs(), max_connections=max_connections)
        exporter.registry.register(ConnectionCollector(server.guard))
        log.info("serving /metrics and the status page on %s://%s:%d/", web_config.scheme,
                 host, port)
        return await exporter.run(web=server.serve)

    return run_event_loop(serve())


def loop_runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    """uvloop's ``run`` when installed (the `fast` extra: less CPU per probe, tighter latency),
    else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run_event_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the chosen loop, outside the ``except`` that chose it.

    Run inside that ``except ImportError``, every exception the program raised had the
    ImportError as its context, and probe errors read "No module named 'uvloop'" (issue 12).
    """
    run = loop_runner()
    return run(coro)
