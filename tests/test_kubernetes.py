"""The Kubernetes base in deploy/kubernetes: it renders, validates, shards and stays in sync.

`kubectl kustomize` renders it (skipped without kubectl unless
REQUIRE_KUBECTL=1); core objects are validated against the Kubernetes 1.32
OpenAPI schemas by kubernetes-validate; the Prometheus Operator objects, for
which it has no schema, are checked for what the operator and this project
rely on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.needs import binary
from tests.targets import run_exporter

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "deploy" / "kubernetes"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
GENERATOR = REPO / "tools" / "gen_prometheusrule.py"
# The oldest release where the apps.kubernetes.io/pod-index label is GA, and
# one kubernetes-validate ships schemas for.
KUBERNETES_VERSION = "1.32.0"
CORE_KINDS = {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
PORT = 10199

Manifest = dict[str, Any]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _by_kind(manifests: list[Manifest]) -> dict[str, Manifest]:
    result: dict[str, Manifest] = {}
    for manifest in manifests:
        kind = manifest["kind"]
        assert kind not in result, f"two {kind} objects"
        result[kind] = manifest
    return result


def _project_version() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    version: str = pyproject["project"]["version"]
    return version


@pytest.fixture(scope="module")
def rendered() -> dict[str, Manifest]:
    kubectl = binary("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(BASE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return _by_kind([doc for doc in yaml.safe_load_all(result.stdout) if doc])


@pytest.fixture(scope="module")
def statefulset() -> Manifest:
    manifest: Manifest = _load(BASE / "statefulset.yaml")
    return manifest


def _container(statefulset: Manifest) -> Manifest:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Manifest = containers[0]
    return container


def _flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def test_kustomize_renders_every_object(rendered: dict[str, Manifest]) -> None:
    assert set(rendered) == CORE_KINDS | CRD_KINDS


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_object_validates_against_kubernetes_schema(
    rendered: dict[str, Manifest], kind: str
) -> None:
    try:
        kubernetes_validate.validate(rendered[kind], KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{kind} invalid at {path}: {exc.message}")


def test_objects_refer_to_each_other(rendered: dict[str, Manifest]) -> None:
    sts = rendered["StatefulSet"]
    service = rendered["Service"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]

    def selects_pods(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= pod_labels.items()

    assert selects_pods(sts["spec"]["selector"]["matchLabels"])
    assert selects_pods(service["spec"]["selector"])
    assert selects_pods(rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert service["spec"]["clusterIP"] == "None", "headless: every pod scraped on its own"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]

    monitor = rendered["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    container_ports = {port["name"]: port for port in _container(sts)["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint.get("path", "/metrics") == "/metrics"
    for port in service_ports.values():
        assert container_ports[port["targetPort"]]["containerPort"] == port["port"] == PORT

    volumes = {volume["name"]: volume for volume in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["endpoints"]["configMap"]["name"] == rendered["ConfigMap"]["metadata"]["name"]
    assert rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1

    rule = rendered["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"


def test_configmap_endpoints_pass_config_check(
    rendered: dict[str, Manifest], statefulset: Manifest, tmp_path: Path
) -> None:
    container = _container(statefulset)
    config_path = Path(container["args"][0])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "endpoints")
    assert config_path.parent == Path(mount["mountPath"]), "config file is in the ConfigMap mount"
    data = rendered["ConfigMap"]["data"]
    assert config_path.name in data, f"ConfigMap has no key {config_path.name}"
    endpoints = tmp_path / config_path.name
    endpoints.write_text(data[config_path.name], encoding="utf-8")
    result = run_exporter("--config.check", str(endpoints))
    assert result.returncode == 0, result.stderr


def test_each_pod_probes_its_own_shard(statefulset: Manifest) -> None:
    container = _container(statefulset)
    args: list[str] = container["args"]
    env = {item["name"]: item for item in container["env"]}

    assert _flag(args, "--shard") == "$(POD_INDEX)/$(SHARD_COUNT)"
    # Kubernetes leaves an undefined $(VAR) in args as literal text.
    for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(args)):
        assert name in env, f"$({name}) used in args but not defined in env"
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["SHARD_COUNT"]["value"] == str(statefulset["spec"]["replicas"])
    assert statefulset["spec"]["replicas"] == 3
    assert _flag(args, "--web.listen-address") == f"0.0.0.0:{PORT}"


def test_probes_state_and_resources(statefulset: Manifest) -> None:
    container = _container(statefulset)
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "160Mi"},
        "limits": {"cpu": "1000m", "memory": "320Mi"},
    }

    state_file = Path(_flag(container["args"], "--state.file"))
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert state_file.parent == Path(mounts["state"]["mountPath"])
    assert not mounts["state"].get("readOnly", False)
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["state"] or "persistentVolumeClaim" in volumes["state"]


def test_security_context(statefulset: Manifest) -> None:
    pod = statefulset["spec"]["template"]["spec"]
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False

    security = _container(statefulset)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_image_tag_is_the_project_version(statefulset: Manifest) -> None:
    kustomization = _load(BASE / "kustomization.yaml")
    images = {image["name"]: image for image in kustomization["images"]}
    assert images["availability-exporter"]["newTag"] == _project_version()
    assert _container(statefulset)["image"] == f"availability-exporter:{_project_version()}"


def _rule_file_groups() -> list[Any]:
    files = sorted(
        {*RULES_DIR.glob("*.yml"), *RULES_DIR.glob("*.yaml")}, key=lambda path: path.name
    )
    assert files, f"no rule files in {RULES_DIR}"
    groups: list[Any] = []
    for path in files:
        groups.extend(_load(path)["groups"])
    return groups


def test_prometheusrule_holds_exactly_the_rule_files() -> None:
    manifest = _load(BASE / "prometheusrule.yaml")
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == _rule_file_groups()


def test_generated_prometheusrule_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_generator_check_detects_a_stale_manifest(tmp_path: Path) -> None:
    stale = tmp_path / "prometheusrule.yaml"
    text = (BASE / "prometheusrule.yaml").read_text(encoding="utf-8")
    stale.write_text(text.replace("expr:", "expr: ", 1) + "# edited by hand\n", encoding="utf-8")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(GENERATOR), "--output", str(stale), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert run("--check").returncode == 1
    assert run().returncode == 0
    assert stale.read_text(encoding="utf-8") == text
    assert run("--check").returncode == 0


def test_generator_refuses_duplicate_group_names(tmp_path: Path) -> None:
    group = {"name": "same", "rules": [{"record": "a:b", "expr": "vector(1)"}]}
    for name in ("a.yml", "b.yml"):
        (tmp_path / name).write_text(yaml.safe_dump({"groups": [group]}), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            "--rules-dir",
            str(tmp_path),
            "--output",
            str(tmp_path / "out.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "'same' already defined" in result.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_readme_overlay_changes_replicas_and_shard_count_together(tmp_path: Path) -> None:
    kubectl = binary("kubectl")
    readme = (BASE / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"```yaml\n# (deploy/overlays/\S+/kustomization\.yaml)\n(.*?)```", readme, re.S
    )
    assert match, "README.md lost its overlay example"
    overlay = tmp_path / match.group(1)
    overlay.parent.mkdir(parents=True)
    overlay.write_text(match.group(2), encoding="utf-8")
    shutil.copytree(BASE, tmp_path / "deploy" / "kubernetes")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay.parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sts = _by_kind([doc for doc in yaml.safe_load_all(result.stdout) if doc])["StatefulSet"]
    env = {item["name"]: item for item in _container(sts)["env"]}
    assert sts["spec"]["replicas"] == 5
    assert env["SHARD_COUNT"]["value"] == "5"
    assert "fieldRef" in env["POD_INDEX"]["valueFrom"], "the patch must not drop POD_INDEX"
