"""Reading JWT claims without verifying signatures (the API server and the consumers verify).

Nothing here ever puts token material into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import TokenError

SA_SUBJECT_PREFIX = "system:serviceaccount:"
MAX_TOKEN_BYTES = 64 * 1024  # real tokens are ~1 KiB; anything bigger is junk
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z


@dataclass(frozen=True, slots=True)
class Claims:
    expires_at: float
    issued_at: float | None
    not_before: float | None
    subject: str | None
    audiences: tuple[str, ...]
    issuer: str | None
    pod_name: str | None
    pod_uid: str | None

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) from a `system:serviceaccount:NS:NAME` subject."""
        return parse_sa_subject(self.subject)


def parse_sa_subject(subject: str | None) -> tuple[str, str] | None:
    if not subject or not subject.startswith(SA_SUBJECT_PREFIX):
        return None
    parts = subject[len(SA_SUBJECT_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def _b64decode(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise TokenError("claims are not valid base64url")
    padded = segment.rstrip("=") + "=" * (-len(segment.rstrip("=")) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise TokenError("claims are not valid base64url") from exc


def _timestamp(payload: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise TokenError(f"token has no {name!r} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError(f"token claim {name!r} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > MAX_TIMESTAMP:
        raise TokenError(f"token claim {name!r} is out of range")
    return number


def decode_claims(token: str) -> Claims:
    """Decode the payload of a compact JWS. Raises TokenError (without token material)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError(f"token is larger than {MAX_TOKEN_BYTES} bytes")
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("not a JWT (expected three dot-separated parts)")
    try:
        payload = json.loads(_b64decode(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenError("claims are not JSON") from exc
    if not isinstance(payload, dict):
        raise TokenError("claims are not a JSON object")
    expires_at = _timestamp(payload, "exp", required=True)
    assert expires_at is not None
    aud = payload.get("aud")
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    elif aud is None:
        audiences = ()
    else:
        raise TokenError("token claim 'aud' is neither a string nor a list of strings")
    sub = payload.get("sub")
    iss = payload.get("iss")
    pod_name = pod_uid = None
    k8s = payload.get("kubernetes.io")
    if isinstance(k8s, dict) and isinstance(k8s.get("pod"), dict):
        pod = k8s["pod"]
        pod_name = pod.get("name") if isinstance(pod.get("name"), str) else None
        pod_uid = pod.get("uid") if isinstance(pod.get("uid"), str) else None
    return Claims(
        expires_at=expires_at,
        issued_at=_timestamp(payload, "iat", required=False),
        not_before=_timestamp(payload, "nbf", required=False),
        subject=sub if isinstance(sub, str) else None,
        audiences=audiences,
        issuer=iss if isinstance(iss, str) else None,
        pod_name=pod_name,
        pod_uid=pod_uid,
    )


def check_fresh_token(
    claims: Claims,
    *,
    audiences: tuple[str, ...],
    namespace: str,
    service_account: str,
    server_now: float,
) -> None:
    """Check a token the API server just issued, judged against the server's clock."""
    if claims.expires_at <= server_now:
        raise TokenError("issued token is already expired by the API server's clock")
    missing = [a for a in audiences if a not in claims.audiences]
    if missing:
        raise TokenError(f"issued token lacks audience(s) {', '.join(missing)}")
    expected = f"{SA_SUBJECT_PREFIX}{namespace}:{service_account}"
    if claims.subject != expected:
        raise TokenError(f"issued token's subject is not {expected}")



