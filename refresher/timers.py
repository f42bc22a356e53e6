"""The scheduled-refresh thread: fires TimerFired events at computed instants, never polls."""

from __future__ import annotations

import threading
from collections.abc import Callable

import backoff

from .clock import Clock
from .events import Event, TimerFired, TimerKind
from .threads import BaseThread


def equal_jitter(delay: float) -> float:
    """Between half and all of `delay` (never longer: the caps on retry delays still hold)."""
    half = delay / 2
    return half + float(backoff.full_jitter(half))  # full_jitter: uniform in [0, half]


class Scheduler(BaseThread):
    def __init__(self, put: Callable[[Event], None], clock: Clock) -> None:
        super().__init__(name="refresh-scheduler")
        self._put = put
        self._clock = clock
        self._cond = threading.Condition()
        self._deadlines: dict[TimerKind, float] = {}

    def set(self, kind: TimerKind, delay: float, *, jitter: bool = False) -> float:
        """Arm (or re-arm) a timer; returns the delay actually used."""
        if jitter:
            delay = equal_jitter(delay)
        with self._cond:
            self._deadlines[kind] = self._clock.monotonic() + max(delay, 0.0)
            self._cond.notify()
        return delay

    def cancel(self, kind: TimerKind) -> None:
        with self._cond:
            self._deadlines.pop(kind, None)
            self._cond.notify()

    def pending(self) -> dict[TimerKind, float]:
        """Seconds until each armed timer (for tests and health)."""
        now = self._clock.monotonic()
        with self._cond:
            return {k: at - now for k, at in self._deadlines.items()}

    def on_stop(self) -> None:
        with self._cond:
            self._cond.notify()

    def run_loop(self) -> None:
        while not self.stopped:
            due: list[TimerKind] = []
            with self._cond:
                now = self._clock.monotonic()
                due = [k for k, at in self._deadlines.items() if at <= now]
                for k in due:
                    del self._deadlines[k]
                if not due:
                    wait = min(self._deadlines.values(), default=None)
                    self._cond.wait(None if wait is None else wait - now)
            for kind in due:
                self._put(TimerFired(kind))
