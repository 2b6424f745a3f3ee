"""Flags and AVAILABILITY_EXPORTER_* environment variables, validated by pydantic-settings.

The flag spelling follows Prometheus exporters (``--probe.interval``); each flag's environment
variable is its field name upper-cased with the prefix, e.g. ``--probe.interval`` is
``AVAILABILITY_EXPORTER_PROBE_INTERVAL``.  Flags given on the command line win over the
environment; both are validated by the same model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from availability_exporter import __version__
from availability_exporter.config import DEFAULT_LATENCY_THRESHOLD, Defaults, default_timeout
from availability_exporter.daemon import Options
from availability_exporter.web import DEFAULT_MAX_CONNECTIONS

ENV_PREFIX = "AVAILABILITY_EXPORTER_"
DEFAULT_PORT = 10199
DEFAULT_CONCURRENCY = 1000


class SettingsError(Exception):
    """Invalid flags or environment; the message is ready for the user."""


class Settings(BaseSettings):
    """Every knob of the daemon, from flags and the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    config: Path | None = None
    config_check: bool = False
    probe_interval: float = Field(15.0, gt=0)
    probe_timeout: float | None = Field(None, gt=0)
    probe_latency_threshold: float = Field(DEFAULT_LATENCY_THRESHOLD, gt=0)
    probe_concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=100_000)
    probe_keep_alive: bool = False
    run_duration: float | None = Field(None, gt=0)
    once: bool = False
    web_listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    web_config_file: Path | None = None
    web_enable_lifecycle: bool = False
    web_allowed_hosts: str | None = None
    web_max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1, le=1_000_000)
    shard: str | None = None
    state_file: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    demo: bool = False
    # The text flags above, parsed once by the validators below.
    _shard: tuple[int, int] = PrivateAttr((0, 1))
    _listen: tuple[str, int] = PrivateAttr(("0.0.0.0", DEFAULT_PORT))
    _allowed_hosts: frozenset[str] | None = PrivateAttr(None)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        errors: list[str] = []
        for parse in (self._parse_shard, self._parse_listen, self._parse_allowed_hosts):
            try:
                parse()
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("\n".join(errors))
        if self.probe_timeout is not None and self.probe_timeout >= self.probe_interval:
            raise ValueError(
                f"--probe.timeout ({self.probe_timeout:g}s) must be shorter than "
                f"--probe.interval ({self.probe_interval:g}s)"
            )
        if self.config is None and not self.demo:
            raise ValueError("no endpoints file given: pass CONFIG (a YAML file) or --demo")
        if self.config is not None and self.demo:
            raise ValueError("pass either CONFIG or --demo, not both")
        return self

    def _parse_shard(self) -> None:
        if self.shard is not None:
            self._shard = parse_shard(self.shard)

    def _parse_listen(self) -> None:
        self._listen = parse_listen_address(self.web_listen_address)

    def _parse_allowed_hosts(self) -> None:
        if self.web_allowed_hosts is not None:
            self._allowed_hosts = parse_allowed_hosts(self.web_allowed_hosts)

    @property
    def allowed_hosts(self) -> frozenset[str] | None:
        """``--web.allowed-hosts`` as lower-case names without ports; None accepts any Host."""
        return self._allowed_hosts

    @property
    def listen_address(self) -> tuple[str, int]:
        """``--web.listen-address`` as (host, port)."""
        return self._listen

    def options(self) -> Options:
        """What the daemon runs with, from these settings."""
        return Options(
            config=self.config,
            demo=self.demo,
            defaults=Defaults(interval=self.probe_interval, timeout=self.timeout,
                              latency_threshold=self.probe_latency_threshold),
            concurrency=self.probe_concurrency,
            keep_alive=self.probe_keep_alive,
            shard=self._shard,
            state_file=self.state_file,
            run_duration=self.run_duration,
            once=self.once,
        )

    @property
    def timeout(self) -> float:
        """The effective default probe timeout (DESIGN: 10 s, or 80 % of a short interval)."""
        if self.probe_timeout is not None:
            return self.probe_timeout
        return default_timeout(self.probe_interval)


def parse_shard(value: str) -> tuple[int, int]:
    """``INDEX/COUNT`` with 0 <= INDEX < COUNT."""
    index_text, sep, count_text = value.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard must be INDEX/COUNT with 0 <= INDEX < COUNT, not {value!r}")
    return index, count


def parse_allowed_hosts(value: str) -> frozenset[str]:
    """A comma-separated list of host names or IP addresses (no ports, no wildcards)."""
    hosts = frozenset(
        part.strip().lower().strip("[]").rstrip(".") for part in value.split(",") if part.strip()
    )
    bad = sorted(h for h in hosts if not h or "/" in h or "*" in h or " " in h
                 or (h.count(":") == 1))
    if not hosts or bad:
        raise ValueError(
            "--web.allowed-hosts must be a comma-separated list of host names or addresses "
            f"without ports, not {value!r}"
        )
    return hosts


def parse_listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPv6]:PORT``."""
    host, sep, port_text = value.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not 0 <= port <= 65535:
        raise ValueError(f"--web.listen-address must be HOST:PORT, not {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag and the settings field it fills."""

    flags: tuple[str, ...]
    field: str
    help: str
    metavar: str | None = None
    is_switch: bool = False


FLAGS: tuple[Flag, ...] = (
    Flag(("--config.check",), "config_check", "validate CONFIG and exit 0 (valid) or 2",
         is_switch=True),
    Flag(("-f", "--probe.interval"), "probe_interval", "seconds between check cycles (15)",
         "SECONDS"),
    Flag(("--probe.timeout",), "probe_timeout",
         "whole-probe deadline (10, or 80%% of a shorter interval); must be < interval",
         "SECONDS"),
    Flag(("--probe.latency-threshold",), "probe_latency_threshold",
         "a 2xx slower than this is degraded (0.5)", "SECONDS"),
    Flag(("--probe.concurrency",), "probe_concurrency",
         f"probes in flight at most ({DEFAULT_CONCURRENCY})", "N"),
    Flag(("--probe.keep-alive",), "probe_keep_alive",
         "reuse connections between probes (default: a fresh connection per probe)",
         is_switch=True),
    Flag(("-r", "--run-duration"), "run_duration", "stop after this many seconds", "SECONDS"),
    Flag(("--once",), "once", "run one cycle, print the report, exit 0 if all up else 1",
         is_switch=True),
    Flag(("--web.listen-address",), "web_listen_address",
         f"address for /metrics and the status page (0.0.0.0:{DEFAULT_PORT})", "HOST:PORT"),
    Flag(("--web.config.file",), "web_config_file",
         "exporter-toolkit web config: TLS and basic auth", "FILE"),
    Flag(("--web.enable-lifecycle",), "web_enable_lifecycle",
         "allow POST /-/reload (403 otherwise)", is_switch=True),
    Flag(("--web.allowed-hosts",), "web_allowed_hosts",
         "answer only requests whose Host is one of these (421 otherwise), against DNS "
         "rebinding (default: any)", "HOST,..."),
    Flag(("--web.max-connections",), "web_max_connections",
         f"open web connections at most ({DEFAULT_MAX_CONNECTIONS}; lowered to keep file "
         "descriptors for the probes)", "N"),
    Flag(("--shard",), "shard", "probe only this shard of the endpoints (rendezvous hashing)",
         "INDEX/COUNT"),
    Flag(("--state.file",), "state_file", "keep cumulative counts across restarts", "PATH"),
    Flag(("--log.level",), "log_level", "debug, info, warning or error (info)", "LEVEL"),
    Flag(("--log.format",), "log_format", "text or json (text)", "FORMAT"),
    Flag(("--demo",), "demo", "probe built-in demo endpoints served by this process",
         is_switch=True),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="availability-exporter",
        description=(
            "Probe the HTTP endpoints of a YAML file every interval, print each domain's "
            "cumulative availability, and serve Prometheus metrics. Every flag can also be "
            f"set as an environment variable {ENV_PREFIX}<FLAG>, e.g. "
            f"{ENV_PREFIX}PROBE_INTERVAL=30."
        ),
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="endpoints YAML file")
    for flag in FLAGS:
        env = f"{ENV_PREFIX}{flag.field.upper()}"
        if flag.is_switch:
            parser.add_argument(*flag.flags, dest=flag.field, action="store_true",
                                help=f"{flag.help} [{env}]")
        else:
            parser.add_argument(*flag.flags, dest=flag.field, metavar=flag.metavar,
                                help=f"{flag.help} [{env}]")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def load_settings(argv: list[str] | None) -> Settings:
    """Parse flags (argparse exits 2 on unknown ones) and validate them with the environment."""
    given = vars(build_parser().parse_args(argv))
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc)) from None


def _format_errors(exc: ValidationError) -> str:
    by_field = {flag.field: flag.flags[-1] for flag in FLAGS}
    lines = []
    for error in exc.errors():
        location = error["loc"][0] if error["loc"] else None
        name = by_field.get(str(location), str(location)) if location else "settings"
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        shown = f" (got {value!r})" if location and not isinstance(value, dict) else ""
        lines.append(f"{name}: {message}{shown}" if location else message)
    return "\n".join(lines)
