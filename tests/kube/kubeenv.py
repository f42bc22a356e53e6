"""A real kube-apiserver + etcd for tests, built from the Go module next to this file.

`build_binary()` compiles `kube-testenv` once per source digest into a cache
directory outside the repository; `KubeApiServer` runs it on free 127.0.0.1
ports; `Kube` is a thin admin helper around the official `kubernetes` client.

Tokens never appear in reprs, logs or exception messages produced here.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self, cast

import yaml

MODULE_DIR = Path(__file__).resolve().parent
ISSUER = "https://kubernetes.default.svc.cluster.local"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: there is no kubelet


class KubeEnvError(RuntimeError):
    """Building or starting the test environment failed."""


# --------------------------------------------------------------------------- build


def go_binary() -> str | None:
    return shutil.which("go")


def go_available() -> bool:
    return go_missing_reason() is None


def go_missing_reason() -> str | None:
    """Why the kube tests cannot run here, or None when Go is usable."""
    go = go_binary()
    if go is None:
        return "Go toolchain not found on PATH (needed to build tests/kube/kube-testenv)"
    try:
        subprocess.run([go, "version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Go toolchain not usable: {exc}"
    return None


# Stamp the real version so /version and client version checks look like 1.36.3.
_K8S_VERSION = "v1.36.3"
_VERSION_PKG = "k8s.io/component-base/version"
GO_BUILD_FLAGS = [
    "-trimpath",
    "-buildvcs=false",
    f"-ldflags=-s -w -X {_VERSION_PKG}.gitVersion={_K8S_VERSION}"
    f" -X {_VERSION_PKG}.gitMajor=1 -X {_VERSION_PKG}.gitMinor=36",
]


def source_digest() -> str:
    """16 hex digits of sha256 over go.mod, go.sum, every *.go file and the build flags."""
    h = hashlib.sha256(" ".join(GO_BUILD_FLAGS).encode() + b"\0")
    for path in [
        MODULE_DIR / "go.mod",
        MODULE_DIR / "go.sum",
        *sorted(MODULE_DIR.glob("*.go")),
    ]:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    explicit = os.environ.get("TOKEN_REFRESHER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "token-refresher"


def binary_path() -> Path:
    return cache_dir() / f"kube-testenv-{source_digest()}"


last_build_seconds: float | None = None  # set when this process built the binary


def build_binary(timeout: float = 3600.0) -> Path:
    """Return the cached kube-testenv binary, building it first if needed.

    A lock file makes concurrent callers wait for one build; the binary is
    written under a temporary name and renamed into place.
    """
    target = binary_path()
    if target.exists():
        return target
    go = go_binary()
    if go is None:
        raise KubeEnvError("Go toolchain not found on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "kube-testenv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # another process built it while we waited
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        cmd = [go, "build", *GO_BUILD_FLAGS, "-o", str(tmp), "."]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                cwd=MODULE_DIR,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            tmp.unlink(missing_ok=True)
            raise KubeEnvError(
                f"`go build` of kube-testenv timed out after {timeout:.0f}s"
            ) from exc
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            output = (proc.stdout + proc.stderr)[-4000:]
            raise KubeEnvError(f"`{' '.join(cmd)}` failed in {MODULE_DIR}:\n{output}")
        os.replace(tmp, target)
        for old in target.parent.glob("kube-testenv-*"):  # ~110 MB each
            if old != target:
                old.unlink(missing_ok=True)
        global last_build_seconds
        last_build_seconds = time.monotonic() - started
    return target


# --------------------------------------------------------------------------- server


def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()  # loaded in the parent: the child only makes one call
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM kube-testenv if the test process dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class KubeApiServer:
    """One kube-testenv process: kube-apiserver + etcd on free 127.0.0.1 ports.

    Use `start()`/`stop()` or a `with` block. After start: `url`, `kubeconfig`
    (admin, O=system:masters) and `ca_file` (CA of the serving certificate).
    """

    def __init__(self, binary: Path, *, ready_timeout: float = 180.0) -> None:
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.startup_seconds: float | None = None
        self.exit_log = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._url: str | None = None
        self._kubeconfig: Path | None = None

    # -- properties only valid while running
    @property
    def url(self) -> str:
        assert self._url is not None, "KubeApiServer is not running"
        return self._url

    @property
    def kubeconfig(self) -> Path:
        assert self._kubeconfig is not None, "KubeApiServer is not running"
        return self._kubeconfig

    @property
    def ca_file(self) -> Path:
        assert self._dir is not None, "KubeApiServer is not running"
        return self._dir / "out" / "ca.crt"

    @property
    def log_file(self) -> Path:
        assert self._dir is not None, "KubeApiServer is not running"
        return self._dir / "kube-testenv.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        if self._proc is not None:
            raise KubeEnvError("already started")
        self._dir = Path(tempfile.mkdtemp(prefix="kube-testenv-py-"))
        out = self._dir / "out"
        out.mkdir()
        started = time.monotonic()
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--dir",
                    str(out),
                    "--port",
                    "0",
                    "--timeout",
                    f"{int(self.ready_timeout)}s",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=_die_with_parent,  # not thread-safe in general; one prctl call
            )
        try:
            line = self._read_ready_line(started + self.ready_timeout + 30)
        except (OSError, TimeoutError, KubeEnvError) as exc:
            tail = self._log_tail()
            self.stop()
            raise KubeEnvError(
                f"kube-testenv did not become ready; its log ends with:\n{tail}"
            ) from exc
        except BaseException:  # e.g. KeyboardInterrupt: never leave the child behind
            self.stop()
            raise
        parts = line.split()
        if len(parts) != 3 or parts[0] != "READY":
            tail = self._log_tail()
            self.stop()
            raise KubeEnvError(f"unexpected kube-testenv output {line!r}; log:\n{tail}")
        self._url, self._kubeconfig = parts[1], Path(parts[2])
        self.startup_seconds = time.monotonic() - started
        return self

    def _read_ready_line(self, deadline: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no READY line from kube-testenv")
                if sel.select(timeout=min(remaining, 1.0)):
                    chunk = os.read(stdout.fileno(), 4096)
                    if not chunk:
                        raise KubeEnvError(f"kube-testenv exited with {self._proc.wait()}")
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def _log_tail(self, limit: int = 6000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-limit:]
        except (OSError, AssertionError):
            return "(no log)"

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait, SIGKILL as a last resort; remove the temp dir. Idempotent.

        Returns the exit status (0 after a clean shutdown, None if never
        started); the end of the process's stderr is kept in `exit_log`.
        """
        code: int | None = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()
        if self._dir is not None:
            self.exit_log = self._log_tail()
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = self._url = self._kubeconfig = None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class MintedToken:
    """A token from TokenRequest; `token` is kept out of repr() on purpose."""

    token: str = field(repr=False)
    expiration_timestamp: datetime
    claims: dict[str, Any] = field(repr=False)

    def __str__(self) -> str:
        return f"<token expiring {self.expiration_timestamp.isoformat()}>"


def jwt_claims(token: str) -> dict[str, Any]:
    """Decode the (unverified) payload of a JWT."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise ValueError("not a JWT") from None
    if not isinstance(data, dict):
        raise TypeError("JWT payload is not an object")
    return data


def same_token(a: str, b: str) -> bool:
    """Compare two tokens without ever putting them in an assertion message."""
    return a == b


def api_error(exc: Exception) -> tuple[int, str]:
    """(HTTP status, Status.message) of a kubernetes ApiException."""
    status = int(getattr(exc, "status", 0) or 0)
    try:
        message = str(json.loads(getattr(exc, "body", "") or "{}").get("message", ""))
    except ValueError:
        message = ""
    return status, message


def api_client_from_kubeconfig(path: Path) -> Any:
    """kubernetes.client.ApiClient for a kubeconfig file (caller must close() it)."""
    from kubernetes import config

    new_client = cast(Any, config.new_client_from_config)
    return new_client(config_file=str(path), persist_config=False)


def admin_api_client(server: KubeApiServer) -> Any:
    return api_client_from_kubeconfig(server.kubeconfig)


class Kube:
    """Admin access to a KubeApiServer plus tracked objects to clean up.

    Objects created through `create_*` are deleted by `cleanup()` (newest
    first). There is no controller-manager: namespaces stay Terminating after
    deletion and nothing creates a `default` ServiceAccount, so pods must
    name a ServiceAccount created with `create_service_account`.
    """

    def __init__(self, server: KubeApiServer) -> None:
        from kubernetes import client

        self.server = server
        self.api_client = admin_api_client(server)
        self.core = client.CoreV1Api(self.api_client)
        self.authn = client.AuthenticationV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self._cleanups: list[tuple[str, str, str]] = []  # (kind, namespace, name)

    def close(self) -> None:
        self.cleanup()
        self.api_client.close()

    # -- objects
    def create_namespace(self, prefix: str = "test") -> str:
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self._cleanups.append(("Namespace", "", name))
        return name

    def create_service_account(self, namespace: str, name: str = "app") -> Any:
        from kubernetes import client

        sa = self.core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
        self._cleanups.append(("ServiceAccount", namespace, name))
        return sa

    def create_pod(self, namespace: str, name: str, service_account: str) -> Any:
        """A pod that never runs (no scheduler, no kubelet); returns the V1Pod (has uid)."""
        from kubernetes import client

        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                service_account_name=service_account,
                automount_service_account_token=False,
                termination_grace_period_seconds=0,
                containers=[client.V1Container(name="main", image=PAUSE_IMAGE)],
            ),
        )
        created = self.core.create_namespaced_pod(namespace, pod)
        self._cleanups.append(("Pod", namespace, name))
        return created

    def delete_pod(self, namespace: str, name: str, wait: float = 30.0) -> None:
        """Delete with grace period 0 and wait until the pod is gone."""
        from kubernetes.client.exceptions import ApiException

        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_pod(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(0.1)
        raise KubeEnvError(f"pod {namespace}/{name} still exists after {wait}s")

    def cleanup(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while self._cleanups:
            kind, namespace, name = self._cleanups.pop()
            try:
                if kind == "Pod":
                    self.delete_pod(namespace, name)
                elif kind == "ServiceAccount":
                    self.core.delete_namespaced_service_account(name, namespace)
                elif kind == "Namespace":
                    self.core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    # -- tokens
    def request_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: list[str] | None = None,
        expiration_seconds: int | None = None,
        bound_pod: tuple[str, str] | None = None,
    ) -> MintedToken:
        """TokenRequest as admin. bound_pod=(name, uid) binds the token to a Pod.

        Raises kubernetes ApiException on refusal (see `api_error`).
        """
        from kubernetes import client

        ref = None
        if bound_pod is not None:
            ref = client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=bound_pod[0], uid=bound_pod[1]
            )
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=audiences or [],
                expiration_seconds=expiration_seconds,
                bound_object_ref=ref,
            )
        )
        status = self.core.create_namespaced_service_account_token(
            service_account, namespace, body
        ).status
        if status is None or not status.token or status.expiration_timestamp is None:
            raise KubeEnvError("TokenRequest answered without a token")
        return MintedToken(
            token=status.token,
            expiration_timestamp=status.expiration_timestamp,
            claims=jwt_claims(status.token),
        )

    def token_review(self, token: str, audiences: list[str] | None = None) -> Any:
        """TokenReview as admin; returns only the V1TokenReviewStatus (never the token)."""
        from kubernetes import client

        review = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=audiences)
        )
        return self.authn.create_token_review(review).status

    def write_token_kubeconfig(self, path: Path, token: str, namespace: str | None = None) -> Path:
        """Write a kubeconfig (server + CA + bearer token), mode 0600, and return its path."""
        context: dict[str, Any] = {"cluster": "kube-testenv", "user": "token"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kube-testenv",
                    "cluster": {
                        "server": self.server.url,
                        "certificate-authority-data": base64.b64encode(
                            self.server.ca_file.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "token", "context": context}],
            "current-context": "token",
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f)
        return path

    def client_for_token(self, token: str) -> Any:
        """An ApiClient authenticating with `token` (caller must close() it)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server.url
        cfg.ssl_ca_cert = str(self.server.ca_file)
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)

    @contextlib.contextmanager
    def token_client(self, token: str) -> Iterator[Any]:
        api = self.client_for_token(token)
        try:
            yield api
        finally:
            api.close()
