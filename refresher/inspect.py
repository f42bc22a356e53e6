"""`token-refresher inspect [PATH]`: a JSON summary of a token file, never the token itself.

Only decoded claims, times and file facts are printed: no signature, no header, no raw segment.
A missing, empty or malformed file exits 1 with one line on stderr naming the path.
"""

from __future__ import annotations

import json
import os
import stat
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


def _managed_by(path: str, is_symlink: bool, config: Config) -> str:
    if is_symlink:
        return "kubelet (symlink to the projected token)"
    if os.path.abspath(path) == os.path.abspath(config.token_file):
        return "token-refresher (own file)"
    return "unknown (regular file, not --token_file)"


def summarize(path: str, *, config: Config, now: float) -> dict[str, Any]:
    """Raises TokenError (or OSError) with a message naming the path."""
    text = read_token(path)
    try:
        claims = decode_claims(text.text)
    except TokenError as exc:
        raise TokenError(f"token file {path}: {exc}") from None
    lifetime = None if claims.issued_at is None else claims.expires_at - claims.issued_at
    return {
        "path": path,
        "managed_by": _managed_by(path, text.is_symlink, config),
        "symlink": text.is_symlink,
        "symlink_target": os.path.realpath(path) if text.is_symlink else None,
        "subject": claims.subject,
        "audiences": list(claims.audiences),
        "issuer": claims.issuer,
        "issued_at": _iso(claims.issued_at),
        "not_before": _iso(claims.not_before),
        "expires_at": _iso(claims.expires_at),
        "lifetime_seconds": lifetime,
        "seconds_left": round(claims.expires_at - now, 3),
        "expired": claims.expires_at <= now,
        "bound_pod": None if claims.pod_name is None else
        {"name": claims.pod_name, "uid": claims.pod_uid},
        "file_mode": f"{stat.S_IMODE(os.stat(path).st_mode):04o}",
        "modified_at": _iso(text.mtime),
    }


def _explain(path: str, message: str) -> str:
    """Add what a dangling symlink points at (the usual cause of a 'missing' token file)."""
    if os.path.islink(path) and not os.path.exists(path):
        try:
            return f"{message} (dangling symlink to {os.readlink(path)})"
        except OSError:
            return message
    return message


def inspect_command(config: Config) -> int:
    path = config.inspect_path or config.token_file
    try:
        summary = summarize(path, config=config, now=time.time())
    except TokenError as exc:
        print(f"token-refresher inspect: {_explain(path, str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"token-refresher inspect: cannot read {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
