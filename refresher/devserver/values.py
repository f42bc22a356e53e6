"""Constants, value types and Status helpers of the development API server."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

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


