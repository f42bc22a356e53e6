"""A minimal inotify reader (ctypes, Linux): when did a rename land in a watched directory?

The bench observes the refresher's `rename(temp, token)` from its own process: the kernel queues
an IN_MOVED_TO event on the directory and the blocked `select()` returns. An event's time is
`time.monotonic()` right after `select()` wakes up, so its resolution is the wake-up latency of the
bench's thread (tens of microseconds when idle), not a polling period.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import time
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


@dataclass(frozen=True, slots=True)
class FsEvent:
    at: float  # time.monotonic() when the bench read it
    directory: str
    name: str
    mask: int


class Inotify:
    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd
        self._dirs: dict[int, str] = {}

    def watch(self, directory: str, mask: int = IN_MOVED_TO | IN_CREATE) -> int:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), directory)
        self._dirs[wd] = directory
        return int(wd)

    def drain(self) -> None:
        """Forget queued events."""
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except BlockingIOError:
                return

    def read(self, timeout: float) -> list[FsEvent]:
        """Events available within `timeout` seconds (empty list on timeout)."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        at = time.monotonic()
        if not ready:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events: list[FsEvent] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset:offset + length].split(b"\0", 1)[0].decode("utf-8", "replace")
            offset += length
            events.append(FsEvent(at, self._dirs.get(wd, ""), name, mask))
        return events

    def wait_for(self, name: str, *, timeout: float, mask: int = IN_MOVED_TO,
                 directories: set[str] | None = None) -> dict[str, float]:
        """First time `name` got `mask` in each directory (all watched ones by default).

        Returns {directory: monotonic time}; stops at the deadline with what it has.
        """
        wanted = set(self._dirs.values()) if directories is None else set(directories)
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while wanted - seen.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for ev in self.read(left):
                if ev.name == name and ev.mask & mask and ev.directory in wanted:
                    seen.setdefault(ev.directory, ev.at)
        return seen

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
