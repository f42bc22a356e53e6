"""The watcher on real directories: kubelet-style `..data` swaps, triggers, fallbacks."""

from __future__ import annotations

import os
import queue
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver

from refresher.clock import SystemClock
from refresher.events import Event, TokenChanged, TriggerFile
from refresher.watchers import FileWatcher
from tests.helpers import sa_token

WAIT = 20.0


def kubelet_write(volume: Path, token: str, serial: int) -> None:
    """What kubelet's AtomicWriter does: new timestamped dir, swap `..data`."""
    data_dir = volume / f"..2026_12_04_00_00_{serial:02d}.000000001"
    data_dir.mkdir()
    (data_dir / "token").write_text(token)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(data_dir.name)
    os.rename(tmp, volume / "..data")
    if not (volume / "token").is_symlink():
        (volume / "token").symlink_to("..data/token")


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    volume = tmp_path / "projected"
    volume.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    kubelet_write(volume, sa_token(iat=1_000, exp=90_000_000_000), 0)
    (shared / "token").symlink_to(volume / "token")
    yield volume, shared, shared / "token"


def start(layout: tuple[Path, Path, Path], events: queue.SimpleQueue[Event],
          factory: object = None) -> FileWatcher:
    volume, shared, token = layout
    kw = {} if factory is None else {"observer_factory": factory}
    watcher = FileWatcher(token_file=str(token), default_token_file=str(volume / "token"),
                          trigger_dir=str(shared), put=events.put, clock=SystemClock(),
                          poll_interval=0.2, **kw)  # type: ignore[arg-type]
    watcher.start()
    watcher.rescan()
    return watcher


def next_of(events: queue.SimpleQueue[Event], kind: type) -> Event:
    while True:
        event = events.get(timeout=WAIT)
        if isinstance(event, kind):
            return event


def stop(watcher: FileWatcher) -> None:
    watcher.stop()
    watcher.join(5)


def test_data_swap_and_triggers(layout: tuple[Path, Path, Path]) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    watcher = start(layout, events)
    try:
        first = next_of(events, TokenChanged)
        assert isinstance(first, TokenChanged) and first.token is not None
        assert first.token.own is False
        kubelet_write(layout[0], sa_token(iat=2_000, exp=90_000_000_001), 1)
        second = next_of(events, TokenChanged)
        assert isinstance(second, TokenChanged) and second.token is not None
        assert second.token.issued_at == 2_000
        (layout[1] / "activate").write_text("")
        assert next_of(events, TriggerFile) == TriggerFile("activate")
        (layout[1] / "shutdown").write_text("")
        assert next_of(events, TriggerFile) == TriggerFile("shutdown")
    finally:
        stop(watcher)
    assert not watcher.polling


def test_non_file_triggers_are_ignored(layout: tuple[Path, Path, Path],
                                       caplog: pytest.LogCaptureFixture) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    watcher = start(layout, events)
    try:
        next_of(events, TokenChanged)
        (layout[1] / "shutdown").mkdir()
        (layout[1] / "activate").symlink_to("/etc/hostname")
        watcher.rescan()
        (layout[1] / "marker").write_text("")  # an unrelated event flushes the queue
        kubelet_write(layout[0], sa_token(iat=3_000, exp=90_000_000_002), 2)
        next_of(events, TokenChanged)
        while not events.empty():
            assert not isinstance(events.get_nowait(), TriggerFile)
    finally:
        stop(watcher)
    assert "it is a directory" in caplog.text and "it is a symlink" in caplog.text


def test_token_problem_is_an_event(layout: tuple[Path, Path, Path]) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    watcher = start(layout, events)
    try:
        next_of(events, TokenChanged)
        kubelet_write(layout[0], "not-a-jwt", 3)
        bad = next_of(events, TokenChanged)
        assert isinstance(bad, TokenChanged) and bad.token is None
        assert bad.problem is not None and "not a JWT" in bad.problem
    finally:
        stop(watcher)


class FailingInotify(InotifyObserver):
    def schedule(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise OSError(28, "inotify watch limit reached")


def test_falls_back_to_polling(layout: tuple[Path, Path, Path],
                               caplog: pytest.LogCaptureFixture) -> None:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    factory: type[BaseObserver] = FailingInotify
    watcher = start(layout, events, factory)
    try:
        assert watcher.polling
        assert "polling every 0.2s" in caplog.text
        next_of(events, TokenChanged)
        (layout[1] / "activate").write_text("")
        assert next_of(events, TriggerFile) == TriggerFile("activate")
        kubelet_write(layout[0], sa_token(iat=4_000, exp=90_000_000_003), 4)
        changed = next_of(events, TokenChanged)
        assert isinstance(changed, TokenChanged) and changed.token is not None
        assert changed.token.issued_at == 4_000
    finally:
        stop(watcher)


def test_trigger_dir_deleted_and_recreated(layout: tuple[Path, Path, Path]) -> None:
    volume, shared, _ = layout
    trigger_dir = shared.parent / "triggers"
    trigger_dir.mkdir()
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    watcher = FileWatcher(token_file=str(shared / "token"),
                          default_token_file=str(volume / "token"),
                          trigger_dir=str(trigger_dir), put=events.put, clock=SystemClock(),
                          poll_interval=3.0)  # the guard's own recheck: a backstop under load
    watcher.start()
    try:
        shutil.rmtree(trigger_dir)
        trigger_dir.mkdir()
        # the guard re-watches the new directory (woken by the deletion, else at its recheck)
        (trigger_dir / "activate").write_text("")
        assert next_of(events, TriggerFile) == TriggerFile("activate")
    finally:
        stop(watcher)
