"""The development API server's state: service accounts, pods, faults, issuing, review."""

from __future__ import annotations

import base64
import collections
import hmac
import json
import logging
import os
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any

from refresher import jwtsign

from .http import _HttpServer
from .values import (
    _ADMIN,
    DEFAULT_CONNECTION_TIMEOUT,
    DEFAULT_EXPIRATION_SECONDS,
    DEFAULT_ISSUER,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EXPIRATION_SECONDS,
    DEFAULT_MIN_EXPIRATION_SECONDS,
    EXPIRED_TOKEN_AGE_SECONDS,
    JOIN_TIMEOUT_SECONDS,
    JWT_LEEWAY_SECONDS,
    LOOPBACK,
    MAX_EXPIRATION_SECONDS_LIMIT,
    SERVE_POLL_SECONDS,
    WRONG_AUDIENCE,
    WRONG_SUBJECT_SUFFIX,
    ApiStatusError,
    Fault,
    IssuedToken,
    RequestRecord,
    TokenReviewResult,
    _bad_request,
    _human_duration,
    _Identity,
    _invalid,
    _not_found,
    _Pod,
    _QueuedFault,
    _ServiceAccount,
    status_object,
)

# --------------------------------------------------------------------------- the server

_log = logging.getLogger("refresher.devserver")  # one logger for the package


class DevApiServer:
    """A development kube-apiserver serving TokenRequest and TokenReview on 127.0.0.1 over TLS.

    ``clock`` is the node's wall clock (seconds since the epoch); the server's own time, used for
    ``iat``/``nbf``/``exp``, validation and the ``Date`` header, is ``clock() + clock_offset``.
    All methods are thread-safe. Use it as a context manager or call ``start()``/``stop()``.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        issuer: str = DEFAULT_ISSUER,
        api_audiences: Sequence[str] | None = None,
        min_expiration_seconds: int = DEFAULT_MIN_EXPIRATION_SECONDS,
        max_expiration_seconds: int = DEFAULT_MAX_EXPIRATION_SECONDS,
        clock: Callable[[], float] = time.time,
        clock_offset: float = 0.0,
        leeway_seconds: int = JWT_LEEWAY_SECONDS,
        admin_token: str | None = None,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if min_expiration_seconds < 1:
            raise ValueError("min_expiration_seconds must be at least 1")
        if max_expiration_seconds < min_expiration_seconds:
            raise ValueError("max_expiration_seconds must not be below min_expiration_seconds")
        if connection_timeout <= 0:
            raise ValueError("connection_timeout must be positive")
        self._port = port
        self.issuer = issuer
        self.api_audiences: tuple[str, ...] = tuple(api_audiences or (issuer,))
        self.min_expiration_seconds = min_expiration_seconds
        self.max_expiration_seconds = max_expiration_seconds
        self.leeway_seconds = leeway_seconds
        self.connection_timeout = connection_timeout
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._clock_offset = float(clock_offset)
        self._admin_token = admin_token or secrets.token_urlsafe(32)

        self._lock = threading.Lock()
        self._service_accounts: dict[tuple[str, str], _ServiceAccount] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._grants: set[tuple[str, str, str]] = set()
        self._faults: collections.deque[_QueuedFault] = collections.deque()
        self._down = False
        self._records: list[RequestRecord] = []
        self._issued: list[str] = []
        self._token_requests = 0
        self._in_flight = 0
        self._peak = 0

        self._stopping = threading.Event()
        self._signer: jwtsign.RS256Signer | None = None
        self._tls: jwtsign.TlsFiles | None = None
        self._tmpdir: str | None = None
        self._httpd: _HttpServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._state = "new"  # new -> running -> stopped

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> DevApiServer:
        """Generate keys and certificates, bind 127.0.0.1 and serve in a named thread."""
        jwtsign.require_cryptography()
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a DevApiServer can be started only once")
            self._state = "starting"
        try:
            self._signer = jwtsign.RS256Signer()
            self._tmpdir = tempfile.mkdtemp(prefix="token-refresher-devserver-")
            self._tls = jwtsign.write_tls_files(self._tmpdir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._tls.cert_file, self._tls.key_file)
            self._httpd = _HttpServer((LOOPBACK, self._port), self, context)
            self._serve_thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": SERVE_POLL_SECONDS},
                name=f"devserver-{self.port}-http",
                daemon=True,
            )
            self._serve_thread.start()
        except BaseException:
            self._cleanup()
            with self._lock:
                self._state = "stopped"
            raise
        with self._lock:
            self._state = "running"
        _log.info("development API server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, join every thread and remove the temp dir."""
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopping"
        self._stopping.set()  # wakes hung requests
        httpd = self._httpd
        assert httpd is not None
        httpd.shutdown()  # returns once serve_forever has exited: no new connections
        httpd.server_close()
        httpd.close_connections()
        threads = [t for t in (self._serve_thread, *httpd.connection_threads()) if t is not None]
        deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for thread in threads:
            if thread.is_alive():
                _log.warning("development API server thread %s did not stop", thread.name)
        self._cleanup()
        with self._lock:
            self._state = "stopped"
        _log.info("development API server stopped")

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> DevApiServer:
        if self._state == "new":
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def stopping(self) -> threading.Event:
        """Set once ``stop()`` has begun (hung requests wait on it)."""
        return self._stopping

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the development API server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def ca_file(self) -> str:
        """Path of the PEM CA certificate that signed the serving certificate."""
        if self._tls is None:
            raise RuntimeError("the development API server is not started")
        return self._tls.ca_file

    @property
    def ca_pem(self) -> bytes:
        if self._tls is None:
            raise RuntimeError("the development API server is not started")
        return self._tls.ca_pem

    @property
    def admin_token(self) -> str:
        """The static bearer token of the all-powerful admin user."""
        return self._admin_token

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        token: str | None = None,
        *,
        namespace: str | None = None,
    ) -> str:
        """Write a kubeconfig (JSON, which is YAML) for this server; mode 0600. Returns the path.

        ``token`` is the bearer token to use (default: the admin token).
        """
        context: dict[str, str] = {"cluster": "devserver", "user": "devserver-user"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devserver",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "devserver-user", "user": {"token": token or self._admin_token}}],
            "contexts": [{"name": "devserver", "context": context}],
            "current-context": "devserver",
            "preferences": {},
        }
        target = os.fspath(path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
            handle.write("\n")
        return target

    # ----------------------------------------------------------------- clock

    @property
    def clock(self) -> Callable[[], float]:
        """The node's wall clock (without ``clock_offset``)."""
        return self._clock

    @property
    def clock_offset(self) -> float:
        """Seconds added to ``clock()`` to get the server's time (server/node skew)."""
        return self._clock_offset

    @clock_offset.setter
    def clock_offset(self, value: float) -> None:
        self._clock_offset = float(value)

    def now(self) -> float:
        """The server's time: ``clock() + clock_offset``."""
        return self._clock() + self._clock_offset

    # ----------------------------------------------------------------- objects

    def add_service_account(self, namespace: str, name: str, *, grant_self: bool = True) -> str:
        """Create a service account (idempotent) and return its uid.

        With ``grant_self`` the account may mint tokens for itself, like a Role limited by
        ``resourceNames`` to its own name.
        """
        with self._lock:
            account = self._service_accounts.get((namespace, name))
            if account is None:
                account = _ServiceAccount(namespace, name, str(uuid.uuid4()))
                self._service_accounts[(namespace, name)] = account
            if grant_self:
                self._grants.add((namespace, name, name))
            return account.uid

    def add_pod(
        self, namespace: str, name: str, service_account: str, uid: str | None = None
    ) -> str:
        """Create (or recreate, replacing) a pod running as ``service_account``; return its uid."""
        pod = _Pod(namespace, name, uid or str(uuid.uuid4()), service_account)
        with self._lock:
            if (namespace, service_account) not in self._service_accounts:
                raise ValueError(f"service account {namespace}/{service_account} does not exist")
            self._pods[(namespace, name)] = pod
        return pod.uid

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod; tokens bound to it stop authenticating."""
        with self._lock:
            if self._pods.pop((namespace, name), None) is None:
                raise KeyError(f"pod {namespace}/{name} does not exist")

    def pod_uid(self, namespace: str, name: str) -> str | None:
        with self._lock:
            pod = self._pods.get((namespace, name))
        return None if pod is None else pod.uid

    def grant(self, namespace: str, subject_sa: str, target_sa: str) -> None:
        """Let service account ``subject_sa`` create tokens for ``target_sa`` (same namespace)."""
        with self._lock:
            self._grants.add((namespace, subject_sa, target_sa))

    def revoke(self, namespace: str, subject_sa: str, target_sa: str) -> None:
        with self._lock:
            self._grants.discard((namespace, subject_sa, target_sa))

    def _may_mint(self, identity: _Identity, namespace: str, target_sa: str) -> bool:
        if identity.admin:
            return True
        with self._lock:
            return identity.namespace == namespace and (
                (namespace, identity.service_account, target_sa) in self._grants
            )

    # ----------------------------------------------------------------- faults

    def inject(self, fault: Fault, *, count: int | None = 1) -> None:
        """Queue ``fault`` for the next ``count`` TokenRequest calls (None: until cleared).

        Faults apply in FIFO order; a fault with ``count=None`` stays at the head of the queue.
        """
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for 'until clear_faults()')")
        with self._lock:
            self._faults.append(_QueuedFault(fault, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_down(self, down: bool) -> None:
        """While down, every TokenRequest answers 503 (faults are not consumed)."""
        with self._lock:
            self._down = down

    @property
    def is_down(self) -> bool:
        with self._lock:
            return self._down

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            head = self._faults[0]
            if head.remaining is not None:
                head.remaining -= 1
                if head.remaining <= 0:
                    self._faults.popleft()
            return head.fault

    # ----------------------------------------------------------------- observability

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def token_requests_count(self) -> int:
        """HTTP TokenRequest calls received (faulted ones included, in-process ones not)."""
        with self._lock:
            return self._token_requests

    @property
    def peak_concurrency(self) -> int:
        """The most TokenRequest calls in flight at once."""
        with self._lock:
            return self._peak

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def issued_tokens(self) -> list[str]:
        """Every token minted so far (to scan logs for leaks; never print them)."""
        with self._lock:
            return list(self._issued)

    def _record(self, method: str, path: str, status: int | None, fault: str | None) -> None:
        with self._lock:
            self._records.append(RequestRecord(time.monotonic(), method, path, status, fault))
        _log.debug("devserver: %s %s -> %s", method, path, status)

    def _token_request_started(self) -> None:
        with self._lock:
            self._token_requests += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def _token_request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # ----------------------------------------------------------------- tokens

    def _require_signer(self) -> jwtsign.RS256Signer:
        if self._signer is None:
            raise RuntimeError("the development API server is not started")
        return self._signer

    def public_key_pem(self) -> bytes:
        """The service-account signing key's public half."""
        return self._require_signer().public_key_pem()

    def issue_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: Sequence[str] = (),
        expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
        bound_pod: str | None = None,
        bound_pod_uid: str | None = None,
    ) -> IssuedToken:
        """Mint a token in-process with the TokenRequest rules (no HTTP, no faults, no authz).

        Raises ``ApiStatusError`` with the Status the HTTP endpoint would answer.
        """
        bound = None
        if bound_pod is not None:
            bound = {"kind": "Pod", "apiVersion": "v1", "name": bound_pod}
            if bound_pod_uid:
                bound["uid"] = bound_pod_uid
        return self._issue(
            namespace,
            service_account,
            audiences=audiences,
            expiration_seconds=expiration_seconds,
            bound=bound,
            mutation=None,
        )

    def _issue(
        self,
        namespace: str,
        name: str,
        *,
        audiences: Sequence[str],
        expiration_seconds: int,
        bound: Mapping[str, str] | None,
        mutation: str | None,
    ) -> IssuedToken:
        signer = self._require_signer()
        with self._lock:
            account = self._service_accounts.get((namespace, name))
        if account is None:
            raise _not_found("serviceaccounts", name)
        audiences = tuple(audiences) or self.api_audiences
        if expiration_seconds < self.min_expiration_seconds:
            minimum = _human_duration(self.min_expiration_seconds)
            raise _invalid(
                "",
                "spec.expirationSeconds",
                expiration_seconds,
                f"may not specify a duration less than {minimum}",
            )
        if expiration_seconds > MAX_EXPIRATION_SECONDS_LIMIT:
            raise _invalid(
                "",
                "spec.expirationSeconds",
                expiration_seconds,
                "may not specify a duration larger than 2^32 seconds",
            )
        pod = self._bound_pod(namespace, name, bound) if bound is not None else None
        warnings: tuple[str, ...] = ()
        if expiration_seconds > self.max_expiration_seconds:
            warnings = (
                f"requested expiration of {expiration_seconds} seconds shortened to "
                f"{self.max_expiration_seconds} seconds",
            )
            expiration_seconds = self.max_expiration_seconds

        issued_at = int(self.now())
        if mutation == "expired_token":
            issued_at -= expiration_seconds + self.leeway_seconds + EXPIRED_TOKEN_AGE_SECONDS
        expires_at = issued_at + expiration_seconds
        subject_name = name + WRONG_SUBJECT_SUFFIX if mutation == "wrong_subject" else name
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": subject_name, "uid": account.uid},
        }
        if pod is not None:
            private["pod"] = {"name": pod.name, "uid": pod.uid}
        claims = {
            "aud": [WRONG_AUDIENCE] if mutation == "wrong_audience" else list(audiences),
            "exp": expires_at,
            "iat": issued_at,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": private,
            "nbf": issued_at,
            "sub": f"system:serviceaccount:{namespace}:{subject_name}",
        }
        token = signer.sign(claims)
        with self._lock:
            self._issued.append(token)
        return IssuedToken(
            token=token,
            namespace=namespace,
            service_account=name,
            audiences=audiences,
            expiration_seconds=expiration_seconds,
            issued_at=issued_at,
            expires_at=expires_at,
            warnings=warnings,
        )

    def _bound_pod(self, namespace: str, name: str, ref: Mapping[str, str]) -> _Pod:
        kind = ref.get("kind", "")
        api_version = ref.get("apiVersion", "")
        if kind != "Pod" or api_version != "v1":
            group_version = api_version if "/" in api_version else f"/{api_version}"
            raise _bad_request(f"cannot bind token to object of type {group_version}, Kind={kind}")
        pod_name = ref.get("name", "")
        with self._lock:
            pod = self._pods.get((namespace, pod_name))
        if pod is None:
            raise _not_found("pods", pod_name)
        if pod.service_account != name:
            raise _bad_request(
                f'cannot bind token for serviceaccount "{name}" to pod running with different '
                "serviceaccount name."
            )
        expected_uid = ref.get("uid", "")
        if expected_uid and expected_uid != pod.uid:
            raise ApiStatusError(
                status_object(
                    HTTPStatus.CONFLICT,
                    f'Operation cannot be fulfilled on Pod "{pod_name}": the UID in the bound '
                    f"object reference ({expected_uid}) does not match the UID in record. The "
                    "object might have been deleted and then recreated",
                    details={"name": pod_name, "kind": "Pod"},
                )
            )
        return pod

    def review_token(self, token: str, audiences: Sequence[str] | None = None) -> TokenReviewResult:
        """Validate a token as TokenReview does: signature, time, audiences, bound objects.

        ``audiences`` defaults to the server's API audiences. Error texts follow
        kube-apiserver's service-account authenticator.
        """
        wanted = tuple(audiences) if audiences else self.api_audiences
        try:
            claims = self._require_signer().verify(token)
        except (jwtsign.TokenFormatError, jwtsign.TokenSignatureError):
            return _rejected("invalid bearer token")
        exp, nbf, iat = (_number(claims.get(name)) for name in ("exp", "nbf", "iat"))
        private = claims.get("kubernetes.io")
        if claims.get("iss") != self.issuer or exp is None or not isinstance(private, dict):
            return _rejected("invalid bearer token")
        now = self.now()
        if now - self.leeway_seconds > exp:
            return _rejected("service account token has expired")
        if nbf is not None and now + self.leeway_seconds < nbf:
            return _rejected("service account token is not valid yet")
        if iat is not None and now + self.leeway_seconds < iat:
            return _rejected("service account token is issued in the future")
        raw_aud = claims.get("aud")
        token_aud = [raw_aud] if isinstance(raw_aud, str) else list(raw_aud or [])
        matched = tuple(audience for audience in wanted if audience in token_aud)
        if not matched:
            return _rejected(
                f"token audiences {json.dumps(token_aud)} is invalid for the target audiences "
                f"{json.dumps(list(wanted))}"
            )
        namespace = str(private.get("namespace", ""))
        sa_ref = _string_map(private.get("serviceaccount"))
        pod_ref = _string_map(private.get("pod")) if "pod" in private else None
        sa_name = sa_ref.get("name", "")
        with self._lock:
            account = self._service_accounts.get((namespace, sa_name))
            pod = None if pod_ref is None else self._pods.get((namespace, pod_ref.get("name", "")))
        if account is None:
            return _rejected(f"service account {namespace}/{sa_name} has been deleted")
        if account.uid != sa_ref.get("uid"):
            return _rejected(
                f"service account UID ({account.uid}) does not match claim ({sa_ref.get('uid')})"
            )
        extra: dict[str, tuple[str, ...]] = {}
        if pod_ref is not None:
            if pod is None:
                return _rejected("service account token has been invalidated")
            if pod.uid != pod_ref.get("uid"):
                return _rejected(
                    f"pod UID ({pod.uid}) does not match service account pod ref claim "
                    f"({pod_ref.get('uid')})"
                )
            extra["authentication.kubernetes.io/pod-name"] = (pod.name,)
            extra["authentication.kubernetes.io/pod-uid"] = (pod.uid,)
        if isinstance(claims.get("jti"), str):
            extra["authentication.kubernetes.io/credential-id"] = (f"JTI={claims['jti']}",)
        return TokenReviewResult(
            authenticated=True,
            username=f"system:serviceaccount:{account.namespace}:{account.name}",
            uid=account.uid,
            groups=(
                "system:serviceaccounts",
                f"system:serviceaccounts:{account.namespace}",
                "system:authenticated",
            ),
            audiences=matched,
            extra=extra,
            namespace=account.namespace,
            service_account=account.name,
        )

    def _authenticate(self, authorization: str | None) -> _Identity | None:
        if not authorization:
            return None
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        if hmac.compare_digest(credential.encode(), self._admin_token.encode()):
            return _ADMIN
        review = self.review_token(credential)
        if not review.authenticated:
            return None
        return _Identity(
            username=review.username,
            admin=False,
            uid=review.uid,
            groups=review.groups,
            extra=review.extra,
            namespace=review.namespace,
            service_account=review.service_account,
        )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): str(item) for key, item in value.items()}


def _rejected(reason: str) -> TokenReviewResult:
    return TokenReviewResult(authenticated=False, error=f"[invalid bearer token, {reason}]")


