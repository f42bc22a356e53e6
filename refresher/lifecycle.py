"""The lifecycle decision: a pure function `decide(state, event, now) -> (state, actions)`.

No I/O, no locks, no clock reads. The loop in `daemon` feeds it events from the queue and carries
out the actions it returns.

    passive --(SIGTERM | activate file | token near expiry | kubelet stale | bad token)--> active
    passive | active --(shutdown file | 2nd signal | 1st signal with on_sigterm=exit)--> stopping
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field, replace
from enum import StrEnum

from . import schedule
from .events import (
    Event,
    FailureKind,
    RefreshFailed,
    RefreshSucceeded,
    SignalReceived,
    Stop,
    TimerFired,
    TimerKind,
    TokenChanged,
    TokenInfo,
    TriggerFile,
    WatchRestored,
)


class Mode(StrEnum):
    PASSIVE = "passive"
    ACTIVE = "active"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class Settings:
    """The part of the configuration the decision needs (seconds)."""

    refresh_interval: float
    sleep: float
    max_attempts: int
    on_sigterm: str = "activate"


@dataclass(frozen=True, slots=True)
class State:
    settings: Settings
    mode: Mode = Mode.PASSIVE
    token: TokenInfo | None = None  # the token token_file serves now, as far as we know
    offset: float = 0.0  # server clock minus local clock (from Date headers)
    failures: int = 0  # consecutive failed refreshes
    signals: int = 0
    refreshing: bool = False  # a refresh is in flight
    activated_by: str | None = None


# --- actions -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: TimerKind
    delay: float
    jitter: bool = False  # spread retries of many pods (equal jitter: 50-100% of delay)


@dataclass(frozen=True, slots=True)
class CancelTimer:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class StartRefresh:
    timeout: float  # s the API request may take


@dataclass(frozen=True, slots=True)
class WriteTrigger:
    name: str


@dataclass(frozen=True, slots=True)
class RemoveTrigger:
    name: str


@dataclass(frozen=True, slots=True)
class Exit:
    code: int


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    event: str
    message: str
    fields: dict[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Transition:
    """Mode changed (also logged); adapters use it for metrics."""

    before: Mode
    after: Mode
    reason: str


Action = SetTimer | CancelTimer | StartRefresh | WriteTrigger | RemoveTrigger | Exit | Log | \
    Transition
Result = tuple[State, list[Action]]

SIGNAL_NAMES = {int(signal.SIGTERM): "SIGTERM", int(signal.SIGINT): "SIGINT"}

HINTS = {
    401: "the refresher's own credential was rejected: check its kubeconfig or projected token",
    403: "RBAC is missing: grant `create` on `serviceaccounts/token` (resourceNames: the service "
         "account) to the refresher's identity",
    404: "the service account (or the bound Pod) does not exist: check --namespace, "
         "--service_account and --pod_name",
    409: "the bound Pod's UID does not match --pod_uid",
    422: "the API server refused the request: check --expiration_duration (minimum 10m) and "
         "--token_audience",
}


def decide(state: State, event: Event, now: float) -> Result:
    """Next state and the actions to carry out. `now` is wall-clock seconds."""
    if state.mode is Mode.STOPPING:
        return state, []
    match event:
        case Stop(reason=reason):
            return _stop(state, reason, code=0)
        case TriggerFile(name="shutdown"):
            state, actions = _stop(state, "shutdown_file", code=0)
            return state, [RemoveTrigger("shutdown"), *actions]
        case TriggerFile(name="activate", at_start=at_start):
            return _activate(state, now, "restart" if at_start else "activate_file")
        case TriggerFile():
            return state, []
        case SignalReceived(signum=signum):
            return _on_signal(state, signum, now)
        case TokenChanged():
            return _on_token_changed(state, event, now)
        case TimerFired(kind=kind):
            return _on_timer(state, kind, now)
        case RefreshSucceeded():
            return _on_success(state, event, now)
        case RefreshFailed():
            return _on_failure(state, event, now)
        case WatchRestored():
            # a recreated trigger directory lost the marker that makes a restart resume
            return state, [WriteTrigger("activate")] if state.mode is Mode.ACTIVE else []
    return state, []  # pragma: no cover  (every event type is matched above)


def _transition(state: State, mode: Mode, reason: str) -> Result:
    before = state.mode
    new = replace(state, mode=mode)
    return new, [
        Transition(before, mode, reason),
        Log(logging.INFO, "state_change", f"{before} -> {mode} ({reason})",
            {"from_state": str(before), "to_state": str(mode), "reason": reason}),
    ]


def _stop(state: State, reason: str, *, code: int) -> Result:
    state, actions = _transition(state, Mode.STOPPING, reason)
    return state, [*actions, Exit(code)]


def _remaining(state: State, now: float) -> float | None:
    if state.token is None:
        return None
    return schedule.remaining(state.token, now, state.offset)


def _start_refresh(state: State, now: float) -> Result:
    if state.refreshing:
        return state, []
    timeout = schedule.request_timeout(_remaining(state, now))
    return replace(state, refreshing=True), [StartRefresh(timeout)]


def _activate(state: State, now: float, reason: str) -> Result:
    if state.mode is not Mode.PASSIVE:
        return state, []
    state, actions = _transition(state, Mode.ACTIVE, reason)
    state = replace(state, activated_by=reason)
    actions += [CancelTimer(TimerKind.DEADLINE), WriteTrigger("activate")]
    state, refresh = _start_refresh(state, now)
    return state, actions + refresh


def _on_signal(state: State, signum: int, now: float) -> Result:
    state = replace(state, signals=state.signals + 1)
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    if state.settings.on_sigterm == "exit" or state.signals >= 2:
        return _stop(state, name.lower(), code=0)
    if state.mode is Mode.ACTIVE:
        return state, [Log(logging.INFO, "signal", f"{name} while active: a second one exits",
                           {"signal": name})]
    return _activate(state, now, "signal")


def _on_token_changed(state: State, event: TokenChanged, now: float) -> Result:
    if event.token is None:
        problem = event.problem or "unreadable token"
        actions: list[Action] = [Log(logging.ERROR, "token_invalid", problem,
                                     {"path": event.path})]
        if state.mode is Mode.PASSIVE:
            state, more = _activate(state, now, "invalid_token")
        else:
            state, more = _start_refresh(state, now)
        return state, actions + more
    state = replace(state, token=event.token)
    left = schedule.remaining(event.token, now, state.offset)
    actions = [Log(logging.INFO if state.mode is Mode.PASSIVE else logging.DEBUG,
                   "token_changed", "token behind the token file changed",
                   {"path": event.path, "expires_in_seconds": round(left, 3),
                    "own": event.token.own})]
    if state.mode is not Mode.PASSIVE:
        return state, actions
    return _evaluate_passive(state, now, actions)


def _evaluate_passive(state: State, now: float, actions: list[Action]) -> Result:
    assert state.token is not None
    at, reason = schedule.activation(
        state.token, refresh_interval=state.settings.refresh_interval, offset=state.offset)
    if at <= now:
        state, more = _activate(state, now, reason)
        return state, actions + more
    return state, [*actions, SetTimer(TimerKind.DEADLINE, at - now)]


def _on_timer(state: State, kind: TimerKind, now: float) -> Result:
    if state.mode is Mode.PASSIVE:
        if kind is TimerKind.DEADLINE and state.token is not None:
            return _evaluate_passive(state, now, [])
        return state, []
    if kind in (TimerKind.REFRESH, TimerKind.RETRY):
        return _start_refresh(state, now)
    return state, []


def _on_success(state: State, event: RefreshSucceeded, now: float) -> Result:
    state = replace(state, token=event.token, offset=event.offset, failures=0, refreshing=False)
    if state.mode is not Mode.ACTIVE:
        return state, []
    delay = schedule.refresh_delay(event.token, now,
                                   refresh_interval=state.settings.refresh_interval)
    left = schedule.remaining(event.token, now, event.offset)
    return state, [
        CancelTimer(TimerKind.RETRY),
        SetTimer(TimerKind.REFRESH, delay),
        Log(logging.INFO, "refresh_succeeded", "wrote a fresh token",
            {"expires_at": event.token.expires_at, "expires_in_seconds": round(left, 3),
             "lifetime_seconds": event.token.lifetime, "next_refresh_seconds": round(delay, 3),
             "duration_seconds": round(event.duration, 4)}),
    ]


def _on_failure(state: State, event: RefreshFailed, now: float) -> Result:
    failures = state.failures + 1
    state = replace(state, failures=failures, refreshing=False)
    if state.mode is not Mode.ACTIVE:
        return state, []
    left = _remaining(state, now)
    delay = schedule.retry_delay(
        failures, event.kind, sleep=state.settings.sleep,
        max_attempts=state.settings.max_attempts,
        refresh_interval=state.settings.refresh_interval, remaining_life=left,
        retry_after=event.retry_after)
    fields: dict[str, object] = {
        "status": event.status, "kind": str(event.kind), "attempt": failures,
        "retry_in_seconds": round(delay, 3), "error": event.message,
        "expires_in_seconds": None if left is None else round(left, 3),
    }
    hint = HINTS.get(event.status or 0) if event.kind is FailureKind.PERMANENT else None
    if hint:
        fields["hint"] = hint
    level = logging.ERROR if event.kind is FailureKind.PERMANENT else logging.WARNING
    message = f"refresh failed: {event.message}" + (f" ({hint})" if hint else "")
    honour_retry_after = event.kind is FailureKind.RATE_LIMITED and event.retry_after is not None
    return state, [
        SetTimer(TimerKind.RETRY, delay, jitter=not honour_retry_after),
        Log(level, "refresh_failed", message, fields),
    ]
