"""The development API server behaves like kube-apiserver for TokenRequest and TokenReview.

Everything goes over real HTTPS on 127.0.0.1: the official `kubernetes` client configured from
`write_kubeconfig()` for the API calls, `http.client` with the server's CA for raw cases. No
assertion or message ever contains a token: tests compare claims, statuses and booleans.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import logging
import socket
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from refresher import jwtsign
from refresher.devserver import (
    DEFAULT_ISSUER,
    WRONG_AUDIENCE,
    ApiStatusError,
    DevApiServer,
    Fault,
    status_object,
)
from tests.helpers import wait_for

NS = "apps"
SA = "web"
AUDIENCE = "sts.amazonaws.com"
TOKEN_PATH = f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def server() -> Iterator[DevApiServer]:
    with DevApiServer(connection_timeout=5.0) as srv:
        srv.add_service_account(NS, SA)
        yield srv


@contextlib.contextmanager
def kube_client(server: DevApiServer, tmp_path: Path, token: str | None = None) -> Iterator[Any]:
    """A kubernetes ApiClient built from a kubeconfig the server wrote."""
    path = server.write_kubeconfig(tmp_path / f"kubeconfig-{uuid.uuid4().hex}", token)
    configuration = client.Configuration()
    load_kube_config = cast(Any, config.load_kube_config)  # untyped in the client
    load_kube_config(config_file=path, client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        yield api


def token_request(
    audiences: list[str] | None = None,
    expiration_seconds: int | None = None,
    pod: tuple[str, str | None] | None = None,
    kind: str = "Pod",
) -> Any:
    ref = None
    if pod is not None:
        ref = client.V1BoundObjectReference(kind=kind, api_version="v1", name=pod[0], uid=pod[1])
    spec = client.V1TokenRequestSpec(
        audiences=audiences if audiences is not None else [AUDIENCE],
        expiration_seconds=expiration_seconds,
        bound_object_ref=ref,
    )
    return client.AuthenticationV1TokenRequest(spec=spec)


def mint(api: Any, name: str = SA, namespace: str = NS, **kwargs: Any) -> Any:
    body = token_request(**kwargs)
    return client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body)


def api_error(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body or "{}")
    assert isinstance(body, dict)
    return body


def claims_of(token: str) -> dict[str, Any]:
    return jwtsign.decode_unverified(token)[1]


def raw_request(
    server: DevApiServer,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on a fresh connection; `token` defaults to the admin token ("" for none)."""
    context = ssl.create_default_context(cafile=server.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=timeout)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    bearer = server.admin_token if token is None else token
    if bearer:
        all_headers["Authorization"] = f"Bearer {bearer}"
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw_json(
    server: DevApiServer, method: str, path: str, value: object = None, **kwargs: Any
) -> tuple[int, http.client.HTTPMessage, dict[str, Any]]:
    body = None if value is None else json.dumps(value).encode()
    status, headers, raw = raw_request(server, method, path, body, **kwargs)
    return status, headers, json.loads(raw)


def assert_status(body: dict[str, Any], code: int, reason: str) -> None:
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason


# --------------------------------------------------------------------------- minting


def test_mints_a_bound_token_shaped_like_kubernetes(server: DevApiServer, tmp_path: Path) -> None:
    sa_uid = server.add_service_account(NS, SA)
    pod_uid = server.add_pod(NS, "web-0", SA)
    before = time.time()
    with kube_client(server, tmp_path) as api:
        core = client.CoreV1Api(api)
        result, status_code, _ = core.create_namespaced_service_account_token_with_http_info(
            SA, NS, token_request(expiration_seconds=3600, pod=("web-0", pod_uid))
        )
    assert status_code == 201
    minted: Any = result
    header, claims = jwtsign.decode_unverified(minted.status.token)

    assert header == {"alg": "RS256", "kid": header["kid"]} and header["kid"]
    assert claims["aud"] == [AUDIENCE]
    assert claims["iss"] == DEFAULT_ISSUER
    assert claims["sub"] == f"system:serviceaccount:{NS}:{SA}"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"]
    assert before - 2 <= claims["iat"] <= time.time() + 1
    assert uuid.UUID(claims["jti"])
    assert claims["kubernetes.io"] == {
        "namespace": NS,
        "serviceaccount": {"name": SA, "uid": sa_uid},
        "pod": {"name": "web-0", "uid": pod_uid},
    }
    assert minted.status.expiration_timestamp.timestamp() == claims["exp"]
    assert minted.spec.audiences == [AUDIENCE]
    assert minted.spec.expiration_seconds == 3600
    assert minted.spec.bound_object_ref.name == "web-0"
    assert server.review_token(minted.status.token, [AUDIENCE]).authenticated


def test_unbound_defaults_use_api_audiences_and_one_hour(server: DevApiServer) -> None:
    status, _, body = raw_json(server, "POST", TOKEN_PATH, {"kind": "TokenRequest", "spec": {}})
    assert status == 201
    assert body["apiVersion"] == "authentication.k8s.io/v1"
    assert body["spec"] == {"audiences": [DEFAULT_ISSUER], "expirationSeconds": 3600}
    assert body["status"]["expirationTimestamp"].endswith("Z")
    claims = claims_of(body["status"]["token"])
    assert claims["aud"] == [DEFAULT_ISSUER]
    assert "pod" not in claims["kubernetes.io"]
    assert claims["exp"] - claims["iat"] == 3600


def test_expiration_below_ten_minutes_is_invalid(server: DevApiServer, tmp_path: Path) -> None:
    with kube_client(server, tmp_path) as api:
        with pytest.raises(ApiException) as refused:
            mint(api, expiration_seconds=599)
        assert refused.value.status == 422
        body = api_error(refused.value)
        assert_status(body, 422, "Invalid")
        assert (
            "spec.expirationSeconds: Invalid value: 599: "
            "may not specify a duration less than 10 minutes" in body["message"]
        )
        assert body["details"]["causes"][0]["field"] == "spec.expirationSeconds"
        assert claims_of(mint(api, expiration_seconds=600).status.token)["aud"] == [AUDIENCE]


def test_lowered_minimum_is_enforced_and_named(tmp_path: Path) -> None:
    with DevApiServer(min_expiration_seconds=2) as server:
        server.add_service_account(NS, SA)
        with kube_client(server, tmp_path) as api:
            with pytest.raises(ApiException) as refused:
                mint(api, expiration_seconds=1)
            message = api_error(refused.value)["message"]
            assert "Invalid value: 1: may not specify a duration less than 2 seconds" in message
            claims = claims_of(mint(api, expiration_seconds=2).status.token)
            assert claims["exp"] - claims["iat"] == 2


def test_expiration_is_capped_with_a_warning(server: DevApiServer) -> None:
    request = {
        "kind": "TokenRequest",
        "spec": {"audiences": [AUDIENCE], "expirationSeconds": 172800},
    }
    status, headers, body = raw_json(server, "POST", TOKEN_PATH, request)
    assert status == 201
    assert body["spec"]["expirationSeconds"] == 86400
    claims = claims_of(body["status"]["token"])
    assert claims["exp"] - claims["iat"] == 86400
    assert "shortened to 86400 seconds" in headers["Warning"]


@pytest.mark.parametrize(
    ("target", "pod", "kind", "code", "reason", "fragment"),
    [
        pytest.param(
            "nobody", None, "Pod", 404, "NotFound", 'serviceaccounts "nobody" not found', id="no-sa"
        ),
        pytest.param(
            SA, ("ghost", None), "Pod", 404, "NotFound", 'pods "ghost" not found', id="no-pod"
        ),
        pytest.param(
            SA,
            ("web-0", "00000000-0000-0000-0000-000000000000"),
            "Pod",
            409,
            "Conflict",
            "the UID in the bound object reference (00000000-0000-0000-0000-000000000000) "
            "does not match the UID in record",
            id="pod-uid-conflict",
        ),
        pytest.param(
            SA,
            ("other-0", None),
            "Pod",
            400,
            "BadRequest",
            'cannot bind token for serviceaccount "web" to pod running with different '
            "serviceaccount name.",
            id="pod-of-other-sa",
        ),
        pytest.param(
            SA, ("web-0", None), "Node", 400, "BadRequest", "cannot bind token to object", id="kind"
        ),
    ],
)
def test_token_request_refusals(
    server: DevApiServer,
    tmp_path: Path,
    target: str,
    pod: tuple[str, str | None] | None,
    kind: str,
    code: int,
    reason: str,
    fragment: str,
) -> None:
    server.add_pod(NS, "web-0", SA)
    server.add_service_account(NS, "other")
    server.add_pod(NS, "other-0", "other")
    with kube_client(server, tmp_path) as api, pytest.raises(ApiException) as refused:
        mint(api, name=target, pod=pod, kind=kind)
    assert refused.value.status == code
    body = api_error(refused.value)
    assert_status(body, code, reason)
    assert fragment in body["message"]


def test_in_process_issue_token_applies_the_same_rules(server: DevApiServer) -> None:
    with pytest.raises(ApiStatusError) as refused:
        server.issue_token(NS, SA, expiration_seconds=60)
    assert refused.value.code == 422 and refused.value.reason == "Invalid"
    issued = server.issue_token(NS, SA, audiences=[AUDIENCE], expiration_seconds=700)
    assert issued.expires_at - issued.issued_at == 700
    assert "token=" not in repr(issued)
    assert server.token_requests_count == 0  # in-process minting is not an HTTP request


# --------------------------------------------------------------------------- authn / authz


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param("", id="no-header"),
        pytest.param("not-a-token", id="garbage"),
        pytest.param("foreign", id="other-signing-key"),
        pytest.param("expired", id="expired"),
        pytest.param("sts-only", id="not-an-api-audience"),
    ],
)
def test_bad_bearer_tokens_get_401(server: DevApiServer, credential: str) -> None:
    if credential == "foreign":
        with DevApiServer() as other:
            other.add_service_account(NS, SA)
            credential = other.issue_token(NS, SA, expiration_seconds=3600).token
    elif credential == "expired":
        credential = server.issue_token(NS, SA, expiration_seconds=600).token
        server.clock_offset = 600 + server.leeway_seconds + 5
    elif credential == "sts-only":
        credential = server.issue_token(NS, SA, audiences=[AUDIENCE]).token
    request = {"kind": "TokenRequest", "spec": {}}
    status, _, body = raw_json(server, "POST", TOKEN_PATH, request, token=credential)
    assert status == 401
    assert_status(body, 401, "Unauthorized")
    status, _, body = raw_json(server, "GET", "/api", token=credential)
    assert status == 401


def test_kubernetes_client_with_bad_token_gets_401(server: DevApiServer, tmp_path: Path) -> None:
    with (
        kube_client(server, tmp_path, token="definitely-not-valid") as api,
        pytest.raises(ApiException) as refused,
    ):
        mint(api)
    assert refused.value.status == 401
    assert_status(api_error(refused.value), 401, "Unauthorized")


def test_service_account_mints_only_what_it_is_granted(
    server: DevApiServer, tmp_path: Path
) -> None:
    server.add_service_account(NS, "other")
    own = server.issue_token(NS, SA).token  # default audiences: usable against the API
    with kube_client(server, tmp_path, token=own) as api:
        assert claims_of(mint(api).status.token)["sub"].endswith(f":{SA}")
        with pytest.raises(ApiException) as denied:
            mint(api, name="other")
        assert denied.value.status == 403
        body = api_error(denied.value)
        assert_status(body, 403, "Forbidden")
        assert 'cannot create resource "serviceaccounts/token"' in body["message"]
        assert f"system:serviceaccount:{NS}:{SA}" in body["message"]

        server.grant(NS, SA, "other")
        assert claims_of(mint(api, name="other").status.token)["sub"].endswith(":other")

        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status is not None and review.status.user_info is not None
        assert review.status.user_info.username == f"system:serviceaccount:{NS}:{SA}"


def test_add_service_account_can_skip_the_self_grant(server: DevApiServer) -> None:
    server.add_service_account(NS, "locked", grant_self=False)
    own = server.issue_token(NS, "locked").token
    path = f"/api/v1/namespaces/{NS}/serviceaccounts/locked/token"
    status, _, body = raw_json(server, "POST", path, {"spec": {}}, token=own)
    assert status == 403
    assert_status(body, 403, "Forbidden")


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "code", "reason", "retry_after"),
    [
        pytest.param(Fault.status(500), 500, "InternalError", None, id="500"),
        pytest.param(Fault.status(503), 503, "ServiceUnavailable", None, id="503"),
        pytest.param(Fault.status(429), 429, "TooManyRequests", "1", id="429-default"),
        pytest.param(Fault.status(429, retry_after=7), 429, "TooManyRequests", "7", id="429-7"),
        pytest.param(Fault.status(403), 403, "Forbidden", None, id="403"),
    ],
)
def test_status_faults(
    server: DevApiServer,
    tmp_path: Path,
    fault: Fault,
    code: int,
    reason: str,
    retry_after: str | None,
) -> None:
    server.inject(fault)
    with kube_client(server, tmp_path) as api:
        with pytest.raises(ApiException) as failed:
            mint(api)
        assert failed.value.status == code
        assert_status(api_error(failed.value), code, reason)
        assert failed.value.headers is not None
        assert failed.value.headers.get("Retry-After") == retry_after
        assert mint(api).status.token  # one-shot: the next call succeeds
    assert [(r.status, r.fault) for r in server.requests] == [(code, fault.name), (201, None)]


def _tls_client_over_raw_socket(server: DevApiServer, request: bytes) -> None:
    """Speak TLS through memory BIOs so the raw socket's own errors (RST) surface unchanged."""
    context = ssl.create_default_context(cafile=server.ca_file)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:

        def pump(operation: Any, *args: Any) -> Any:
            while True:
                try:
                    result = operation(*args)
                except ssl.SSLWantReadError:
                    if outgoing.pending:
                        sock.sendall(outgoing.read())
                    data = sock.recv(65536)  # raises ConnectionResetError on RST
                    if not data:
                        raise EOFError("orderly close (FIN), not a reset") from None
                    incoming.write(data)
                    continue
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                return result

        pump(tls.do_handshake)
        pump(tls.write, request)
        pump(tls.read, 1)


def test_reset_fault_aborts_the_connection(server: DevApiServer, tmp_path: Path) -> None:
    server.inject(Fault.reset(), count=None)
    with (
        kube_client(server, tmp_path) as api,
        pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)),
    ):
        mint(api)
    body = b'{"kind":"TokenRequest","spec":{}}'
    request = (
        f"POST {TOKEN_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.admin_token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with pytest.raises(ConnectionResetError):
        _tls_client_over_raw_socket(server, request)
    server.clear_faults()
    with kube_client(server, tmp_path) as api:
        assert mint(api).status.token
    assert [r.fault for r in server.requests] == ["reset", "reset", None]
    assert [r.status for r in server.requests] == [None, None, 201]


def test_hang_fault_times_out_on_the_client(server: DevApiServer, tmp_path: Path) -> None:
    server.inject(Fault.hang(30))
    with kube_client(server, tmp_path) as api:
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            client.CoreV1Api(api).create_namespaced_service_account_token(
                SA, NS, token_request(), _request_timeout=0.3
            )
        assert time.monotonic() - started < 5
        assert mint(api).status.token
    assert server.requests[0].fault == "hang" and server.requests[0].status is None


def test_stop_ends_hung_requests_promptly() -> None:
    server = DevApiServer().start()
    try:
        server.add_service_account(NS, SA)
        server.inject(Fault.hang(600), count=None)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                raw_request(server, "POST", TOKEN_PATH, b"{}", timeout=30)
            except (OSError, http.client.HTTPException) as exc:
                errors.append(exc)

        caller = threading.Thread(target=call, name="test-hung-caller")
        caller.start()
        wait_for(lambda: server.in_flight == 1, timeout=5, what="the hung request")
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 3
    caller.join(5)
    assert not caller.is_alive()
    assert len(errors) == 1  # the client saw the connection close without an answer


def test_garbage_fault_answers_201_with_non_json(server: DevApiServer) -> None:
    server.inject(Fault.garbage())
    status, headers, body = raw_request(server, "POST", TOKEN_PATH, b'{"spec":{}}')
    assert status == 201
    assert headers["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert server.requests[-1].fault == "garbage"


@pytest.mark.parametrize("kind", ["expired_token", "wrong_audience", "wrong_subject"])
def test_bad_token_faults_are_validly_signed(
    server: DevApiServer, tmp_path: Path, kind: str
) -> None:
    server.inject(getattr(Fault, kind)())
    with kube_client(server, tmp_path) as api:
        minted = mint(api, expiration_seconds=3600)
    token = minted.status.token
    claims = jwtsign.verify_rs256(token, server.public_key_pem())  # the signature is valid
    review = server.review_token(token, [AUDIENCE])
    assert not review.authenticated
    if kind == "expired_token":
        assert claims["exp"] < time.time() - server.leeway_seconds
        assert minted.status.expiration_timestamp.timestamp() == claims["exp"]
        assert "expired" in review.error
    elif kind == "wrong_audience":
        assert claims["aud"] == [WRONG_AUDIENCE]
        assert minted.spec.audiences == [AUDIENCE]  # the spec echo still looks right
        assert "audiences" in review.error
    else:
        assert claims["sub"] != f"system:serviceaccount:{NS}:{SA}"
        assert claims["aud"] == [AUDIENCE]
    assert server.requests[-1].fault == kind


def test_faults_apply_in_fifo_order_with_counts(server: DevApiServer) -> None:
    server.inject(Fault.status(500), count=2)
    server.inject(Fault.status(503))
    server.inject(Fault.garbage())
    codes = [raw_request(server, "POST", TOKEN_PATH, b"{}")[0] for _ in range(5)]
    assert codes == [500, 500, 503, 201, 201]
    assert [r.fault for r in server.requests] == [
        "status:500",
        "status:500",
        "status:503",
        "garbage",
        None,
    ]
    assert server.token_requests_count == 5


def test_fault_until_cleared_and_other_routes_unaffected(server: DevApiServer) -> None:
    server.inject(Fault.status(500), count=None)
    server.inject(Fault.status(404))  # never reached while the head stays
    assert [raw_request(server, "POST", TOKEN_PATH, b"{}")[0] for _ in range(3)] == [500] * 3
    assert raw_request(server, "GET", "/healthz")[0] == 200
    server.clear_faults()
    assert raw_request(server, "POST", TOKEN_PATH, b"{}")[0] == 201


def test_set_down_is_an_outage_that_keeps_faults_queued(server: DevApiServer) -> None:
    server.inject(Fault.status(500))
    server.set_down(True)
    assert server.is_down
    for _ in range(2):
        status, _, body = raw_json(server, "POST", TOKEN_PATH, {"spec": {}})
        assert status == 503
        assert_status(body, 503, "ServiceUnavailable")
    server.set_down(False)
    assert raw_request(server, "POST", TOKEN_PATH, b"{}")[0] == 500
    assert raw_request(server, "POST", TOKEN_PATH, b"{}")[0] == 201
    assert [r.fault for r in server.requests] == ["down", "down", "status:500", None]


def test_peak_concurrency_counts_token_requests_in_flight(server: DevApiServer) -> None:
    server.inject(Fault.hang(600), count=3)
    callers = [
        threading.Thread(target=_quiet_raw_post, args=(server,), name=f"test-caller-{n}")
        for n in range(3)
    ]
    for caller in callers:
        caller.start()
    wait_for(lambda: server.in_flight == 3, timeout=5, what="three hung token requests")
    assert server.peak_concurrency == 3
    server.stop()  # releases the hung requests
    for caller in callers:
        caller.join(5)
    assert server.in_flight == 0 and server.peak_concurrency == 3
    assert server.token_requests_count == 3


def _quiet_raw_post(server: DevApiServer) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        raw_request(server, "POST", TOKEN_PATH, b"{}", timeout=30)


# --------------------------------------------------------------------------- TokenReview


def test_token_review_over_https(server: DevApiServer, tmp_path: Path) -> None:
    pod_uid = server.add_pod(NS, "web-0", SA)
    bound = server.issue_token(NS, SA, audiences=[AUDIENCE], bound_pod="web-0").token
    short = server.issue_token(NS, SA, audiences=[AUDIENCE], expiration_seconds=600).token

    with kube_client(server, tmp_path) as api:
        authn = client.AuthenticationV1Api(api)

        def review(token: str, audiences: list[str] | None = None) -> Any:
            spec = client.V1TokenReviewSpec(token=token, audiences=audiences)
            return authn.create_token_review(client.V1TokenReview(spec=spec)).status

        ok = review(bound, [AUDIENCE])
        assert ok.authenticated is True
        assert ok.user.username == f"system:serviceaccount:{NS}:{SA}"
        assert ok.user.extra["authentication.kubernetes.io/pod-uid"] == [pod_uid]
        assert f"system:serviceaccounts:{NS}" in ok.user.groups
        assert ok.audiences == [AUDIENCE]

        wrong_audience = review(bound, ["https://other.example"])
        assert wrong_audience.authenticated is not True
        assert "audiences" in wrong_audience.error

        default_audience = review(bound)  # the API audiences: the token is not for the API
        assert default_audience.authenticated is not True

        garbage = review("not.a.token")
        assert garbage.authenticated is not True
        assert "invalid bearer token" in garbage.error

        server.clock_offset = 600 + server.leeway_seconds + 1
        expired = review(short, [AUDIENCE])
        assert expired.authenticated is not True
        assert "service account token has expired" in expired.error
        assert review(bound, [AUDIENCE]).authenticated is True  # 1 h token still fine

        server.delete_pod(NS, "web-0")
        gone = review(bound, [AUDIENCE])
        assert gone.authenticated is not True
        assert "service account token has been invalidated" in gone.error

        server.add_pod(NS, "web-0", SA)  # recreated: another uid
        recreated = review(bound, [AUDIENCE])
        assert recreated.authenticated is not True
        assert "pod UID" in recreated.error


def test_service_accounts_cannot_create_token_reviews(server: DevApiServer) -> None:
    own = server.issue_token(NS, SA).token
    review = {"kind": "TokenReview", "spec": {"token": "x"}}
    path = "/apis/authentication.k8s.io/v1/tokenreviews"
    status, _, body = raw_json(server, "POST", path, review, token=own)
    assert status == 403
    assert_status(body, 403, "Forbidden")


def test_token_not_valid_before_its_nbf(server: DevApiServer) -> None:
    token = server.issue_token(NS, SA).token
    server.clock_offset = -(server.leeway_seconds + 10)
    review = server.review_token(token)
    assert not review.authenticated
    assert "not valid yet" in review.error


# --------------------------------------------------------------------------- clock


def test_date_header_and_claims_follow_server_time(server: DevApiServer) -> None:
    server.clock_offset = -10 * 86400
    _, headers, _ = raw_request(server, "GET", "/healthz")
    date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
    assert abs(date - (time.time() - 10 * 86400)) < 5
    claims = claims_of(server.issue_token(NS, SA).token)
    assert abs(claims["iat"] - (time.time() - 10 * 86400)) < 5


def test_injected_clock_drives_time() -> None:
    fixed = 1_800_000_000.0
    with DevApiServer(clock=lambda: fixed, clock_offset=30) as server:
        server.add_service_account(NS, SA)
        _, headers, _ = raw_request(server, "GET", "/readyz")
        assert email.utils.parsedate_to_datetime(headers["Date"]).timestamp() == fixed + 30
        issued = server.issue_token(NS, SA, expiration_seconds=600)
        assert (issued.issued_at, issued.expires_at) == (fixed + 30, fixed + 630)
        assert server.now() == fixed + 30


# --------------------------------------------------------------------------- routes


def test_probes_version_discovery_and_unknown_paths(server: DevApiServer) -> None:
    for path in ("/healthz", "/readyz", "/livez"):
        status, _, text = raw_request(server, "GET", path, token="")
        assert (status, text) == (200, b"ok")
    status, _, version = raw_json(server, "GET", "/version", token="")
    assert status == 200 and version["major"] == "1"
    status, _, api_versions = raw_json(server, "GET", "/api")
    assert status == 200 and api_versions["versions"] == ["v1"]
    status, _, groups = raw_json(server, "GET", "/apis")
    assert status == 200 and groups["groups"][0]["name"] == "authentication.k8s.io"
    status, _, body = raw_json(server, "GET", "/api/v1/namespaces/apps/pods")
    assert status == 404
    assert_status(body, 404, "NotFound")
    status, _, body = raw_json(server, "GET", TOKEN_PATH)
    assert status == 405
    assert_status(body, 405, "MethodNotAllowed")
    status, _, body = raw_json(server, "BREW", "/healthz")
    assert status == 501
    assert body["kind"] == "Status"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"{not json", id="malformed"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b'{"kind": "Pod"}', id="wrong-kind"),
        pytest.param(b'{"spec": {"expirationSeconds": "soon"}}', id="bad-field-type"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_malformed_bodies_get_400(server: DevApiServer, payload: bytes) -> None:
    status, _, raw = raw_request(server, "POST", TOKEN_PATH, payload)
    assert status == 400
    assert_status(json.loads(raw), 400, "BadRequest")


def test_huge_body_is_refused_with_413() -> None:
    with DevApiServer(max_body_bytes=1024) as server:
        server.add_service_account(NS, SA)
        context = ssl.create_default_context(cafile=server.ca_file)
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=5)
        try:
            conn.putrequest("POST", TOKEN_PATH)
            conn.putheader("Content-Length", str(50 * 1024 * 1024))
            conn.endheaders()  # no body is sent: the server must answer from the headers
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
        assert response.status == 413
        assert_status(body, 413, "RequestEntityTooLarge")
        assert response.headers["Connection"] == "close"
        assert raw_request(server, "POST", TOKEN_PATH, b"{}")[0] == 201


def test_client_disconnects_never_break_the_server(server: DevApiServer) -> None:
    context = ssl.create_default_context(cafile=server.ca_file)
    # 1: TCP connect, then leave before the TLS handshake.
    socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    # 2: half a request line.
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"POST /api/v1/namesp")
    # 3: headers promise 100 bytes, 10 arrive, then the client leaves.
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(f"POST {TOKEN_PATH} HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789".encode())
    # 4: not TLS at all.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        # The handshake fails and the server hangs up: FIN, or RST when our unread plaintext
        # is still in its receive buffer.
        with contextlib.suppress(ConnectionResetError):
            assert raw.recv(100) == b""
    assert raw_request(server, "GET", "/healthz")[0] == 200
    assert raw_request(server, "POST", TOKEN_PATH, b"{}")[0] == 201


def test_idle_connections_time_out() -> None:
    with DevApiServer(connection_timeout=0.3) as server:
        context = ssl.create_default_context(cafile=server.ca_file)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            started = time.monotonic()
            assert tls.recv(100) == b""  # the server closed the silent connection
            assert time.monotonic() - started < 4


# --------------------------------------------------------------------------- lifecycle


def test_keep_alive_then_stop_leaves_no_threads_or_files(tmp_path: Path) -> None:
    server = DevApiServer().start()
    server.add_service_account(NS, SA)
    ca_dir = Path(server.ca_file).parent
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    with kube_client(server, tmp_path) as api:
        for _ in range(3):  # one pooled keep-alive connection serves all three
            assert mint(api).status.token
        connections = {t.name for t in threading.enumerate() if "-conn-" in t.name}
        assert len(connections) == 1
        started = time.monotonic()
        server.stop()  # while the client still holds the connection open
        assert time.monotonic() - started < 3
    assert not [t.name for t in threading.enumerate() if t.name.startswith("devserver-")]
    assert not ca_dir.exists()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        server.start()


def test_binds_loopback_and_writes_a_private_kubeconfig(
    server: DevApiServer, tmp_path: Path
) -> None:
    assert server.url == f"https://127.0.0.1:{server.port}"
    path = Path(server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kubeconfig = json.loads(path.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == server.url
    assert kubeconfig["contexts"][0]["context"]["namespace"] == NS
    has_admin = kubeconfig["users"][0]["user"]["token"] == server.admin_token
    assert has_admin


def test_token_material_never_reaches_logs_or_records(
    server: DevApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.add_pod(NS, "web-0", SA)
    with kube_client(server, tmp_path) as api:
        mint(api, pod=("web-0", None))
        server.inject(Fault.status(500))
        with pytest.raises(ApiException):
            mint(api)
        client.AuthenticationV1Api(api).create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=server.issued_tokens()[0]))
        )
    secrets = [*server.issued_tokens(), server.admin_token]
    assert len(secrets) == 2
    text = caplog.text + repr(server.requests)
    leaked = any(secret in text for secret in secrets)
    assert not leaked, "token material appeared in the logs or the request records"
    assert any(record.name == "refresher.devserver" for record in caplog.records)


def test_missing_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jwtsign, "_IMPORT_ERROR", ImportError("No module named 'cryptography'"))
    with pytest.raises(RuntimeError, match=r"pip install token-refresher\[demo\]"):
        DevApiServer().start()


def test_status_object_shape() -> None:
    assert status_object(404, "x") == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "x",
        "reason": "NotFound",
        "code": 404,
    }
