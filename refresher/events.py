"""Lifecycle events: immutable values, the only things that go on the lifecycle queue."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the lifecycle knows of a token: claims times and when it reached us (no token text).

    `issued_at`/`expires_at` are the server's clock; `received_at` is the local clock.
    """

    issued_at: float
    expires_at: float
    received_at: float
    own: bool = False  # written by the refresher (False: kubelet's, through the symlink)

    @property
    def lifetime(self) -> float:
        return max(self.expires_at - self.issued_at, 0.0)


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # 5xx, resets, timeouts, garbage: retry with backoff
    RATE_LIMITED = "rate_limited"  # 429: honour Retry-After
    PERMANENT = "permanent"  # 401/403/404/422: configuration, retry slowly
    INVALID_TOKEN = "invalid_token"  # the server answered, the token failed our checks
    WRITE = "write"  # the token could not be written (read-only, full, missing dir)


class TimerKind(StrEnum):
    DEADLINE = "deadline"  # passive: the instant the served token needs us
    REFRESH = "refresh"  # active: the next scheduled refresh
    RETRY = "retry"  # active: the next attempt after a failure


@dataclass(frozen=True, slots=True)
class SignalReceived:
    signum: int


@dataclass(frozen=True, slots=True)
class TokenChanged:
    """The token behind token_file changed (or became unreadable: token None, problem set)."""

    path: str
    token: TokenInfo | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class TriggerFile:
    name: str  # "activate" or "shutdown"
    at_start: bool = False  # found by the start-up scan (a restarted refresher resumes)


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class RefreshSucceeded:
    token: TokenInfo
    offset: float  # estimated server clock minus local clock, s
    duration: float  # s the attempt took


@dataclass(frozen=True, slots=True)
class RefreshFailed:
    kind: FailureKind
    message: str  # never token material
    status: int | None = None
    retry_after: float | None = None
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class WatchRestored:
    """A watched directory was deleted and is back (its files may be gone)."""

    path: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Sentinel: stop the lifecycle loop (tests, fatal adapter errors)."""

    reason: str = "stop"


Event = SignalReceived | TokenChanged | TriggerFile | TimerFired | RefreshSucceeded | \
    RefreshFailed | WatchRestored | Stop
