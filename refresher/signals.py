"""The signal thread: SIGTERM/SIGINT become SignalReceived events.

`block_signals()` must run on the main thread before any other thread starts, so that every
thread inherits the blocked mask and only this thread receives the signals, through sigwait.
No Python-level signal handler is installed: nothing runs on the main thread at signal time.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from .events import Event, SignalReceived
from .threads import BaseThread

HANDLED = frozenset({signal.SIGTERM, signal.SIGINT})
_WAKE = signal.SIGUSR1  # sent to this thread only, by stop()
_WAITED = HANDLED | {_WAKE}


def block_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)


class SignalThread(BaseThread):
    def __init__(self, put: Callable[[Event], None]) -> None:
        super().__init__(name="signal-catcher")
        self._put = put

    def on_stop(self) -> None:
        if self.ident is not None and self.is_alive():
            signal.pthread_kill(self.ident, _WAKE)

    def run_loop(self) -> None:
        while not self.stopped:
            signum = signal.sigwait(_WAITED)
            if signum in HANDLED:
                self._put(SignalReceived(int(signum)))
