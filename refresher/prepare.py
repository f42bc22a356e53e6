"""Start-up (also `token-refresher init`): directories, stale temp files, the token file link."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .claims import decode_claims
from .clock import Clock
from .config import Config
from .errors import FileWriteError, TokenError
from .tokenfile import ensure_dir, link_to_default, read_token, remove_stale_temps

log = logging.getLogger(__name__)


class StartupError(Exception):
    """Start-up cannot continue (exit 1); the message names the path."""


@dataclass(frozen=True, slots=True)
class Prepared:
    kept_own_token: bool  # token_file already held our own valid token (a restart)
    default_problem: str | None  # the default token is readable but not a usable JWT


def prepare(config: Config, clock: Clock) -> Prepared:
    token_dir = os.path.dirname(os.path.abspath(config.token_file))
    try:
        ensure_dir(config.trigger_dir)
        ensure_dir(token_dir)
    except FileWriteError as exc:
        raise StartupError(str(exc)) from None
    removed = remove_stale_temps(token_dir)
    if os.path.abspath(config.trigger_dir) != token_dir:
        removed += remove_stale_temps(config.trigger_dir)
    if removed:
        log.info("removed %d stale temp file(s) of a previous run", removed,
                 extra={"event": "stale_temps_removed", "count": removed})

    kept = _keep_own_token(config, clock)
    default_problem: str | None = None
    try:
        default = read_token(config.default_token_file)
    except TokenError as exc:
        if not kept:
            raise StartupError(f"default token unusable: {exc}") from None
        log.warning("default token unusable, keeping our own token: %s", exc,
                    extra={"event": "default_token_invalid"})
        return Prepared(kept_own_token=True, default_problem=str(exc))
    try:
        decode_claims(default.text)
    except TokenError as exc:
        default_problem = f"default token {config.default_token_file} is not usable: {exc}"
        log.error("%s", default_problem, extra={"event": "default_token_invalid"})
    if not kept:
        _link(config)
    return Prepared(kept_own_token=kept, default_problem=default_problem)


def _keep_own_token(config: Config, clock: Clock) -> bool:
    path = config.token_file
    if os.path.isdir(path) and not os.path.islink(path):
        raise StartupError(f"--token_file {path} is a directory")
    if not os.path.lexists(path) or os.path.islink(path):
        return False
    try:
        claims = decode_claims(read_token(path).text)
    except TokenError as exc:
        log.warning("replacing unusable token file %s: %s", path, exc,
                    extra={"event": "token_file_replaced"})
        return False
    if claims.expires_at <= clock.now():
        log.warning("replacing expired token file %s with a link to the default token", path,
                    extra={"event": "token_file_replaced"})
        return False
    log.info("keeping the refresher's own token in %s (restart)", path,
             extra={"event": "token_file_kept", "expires_at": claims.expires_at})
    return True


def _link(config: Config) -> None:
    path = config.token_file
    target = os.path.abspath(config.default_token_file)
    if os.path.islink(path) and os.readlink(path) == target:
        return
    try:
        link_to_default(path, config.default_token_file)
    except FileWriteError as exc:
        raise StartupError(str(exc)) from None
    log.info("linked %s -> %s", path, target, extra={"event": "token_file_linked"})
