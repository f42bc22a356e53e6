"""Injected time: production reads the system clocks, tests pass fixed numbers."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (compared with token claims)."""

    def monotonic(self) -> float:
        """Monotonic seconds (for waiting; never jumps)."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
