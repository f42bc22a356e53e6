"""`token-refresher inspect [PATH]`: a JSON summary of a token file, never the token itself."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from .claims import decode_claims
from .config import Config
from .errors import TokenError
from .tokenfile import read_token


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def summarize(path: str, *, config: Config, now: float) -> dict[str, Any]:
    """Raises TokenError with a message naming the path."""
    text = read_token(path)
    try:
        claims = decode_claims(text.text)
    except TokenError as exc:
        raise TokenError(f"{path}: {exc}") from None
    if text.is_symlink:
        target = os.path.realpath(path)
        managed_by = "kubelet (symlink to the projected token)"
    else:
        target = None
        managed_by = "token-refresher (own file)" if os.path.abspath(path) == os.path.abspath(
            config.token_file) else "unknown (regular file)"
    lifetime = None if claims.issued_at is None else claims.expires_at - claims.issued_at
    return {
        "path": path,
        "managed_by": managed_by,
        "symlink_target": target,
        "subject": claims.subject,
        "audiences": list(claims.audiences),
        "issuer": claims.issuer,
        "issued_at": _iso(claims.issued_at),
        "expires_at": _iso(claims.expires_at),
        "lifetime_seconds": lifetime,
        "seconds_left": round(claims.expires_at - now, 3),
        "expired": claims.expires_at <= now,
        "bound_pod": None if claims.pod_name is None else
        {"name": claims.pod_name, "uid": claims.pod_uid},
        "file_mode": oct(os.stat(path).st_mode & 0o777),
    }


def inspect_command(config: Config) -> int:
    path = config.inspect_path or config.token_file
    try:
        summary = summarize(path, config=config, now=time.time())
    except (TokenError, OSError) as exc:
        print(f"token-refresher inspect: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
