"""One small base class for every worker thread: named, stoppable, joinable."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)


class BaseThread(threading.Thread):
    """Subclasses implement `run_loop()` and wait only with `self._stopped.wait(delay)`."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stopped = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        self._stopped.set()
        self.on_stop()

    def on_stop(self) -> None:
        """Wake the thread if it blocks somewhere other than `_stopped.wait`."""

    def run(self) -> None:
        try:
            self.run_loop()
        except Exception:  # a worker must never die silently
            log.exception("thread %s crashed", self.name, extra={"event": "thread_crashed"})

    def run_loop(self) -> None:
        raise NotImplementedError


def stop_and_join(threads: Iterable[threading.Thread], timeout: float) -> list[str]:
    """Stop all, then join all within one overall timeout; returns the threads still alive.

    A thread stuck in a blocking call (a hung HTTP request) is a daemon thread: it is logged and
    abandoned rather than allowed to delay the exit.
    """
    threads = list(threads)
    for t in threads:
        stop = getattr(t, "stop", None)
        if callable(stop):
            stop()
    deadline = time.monotonic() + timeout
    leftover = []
    for t in threads:
        if t.ident is not None:
            t.join(max(deadline - time.monotonic(), 0.0))
        if t.is_alive():
            leftover.append(t.name)
            log.warning("thread %s did not stop within %.1fs", t.name, timeout,
                        extra={"event": "thread_leftover", "thread_name": t.name})
    return leftover
