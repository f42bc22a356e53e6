"""A development stand-in for kube-apiserver: TokenRequest and TokenReview over HTTPS.

``token-refresher demo`` runs it in-process, and the end-to-end tests run it inside pytest and
point the real refresher at it through a kubeconfig. It answers the way kube-apiserver does for
the parts the refresher uses:

- ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` (TokenRequest), with the real
  server's validation (10-minute minimum, maximum cap, pod binding checks);
- ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (TokenReview) and ``selfsubjectreviews``;
- ``GET /api``, ``/apis``, ``/version``, ``/healthz``, ``/livez``, ``/readyz``.

Every error is a Kubernetes ``Status`` object. Tokens are RS256 JWTs with Kubernetes' claims.
Tests can shift the server's clock, take the TokenRequest endpoint down and inject faults
(error statuses, TCP resets, hangs, garbage, bad tokens). The server never logs token material:
no request line, header or body is ever logged.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime
import email.utils
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

from refresher import jwtsign

_log = logging.getLogger(__name__)

LOOPBACK: Final = "127.0.0.1"
DEFAULT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
DEFAULT_MIN_EXPIRATION_SECONDS: Final = 600  # kube-apiserver's hard minimum (10 minutes)
DEFAULT_MAX_EXPIRATION_SECONDS: Final = 86400  # like --service-account-max-token-expiration=24h
DEFAULT_EXPIRATION_SECONDS: Final = 3600  # TokenRequestSpec.expirationSeconds default
MAX_EXPIRATION_SECONDS_LIMIT: Final = 1 << 32  # validation: "larger than 2^32 seconds"
JWT_LEEWAY_SECONDS: Final = 60  # go-jose DefaultLeeway, used by the service-account validator
DEFAULT_CONNECTION_TIMEOUT: Final = 30.0  # seconds a connection may stay idle or slow
DEFAULT_MAX_BODY_BYTES: Final = 3 * 1024 * 1024  # kube-apiserver's request body limit
WRONG_AUDIENCE: Final = "https://wrong-audience.invalid"
WRONG_SUBJECT_SUFFIX: Final = "-wrong-subject"
EXPIRED_TOKEN_AGE_SECONDS: Final = 60  # an expired_token fault expires this long past leeway
JOIN_TIMEOUT_SECONDS: Final = 5.0
SERVE_POLL_SECONDS: Final = 0.05
DEFAULT_RETRY_AFTER_SECONDS: Final = 1
SERVER_VERSION: Final = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-devserver"}

TOKEN_REQUEST_API_VERSION: Final = "authentication.k8s.io/v1"
_TOKEN_REQUEST_PATH: Final = re.compile(
    r"/api/v1/namespaces/(?P<namespace>[^/]+)/serviceaccounts/(?P<name>[^/]+)/token"
)
_TOKEN_REVIEW_PATH: Final = "/apis/authentication.k8s.io/v1/tokenreviews"
_SELF_SUBJECT_REVIEW_PATH: Final = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
_PROBE_PATHS: Final = frozenset({"/healthz", "/livez", "/readyz"})

_REASONS: Final[Mapping[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    411: "LengthRequired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_DEFAULT_MESSAGES: Final[Mapping[int, str]] = {
    401: "Unauthorized",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within requested timeout",
}


# --------------------------------------------------------------------------- values


def status_reason(code: int) -> str:
    """The Kubernetes ``StatusReason`` for an HTTP code (``NotFound``, ``Invalid``...)."""
    if code in _REASONS:
        return _REASONS[code]
    return "InternalError" if code >= 500 else "BadRequest"


def status_object(
    code: int,
    message: str | None = None,
    *,
    reason: str | None = None,
    details: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """A ``kind: Status`` failure object as kube-apiserver returns it."""
    if message is None:
        message = _DEFAULT_MESSAGES.get(code) or HTTPStatus(code).phrase
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or status_reason(code),
        "code": code,
    }
    if details:
        status["details"] = dict(details)
    return status


def rfc3339(timestamp: float) -> str:
    """UTC RFC 3339 with a ``Z`` suffix and whole seconds, like ``metav1.Time``."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _human_duration(seconds: int) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


class ApiStatusError(Exception):
    """A request the server refuses; ``status`` is the Kubernetes ``Status`` object it sends."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        super().__init__(str(status.get("message", "")))
        self.status: dict[str, Any] = dict(status)
        self.code: int = int(status["code"])
        self.reason: str = str(status.get("reason", ""))


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault applied to one TokenRequest call; build with the class methods."""

    kind: str
    code: int | None = None
    retry_after: int | None = None
    seconds: float | None = None

    @classmethod
    def status(cls, code: int, retry_after: int | None = None) -> Fault:
        """Answer with a ``Status`` of ``code``; 429 always carries ``Retry-After``."""
        if not 400 <= code <= 599:
            raise ValueError(f"fault status code must be 4xx or 5xx, not {code}")
        if code == HTTPStatus.TOO_MANY_REQUESTS and retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER_SECONDS
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def reset(cls) -> Fault:
        """Abort the TCP connection with RST (SO_LINGER 0, close) without answering."""
        return cls("reset")

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Read the request, answer nothing for ``seconds`` (or until stop), then hang up."""
        if seconds < 0:
            raise ValueError("hang seconds must not be negative")
        return cls("hang", seconds=seconds)

    @classmethod
    def garbage(cls) -> Fault:
        """Answer 201 with a body that is not JSON."""
        return cls("garbage")

    @classmethod
    def expired_token(cls) -> Fault:
        """Answer 201 with a validly signed token whose ``exp`` is already past."""
        return cls("expired_token")

    @classmethod
    def wrong_audience(cls) -> Fault:
        """Answer 201 with a validly signed token for another audience."""
        return cls("wrong_audience")

    @classmethod
    def wrong_subject(cls) -> Fault:
        """Answer 201 with a validly signed token for another service account."""
        return cls("wrong_subject")

    @property
    def name(self) -> str:
        """Short label used in request records: ``status:429``, ``reset``, ``hang``..."""
        return f"status:{self.code}" if self.kind == "status" else self.kind


_TOKEN_MUTATIONS: Final = frozenset({"expired_token", "wrong_audience", "wrong_subject"})


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request the server saw (never any token material).

    ``status`` is None when no answer was sent (reset, hang, client gone); ``fault`` is the
    injected fault's name, ``"down"`` during an outage, else None.
    """

    time: float  # time.monotonic() when the request finished
    method: str
    path: str
    status: int | None
    fault: str | None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A minted token and what the server echoed about it (``repr`` hides the token)."""

    token: str = field(repr=False)
    namespace: str
    service_account: str
    audiences: tuple[str, ...]
    expiration_seconds: int
    issued_at: int  # server time, seconds since the epoch (the ``iat`` claim)
    expires_at: int  # server time (the ``exp`` claim and status.expirationTimestamp)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenReviewResult:
    """The outcome of a TokenReview."""

    authenticated: bool
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    error: str = ""
    namespace: str = ""
    service_account: str = ""

    def to_status(self) -> dict[str, Any]:
        """``TokenReview.status`` as JSON."""
        if not self.authenticated:
            return {"authenticated": False, "user": {}, "error": self.error}
        return {
            "authenticated": True,
            "user": {
                "username": self.username,
                "uid": self.uid,
                "groups": list(self.groups),
                "extra": {key: list(values) for key, values in self.extra.items()},
            },
            "audiences": list(self.audiences),
        }


@dataclass(frozen=True, slots=True)
class _ServiceAccount:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class _Pod:
    namespace: str
    name: str
    uid: str
    service_account: str


@dataclass(frozen=True, slots=True)
class _Identity:
    username: str
    admin: bool
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    namespace: str = ""
    service_account: str = ""

    def user_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {key: list(values) for key, values in self.extra.items()}
        return info


_ADMIN: Final = _Identity(
    username="kubernetes-admin", admin=True, groups=("system:masters", "system:authenticated")
)


@dataclass(slots=True)
class _Exchange:
    """One request being handled: what the request record will say."""

    method: str
    path: str
    token_request: bool = False
    fault: str | None = None
    concluded: bool = False


@dataclass(slots=True)
class _QueuedFault:
    fault: Fault
    remaining: int | None


def _invalid(name: str, field_path: str, value: object, detail: str) -> ApiStatusError:
    cause = f"Invalid value: {json.dumps(value)}: {detail}"
    return ApiStatusError(
        status_object(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f'TokenRequest.authentication.k8s.io "{name}" is invalid: {field_path}: {cause}',
            details={
                "name": name,
                "group": "authentication.k8s.io",
                "kind": "TokenRequest",
                "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": field_path}],
            },
        )
    )


def _not_found(resource: str, name: str) -> ApiStatusError:
    return ApiStatusError(
        status_object(
            HTTPStatus.NOT_FOUND,
            f'{resource} "{name}" not found',
            details={"name": name, "kind": resource},
        )
    )


def _bad_request(message: str) -> ApiStatusError:
    return ApiStatusError(status_object(HTTPStatus.BAD_REQUEST, message))


# --------------------------------------------------------------------------- the server


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


# --------------------------------------------------------------------------- HTTP plumbing


class _HttpServer(ThreadingHTTPServer):
    """Threading HTTP server doing TLS per connection, in named, tracked threads."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], app: DevApiServer, context: ssl.SSLContext
    ) -> None:
        self.app = app
        self._context = context
        self._conn_lock = threading.Lock()
        self._connections: set[ssl.SSLSocket] = set()
        self._conn_threads: set[threading.Thread] = set()
        self._counter = itertools.count(1)
        self._closing = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the FQDN of the address, which can block on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            if self._closing:
                request.close()
                return
            self._conn_threads = {t for t in self._conn_threads if t.is_alive()}
            thread = threading.Thread(
                target=self._serve_connection,
                args=(request, client_address),
                name=f"devserver-{self.server_port}-conn-{next(self._counter)}",
                daemon=True,
            )
            self._conn_threads.add(thread)
        thread.start()

    def _serve_connection(self, raw: socket.socket, client_address: tuple[str, int]) -> None:
        connection: ssl.SSLSocket | None = None
        try:
            raw.settimeout(self.app.connection_timeout)
            connection = self._context.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            )
            with self._conn_lock:
                if self._closing:
                    return
                self._connections.add(connection)
            connection.do_handshake()
            _Handler(connection, client_address, self)
        except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts and resets are OSErrors
            _log.debug("devserver: connection ended: %s", type(exc).__name__)
        except Exception:
            _log.exception("devserver: unexpected error while serving a connection")
        finally:
            if connection is None:
                raw.close()
            else:
                with self._conn_lock:
                    self._connections.discard(connection)
                connection.close()

    def close_connections(self) -> None:
        """Refuse new connections and wake every connection thread (shutdown both ways)."""
        with self._conn_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            # socket.socket.shutdown, not SSLSocket.shutdown: leave the TLS state alone so the
            # reading thread just sees end-of-stream.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)

    def connection_threads(self) -> list[threading.Thread]:
        with self._conn_lock:
            return list(self._conn_threads)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("devserver: error while accepting a connection", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "token-refresher-devserver"
    sys_version = ""
    disable_nagle_algorithm = True

    server: _HttpServer
    _exchange: _Exchange | None = None

    # ---- plumbing overrides

    def log_message(self, format: str, *args: Any) -> None:
        """Never log request lines, headers or bodies: they may carry tokens."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.formatdate(
            self.server.app.now() if timestamp is None else timestamp, usegmt=True
        )

    def version_string(self) -> str:
        return self.server_version

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError) as exc:  # client went away, reset, closed by stop()
            _log.debug("devserver: connection dropped: %s", type(exc).__name__)
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Used by the stdlib for unparsable requests and unknown methods: answer a Status."""
        self.close_connection = True
        if self._exchange is None:  # failed before _dispatch: record it here
            path = urlsplit(getattr(self, "path", "") or "").path
            self._exchange = _Exchange(getattr(self, "command", "") or "", path)
        self._send_json(code, status_object(code, message))
        self._exchange = None

    def _conclude(self, status: int | None) -> None:
        """Record the exchange (once) just before the answer goes out (or instead of one).

        Doing it before the write means a client that has its answer also finds it recorded.
        """
        exchange = self._exchange
        if exchange is None or exchange.concluded:
            return
        exchange.concluded = True
        self.server.app._record(exchange.method, exchange.path, status, exchange.fault)

    # ---- responses

    def _send_bytes(
        self,
        code: int,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._conclude(int(code))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(
        self, code: int, value: Mapping[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._send_bytes(code, json.dumps(value).encode(), "application/json", headers)

    def _send_status(
        self, status: Mapping[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._send_json(int(status["code"]), status, headers)

    # ---- dispatch

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        method = self.command
        path = urlsplit(self.path).path
        token_match = _TOKEN_REQUEST_PATH.fullmatch(path)
        exchange = _Exchange(
            method, path, token_request=token_match is not None and method == "POST"
        )
        self._exchange = exchange
        if exchange.token_request:
            self.server.app._token_request_started()
        try:
            body = self._read_body()
            if body is None:
                return
            if token_match is not None and method == "POST":
                self._token_request(token_match["namespace"], token_match["name"], body)
            else:
                self._route(method, path, body, token_match is not None)
        except (OSError, ValueError):
            self.close_connection = True
            raise
        except Exception:
            _log.exception("devserver: internal error handling %s %s", method, path)
            self.close_connection = True
            if not exchange.concluded:
                self._send_status(status_object(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error"))
        finally:
            self._conclude(None)  # no answer was sent (client gone)
            self._exchange = None
            if exchange.token_request:
                self.server.app._token_request_finished()

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an error (or when the client left)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_status(status_object(HTTPStatus.LENGTH_REQUIRED, "Content-Length required"))
            return None
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            self.close_connection = True
            self._send_status(status_object(HTTPStatus.BAD_REQUEST, "invalid Content-Length"))
            return None
        if length > self.server.app.max_body_bytes:
            self.close_connection = True
            self._send_status(
                status_object(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the request body is larger than {self.server.app.max_body_bytes} bytes",
                )
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-body
            self.close_connection = True
            return None
        return body

    def _route(self, method: str, path: str, body: bytes, token_path: bool) -> None:
        app = self.server.app
        if path in _PROBE_PATHS and method in ("GET", "HEAD"):
            self._send_bytes(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version" and method in ("GET", "HEAD"):
            self._send_json(HTTPStatus.OK, {**SERVER_VERSION, "platform": "linux/amd64"})
            return
        identity = app._authenticate(self.headers.get("Authorization"))
        if identity is None:
            self._send_status(status_object(HTTPStatus.UNAUTHORIZED))
            return
        if token_path or path == _TOKEN_REVIEW_PATH:
            if method != "POST":
                self._send_status(status_object(HTTPStatus.METHOD_NOT_ALLOWED))
            else:
                self._token_review(identity, body)
            return
        if path == _SELF_SUBJECT_REVIEW_PATH:
            if method != "POST":
                self._send_status(status_object(HTTPStatus.METHOD_NOT_ALLOWED))
                return
            self._send_json(
                HTTPStatus.CREATED,
                {
                    "kind": "SelfSubjectReview",
                    "apiVersion": TOKEN_REQUEST_API_VERSION,
                    "metadata": {"creationTimestamp": None},
                    "status": {"userInfo": identity.user_info()},
                },
            )
            return
        if path == "/api" and method == "GET":
            address = f"{LOOPBACK}:{self.server.server_port}"
            cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
            self._send_json(
                HTTPStatus.OK,
                {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs},
            )
            return
        if path == "/apis" and method == "GET":
            version = {"groupVersion": TOKEN_REQUEST_API_VERSION, "version": "v1"}
            group = {
                "name": "authentication.k8s.io",
                "versions": [version],
                "preferredVersion": version,
            }
            self._send_json(
                HTTPStatus.OK, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
            )
            return
        self._send_status(status_object(HTTPStatus.NOT_FOUND))

    def _json_body(self, body: bytes, kind: str) -> dict[str, Any] | None:
        """Decode a request object, or answer 400 and return None."""
        try:
            value = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._send_status(
                status_object(
                    HTTPStatus.BAD_REQUEST, f"the body of the request is not a valid {kind} object"
                )
            )
            return None
        if not isinstance(value, dict) or value.get("kind", kind) != kind:
            self._send_status(status_object(HTTPStatus.BAD_REQUEST, f"expected a {kind} object"))
            return None
        return value

    # ---- TokenRequest

    def _token_request(self, namespace: str, name: str, body: bytes) -> None:
        app = self.server.app
        exchange = self._exchange
        assert exchange is not None
        if app.is_down:
            exchange.fault = "down"
            self._send_status(status_object(HTTPStatus.SERVICE_UNAVAILABLE))
            return
        fault = app._next_fault()
        mutation = None
        if fault is not None:
            exchange.fault = fault.name
            if fault.kind in _TOKEN_MUTATIONS:
                mutation = fault.kind
            else:
                self._apply_fault(fault)
                return
        identity = app._authenticate(self.headers.get("Authorization"))
        if identity is None:
            self._send_status(status_object(HTTPStatus.UNAUTHORIZED))
            return
        if not app._may_mint(identity, namespace, name):
            self._send_status(
                status_object(
                    HTTPStatus.FORBIDDEN,
                    f'serviceaccounts "{name}" is forbidden: User "{identity.username}" cannot '
                    f'create resource "serviceaccounts/token" in API group "" in the namespace '
                    f'"{namespace}"',
                    details={"name": name, "kind": "serviceaccounts"},
                )
            )
            return
        request = self._json_body(body, "TokenRequest")
        if request is None:
            return
        try:
            spec, bound = _parse_token_request(request, namespace, name)
            issued = app._issue(
                namespace,
                name,
                audiences=spec["audiences"],
                expiration_seconds=spec["expirationSeconds"],
                bound=bound,
                mutation=mutation,
            )
        except ApiStatusError as exc:
            self._send_status(exc.status)
            return
        spec["audiences"] = list(issued.audiences)
        spec["expirationSeconds"] = issued.expiration_seconds
        response = {
            "kind": "TokenRequest",
            "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": rfc3339(app.now()),
            },
            "spec": spec,
            "status": {
                "token": issued.token,
                "expirationTimestamp": rfc3339(issued.expires_at),
            },
        }
        headers = [("Warning", f'299 - "{warning}"') for warning in issued.warnings]
        self._send_json(HTTPStatus.CREATED, response, headers)

    def _apply_fault(self, fault: Fault) -> None:
        if fault.kind == "status":
            code = fault.code or HTTPStatus.INTERNAL_SERVER_ERROR
            details: dict[str, object] = {}
            headers: list[tuple[str, str]] = []
            if fault.retry_after is not None:
                details["retryAfterSeconds"] = fault.retry_after
                headers.append(("Retry-After", str(fault.retry_after)))
            self._send_status(status_object(code, details=details), headers)
        elif fault.kind == "reset":
            self._reset_connection()
        elif fault.kind == "hang":
            self.close_connection = True
            self._conclude(None)  # recorded now; still counted in flight while it hangs
            self.server.app.stopping.wait(fault.seconds)
        elif fault.kind == "garbage":
            self._send_bytes(
                HTTPStatus.CREATED, b"<html><body>this is not JSON", "application/json"
            )
        else:  # pragma: no cover - Fault's constructors make only known kinds
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _reset_connection(self) -> None:
        """Abort with RST: linger 0, then close the descriptor (no TLS close_notify, no FIN)."""
        self.close_connection = True
        self._conclude(None)
        connection = self.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile() reference so close() really closes the fd
        connection.close()

    # ---- TokenReview

    def _token_review(self, identity: _Identity, body: bytes) -> None:
        if not identity.admin:
            self._send_status(
                status_object(
                    HTTPStatus.FORBIDDEN,
                    f'tokenreviews.authentication.k8s.io is forbidden: User "{identity.username}" '
                    'cannot create resource "tokenreviews" in API group "authentication.k8s.io" '
                    "at the cluster scope",
                    details={"group": "authentication.k8s.io", "kind": "tokenreviews"},
                )
            )
            return
        review = self._json_body(body, "TokenReview")
        if review is None:
            return
        spec = review.get("spec")
        token = spec.get("token") if isinstance(spec, dict) else None
        audiences = spec.get("audiences") if isinstance(spec, dict) else None
        if not isinstance(token, str) or not _is_string_list(audiences, optional=True):
            self._send_status(status_object(HTTPStatus.BAD_REQUEST, "spec.token must be a string"))
            return
        result = self.server.app.review_token(token, audiences)
        response = {
            "kind": "TokenReview",
            "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": {"creationTimestamp": None},
            # Like kube-apiserver, echo the spec (the typed clients require spec.token).
            "spec": {"token": token, **({"audiences": list(audiences)} if audiences else {})},
            "status": result.to_status(),
        }
        self._send_json(HTTPStatus.CREATED, response)


def _is_string_list(value: object, *, optional: bool) -> bool:
    if value is None:
        return optional
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _parse_token_request(
    request: Mapping[str, Any], namespace: str, name: str
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Check a TokenRequest's shape; return (spec with defaults, boundObjectRef or None)."""
    metadata = request.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _bad_request("metadata must be an object")
    if metadata.get("name") and metadata["name"] != name:
        raise _invalid(
            name,
            "metadata.name",
            metadata["name"],
            "must match the service account name if specified",
        )
    if metadata.get("namespace") and metadata["namespace"] != namespace:
        raise _invalid(
            name,
            "metadata.namespace",
            metadata["namespace"],
            "must match the service account namespace if specified",
        )
    spec = request.get("spec") or {}
    if not isinstance(spec, dict):
        raise _bad_request("spec must be an object")
    audiences = spec.get("audiences")
    if not _is_string_list(audiences, optional=True):
        raise _bad_request("spec.audiences must be a list of strings")
    expiration = spec.get("expirationSeconds")
    if expiration is None:
        expiration = DEFAULT_EXPIRATION_SECONDS
    if not isinstance(expiration, int) or isinstance(expiration, bool):
        raise _bad_request("spec.expirationSeconds must be an integer")
    ref = spec.get("boundObjectRef")
    bound: dict[str, str] | None = None
    if ref is not None:
        if not isinstance(ref, dict) or not all(isinstance(v, str) for v in ref.values()):
            raise _bad_request("spec.boundObjectRef must be an object of strings")
        bound = dict(ref)
    clean: dict[str, Any] = {"audiences": list(audiences or []), "expirationSeconds": expiration}
    if bound is not None:
        clean["boundObjectRef"] = bound
    return clean, bound


__all__ = [
    "DEFAULT_ISSUER",
    "ApiStatusError",
    "DevApiServer",
    "Fault",
    "IssuedToken",
    "RequestRecord",
    "TokenReviewResult",
    "rfc3339",
    "status_object",
]
