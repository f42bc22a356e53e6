"""The example Kubernetes manifests in k8s/: schema-valid, consistent with the refresher's own
flag parser, wired together (paths, volumes, RBAC, probes), and hardened.

No cluster is needed: kubernetes-validate ships the Kubernetes JSON schemas, and the refresher's
arguments go through `refresher.config.parse_command_line`, the parser the image runs.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from refresher.config import Config, parse_command_line

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
MANIFESTS = sorted(p for p in K8S.glob("*.y*ml") if p.name != KUSTOMIZATION.name)

KUBERNETES_VERSION = "1.33.0"
REFRESHER_IMAGE = "ghcr.io/example/token-refresher"
APP_TOKEN_ENV = "AWS_WEB_IDENTITY_TOKEN_FILE"

# What the downward API would put into the refresher's environment.
DOWNWARD_API_PLACEHOLDERS = {
    "metadata.name": "drain-app-5d8c7b9f4-x2x7q",
    "metadata.uid": "0b6f7ad2-3c1e-4f4b-9a55-2f1e8c4d7a10",
    "metadata.namespace": "drain-demo",
    "spec.serviceAccountName": "drain-app",
}

SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def all_docs() -> list[tuple[Path, Doc]]:
    return [(path, doc) for path in MANIFESTS for doc in load(path)]


def deployments() -> list[Doc]:
    return [doc for _, doc in all_docs() if doc["kind"] == "Deployment"]


def deployment(name: str) -> Doc:
    (found,) = [d for d in deployments() if d["metadata"]["name"] == name]
    return found


def image_repository(image: str) -> str:
    """`registry/name:tag@digest` -> `registry/name`."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


@dataclass(frozen=True)
class Container:
    spec: Doc
    init: bool  # listed under initContainers

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def is_refresher(self) -> bool:
        return image_repository(self.spec["image"]) == REFRESHER_IMAGE

    @property
    def native_sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    def env(self) -> dict[str, str]:
        """Literal values, downward-API references replaced by plausible placeholders."""
        env: dict[str, str] = {}
        for var in self.spec.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            field_path = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            assert field_path in DOWNWARD_API_PLACEHOLDERS, (
                f"{self.name}: env {var['name']} comes from an unexpected source {var}"
            )
            env[var["name"]] = DOWNWARD_API_PLACEHOLDERS[field_path]
        return env

    def mounts(self) -> dict[str, Doc]:
        """mountPath -> volumeMount."""
        return {m["mountPath"]: m for m in self.spec.get("volumeMounts", [])}

    def parsed(self) -> tuple[str, Config]:
        assert "command" not in self.spec, f"{self.name}: keep the image's ENTRYPOINT"
        return parse_command_line(list(self.spec.get("args", [])), self.env())


def pod_spec(dep: Doc) -> Doc:
    spec: Doc = dep["spec"]["template"]["spec"]
    return spec


def containers(dep: Doc) -> list[Container]:
    spec = pod_spec(dep)
    return [Container(c, True) for c in spec.get("initContainers", [])] + [
        Container(c, False) for c in spec["containers"]
    ]


def refreshers(dep: Doc) -> list[Container]:
    return [c for c in containers(dep) if c.is_refresher]


def apps(dep: Doc) -> list[Container]:
    return [c for c in containers(dep) if not c.is_refresher]


def running_refresher(dep: Doc) -> Container:
    """The refresher that runs beside the app (a sidecar, classic or native)."""
    (sidecar,) = [c for c in refreshers(dep) if not c.init or c.native_sidecar]
    return sidecar


def volume(dep: Doc, name: str) -> Doc:
    volumes: list[Doc] = pod_spec(dep)["volumes"]
    (found,) = [v for v in volumes if v["name"] == name]
    return found


def kustomization() -> Doc:
    doc: Doc = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


DEPLOYMENT_NAMES = [d["metadata"]["name"] for d in deployments()]


def _ids(path: Path) -> str:
    return path.name


# ------------------------------------------------------------------------------ schema


def test_there_is_something_to_check() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"rbac.yaml", "sidecar.yaml", "native-sidecar.yaml", "namespace.yaml"} <= names
    assert sorted(DEPLOYMENT_NAMES) == ["drain-app", "drain-app-native"]


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids)
def test_manifest_validates_strictly_against_kubernetes_1_33(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        try:
            version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {where}: "
                        f"{exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{path.name}: {exc.message}")
        assert version == "1.33", f"validated against {version}, not 1.33"


def test_strict_validation_rejects_unknown_fields() -> None:
    """Guards the test above: a misspelt field must not pass silently."""
    doc = load(K8S / "sidecar.yaml")[0]
    context = doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# ------------------------------------------------------------------------------ kustomize


def test_kustomization_lists_every_manifest() -> None:
    resources = kustomization()["resources"]
    assert len(resources) == len(set(resources)), f"listed twice: {resources}"
    assert sorted(resources) == sorted(p.name for p in MANIFESTS)


def test_kustomization_namespace_is_created_and_used_by_the_role_binding() -> None:
    namespace = kustomization()["namespace"]
    namespaces = [doc for _, doc in all_docs() if doc["kind"] == "Namespace"]
    assert [ns["metadata"]["name"] for ns in namespaces] == [namespace]
    for path, doc in all_docs():
        if doc["kind"] != "Namespace":
            assert "namespace" not in doc["metadata"], f"{path.name}: kustomize sets namespaces"
    # kustomize does not rewrite RoleBinding subjects, so they must name it themselves.
    for _, doc in all_docs():
        if doc["kind"] == "RoleBinding":
            assert {s.get("namespace") for s in doc["subjects"]} == {namespace}


def test_kustomize_build_puts_everything_in_the_namespace() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (kubectl kustomize renders k8s/)")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    namespace = kustomization()["namespace"]
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(doc["kind"] for _, doc in all_docs())
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == namespace


# ------------------------------------------------------------------------------ the refresher


def refresher_containers() -> Iterator[tuple[str, Container]]:
    for dep in deployments():
        for container in refreshers(dep):
            yield f"{dep['metadata']['name']}/{container.name}", container


@pytest.mark.parametrize(
    "container", [c for _, c in refresher_containers()], ids=[n for n, _ in refresher_containers()]
)
def test_refresher_args_and_env_are_accepted_by_its_parser(container: Container) -> None:
    command, config = container.parsed()
    assert command in ("run", "init")
    assert config.namespace == DOWNWARD_API_PLACEHOLDERS["metadata.namespace"]
    assert config.pod_name == DOWNWARD_API_PLACEHOLDERS["metadata.name"]
    assert config.pod_uid == DOWNWARD_API_PLACEHOLDERS["metadata.uid"]
    assert config.bound_to_pod
    assert config.token_audience == ("sts.amazonaws.com",)
    assert config.expiration_duration >= 600, "the API server refuses tokens under 10 minutes"
    assert config.refresh_interval < config.expiration_duration
    image_tag = container.spec["image"].rsplit(":", 1)[-1]
    assert image_tag not in ("", "latest") and "/" not in image_tag, "pin the refresher image"


@pytest.mark.parametrize("name", DEPLOYMENT_NAMES)
def test_service_account_is_the_pods_own(name: str) -> None:
    dep = deployment(name)
    account = pod_spec(dep)["serviceAccountName"]
    for container in refreshers(dep):
        assert container.parsed()[1].service_account == account


@pytest.mark.parametrize("name", DEPLOYMENT_NAMES)
def test_app_reads_the_file_the_refresher_writes(name: str) -> None:
    dep = deployment(name)
    _, config = running_refresher(dep).parsed()
    token_dir = posixpath.dirname(config.token_file)
    assert config.trigger_dir == token_dir
    (app,) = apps(dep)
    assert app.env()[APP_TOKEN_ENV] == config.token_file

    shared = volume(dep, app.mounts()[token_dir]["name"])
    assert shared.get("emptyDir", {}).get("medium") == "Memory", shared
    for container in [app, *refreshers(dep)]:
        mount = container.mounts().get(token_dir)
        assert mount is not None, f"{container.name}: {token_dir} is not mounted"
        assert mount["name"] == shared["name"], f"{container.name}: {mount}"
        # The refresher writes the token, the app writes the activate/shutdown triggers.
        assert not mount.get("readOnly", False), f"{container.name}: {token_dir} is read-only"


@pytest.mark.parametrize("name", DEPLOYMENT_NAMES)
def test_default_token_is_the_projected_token(name: str) -> None:
    dep = deployment(name)
    _, config = running_refresher(dep).parsed()
    mount_path, file_name = posixpath.split(config.default_token_file)
    (app,) = apps(dep)
    # The app needs it too: the token file is a symlink to it while the refresher is passive.
    for container in [app, *refreshers(dep)]:
        mount = container.mounts().get(mount_path)
        assert mount is not None, f"{container.name}: {mount_path} is not mounted"
        assert mount.get("readOnly") is True, f"{container.name}: mount it read-only"
        projected = volume(dep, mount["name"])["projected"]
        (source,) = projected["sources"]
        token = source["serviceAccountToken"]
        assert token["path"] == file_name
        assert token["audience"] in config.token_audience
        assert token["expirationSeconds"] == 86400


@pytest.mark.parametrize("name", DEPLOYMENT_NAMES)
def test_prestop_activates_drains_and_shuts_down(name: str) -> None:
    dep = deployment(name)
    _, config = running_refresher(dep).parsed()
    (app,) = apps(dep)
    script = " ".join(app.spec["lifecycle"]["preStop"]["exec"]["command"])
    activate = script.find(posixpath.join(config.trigger_dir, "activate"))
    shutdown = script.find(posixpath.join(config.trigger_dir, "shutdown"))
    assert 0 <= activate < shutdown, script
    drain = script[activate:shutdown]
    assert re.search(r";\s*\S+.*;", drain), f"no drain step between the triggers: {script}"
    assert pod_spec(dep)["terminationGracePeriodSeconds"] >= 86400


@pytest.mark.parametrize("name", DEPLOYMENT_NAMES)
def test_refresher_probes_use_its_health_port(name: str) -> None:
    dep = deployment(name)
    sidecar = running_refresher(dep)
    _, config = sidecar.parsed()
    assert config.health_port > 0
    (port,) = [p for p in sidecar.spec["ports"] if p.get("name") == "health"]
    assert port["containerPort"] == config.health_port
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = sidecar.spec[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("health", config.health_port), get


def test_classic_sidecar_has_an_init_container_with_the_same_config() -> None:
    dep = deployment("drain-app")
    sidecar = running_refresher(dep)
    assert not sidecar.init
    command, config = sidecar.parsed()
    assert command == "run"
    assert config.on_sigterm == "activate", "a classic sidecar gets SIGTERM with the app"
    inits = [c for c in refreshers(dep) if c.init]
    assert len(inits) == 1 and not inits[0].native_sidecar
    init_command, init_config = inits[0].parsed()
    assert init_command == "init"
    assert init_config.token_file == config.token_file
    assert init_config.trigger_dir == config.trigger_dir
    assert init_config == config
    # The init container must come before the app; only refreshers are init containers here.
    assert all(c.is_refresher for c in containers(dep) if c.init)


def test_native_sidecar_exits_on_sigterm_and_gates_the_app_start() -> None:
    dep = deployment("drain-app-native")
    (sidecar,) = refreshers(dep)
    assert sidecar.native_sidecar, "the refresher must be an init container, restartPolicy Always"
    command, config = sidecar.parsed()
    assert command == "run"
    assert config.on_sigterm == "exit", "kubelet signals native sidecars after the app exited"
    probe = sidecar.spec["startupProbe"]["httpGet"]
    assert probe["path"] == "/readyz" and probe["port"] in ("health", config.health_port)
    assert [c.name for c in containers(dep) if c.init] == [sidecar.name], "no other init"


def test_deployments_do_not_select_each_others_pods() -> None:
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments()]
    for dep in deployments():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [s for s in selectors if s.items() <= labels.items()]
        assert matching == [dep["spec"]["selector"]["matchLabels"]], dep["metadata"]["name"]


# ------------------------------------------------------------------------------ RBAC


def test_rbac_grants_only_token_creation_for_the_apps_service_account() -> None:
    docs = load(K8S / "rbac.yaml")
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    name = account["metadata"]["name"]
    assert {pod_spec(d)["serviceAccountName"] for d in deployments()} == {name}

    (rule,) = role["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": [name],
        "verbs": ["create"],
    }
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject["name"] == name


def test_nothing_is_cluster_wide() -> None:
    kinds = {doc["kind"] for _, doc in all_docs()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, kinds


# ------------------------------------------------------------------------------ hardening


def all_containers() -> Iterator[tuple[str, Container]]:
    for dep in deployments():
        for container in containers(dep):
            yield f"{dep['metadata']['name']}/{container.name}", container


@pytest.mark.parametrize(
    "container", [c for _, c in all_containers()], ids=[n for n, _ in all_containers()]
)
def test_container_is_hardened_and_bounded(container: Container) -> None:
    context = container.spec.get("securityContext", {})
    for key, expected in SECURITY_CONTEXT.items():
        assert context.get(key) == expected, f"securityContext.{key}: {context.get(key)!r}"
    resources = container.spec.get("resources", {})
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"resources.{kind}: {resources}"
