"""Fixtures for tests against a real kube-apiserver (see kubeenv.py).

    kube_apiserver  session: the running KubeApiServer (url, kubeconfig, ca_file)
    kube            function: a kubeenv.Kube admin helper; deletes what it created
    kube_namespace  function: a fresh namespace name (created through `kube`)
    service_account function: (namespace, name) of a fresh ServiceAccount "app"

Tests using them are marked `pytest.mark.kube` (the module sets `pytestmark`).
The Go binary is built once per source digest into the user cache directory;
that first build takes minutes, so it runs after collection, outside the
per-test timeout, and only when a selected test needs `kube_apiserver`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube.kubeenv import (
    Kube,
    KubeApiServer,
    KubeEnvError,
    binary_path,
    build_binary,
    go_missing_reason,
)

_build_error: KubeEnvError | None = None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    global _build_error
    if config.option.collectonly:
        return
    if not any("kube_apiserver" in getattr(item, "fixturenames", ()) for item in items):
        return
    if go_missing_reason() is not None or binary_path().exists():
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"building {binary_path()} (first time: several minutes) ...")
    try:
        build_binary()
    except KubeEnvError as exc:
        _build_error = exc


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeApiServer]:
    reason = go_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    if _build_error is not None:
        raise _build_error
    server = KubeApiServer(build_binary()).start()
    try:
        yield server
    finally:
        code = server.stop()
    if code != 0:
        pytest.fail(f"kube-testenv exited with {code}; its log ends with:\n{server.exit_log}")


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> Iterator[Kube]:
    helper = Kube(kube_apiserver)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def kube_namespace(kube: Kube) -> str:
    return kube.create_namespace()


@pytest.fixture
def service_account(kube: Kube, kube_namespace: str) -> tuple[str, str]:
    kube.create_service_account(kube_namespace, "app")
    return kube_namespace, "app"
