"""The stand-in cluster: one DevApiServer on 127.0.0.1 and pod directories that point at it.

A pod is a projected volume (kubelet's `..data` layout, one 24 h token), a shared emptyDir
(`token_file` and the trigger files), a kubeconfig holding the refresher's own 24 h credential and
the same credential as a plain file for the baseline's curl.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from refresher.devkubelet import ProjectedVolume
from refresher.devserver import DevApiServer

NS = "bench"
AUDIENCE = "sts.amazonaws.com"
KUBELET_LIFETIME = 86400  # s: the server's maximum; passive stays passive with a 1 h interval
CREDENTIAL_LIFETIME = 86400  # s


@dataclass
class Pod:
    name: str
    service_account: str
    root: Path
    volume: ProjectedVolume
    kubeconfig: Path
    credential: Path
    api_url: str
    ca_file: str
    shared: Path  # the emptyDir shared with the app: token_file and the trigger files

    @property
    def default_token(self) -> Path:
        return self.volume.path

    @property
    def token_file(self) -> Path:
        return self.shared / "token"

    def reset_shared(self) -> None:
        """A fresh emptyDir (a new pod): no token file, no triggers."""
        shutil.rmtree(self.shared, ignore_errors=True)
        self.shared.mkdir(parents=True)

    def sibling(self, name: str) -> Pod:
        """Another pod of the same service account, with its own (fresh) shared directory."""
        pod = replace(self, name=name, shared=self.root / name)
        pod.reset_shared()
        return pod

    def refresher_args(self, **flags: str) -> list[str]:
        base = {
            "kubeconfig": str(self.kubeconfig), "default_token_file": str(self.default_token),
            "token_file": str(self.token_file), "namespace": NS,
            "service_account": self.service_account, "token_audience": AUDIENCE,
            "expiration_duration": "2h", "refresh_interval": "1h", "log_level": "info",
        }
        base.update(flags)
        return [f"--{k}={v}" for k, v in base.items()]

    def baseline_args(self, **flags: str) -> list[str]:
        base = {
            "api_server": self.api_url, "cacert": self.ca_file,
            "credential_file": str(self.credential), "namespace": NS,
            "service_account": self.service_account, "token_audience": AUDIENCE,
            "expiration_seconds": "7200", "default_token_file": str(self.default_token),
            "token_file": str(self.token_file), "refresh_interval": "3600",
            "shutdown_interval": "60",
        }
        base.update(flags)
        return [f"--{k}={v}" for k, v in base.items()]


class Cluster:
    """A DevApiServer (min_expiration_seconds=1) and a temp directory of pods."""

    def __init__(self, label: str) -> None:
        logging.getLogger("refresher.devserver").setLevel(logging.WARNING)
        self.server = DevApiServer(min_expiration_seconds=1)
        self.root = Path(tempfile.mkdtemp(prefix=f"token-refresher-bench-{label}-"))
        self._pods = 0

    def __enter__(self) -> Cluster:
        self.server.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def pod(self, name: str | None = None, *, service_account: str = "app") -> Pod:
        """A new pod directory; each service account gets its own credential."""
        self._pods += 1
        name = name or f"pod-{self._pods}"
        srv = self.server
        srv.add_service_account(NS, service_account)
        root = self.root / name
        volume = ProjectedVolume(str(root / "projected"))
        volume.write(srv.issue_token(NS, service_account, audiences=[AUDIENCE],
                                     expiration_seconds=KUBELET_LIFETIME).token)
        own = srv.issue_token(NS, service_account, audiences=list(srv.api_audiences),
                              expiration_seconds=CREDENTIAL_LIFETIME).token
        kubeconfig = Path(srv.write_kubeconfig(root / "kubeconfig", token=own))
        credential = root / "credential"
        credential.write_text(own + "\n")
        credential.chmod(0o600)
        pod = Pod(name=name, service_account=service_account, root=root, volume=volume,
                  kubeconfig=kubeconfig, credential=credential, api_url=srv.url,
                  ca_file=srv.ca_file, shared=root / "shared")
        pod.reset_shared()
        return pod

    def kubelet_token(self, pod: Pod) -> str:
        """A new token for pod's projected volume (not written)."""
        return self.server.issue_token(NS, pod.service_account, audiences=[AUDIENCE],
                                       expiration_seconds=KUBELET_LIFETIME).token
