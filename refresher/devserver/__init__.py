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


from .server import DevApiServer
from .values import (
    DEFAULT_CONNECTION_TIMEOUT,
    DEFAULT_EXPIRATION_SECONDS,
    DEFAULT_ISSUER,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EXPIRATION_SECONDS,
    DEFAULT_MIN_EXPIRATION_SECONDS,
    JWT_LEEWAY_SECONDS,
    LOOPBACK,
    WRONG_AUDIENCE,
    WRONG_SUBJECT_SUFFIX,
    ApiStatusError,
    Fault,
    IssuedToken,
    RequestRecord,
    TokenReviewResult,
    rfc3339,
    status_object,
    status_reason,
)

__all__ = [
    "DEFAULT_CONNECTION_TIMEOUT",
    "DEFAULT_EXPIRATION_SECONDS",
    "DEFAULT_ISSUER",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_EXPIRATION_SECONDS",
    "DEFAULT_MIN_EXPIRATION_SECONDS",
    "JWT_LEEWAY_SECONDS",
    "LOOPBACK",
    "WRONG_AUDIENCE",
    "WRONG_SUBJECT_SUFFIX",
    "ApiStatusError",
    "DevApiServer",
    "Fault",
    "IssuedToken",
    "RequestRecord",
    "TokenReviewResult",
    "rfc3339",
    "status_object",
    "status_reason",
]
