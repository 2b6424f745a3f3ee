"""The command line every benchmark shares, and its working directory.

One :class:`Options` holds every flag a benchmark takes; a flag means the same in every script
(``--interval`` is always the probe interval in seconds, ``--ports`` always the target's listen
ports).  A script names the flags it takes, with its own defaults, in :func:`parse_options`, and
reads only those fields; ``--json`` and ``--workdir`` come with every script.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Options:
    json: Path | None = None
    workdir: Path | None = None
    endpoints: int = 10_000
    sizes: str = "100,1000,10000,30000"
    per_process: int = 15_000
    cycles: int = 3
    warmup: int = 1
    checkpoint: int = 10
    repeat: int = 3
    interval: float = 15.0
    timeout: float = 2.0
    ports: int = 4
    delay_ms: float = 200.0
    up_ms: float = 450.0
    degraded_ms: float = 550.0
    every: float = 1.0
    save_scrape: Path | None = None
    chunks: int = 300_000
    head_kib: int = 87
    drip_seconds: float = 10.0
    nofile: int = 2048
    no_blackbox: bool = False
    no_daemon: bool = False
    no_scrape: bool = False
    duration: float = 3600.0
    verbose: bool = False
    results: Path | None = None
    only: str = ""
    markdown: Path | None = None
    quick: bool = False


@dataclass(frozen=True, slots=True)
class Flag:
    """A flag's default with help text of the script's own (else the common help below)."""

    default: object
    help: str


# Help for each flag where a script does not give its own; --no-* flags always give theirs.
HELP: dict[str, str] = {
    "json": "also write the figures here",
    "workdir": "keep configs and logs here (default: a temp dir, removed)",
    "endpoints": "endpoints in the config",
    "sizes": "comma-separated endpoint counts",
    "per_process": "endpoints per process before sharding",
    "cycles": "measured cycles",
    "warmup": "cycles before measuring",
    "checkpoint": "the cycle whose figure is the baseline",
    "repeat": "runs of each measurement",
    "interval": "probe interval (s)",
    "timeout": "--probe.timeout (s)",
    "ports": "target listen ports",
    "delay_ms": "the target answers after this long",
    "every": "scrape period (s)",
    "save_scrape": "write the final plain scrape here",
    "chunks": "one-byte chunks in the hostile chunked body",
    "head_kib": "size of the hostile header block (KiB)",
    "drip_seconds": "how long the socket drip of the header block runs (s)",
    "nofile": "the exporter's descriptor limit (ulimit -n, soft and hard)",
    "duration": "how long to run (s)",
}


def parse_options(doc: str | None, argv: Sequence[str] | None, **flags: object) -> Options:
    """``--json``, ``--workdir`` and the named flags (``delay_ms`` is ``--delay-ms``).

    Each keyword's value is that flag's default for this script, or a :class:`Flag` with help
    text of its own; a ``False`` default makes a switch (``--no-blackbox``).
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    types = {field.name: field.type for field in fields(Options)}
    wanted: dict[str, object] = {"json": Flag(None, HELP["json"]),
                                 "workdir": Flag(None, HELP["workdir"]), **flags}
    for name, spec in wanted.items():
        if name not in types:
            raise TypeError(f"no benchmark flag named {name!r}")
        default, text = (spec.default, spec.help) if isinstance(spec, Flag) else (spec, None)
        flag = "--" + name.replace("_", "-")
        if default is False:
            parser.add_argument(flag, dest=name, action="store_true", help=text)
            continue
        kind = _KINDS[str(types[name])]
        parser.add_argument(flag, dest=name, type=kind, default=default,
                            help=text or HELP.get(name))
    return Options(**vars(parser.parse_args(argv)))


# Options' annotations are strings (postponed evaluation): the converter for each.
_KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "Path | None": Path}


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    """``path`` (created if needed, kept), or a temporary directory removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="availability-bench-") as tmp:
        yield Path(tmp)
