"""The real `token-refresher` process against a real kube-apiserver 1.36 (issue 7).

The refresher runs as `python -m refresher run ...`, exactly as in a pod: its default token file is
a kubelet-like projected volume holding a token the admin minted for the workload's service
account (audience sts.amazonaws.com, as the EKS pod identity webhook projects it), and its API
credential is a kubeconfig with a bearer token of that same service account (API audience), the
stand-in for the automounted kube-api-access token. The service account, its Role and RoleBinding
come from the project's own `k8s/rbac.yaml`.

The server refuses TokenRequests under 10 minutes, so the refresher asks for `10m` tokens and
refreshes every second once active. Tokens are only ever compared, decoded or sent to TokenReview:
no assertion message shows one, and every refresher output is scanned for token material.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException

from refresher.claims import decode_claims
from refresher.devkubelet import ProjectedVolume
from tests.e2e import RefresherProcess, TokenReader, scan_for_leaks, stop_gracefully
from tests.helpers import wait_for
from tests.kube.kubeenv import Kube, api_error, same_token

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
STS = "sts.amazonaws.com"
APP_SA = "drain-app"  # the ServiceAccount of k8s/rbac.yaml
WAIT = 60.0  # generous: every wait ends as soon as its event arrives
SELF_REVIEW_GROUPS = frozenset({"authorization.k8s.io", "authentication.k8s.io"})
TOO_SHORT = "may not specify a duration less than 10 minutes"


# --------------------------------------------------------------------------- manifests


def load_yaml(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def rbac_for_namespace(namespace: str) -> list[dict[str, Any]]:
    """k8s/rbac.yaml with every object, and the RoleBinding's subjects, in `namespace`."""
    docs = load_yaml(K8S / "rbac.yaml")
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
    return docs


def create_from_dict(api: Any, doc: dict[str, Any], **kwargs: Any) -> list[Any]:
    """kubernetes.utils.create_from_dict (untyped), typed: the created objects."""
    create = cast(Any, utils.create_from_dict)
    return list(create(api, doc, **kwargs))


def delete_object(kube: Kube, doc: dict[str, Any]) -> None:
    kind, name, namespace = doc["kind"], doc["metadata"]["name"], doc["metadata"]["namespace"]
    delete = {
        "ServiceAccount": kube.core.delete_namespaced_service_account,
        "Role": kube.rbac.delete_namespaced_role,
        "RoleBinding": kube.rbac.delete_namespaced_role_binding,
    }[kind]
    try:
        delete(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def kustomization() -> dict[str, Any]:
    docs = load_yaml(K8S / "kustomization.yaml")
    assert len(docs) == 1
    return docs[0]


def render_kustomization() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k k8s/` sends, rendered without kubectl.

    Our kustomization only lists resources and sets `namespace:`, so rendering is loading every
    resource file and putting each namespaced object into that namespace.
    """
    kust = kustomization()
    namespace = kust["namespace"]
    objects = []
    for resource in kust["resources"]:
        for doc in load_yaml(K8S / resource):
            doc = copy.deepcopy(doc)
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = namespace
            objects.append(doc)
    return objects


def kubectl_ref(doc: dict[str, Any]) -> str:
    """How kubectl names an object in its output: `deployment.apps/drain-app`."""
    group = doc["apiVersion"].rpartition("/")[0]
    kind = doc["kind"].lower()
    return f"{kind}.{group}/{doc['metadata']['name']}" if group else \
        f"{kind}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------- server helpers


def raw_request(api: Any, method: str, path: str) -> tuple[int, str]:
    """(status, body) of a request the typed client has no method for; never raises on 4xx."""
    method, url, headers, _body, _ = api.param_serialize(
        method, path, auth_settings=["BearerToken"])
    response = api.call_api(method, url, header_params=headers)
    response.read()
    return int(response.status), (response.data or b"").decode("utf-8", "replace")


def token_requests_served(kube: Kube) -> float:
    """How many TokenRequests the API server has answered so far (its own metrics)."""
    status, text = raw_request(kube.api_client, "GET", "/metrics")
    assert status == 200, f"GET /metrics answered {status}"
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="serviceaccounts"' in line \
                and 'subresource="token"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def review(kube: Kube, token: str) -> Any:
    """TokenReview for the STS audience; the V1TokenReviewStatus (holds no token)."""
    return kube.token_review(token, audiences=[STS])


def rejected_reviews(kube: Kube, tokens: list[str], username: str) -> list[str]:
    """For each token TokenReview does not accept as `username`: its index and the reason."""
    problems = []
    for index, token in enumerate(tokens):
        status = review(kube, token)
        if not status.authenticated:
            problems.append(f"token #{index}: {status.error}")
        elif status.user.username != username or STS not in (status.audiences or []):
            problems.append(f"token #{index}: {status.user.username} {status.audiences}")
    return problems


# --------------------------------------------------------------------------- the pod's files


@dataclass
class Workload:
    """One pod's files against the real server: a projected volume, a shared emptyDir, and
    a kubeconfig holding the service account's own API token."""

    kube: Kube
    namespace: str
    service_account: str
    root: Path
    volume: ProjectedVolume
    kubeconfig: Path
    tokens: list[str] = field(default_factory=list, repr=False)  # for the leak scan

    @property
    def projected(self) -> Path:
        return self.root / "projected"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def default_token(self) -> Path:
        return self.projected / "token"

    @property
    def token_file(self) -> Path:
        return self.shared / "token"

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def mint_kubelet_token(self, bound_pod: tuple[str, str] | None = None) -> str:
        """What kubelet would project: audience sts.amazonaws.com, 1 h (not yet written)."""
        minted = self.kube.request_token(self.namespace, self.service_account, audiences=[STS],
                                         expiration_seconds=3600, bound_pod=bound_pod)
        self.tokens.append(minted.token)
        return minted.token

    def kubelet_token(self, bound_pod: tuple[str, str] | None = None) -> str:
        """Mint a kubelet token and project it (a `..data` swap)."""
        token = self.mint_kubelet_token(bound_pod)
        self.volume.write(token)
        return token

    def read_token_file(self) -> str:
        token = self.token_file.read_text(encoding="ascii").strip()
        self.tokens.append(token)
        return token

    def args(self, **flags: str) -> list[str]:
        base = {
            "kubeconfig": str(self.kubeconfig), "default_token_file": str(self.default_token),
            "token_file": str(self.token_file), "namespace": self.namespace,
            "service_account": self.service_account, "token_audience": STS,
            "expiration_duration": "10m", "refresh_interval": "1s", "sleep": "100ms",
            "log_level": "debug",
        }
        base.update(flags)
        return ["run", *[f"--{k}={v}" for k, v in base.items()]]

    def assert_no_leaks(self, *procs: RefresherProcess) -> None:
        text = "".join(p.output() for p in procs)
        assert scan_for_leaks(text, self.tokens) == [], "token material in the refresher output"


@contextmanager
def refresher(workload: Workload, **flags: str) -> Iterator[RefresherProcess]:
    proc = RefresherProcess(workload.args(**flags))
    try:
        yield proc
    finally:
        proc.close()


class CollectingReader(TokenReader):
    """A TokenReader (an app reading the file every 2 ms) that also keeps each distinct token it
    read, in memory only, so that every one of them can be sent to TokenReview afterwards."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.seen: dict[bytes, None] = {}  # insertion-ordered set

    def on_token(self, data: bytes) -> None:
        self.seen.setdefault(data, None)

    def tokens(self) -> list[str]:
        return [data.decode("ascii").strip() for data in self.seen]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def drain_app(kube: Kube, kube_namespace: str) -> Iterator[str]:
    """k8s/rbac.yaml applied to a fresh namespace (its ServiceAccount: drain-app)."""
    docs = rbac_for_namespace(kube_namespace)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}
    created: list[dict[str, Any]] = []
    try:
        for doc in docs:
            create_from_dict(kube.api_client, doc)
            created.append(doc)
        yield kube_namespace
    finally:
        for doc in reversed(created):
            delete_object(kube, doc)


@pytest.fixture
def workload(kube: Kube, drain_app: str, tmp_path: Path) -> Workload:
    # The default (API) audience: what kube-api-access would hold.
    api_token = kube.request_token(drain_app, APP_SA)
    kubeconfig = kube.write_token_kubeconfig(tmp_path / "kubeconfig", api_token.token,
                                             namespace=drain_app)
    w = Workload(kube=kube, namespace=drain_app, service_account=APP_SA, root=tmp_path,
                 volume=ProjectedVolume(tmp_path / "projected"), kubeconfig=kubeconfig)
    w.tokens.append(api_token.token)
    return w


# --------------------------------------------------------------------------- 1. RBAC


def test_rbac_manifest_lets_the_refresher_mint_its_own_tokens_and_nothing_else(
    kube: Kube, workload: Workload
) -> None:
    ns = workload.namespace
    workload.kubelet_token()
    with refresher(workload) as proc:
        proc.wait_event("started", timeout=WAIT)
        proc.send(signal.SIGTERM)
        proc.wait_event("state_change", to_state="active", reason="signal", timeout=WAIT)
        proc.wait_event("refresh_succeeded", timeout=WAIT)
        assert not workload.token_file.is_symlink()
        token = workload.read_token_file()
        status = review(kube, token)
        assert status.authenticated is True, status.error
        assert status.user.username == f"system:serviceaccount:{ns}:{APP_SA}"
        assert status.audiences == [STS]
        claims = decode_claims(token)
        assert claims.subject == f"system:serviceaccount:{ns}:{APP_SA}"
        assert claims.audiences == (STS,)
        assert claims.issued_at is not None and claims.expires_at - claims.issued_at == 600
        assert stop_gracefully(proc) == 0
    assert proc.events("refresh_failed") == []
    workload.assert_no_leaks(proc)

    # The same credential, used directly: exactly one verb on one resource for one name.
    kube.create_service_account(ns, "other")
    elsewhere = kube.create_namespace("elsewhere")
    kube.create_service_account(elsewhere, APP_SA)  # same name, another namespace
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[STS], expiration_seconds=600))
    credential = kube.request_token(ns, APP_SA)
    workload.tokens.append(credential.token)
    with kube.token_client(credential.token) as api:
        core = client.CoreV1Api(api)
        own = core.create_namespaced_service_account_token(APP_SA, ns, body)
        assert own.status is not None and own.status.token
        workload.tokens.append(own.status.token)

        for name, namespace in (("other", ns), (APP_SA, elsewhere)):
            with pytest.raises(ApiException) as denied:
                core.create_namespaced_service_account_token(name, namespace, body)
            status_code, message = api_error(denied.value)
            assert status_code == 403, (name, namespace, message)
            assert 'cannot create resource "serviceaccounts/token"' in message

        status_code, text = raw_request(
            api, "GET", f"/api/v1/namespaces/{ns}/serviceaccounts/{APP_SA}/token")
        assert status_code == 403, text[:300]
        assert 'cannot get resource \\"serviceaccounts/token\\"' in text

        rules_review = client.AuthorizationV1Api(api).create_self_subject_rules_review(
            client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(
                namespace=ns)))
        assert rules_review.status is not None
        rules = rules_review.status.resource_rules
        granted = [(sorted(r.verbs), sorted(r.api_groups or []), sorted(r.resources or []),
                    sorted(r.resource_names or [])) for r in rules
                   if not set(r.api_groups or []) <= SELF_REVIEW_GROUPS]
        assert granted == [(["create"], [""], ["serviceaccounts/token"], [APP_SA])]
    workload.assert_no_leaks(proc)


# --------------------------------------------------------------------------- 2. pod binding


def test_pod_bound_tokens_are_accepted_then_die_with_the_pod(
    kube: Kube, workload: Workload
) -> None:
    ns = workload.namespace
    uid = kube.create_pod(ns, "web-0", APP_SA).metadata.uid
    workload.kubelet_token(bound_pod=("web-0", uid))
    with refresher(workload, pod_name="web-0", pod_uid=uid) as proc:
        started = proc.wait_event("starting", timeout=WAIT)
        assert started["bound_pod"] == "web-0"
        proc.wait_event("started", timeout=WAIT)
        proc.send(signal.SIGTERM)
        wait_for(lambda: len(proc.events("refresh_succeeded")) >= 2, timeout=WAIT,
                 what="two refreshes")
        written = workload.read_token_file()
        claims = decode_claims(written)
        assert (claims.pod_name, claims.pod_uid) == ("web-0", uid)
        alive = review(kube, written)
        assert alive.authenticated is True, alive.error
        assert alive.user.username == workload.username
        assert alive.user.extra["authentication.kubernetes.io/pod-name"] == ["web-0"]
        assert alive.user.extra["authentication.kubernetes.io/pod-uid"] == [uid]

        mark = proc.mark()
        kube.delete_pod(ns, "web-0")
        # The refresher can no longer mint for the pod: the server's 404 reaches the user.
        gone = proc.wait_event("refresh_failed", status=404, start=mark, timeout=WAIT)
        assert 'pods "web-0" not found' in gone["error"]
        assert "--pod_name" in gone["hint"]
        assert proc.proc.poll() is None
        last = workload.read_token_file()  # the last token it wrote stays in place
        assert decode_claims(last).pod_uid == uid

        # kube-apiserver caches successful authentications for 10 s: poll with a deadline.
        def all_rejected() -> bool:
            return not any(review(kube, t).authenticated for t in (written, last))

        wait_for(all_rejected, timeout=WAIT, interval=0.2,
                 what="TokenReview to reject the tokens of the deleted pod")
        for token in (written, last):
            assert review(kube, token).error == (
                "[invalid bearer token, service account token has been invalidated]")
        assert stop_gracefully(proc) == 0
    workload.assert_no_leaks(proc)


def test_wrong_pod_uid_is_a_409_with_a_hint_and_kubelets_token_stays(
    kube: Kube, workload: Workload
) -> None:
    uid = kube.create_pod(workload.namespace, "web-0", APP_SA).metadata.uid
    workload.kubelet_token(bound_pod=("web-0", uid))
    wrong = "00000000-0000-0000-0000-000000000000"
    with refresher(workload, pod_name="web-0", pod_uid=wrong) as proc:
        proc.wait_event("started", timeout=WAIT)
        proc.send(signal.SIGTERM)
        failed = proc.wait_event("refresh_failed", status=409, timeout=WAIT)
        assert failed["level"] == "ERROR"
        assert f"the UID in the bound object reference ({wrong}) does not match" in \
            failed["error"]
        assert "--pod_uid" in failed["hint"]
        # It keeps retrying at the slow pace and never crashes.
        wait_for(lambda: len(proc.events("refresh_failed")) >= 2, timeout=WAIT,
                 what="a second, slower attempt")
        assert all(r["status"] == 409 for r in proc.events("refresh_failed"))
        assert proc.events("refresh_succeeded") == []
        assert proc.proc.poll() is None
        assert workload.token_file.is_symlink()
        assert os.readlink(workload.token_file) == str(workload.default_token)
        status = review(kube, workload.read_token_file())
        assert status.authenticated is True, status.error  # the app still has a valid token
        assert stop_gracefully(proc) == 0
    workload.assert_no_leaks(proc)


# --------------------------------------------------------------------------- 3. lifecycle


def test_full_lifecycle_passive_sigterm_refreshes_shutdown(
    kube: Kube, workload: Workload
) -> None:
    ns = workload.namespace
    uid = kube.create_pod(ns, "web-0", APP_SA).metadata.uid
    first = workload.kubelet_token(bound_pod=("web-0", uid))
    rotated = workload.mint_kubelet_token(bound_pod=("web-0", uid))
    reader = CollectingReader(workload.token_file)
    with refresher(workload, pod_name="web-0", pod_uid=uid) as proc:
        try:
            # -- passive: a symlink to kubelet's token, no TokenRequest at all
            proc.wait_event("started", timeout=WAIT)
            proc.wait_event("token_changed", timeout=WAIT)  # the first look at kubelet's token
            assert workload.token_file.is_symlink()
            reader.start()
            served_before = token_requests_served(kube)
            mark = proc.mark()
            workload.volume.write(rotated)  # kubelet rotates: a `..data` swap
            proc.wait_event("token_changed", start=mark, timeout=WAIT)
            assert workload.token_file.is_symlink()
            assert same_token(workload.token_file.read_text(), rotated)
            assert token_requests_served(kube) == served_before
            assert [r for r in proc.lines if str(r.get("event")).startswith("refresh")] == []
            assert proc.events("state_change") == []

            # -- SIGTERM: active, several refreshes
            proc.send(signal.SIGTERM)
            proc.wait_event("state_change", to_state="active", reason="signal", timeout=WAIT)
            wait_for(lambda: len(proc.events("refresh_succeeded")) >= 4, timeout=WAIT,
                     what="four refreshes")
            assert not workload.token_file.is_symlink()
            assert (workload.shared / "activate").is_file()

            # -- the app has drained: `shutdown` file, exit 0
            (workload.shared / "shutdown").write_text("")
            assert proc.wait_exit(timeout=WAIT) == 0
        finally:
            report = reader.stop()
    proc.wait_event("state_change", to_state="stopping", reason="shutdown_file")
    assert proc.wait_event("exiting")["code"] == 0
    assert not (workload.shared / "shutdown").exists()
    assert proc.events("refresh_failed") == []
    refreshes = len(proc.events("refresh_succeeded"))
    assert token_requests_served(kube) - served_before >= refreshes

    assert report.anomalies == []
    assert report.reads > 100
    seen = reader.tokens()
    workload.tokens.extend(seen)
    own = [t for t in seen if not any(same_token(t, k) for k in (first, rotated))]
    assert len(seen) - len(own) == 2  # the reader saw both of kubelet's tokens...
    assert len(own) >= refreshes >= 4  # ...and then every token the refresher wrote
    for token in own:
        claims = decode_claims(token)
        assert claims.issued_at is not None and claims.expires_at - claims.issued_at == 600
        assert (claims.pod_name, claims.pod_uid) == ("web-0", uid)
    assert rejected_reviews(kube, seen, workload.username) == []
    workload.assert_no_leaks(proc)


def test_expiring_own_credential_is_renewed_through_the_real_api(
    kube: Kube, workload: Workload
) -> None:
    """The refresher's own API credential (kube-api-access) also stops being rotated: with
    little left (600 s < 1.5 x 7m) it mints itself a new one for its own service account
    (API audience, bound to the pod), which the Role of k8s/rbac.yaml allows."""
    ns = workload.namespace
    uid = kube.create_pod(ns, "web-0", APP_SA).metadata.uid
    short = kube.request_token(ns, APP_SA, expiration_seconds=600)
    workload.tokens.append(short.token)
    kube.write_token_kubeconfig(workload.kubeconfig, short.token, namespace=ns)
    workload.kubelet_token(bound_pod=("web-0", uid))
    with refresher(workload, pod_name="web-0", pod_uid=uid, refresh_interval="7m") as proc:
        proc.wait_event("started", timeout=WAIT)
        proc.send(signal.SIGTERM)
        renewed = proc.wait_event("credential_renewed", timeout=WAIT)
        assert 0 < renewed["previous_seconds_left"] <= 600
        assert renewed["expires_at"] - time.time() > 590
        proc.wait_event("refresh_succeeded", timeout=WAIT)
        status = review(kube, workload.read_token_file())
        assert status.authenticated is True, status.error
        assert status.user.username == workload.username
        assert stop_gracefully(proc) == 0
    assert proc.events("refresh_failed") == []
    assert proc.events("credential_renew_failed") == []
    workload.assert_no_leaks(proc)


# --------------------------------------------------------------------------- 4. too short


def test_expiration_under_ten_minutes_warns_then_reports_the_servers_422(
    kube: Kube, workload: Workload
) -> None:
    workload.kubelet_token()
    with refresher(workload, expiration_duration="5m", refresh_interval="1m") as proc:
        warning = proc.wait_event("config_warning", timeout=WAIT)
        assert "--expiration_duration" in warning["message"] and "10m" in warning["message"]
        proc.wait_event("started", timeout=WAIT)
        proc.send(signal.SIGTERM)
        failed = proc.wait_event("refresh_failed", timeout=WAIT)
        assert failed["status"] == 422
        assert failed["level"] == "ERROR"
        assert TOO_SHORT in failed["error"]
        assert "spec.expirationSeconds" in failed["error"]
        assert "--expiration_duration" in failed["hint"]
        assert proc.proc.poll() is None  # no crash
        assert workload.token_file.is_symlink()  # kubelet's token is still served
        assert review(kube, workload.read_token_file()).authenticated is True
        assert stop_gracefully(proc) == 0
    assert proc.events("refresh_succeeded") == []
    assert "Traceback" not in proc.output()
    workload.assert_no_leaks(proc)


# --------------------------------------------------------------------------- 5. dry run


@pytest.fixture
def demo_namespace(kube: Kube) -> Iterator[str]:
    """The kustomization's namespace, created for real from k8s/namespace.yaml."""
    (doc,) = load_yaml(K8S / "namespace.yaml")
    name = doc["metadata"]["name"]
    assert name == kustomization()["namespace"]
    try:
        create_from_dict(kube.api_client, doc)
    except utils.FailToCreateError as exc:  # left by an earlier test of this session
        if not all(e.status == 409 for e in exc.api_exceptions):
            raise
    yield name
    # Nothing deletes namespaces' contents here (no controller-manager): keep it for later tests.


def expected_objects() -> list[dict[str, Any]]:
    objects = render_kustomization()
    kinds = [d["kind"] for d in objects]
    assert sorted(kinds) == ["Deployment", "Deployment", "Namespace", "Role", "RoleBinding",
                             "ServiceAccount"]
    natives = [d for d in objects if d["kind"] == "Deployment" and any(
        c.get("restartPolicy") == "Always"
        for c in d["spec"]["template"]["spec"].get("initContainers", []))]
    assert len(natives) == 1  # a native sidecar really is among the objects checked
    return objects


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH")
def test_every_manifest_passes_kubectl_server_side_dry_run(
    kube: Kube, demo_namespace: str
) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    result = subprocess.run(
        [kubectl, "apply", "--dry-run=server", "-k", str(K8S),
         "--kubeconfig", str(kube.server.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "KUBECONFIG": str(kube.server.kubeconfig)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    lines = result.stdout.splitlines()
    for doc in expected_objects():
        ref = kubectl_ref(doc)
        matches = [line for line in lines if line.startswith(f"{ref} ")]
        assert len(matches) == 1, (ref, result.stdout)
        assert matches[0].endswith("(server dry run)"), matches[0]
    assert len(lines) == len(expected_objects())
    # A dry run persists nothing.
    with pytest.raises(ApiException) as missing:
        client.AppsV1Api(kube.api_client).read_namespaced_deployment("drain-app", demo_namespace)
    assert missing.value.status == 404


def test_every_manifest_passes_server_side_dry_run_through_the_python_client(
    kube: Kube, demo_namespace: str
) -> None:
    """The same check without kubectl: each rendered object sent with dryRun=All."""
    for doc in expected_objects():
        name = doc["metadata"]["name"]
        if doc["kind"] == "Namespace":  # exists already: applying it is a patch
            kube.core.patch_namespace(name, doc, dry_run="All")
            continue
        (created,) = create_from_dict(kube.api_client, doc, dry_run="All")
        assert created.metadata.name == name
        assert created.metadata.namespace == demo_namespace
        if doc["kind"] == "Deployment":
            sent = doc["spec"]["template"]["spec"]
            got = created.spec.template.spec
            assert [c.name for c in got.init_containers] == \
                [c["name"] for c in sent["initContainers"]]
            assert [c.restart_policy for c in got.init_containers] == \
                [c.get("restartPolicy") for c in sent["initContainers"]]
    with pytest.raises(ApiException) as missing:
        client.AppsV1Api(kube.api_client).read_namespaced_deployment(
            "drain-app-native", demo_namespace)
    assert missing.value.status == 404
