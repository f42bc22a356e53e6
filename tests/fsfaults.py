"""Real filesystem faults for tests: read-only directories and full filesystems.

As root (this machine and CI) they are real mounts: a read-only bind mount and a tiny tmpfs.
Without root, read-only falls back to directory permissions, and a full disk to None (callers
then simulate ENOSPC, as the issue allows).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, timeout=30).returncode == 0


def _umount(path: str) -> None:
    subprocess.run(["umount", "-l", path], capture_output=True, timeout=30, check=False)


@contextmanager
def read_only(directory: str) -> Iterator[None]:
    """Make `directory` unwritable for everyone (root included) inside the block."""
    if os.geteuid() == 0 and _mount("--bind", directory, directory):
        try:
            if not _mount("-o", "remount,bind,ro", directory):
                raise RuntimeError(f"cannot remount {directory} read-only")
            yield
        finally:
            _umount(directory)
        return
    mode = os.stat(directory).st_mode & 0o7777
    os.chmod(directory, 0o500)
    try:
        yield
    finally:
        os.chmod(directory, mode)


@contextmanager
def tiny_tmpfs(directory: str, size: str = "16k") -> Iterator[bool]:
    """Mount a tiny tmpfs on `directory`; yields False when mounting is not permitted."""
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", directory):
        yield False
        return
    try:
        yield True
    finally:
        _umount(directory)
