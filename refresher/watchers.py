"""Filesystem watch: the projected token's directory and the trigger directory become events.

Kubelet swaps a `..data` symlink to a new timestamped directory, so the watch is on directories,
not files. Whatever changes, the watcher re-reads the token *behind token_file* and emits
TokenChanged only when its content changed. Trigger files become TriggerFile events.

If inotify watches cannot be created (limits, unsupported filesystem), watchdog's polling observer
takes over at --shutdown_interval. A guard thread re-creates watches when a watched directory is
deleted and recreated, and rescans as a safety net (once per shutdown_interval: no busy poll).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
from watchdog.observers.polling import PollingObserver

from .claims import decode_claims
from .clock import Clock
from .errors import TokenError
from .events import Event, TokenChanged, TokenInfo, TriggerFile, WatchRestored
from .threads import BaseThread
from .tokenfile import TRIGGER_NAMES, read_token, trigger_state

log = logging.getLogger(__name__)

FAST_RECHECK = 1.0  # s between checks while a watched directory is missing
# Creations, renames, deletions and closes after writing. Not opens, reads or read-only closes:
# an app reading the token file in a loop must cost the refresher nothing.
EVENT_FILTER: tuple[type[FileSystemEvent], ...] = (
    FileCreatedEvent, DirCreatedEvent, FileMovedEvent, DirMovedEvent, FileDeletedEvent,
    DirDeletedEvent, FileClosedEvent,
)
ObserverFactory = Callable[[], BaseObserver]

# watchdog holds every IN_MOVED_FROM for up to 0.5 s to pair it with its IN_MOVED_TO, and events
# queued behind it wait too: on a busy node a `shutdown` right after one of our own renames came
# 0.5 s late. We re-read state on any event and match both the source and destination names, so
# unpaired halves of a rename serve as well as a paired move.
InotifyMoveEventGrouper.delay = 0.0


def token_info_from_file(path: str, clock: Clock) -> TokenInfo:
    """Read and decode the token at path (following symlinks). Raises TokenError."""
    text = read_token(path)
    claims = decode_claims(text.text)
    received = min(text.mtime, clock.now())
    return TokenInfo(
        issued_at=claims.issued_at if claims.issued_at is not None else received,
        expires_at=claims.expires_at,
        received_at=received,
        own=not text.is_symlink,
    )


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FileWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        self._watcher.on_paths(paths, deleted=event.event_type == "deleted")


class FileWatcher:
    """Owns the watchdog observer and the guard thread; emits events through `put`."""

    def __init__(
        self,
        *,
        token_file: str,
        default_token_file: str,
        trigger_dir: str,
        put: Callable[[Event], None],
        clock: Clock,
        poll_interval: float,
        observer_factory: ObserverFactory = Observer,
    ) -> None:
        self._token_file = os.path.abspath(token_file)
        self._default = os.path.abspath(default_token_file)
        self._trigger_dir = os.path.abspath(trigger_dir)
        self._put = put
        self._clock = clock
        self._poll_interval = poll_interval
        self._factory = observer_factory
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        self._problem: str | None = None
        self._present: set[str] = set()
        self._warned: set[tuple[str, str]] = set()
        self._observer: BaseObserver | None = None
        self._watches: dict[str, tuple[ObservedWatch, tuple[int, int]]] = {}
        self._missing: set[str] = set()
        self._token_names = {os.path.basename(self._token_file),
                             os.path.basename(self._default), "..data"}
        self.polling = False
        self._guard = _Guard(self)

    # -- directories -----------------------------------------------------------------------
    @property
    def directories(self) -> list[str]:
        dirs = [os.path.dirname(self._default), os.path.dirname(self._token_file),
                self._trigger_dir]
        return list(dict.fromkeys(dirs))

    @property
    def threads(self) -> list[threading.Thread]:
        observer = [self._observer] if self._observer is not None else []
        return [*observer, self._guard]

    def start(self) -> None:
        try:
            self._observer = self._start_observer(self._factory)
        except OSError as exc:
            log.warning(
                "inotify unavailable (%s): polling every %.1fs instead", exc.strerror or exc,
                self._poll_interval, extra={"event": "watch_fallback"})
            self.polling = True
            self._observer = self._start_observer(
                lambda: PollingObserver(timeout=self._poll_interval))
        self._guard.start()

    def _start_observer(self, factory: ObserverFactory) -> BaseObserver:
        observer = factory()
        observer.name = "watch-observer"
        self._watches = {}
        for directory in self.directories:
            self._schedule(observer, directory)
        observer.start()
        return observer

    def _schedule(self, observer: BaseObserver, directory: str) -> bool:
        try:
            st = os.stat(directory)
        except OSError:
            log.error("cannot watch %s: directory is missing", directory,
                      extra={"event": "watch_missing", "path": directory})
            return False
        watch = observer.schedule(_Handler(self), directory, recursive=False,
                                  event_filter=list(EVENT_FILTER))
        self._watches[directory] = (watch, (st.st_dev, st.st_ino))
        return True

    def stop(self) -> None:
        self._guard.stop()
        if self._observer is not None:
            self._observer.stop()

    def join(self, timeout: float) -> None:
        self._guard.join(timeout)
        if self._observer is not None and self._observer.ident is not None:
            self._observer.join(timeout)

    def recheck_directories(self) -> bool:
        """Re-create watches of directories deleted and recreated; True if all are watched."""
        observer = self._observer
        if observer is None:
            return True
        healthy = True
        for directory in self.directories:
            try:
                st = os.stat(directory)
                identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                identity = None
            current = self._watches.get(directory)
            if identity is not None and current is not None and current[1] == identity:
                continue
            healthy = False
            if current is not None:
                with contextlib.suppress(KeyError, OSError):
                    observer.unschedule(current[0])
                del self._watches[directory]
            if identity is None:
                if directory not in self._missing:
                    self._missing.add(directory)
                    log.warning("watched directory %s is gone: its files are lost until it is "
                                "back", directory, extra={"event": "watch_lost", "path": directory})
                continue
            try:
                healthy = self._schedule(observer, directory)
            except OSError as exc:
                log.warning("cannot re-watch %s: %s", directory, exc.strerror or exc,
                            extra={"event": "watch_failed", "path": directory})
                continue
            self._missing.discard(directory)
            log.info("watching %s again", directory,
                     extra={"event": "watch_restored", "path": directory})
            self._put(WatchRestored(directory))
        return healthy and len(self._watches) == len(self.directories)

    # -- events ----------------------------------------------------------------------------
    def on_paths(self, paths: list[str], *, deleted: bool) -> None:
        token_dirty = False
        for path in paths:
            directory, name = os.path.split(path)
            if path in self._watches and deleted:
                self._guard.wake()
            if directory == self._trigger_dir and name in TRIGGER_NAMES:
                self.check_trigger(name)
            if name in self._token_names or path in self._watches:
                token_dirty = True
        if token_dirty:
            self.check_token()

    def rescan(self, *, at_start: bool = False) -> None:
        self.check_token()
        for name in TRIGGER_NAMES:
            self.check_trigger(name, at_start=at_start)

    def check_trigger(self, name: str, *, at_start: bool = False) -> None:
        state = trigger_state(self._trigger_dir, name)
        with self._lock:
            if state != "file":
                self._present.discard(name)
                if state != "absent" and (name, state) not in self._warned:
                    self._warned.add((name, state))
                    log.warning("ignoring trigger %s: it is %s, not a regular file",
                                os.path.join(self._trigger_dir, name), state,
                                extra={"event": "trigger_ignored", "trigger": name})
                return
            if name in self._present:
                return
            self._present.add(name)
        log.info("trigger file %s", name, extra={"event": "trigger", "trigger": name})
        self._put(TriggerFile(name, at_start=at_start))

    def check_token(self) -> None:
        try:
            text = read_token(self._token_file)
            fingerprint, problem = text.fingerprint, None
        except TokenError as exc:
            fingerprint, problem = None, str(exc)
        with self._lock:
            if fingerprint == self._fingerprint and problem == self._problem:
                return
            self._fingerprint, self._problem = fingerprint, problem
        if problem is not None:
            self._put(TokenChanged(self._token_file, None, problem))
            return
        try:
            info = token_info_from_file(self._token_file, self._clock)
        except TokenError as exc:
            self._put(TokenChanged(self._token_file, None, f"{self._token_file}: {exc}"))
            return
        self._put(TokenChanged(self._token_file, info))


class _Guard(BaseThread):
    """Re-creates lost watches and rescans once per poll interval."""

    def __init__(self, watcher: FileWatcher) -> None:
        super().__init__(name="watch-guard")
        self._watcher = watcher
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def on_stop(self) -> None:
        self._wake.set()

    def run_loop(self) -> None:
        delay = self._watcher._poll_interval
        while not self.stopped:
            self._wake.wait(delay)
            self._wake.clear()
            if self.stopped:
                return
            healthy = self._watcher.recheck_directories()
            self._watcher.rescan()
            delay = self._watcher._poll_interval if healthy else min(
                FAST_RECHECK, self._watcher._poll_interval)


