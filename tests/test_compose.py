"""deploy/compose.yaml: what it mounts exists, is valid, and points at the other services.

No Docker engine is needed: the files each container would see are laid out
under a temporary root at their container paths and checked with the same
tools the containers run (promtool, amtool; skipped when absent unless
REQUIRE_PROMETHEUS=1).
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.needs import binary
from tests.targets import run_exporter

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
EXPORTER = "availability-exporter"
IMAGE_CONFIG = "/etc/availability-exporter/endpoints.yaml"

Service = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    result: dict[str, Service] = compose["services"]
    return result


def bind_mounts(service: Service) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of every bind mount; host paths are relative to deploy/."""
    mounts: list[tuple[Path, PurePosixPath]] = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), "short volume syntax expected"
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DEPLOY / source).resolve(), PurePosixPath(target)))
    return mounts


def host_path(service: Service, container_path: PurePosixPath) -> Path:
    """Where the file a container sees at container_path comes from on the host."""
    best: tuple[Path, PurePosixPath] | None = None
    for host, target in bind_mounts(service):
        if (container_path == target or target in container_path.parents) and (
            best is None or len(target.parts) > len(best[1].parts)
        ):
            best = (host, target)
    assert best is not None, f"nothing is mounted at {container_path}"
    host, target = best
    return host.joinpath(*container_path.relative_to(target).parts)


def lay_out(service: Service, root: Path) -> None:
    """Copy a service's bind mounts under root at their container paths."""
    for host, target in bind_mounts(service):
        assert host.exists(), f"{host} (mounted at {target}) does not exist"
        destination = root.joinpath(*target.parts[1:])
        destination.parent.mkdir(parents=True, exist_ok=True)
        if host.is_dir():
            shutil.copytree(host, destination)
        else:
            shutil.copy2(host, destination)


def _container_ports(service: Service) -> set[int]:
    published = {int(str(mapping).rsplit(":", 1)[-1]) for mapping in service.get("ports", [])}
    return published | {int(port) for port in service.get("expose", [])}


def _exporters(services: dict[str, Service]) -> dict[str, Service]:
    """The services that run this project's image."""
    return {
        name: service
        for name, service in services.items()
        if service["image"].startswith(f"{EXPORTER}:")
    }


def _command_flag(service: Service, flag: str) -> str:
    command = service["command"]
    for item in command:
        if item.startswith(flag + "="):
            return str(item.split("=", 1)[1])
    return str(command[command.index(flag) + 1])


def test_every_image_is_pinned(services: dict[str, Service]) -> None:
    assert {EXPORTER, "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin an exact version ({image})"


def test_exporters_are_built_from_this_repository(services: dict[str, Service]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    exporters = _exporters(services)
    assert EXPORTER in exporters
    for exporter in exporters.values():
        context = (DEPLOY / exporter["build"]["context"]).resolve()
        assert context == REPO
        assert (context / exporter["build"].get("dockerfile", "Dockerfile")).is_file()
        assert exporter["image"] == f"{EXPORTER}:{pyproject['project']['version']}"


def test_shards_cover_every_index_once(services: dict[str, Service]) -> None:
    shards: dict[int, list[int]] = {}
    for exporter in _exporters(services).values():
        if "--shard" in exporter["command"]:
            index, count = map(int, _command_flag(exporter, "--shard").split("/"))
            shards.setdefault(count, []).append(index)
    for count, indexes in shards.items():
        assert sorted(indexes) == list(range(count)), f"shards of {count}: {indexes}"


def test_dependencies_are_services(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown service {dependency}"


def test_every_bind_mounted_host_path_exists(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for host, target in bind_mounts(service):
            assert host.exists(), f"{name}: {host} (mounted at {target}) does not exist"


def test_exporter_configs_are_mounted_and_valid(services: dict[str, Service]) -> None:
    state_volumes: list[str] = []
    config_files: set[Path] = set()
    for name, exporter in _exporters(services).items():
        config = exporter["command"][0]
        assert config == IMAGE_CONFIG, name
        config_files.add(host_path(exporter, PurePosixPath(config)))
        state_dir = str(PurePosixPath(_command_flag(exporter, "--state.file")).parent)
        volume = next((v for v in exporter["volumes"] if v.split(":")[1] == state_dir), None)
        assert volume, f"{name}: the state file must live on a volume to survive restarts"
        state_volumes.append(volume.split(":")[0])
    assert len(set(state_volumes)) == len(state_volumes), "exporters must not share a state file"
    for config_file in sorted(config_files):
        result = run_exporter("--config.check", str(config_file))
        assert result.returncode == 0, result.stderr


def test_prometheus_config_passes_promtool(services: dict[str, Service], tmp_path: Path) -> None:
    promtool = binary("promtool")
    container_root = tmp_path / "root"
    prometheus = services["prometheus"]
    config_path = PurePosixPath(_command_flag(prometheus, "--config.file"))
    lay_out(prometheus, container_root)
    host_config = container_root.joinpath(*config_path.parts[1:])
    config = yaml.safe_load(host_config.read_text(encoding="utf-8"))

    # Relative rule paths resolve against the config file's directory, as in
    # the container; absolute ones are moved under the temporary root.
    rule_files: list[str] = []
    for pattern in config.get("rule_files", []):
        if pattern.startswith("/"):
            pattern = str(container_root.joinpath(*PurePosixPath(pattern).parts[1:]))
        rule_files.append(pattern)
        matched = glob.glob(str(host_config.parent / pattern))
        assert matched, f"rule_files entry {pattern} matches no mounted file"
    config["rule_files"] = rule_files
    host_config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    result = subprocess.run(
        [promtool, "check", "config", str(host_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _static_targets(config: dict[str, Any]) -> Iterator[str]:
    for scrape in config.get("scrape_configs", []):
        for static in scrape.get("static_configs", []):
            yield from static.get("targets", [])
    for alerting in config.get("alerting", {}).get("alertmanagers", []):
        for static in alerting.get("static_configs", []):
            yield from static.get("targets", [])


def test_prometheus_targets_are_compose_services(services: dict[str, Service]) -> None:
    prometheus = services["prometheus"]
    config_path = PurePosixPath(_command_flag(prometheus, "--config.file"))
    config = yaml.safe_load(host_path(prometheus, config_path).read_text(encoding="utf-8"))
    targets = list(_static_targets(config))
    assert targets
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host in services, f"{target}: {host} is not a service of compose.yaml"
        assert int(port) in _container_ports(services[host]), f"{target}: wrong port"
    scraped = {target.rpartition(":")[0] for target in targets}
    unscraped = set(_exporters(services)) - scraped
    assert not unscraped, f"exporters Prometheus does not scrape: {sorted(unscraped)}"


def test_alertmanager_config_passes_amtool(services: dict[str, Service], tmp_path: Path) -> None:
    amtool = binary("amtool")
    container_root = tmp_path / "root"
    alertmanager = services["alertmanager"]
    config_path = PurePosixPath(_command_flag(alertmanager, "--config.file"))
    lay_out(alertmanager, container_root)
    result = subprocess.run(
        [amtool, "check-config", str(container_root.joinpath(*config_path.parts[1:]))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _provisioning(grafana: Service, kind: str) -> list[dict[str, Any]]:
    """Every item of the grafana provisioning files of one kind (datasources, providers)."""
    directory = host_path(grafana, PurePosixPath("/etc/grafana/provisioning"))
    section = "datasources" if kind == "datasources" else "dashboards"
    items: list[dict[str, Any]] = []
    for path in sorted((directory / section).glob("*.y*ml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        items.extend(document.get(kind, []))
    return items


def _datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and isinstance(source.get("uid"), str):
            yield source["uid"]
        for value in node.values():
            yield from _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_uids(value)


def test_grafana_provisions_the_dashboard_against_prometheus(
    services: dict[str, Service],
) -> None:
    grafana = services["grafana"]
    datasources = _provisioning(grafana, "datasources")
    assert datasources, "no datasource provisioned"
    for source in datasources:
        host = urlsplit(source["url"]).hostname
        assert host in services, f"datasource {source.get('name')} points at {host}"

    providers = _provisioning(grafana, "providers")
    assert providers, "no dashboard provider provisioned"
    dashboards: list[Path] = []
    for provider in providers:
        folder = host_path(grafana, PurePosixPath(provider["options"]["path"]))
        dashboards.extend(sorted(folder.glob("*.json")))
    names = {path.name for path in dashboards}
    assert "availability-exporter.json" in names

    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert host_path(grafana, home).is_file()

    known_uids = {source.get("uid") for source in datasources}
    for path in dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for uid in _datasource_uids(dashboard):
            # "${...}" and "$name" are template variables; "grafana" and
            # "-- ..." are Grafana's built-in sources.
            if uid.startswith(("$", "-- ")) or uid == "grafana":
                continue
            assert uid in known_uids, f"{path.name} uses datasource uid {uid!r}, not provisioned"
