"""Atomic writes, modes, symlink safety, stale temp files, triggers."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from refresher.errors import FileWriteError, TokenError
from refresher.tokenfile import (
    TEMP_PREFIX,
    link_to_default,
    read_token,
    remove_stale_temps,
    remove_trigger,
    trigger_state,
    write_atomic,
    write_trigger,
)
from tests.fsfaults import read_only, tiny_tmpfs
from tests.helpers import sa_token


def test_write_sets_exact_mode_and_replaces_symlink(tmp_path: Path) -> None:
    default = tmp_path / "default"
    default.write_text("kubelet")
    target = tmp_path / "token"
    link_to_default(str(target), str(default))
    assert target.is_symlink() and read_token(str(target)).is_symlink
    write_atomic(str(target), b"own-token", mode=0o640)
    assert not target.is_symlink()
    assert target.read_bytes() == b"own-token"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert default.read_text() == "kubelet"  # the link was replaced, not written through
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_temp_file_is_never_more_permissive(tmp_path: Path, monkeypatch:
                                            pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_fchmod = os.fchmod

    def spy(fd: int, mode: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", spy)
    write_atomic(str(tmp_path / "t"), b"x", mode=0o644)
    write_atomic(str(tmp_path / "u"), b"x", mode=0o400)
    assert seen[0] <= 0o600 and seen[1] & ~0o400 == 0


def test_reader_never_sees_partial_or_empty(tmp_path: Path) -> None:
    path = tmp_path / "token"
    payloads = [bytes([65 + i % 26]) * (4096 + i) for i in range(300)]
    write_atomic(str(path), payloads[0], mode=0o644)
    valid = set(payloads)
    bad: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = path.read_bytes()
            if data not in valid:
                bad.append(len(data))

    t = threading.Thread(target=reader, name="torn-reader")
    t.start()
    for p in payloads:
        write_atomic(str(path), p, mode=0o644)
    done.set()
    t.join()
    assert bad == []


def test_write_failures_are_clear_and_keep_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_atomic(str(path), b"old", mode=0o644)
    with read_only(str(tmp_path)):
        with pytest.raises(FileWriteError, match=str(tmp_path)):
            write_atomic(str(path), b"new", mode=0o644)
        assert path.read_bytes() == b"old"
    assert path.read_bytes() == b"old"


def test_full_filesystem_keeps_the_old_file(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with tiny_tmpfs(str(mnt), "8k") as mounted:
        path = mnt / "token"
        write_atomic(str(path), b"old", mode=0o644)
        if mounted:
            with pytest.raises(FileWriteError, match="No space left"):
                write_atomic(str(path), b"x" * 64 * 1024, mode=0o644)
        else:  # simulated ENOSPC where mounting is not permitted
            import errno
            from unittest import mock
            err = OSError(errno.ENOSPC, "No space left on device")
            with mock.patch("os.write", side_effect=err), \
                    pytest.raises(FileWriteError, match="No space left"):
                write_atomic(str(path), b"new", mode=0o644)
        assert path.read_bytes() == b"old"
        assert [p.name for p in mnt.iterdir()] == ["token"]


def test_write_into_missing_directory_or_over_directory(tmp_path: Path) -> None:
    with pytest.raises(FileWriteError, match="cannot create a temp file"):
        write_atomic(str(tmp_path / "gone" / "token"), b"x", mode=0o644)
    (tmp_path / "dir").mkdir()
    with pytest.raises(FileWriteError, match="is a directory"):
        write_atomic(str(tmp_path / "dir"), b"x", mode=0o644)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "empty"), (b"\n  \n", "empty"), (b"\xff\xfe\x00binary", "binary"),
    (b"x" * (64 * 1024 + 1), "larger"),
])
def test_read_rejects_bad_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(TokenError, match=fragment):
        read_token(str(path))


def test_read_rejects_missing_loop_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="No such file"):
        read_token(str(tmp_path / "missing"))
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(TokenError, match="symlink loop"):
        read_token(str(tmp_path / "a"))
    with pytest.raises(TokenError, match="not a regular file"):
        read_token(str(tmp_path))


def test_read_gives_mtime_and_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text(sa_token(iat=1, exp=2))
    first = read_token(str(path))
    assert first.fingerprint == read_token(str(path)).fingerprint
    path.write_text(sa_token(iat=1, exp=3))
    assert read_token(str(path)).fingerprint != first.fingerprint


def test_stale_temps_removed_only_ours(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}token-abc.tmp").write_text("partial")
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (tmp_path / f"{TEMP_PREFIX}token-link.tmp").symlink_to(outside)
    (tmp_path / f"{TEMP_PREFIX}dir.tmp").mkdir()
    (tmp_path / "other.tmp").write_text("keep")
    assert remove_stale_temps(str(tmp_path)) == 2
    assert outside.read_text() == "keep" and (tmp_path / "other.tmp").exists()
    assert (tmp_path / f"{TEMP_PREFIX}dir.tmp").is_dir()


def test_triggers_never_follow_symlinks(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "activate").symlink_to(victim)
    assert trigger_state(str(tmp_path), "activate") == "a symlink"
    write_trigger(str(tmp_path), "activate")
    assert victim.read_text() == "precious"
    assert trigger_state(str(tmp_path), "activate") == "file"
    (tmp_path / "shutdown").symlink_to(victim)
    remove_trigger(str(tmp_path), "shutdown")
    assert victim.exists() and not (tmp_path / "shutdown").exists()
    remove_trigger(str(tmp_path), "shutdown")  # absent: fine


def test_trigger_as_directory(tmp_path: Path) -> None:
    (tmp_path / "activate").mkdir()
    assert trigger_state(str(tmp_path), "activate") == "a directory"
    with pytest.raises(FileWriteError, match="activate"):
        write_trigger(str(tmp_path), "activate")
