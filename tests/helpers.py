"""Test helpers: unsigned JWTs for unit tests, polling with a deadline."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims: dict[str, Any] | None = None, **kw: Any) -> str:
    """A JWT-shaped token (unsigned: the refresher never verifies signatures)."""
    body = dict(claims or {})
    body.update(kw)
    header = b64(json.dumps({"alg": "RS256", "kid": "test"}).encode())
    return f"{header}.{b64(json.dumps(body).encode())}.{b64(b'signature-bytes')}"


def sa_token(*, iat: float, exp: float, ns: str = "ns", sa: str = "app",
             aud: list[str] | None = None, **extra: Any) -> str:
    return make_jwt(iat=int(iat), exp=int(exp), nbf=int(iat), iss="https://issuer.test",
                    sub=f"system:serviceaccount:{ns}:{sa}",
                    aud=aud if aud is not None else ["sts.amazonaws.com"], **extra)


def wait_for(predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.01,
             what: str = "condition") -> T:
    """Poll an observable outcome until it holds; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
