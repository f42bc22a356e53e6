"""The only module that writes files.

Writes are atomic: a temp file in the same directory (created no more permissive than the final
mode), write, fsync, chmod to the final mode, rename over the target, fsync the directory. A reader
of the target sees the old content or the new, never a missing, empty or partial file. Nothing here
follows a symlink when writing or deleting: a symlink planted in the shared directory is replaced,
never written through.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass

from .claims import MAX_TOKEN_BYTES
from .errors import FileWriteError, TokenError

log = logging.getLogger(__name__)

TEMP_PREFIX = ".token-refresher-"
TEMP_SUFFIX = ".tmp"
TRIGGER_NAMES = ("activate", "shutdown")
_TRIGGER_CONTENT = b"written by token-refresher\n"


@dataclass(frozen=True, slots=True)
class TokenText:
    text: str
    mtime: float  # when the file behind the path was last written (local clock)
    fingerprint: str  # sha256 of the content: compares tokens without keeping them in logs
    is_symlink: bool  # the path itself is a symlink (passive: points at kubelet's token)


def read_token(path: str) -> TokenText:
    """Read a token file (following symlinks). Raises TokenError naming the path."""
    try:
        is_link = os.path.islink(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise TokenError(f"cannot read token file {path}: {_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"token file {path} is not a regular file")
        data = os.read(fd, MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise TokenError(f"cannot read token file {path}: {_reason(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenError(f"token file {path} is larger than {MAX_TOKEN_BYTES} bytes")
    if not data.strip():
        raise TokenError(f"token file {path} is empty")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} holds binary data, not a JWT") from None
    return TokenText(
        text=text,
        mtime=st.st_mtime,
        fingerprint=hashlib.sha256(data).hexdigest(),
        is_symlink=is_link,
    )


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return exc.strerror or type(exc).__name__


def _temp_path(directory: str, target: str) -> str:
    name = f"{TEMP_PREFIX}{os.path.basename(target)}-{secrets.token_hex(6)}{TEMP_SUFFIX}"
    return os.path.join(directory, name)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, mode: int) -> None:
    """Replace `path` (a file or a symlink) atomically. Raises FileWriteError naming the path."""
    directory = os.path.dirname(os.path.abspath(path))
    temp = _temp_path(directory, path)
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            raise FileWriteError(f"cannot write {path}: it is a directory")
        # Created at most as permissive as the final mode and never more than 0600.
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode & 0o600,
        )
    except OSError as exc:
        raise FileWriteError(f"cannot create a temp file in {directory}: {_reason(exc)}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except OSError as exc:
        _unlink_quietly(temp)
        raise FileWriteError(f"cannot write {path}: {_reason(exc)}") from None
    _fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def link_to_default(token_file: str, default_token_file: str) -> None:
    """Make token_file a symlink to kubelet's token, atomically (symlink, then rename)."""
    directory = os.path.dirname(os.path.abspath(token_file))
    temp = _temp_path(directory, token_file)
    try:
        os.symlink(os.path.abspath(default_token_file), temp)
        os.rename(temp, token_file)
    except OSError as exc:
        _unlink_quietly(temp)
        raise FileWriteError(f"cannot link {token_file} to {default_token_file}: "
                             f"{_reason(exc)}") from None


def remove_stale_temps(directory: str) -> int:
    """Remove temp files a killed run left behind (only our own name pattern, only files)."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            st = os.lstat(entry.path)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def trigger_state(trigger_dir: str, name: str) -> str:
    """'absent', 'file', or a reason the trigger is ignored ('a directory', 'a symlink', ...)."""
    try:
        st = os.lstat(os.path.join(trigger_dir, name))
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"unreadable ({_reason(exc)})"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    return "not a regular file"


def write_trigger(trigger_dir: str, name: str) -> None:
    """Create TRIGGER_DIR/name as our own regular file (replacing a planted symlink)."""
    if trigger_state(trigger_dir, name) == "file":
        return
    write_atomic(os.path.join(trigger_dir, name), _TRIGGER_CONTENT, mode=0o644)


def remove_trigger(trigger_dir: str, name: str) -> None:
    """Remove TRIGGER_DIR/name if it is a file or symlink (unlink never follows the link)."""
    path = os.path.join(trigger_dir, name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise FileWriteError(f"cannot remove {path}: {_reason(exc)}") from None


def ensure_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(f"cannot create directory {path}: {_reason(exc)}") from None
    if not os.path.isdir(path):
        raise FileWriteError(f"{path} is not a directory")
