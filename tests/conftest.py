"""Shared fixtures. Every test fails if it leaks a thread or a child process."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from refresher.devkubelet import ProjectedVolume
from refresher.devserver import DevApiServer
from tests.e2e import NS, SA, Pod
from tests.helpers import wait_for


def _children() -> set[int]:
    pid = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


@pytest.fixture
def server() -> Iterator[DevApiServer]:
    """The stand-in API server (tokens of seconds allowed), with service account NS/SA."""
    with DevApiServer(min_expiration_seconds=1) as srv:
        srv.add_service_account(NS, SA)
        yield srv


@pytest.fixture
def pod(tmp_path: Path, server: DevApiServer) -> Pod:
    """A kubelet-like projected volume with a 1h token, a shared dir, and the SA's kubeconfig."""
    projected = tmp_path / "projected"
    projected.mkdir()
    own = server.issue_token(NS, SA, audiences=list(server.api_audiences),
                             expiration_seconds=86400)
    kubeconfig = Path(server.write_kubeconfig(tmp_path / "kubeconfig", token=own.token))
    p = Pod(root=tmp_path, server=server, volume=ProjectedVolume(str(projected)),
            projected=projected, shared=tmp_path / "shared", kubeconfig=kubeconfig)
    p.kubelet_token(lifetime=3600)
    return p


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    before_threads = set(threading.enumerate())
    before_children = _children()
    yield
    if request.node.get_closest_marker("kube"):
        before_children |= _children()  # the session-wide kube-apiserver may start mid-test

    def settled() -> bool:
        extra = [t for t in threading.enumerate() if t not in before_threads and t.is_alive()]
        return not extra and not (_children() - before_children)

    try:
        wait_for(settled, timeout=5.0, what="threads and child processes to end")
    except AssertionError:
        extra = [t.name for t in threading.enumerate()
                 if t not in before_threads and t.is_alive()]
        pytest.fail(f"leaked threads {extra} / child processes "
                    f"{sorted(_children() - before_children)}")
