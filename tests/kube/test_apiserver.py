"""What the real kube-apiserver does with TokenRequest/TokenReview (no refresher involved).

These pin the server behaviour the refresher relies on. No assertion ever
shows a token: tests assert on claims, review status and error messages.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube.kubeenv import ISSUER, Kube, api_client_from_kubeconfig, api_error

pytestmark = pytest.mark.kube


def _self_username(api: client.ApiClient) -> str:
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert review.status is not None and review.status.user_info is not None
    return str(review.status.user_info.username)


def test_admin_mints_token_for_service_account(
    kube: Kube, service_account: tuple[str, str]
) -> None:
    ns, sa = service_account
    before = datetime.now(UTC)
    minted = kube.request_token(ns, sa)

    claims = minted.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == [ISSUER]
    assert claims["sub"] == f"system:serviceaccount:{ns}:{sa}"
    assert claims["kubernetes.io"]["namespace"] == ns
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == sa
    assert "pod" not in claims["kubernetes.io"]
    assert claims["exp"] - claims["iat"] == 3600  # default expiration: 1h
    assert abs((minted.expiration_timestamp - before).total_seconds() - 3600) < 60

    status = kube.token_review(minted.token)
    assert status.authenticated is True
    assert status.user.username == f"system:serviceaccount:{ns}:{sa}"
    assert f"system:serviceaccounts:{ns}" in status.user.groups
    assert status.audiences == [ISSUER]

    # The token works as a bearer token against the API.
    with kube.token_client(minted.token) as api:
        assert _self_username(api) == f"system:serviceaccount:{ns}:{sa}"
        with pytest.raises(ApiException) as denied:  # RBAC: no permissions granted
            client.CoreV1Api(api).list_namespaced_pod(ns)
        assert denied.value.status == 403


def test_token_review_checks_audiences(kube: Kube, service_account: tuple[str, str]) -> None:
    ns, sa = service_account
    minted = kube.request_token(ns, sa, audiences=["sts.amazonaws.com"], expiration_seconds=600)
    assert minted.claims["aud"] == ["sts.amazonaws.com"]
    assert minted.claims["exp"] - minted.claims["iat"] == 600

    ok = kube.token_review(minted.token, audiences=["sts.amazonaws.com"])
    assert ok.authenticated is True
    assert ok.audiences == ["sts.amazonaws.com"]

    wrong = kube.token_review(minted.token, audiences=[ISSUER])
    assert not wrong.authenticated
    assert "audience" in (wrong.error or "")


def test_expiration_below_ten_minutes_is_refused(
    kube: Kube, service_account: tuple[str, str]
) -> None:
    ns, sa = service_account
    with pytest.raises(ApiException) as refused:
        kube.request_token(ns, sa, expiration_seconds=300)
    status, message = api_error(refused.value)
    assert status == 422  # Invalid
    assert "spec.expirationSeconds" in message
    assert "may not specify a duration less than 10 minutes" in message


def test_expiration_is_capped_at_24h(kube: Kube, service_account: tuple[str, str]) -> None:
    ns, sa = service_account
    before = datetime.now(UTC)
    minted = kube.request_token(ns, sa, expiration_seconds=172800)
    assert minted.claims["exp"] - minted.claims["iat"] == 86400
    assert abs((minted.expiration_timestamp - before).total_seconds() - 86400) < 60


def test_pod_bound_token_dies_with_the_pod(kube: Kube, service_account: tuple[str, str]) -> None:
    ns, sa = service_account
    pod = kube.create_pod(ns, "web", sa)
    uid = pod.metadata.uid
    minted = kube.request_token(ns, sa, bound_pod=("web", uid), expiration_seconds=3600)

    assert minted.claims["kubernetes.io"]["pod"] == {"name": "web", "uid": uid}
    alive = kube.token_review(minted.token)
    assert alive.authenticated is True
    assert alive.user.extra["authentication.kubernetes.io/pod-name"] == ["web"]
    assert alive.user.extra["authentication.kubernetes.io/pod-uid"] == [uid]

    kube.delete_pod(ns, "web")
    # kube-apiserver caches successful token authentications for 10s (not
    # configurable), so the review keeps passing for up to 10s after deletion.
    deadline = time.monotonic() + 30
    review = kube.token_review(minted.token)
    while review.authenticated and time.monotonic() < deadline:
        time.sleep(0.2)
        review = kube.token_review(minted.token)
    assert not review.authenticated
    # What the server says once the bound pod is gone (no detail about the pod).
    assert review.error == "[invalid bearer token, service account token has been invalidated]"


def test_wrong_pod_uid_is_refused_with_conflict(
    kube: Kube, service_account: tuple[str, str]
) -> None:
    ns, sa = service_account
    kube.create_pod(ns, "web", sa)
    wrong_uid = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ApiException) as refused:
        kube.request_token(ns, sa, bound_pod=("web", wrong_uid))
    status, message = api_error(refused.value)
    assert status == 409
    assert (
        f"the UID in the bound object reference ({wrong_uid}) does not match the UID in record"
        in message
    )


def test_token_kubeconfig_authenticates_as_service_account(
    kube: Kube, service_account: tuple[str, str], tmp_path: Path
) -> None:
    ns, sa = service_account
    minted = kube.request_token(ns, sa)
    path = kube.write_token_kubeconfig(tmp_path / "kubeconfig", minted.token, namespace=ns)
    assert path.stat().st_mode & 0o777 == 0o600
    api = api_client_from_kubeconfig(path)
    try:
        assert _self_username(api) == f"system:serviceaccount:{ns}:{sa}"
    finally:
        api.close()
