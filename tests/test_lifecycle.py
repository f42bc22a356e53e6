"""Every (state, event) pair of the pure transition function, with a fixed clock."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest

from refresher.events import (
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
from refresher.lifecycle import (
    Action,
    CancelTimer,
    Exit,
    Log,
    Mode,
    RemoveTrigger,
    SetTimer,
    Settings,
    StartRefresh,
    State,
    Transition,
    WriteTrigger,
    decide,
)

NOW = 1_000_000.0
HOUR = 3600.0
SETTINGS = Settings(refresh_interval=HOUR, sleep=20.0, max_attempts=3)
EXIT_SETTINGS = replace(SETTINGS, on_sigterm="exit")

# kubelet token: 24h lifetime, issued 1h ago -> activation at 85% (20.4h) or 1.5h before exp
FRESH = TokenInfo(issued_at=NOW - HOUR, expires_at=NOW + 23 * HOUR, received_at=NOW - HOUR)
NEAR_EXPIRY = TokenInfo(issued_at=NOW - 2 * HOUR, expires_at=NOW + HOUR, received_at=NOW - HOUR)
STALE = TokenInfo(issued_at=NOW - 21 * HOUR, expires_at=NOW + 3 * HOUR,
                  received_at=NOW - 21 * HOUR)
OWN = TokenInfo(issued_at=NOW, expires_at=NOW + 2 * HOUR, received_at=NOW, own=True)

PASSIVE = State(SETTINGS, token=FRESH)
PASSIVE_EXIT = State(EXIT_SETTINGS, token=FRESH)
ACTIVE = State(SETTINGS, mode=Mode.ACTIVE, token=OWN)
ACTIVE_BUSY = replace(ACTIVE, refreshing=True)
ACTIVE_SIGNALLED = replace(ACTIVE, signals=1)
STOPPING = State(SETTINGS, mode=Mode.STOPPING, token=OWN)

TERM = SignalReceived(int(signal.SIGTERM))
OK = RefreshSucceeded(OWN, offset=0.0, duration=0.01)
FAIL = RefreshFailed(FailureKind.TRANSIENT, "HTTP 503", status=503)
FORBIDDEN = RefreshFailed(FailureKind.PERMANENT, "HTTP 403", status=403)
LIMITED = RefreshFailed(FailureKind.RATE_LIMITED, "HTTP 429", status=429, retry_after=7.0)


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions if not isinstance(a, (Log, Transition))]


ACTIVATE = ["CancelTimer", "WriteTrigger", "StartRefresh"]
STOP = ["Exit"]

CASES = [
    # passive
    pytest.param(PASSIVE, TERM, Mode.ACTIVE, ACTIVATE, id="passive-sigterm"),
    pytest.param(PASSIVE_EXIT, TERM, Mode.STOPPING, STOP, id="passive-sigterm-exit-mode"),
    pytest.param(PASSIVE, SignalReceived(int(signal.SIGINT)), Mode.ACTIVE, ACTIVATE,
                 id="passive-sigint"),
    pytest.param(PASSIVE, TriggerFile("activate"), Mode.ACTIVE, ACTIVATE,
                 id="passive-activate-file"),
    pytest.param(PASSIVE, TriggerFile("activate", at_start=True), Mode.ACTIVE, ACTIVATE,
                 id="passive-activate-file-at-start"),
    pytest.param(PASSIVE, TriggerFile("shutdown"), Mode.STOPPING, ["RemoveTrigger", "Exit"],
                 id="passive-shutdown-file"),
    pytest.param(PASSIVE, TriggerFile("other"), Mode.PASSIVE, [], id="passive-unknown-trigger"),
    pytest.param(PASSIVE, TokenChanged("t", FRESH), Mode.PASSIVE, ["SetTimer"],
                 id="passive-token-fresh"),
    pytest.param(PASSIVE, TokenChanged("t", NEAR_EXPIRY), Mode.ACTIVE, ACTIVATE,
                 id="passive-token-near-expiry"),
    pytest.param(PASSIVE, TokenChanged("t", STALE), Mode.ACTIVE, ACTIVATE,
                 id="passive-token-stale"),
    pytest.param(PASSIVE, TokenChanged("t", None, "not a JWT"), Mode.ACTIVE, ACTIVATE,
                 id="passive-token-invalid"),
    pytest.param(PASSIVE, TimerFired(TimerKind.DEADLINE), Mode.PASSIVE, ["SetTimer"],
                 id="passive-deadline-early"),
    pytest.param(replace(PASSIVE, token=STALE), TimerFired(TimerKind.DEADLINE), Mode.ACTIVE,
                 ACTIVATE, id="passive-deadline-due"),
    pytest.param(State(SETTINGS), TimerFired(TimerKind.DEADLINE), Mode.PASSIVE, [],
                 id="passive-deadline-no-token"),
    pytest.param(PASSIVE, TimerFired(TimerKind.REFRESH), Mode.PASSIVE, [],
                 id="passive-refresh-timer"),
    pytest.param(PASSIVE, TimerFired(TimerKind.RETRY), Mode.PASSIVE, [],
                 id="passive-retry-timer"),
    pytest.param(PASSIVE, OK, Mode.PASSIVE, [], id="passive-refresh-succeeded"),
    pytest.param(PASSIVE, FAIL, Mode.PASSIVE, [], id="passive-refresh-failed"),
    pytest.param(PASSIVE, WatchRestored("/d"), Mode.PASSIVE, [], id="passive-watch-restored"),
    pytest.param(PASSIVE, Stop(), Mode.STOPPING, STOP, id="passive-stop"),
    # active
    pytest.param(ACTIVE, TERM, Mode.ACTIVE, [], id="active-first-sigterm"),
    pytest.param(ACTIVE_SIGNALLED, TERM, Mode.STOPPING, STOP, id="active-second-sigterm"),
    pytest.param(replace(ACTIVE, settings=EXIT_SETTINGS), TERM, Mode.STOPPING, STOP,
                 id="active-sigterm-exit-mode"),
    pytest.param(ACTIVE, TriggerFile("activate"), Mode.ACTIVE, [], id="active-activate-file"),
    pytest.param(ACTIVE, TriggerFile("shutdown"), Mode.STOPPING, ["RemoveTrigger", "Exit"],
                 id="active-shutdown-file"),
    pytest.param(ACTIVE, TokenChanged("t", FRESH), Mode.ACTIVE, [], id="active-token-changed"),
    pytest.param(ACTIVE, TokenChanged("t", None, "missing"), Mode.ACTIVE, ["StartRefresh"],
                 id="active-token-lost"),
    pytest.param(ACTIVE_BUSY, TokenChanged("t", None, "missing"), Mode.ACTIVE, [],
                 id="active-token-lost-while-refreshing"),
    pytest.param(ACTIVE, TimerFired(TimerKind.REFRESH), Mode.ACTIVE, ["StartRefresh"],
                 id="active-refresh-timer"),
    pytest.param(ACTIVE, TimerFired(TimerKind.RETRY), Mode.ACTIVE, ["StartRefresh"],
                 id="active-retry-timer"),
    pytest.param(ACTIVE_BUSY, TimerFired(TimerKind.REFRESH), Mode.ACTIVE, [],
                 id="active-refresh-timer-busy"),
    pytest.param(ACTIVE, TimerFired(TimerKind.DEADLINE), Mode.ACTIVE, [],
                 id="active-deadline-timer"),
    pytest.param(ACTIVE_BUSY, OK, Mode.ACTIVE, ["CancelTimer", "SetTimer"],
                 id="active-refresh-succeeded"),
    pytest.param(ACTIVE_BUSY, FAIL, Mode.ACTIVE, ["SetTimer"], id="active-refresh-failed"),
    pytest.param(ACTIVE_BUSY, FORBIDDEN, Mode.ACTIVE, ["SetTimer"],
                 id="active-refresh-forbidden"),
    pytest.param(ACTIVE_BUSY, LIMITED, Mode.ACTIVE, ["SetTimer"],
                 id="active-refresh-rate-limited"),
    pytest.param(ACTIVE, WatchRestored("/d"), Mode.ACTIVE, ["WriteTrigger"],
                 id="active-watch-restored"),
    pytest.param(ACTIVE, Stop(), Mode.STOPPING, STOP, id="active-stop"),
    # stopping: everything is ignored
    *[pytest.param(STOPPING, ev, Mode.STOPPING, [], id=f"stopping-{name}") for name, ev in [
        ("sigterm", TERM), ("activate", TriggerFile("activate")),
        ("shutdown", TriggerFile("shutdown")), ("token", TokenChanged("t", FRESH)),
        ("timer", TimerFired(TimerKind.REFRESH)), ("ok", OK), ("fail", FAIL), ("stop", Stop()),
        ("watch-restored", WatchRestored("/d")),
    ]],
]


@pytest.mark.parametrize(("state", "event", "mode", "expected"), CASES)
def test_transition(state: State, event: Event, mode: Mode, expected: list[str]) -> None:
    new, actions = decide(state, event, NOW)
    assert new.mode is mode
    assert kinds(actions) == expected
    transitions = [a for a in actions if isinstance(a, Transition)]
    if mode is not state.mode:
        assert transitions == [Transition(state.mode, mode, transitions[0].reason)]
        logs = [a for a in actions if isinstance(a, Log) and a.event == "state_change"]
        assert logs[0].message == f"{state.mode} -> {mode} ({transitions[0].reason})"
    else:
        assert not transitions


@pytest.mark.parametrize(("event", "reason"), [
    (TERM, "signal"), (TriggerFile("activate"), "activate_file"),
    (TriggerFile("activate", at_start=True), "restart"),
    (TokenChanged("t", NEAR_EXPIRY), "expiry"), (TokenChanged("t", STALE), "stale_kubelet"),
    (TokenChanged("t", None, "bad"), "invalid_token"),
])
def test_activation_reasons(event: Event, reason: str) -> None:
    new, actions = decide(PASSIVE, event, NOW)
    assert new.activated_by == reason
    assert WriteTrigger("activate") in actions


def test_passive_deadline_is_the_earlier_rule() -> None:
    _, actions = decide(State(SETTINGS), TokenChanged("t", FRESH), NOW)
    timer = next(a for a in actions if isinstance(a, SetTimer))
    # stale rule: 0.85 * 24h after issue = 20.4h - 1h elapsed; expiry rule: 23h - 1.5h
    assert timer.kind is TimerKind.DEADLINE
    assert timer.delay == pytest.approx(0.85 * 24 * HOUR - HOUR)


def test_success_schedules_refresh_interval_or_80_percent() -> None:
    short = TokenInfo(issued_at=NOW, expires_at=NOW + 1800, received_at=NOW, own=True)
    _, actions = decide(ACTIVE_BUSY, RefreshSucceeded(short, 0.0, 0.01), NOW)
    timer = next(a for a in actions if isinstance(a, SetTimer))
    assert timer.kind is TimerKind.REFRESH and timer.delay == pytest.approx(0.8 * 1800)
    _, actions = decide(ACTIVE_BUSY, OK, NOW)
    timer = next(a for a in actions if isinstance(a, SetTimer))
    assert timer.delay == pytest.approx(HOUR)


def test_failures_back_off_in_bursts_and_reset_on_success() -> None:
    state, delays = ACTIVE_BUSY, []
    for _ in range(4):
        state, actions = decide(replace(state, refreshing=True), FAIL, NOW)
        delays.append(next(a for a in actions if isinstance(a, SetTimer)).delay)
    # burst of 3 tries: 20s, 40s, then the pause (capped by a quarter of the 2h left = 30m)
    assert delays == [20.0, 40.0, 1800.0, 20.0]
    assert state.failures == 4
    state, _ = decide(replace(state, refreshing=True), OK, NOW)
    assert state.failures == 0


def test_failure_log_has_hint_and_no_crash_on_permanent_errors() -> None:
    state, actions = decide(ACTIVE_BUSY, FORBIDDEN, NOW)
    log = next(a for a in actions if isinstance(a, Log))
    assert log.event == "refresh_failed"
    assert "serviceaccounts/token" in str(log.fields["hint"])
    assert log.fields["attempt"] == 1 and log.fields["status"] == 403
    assert state.mode is Mode.ACTIVE


def test_request_timeout_is_bounded_by_remaining_life() -> None:
    dying = TokenInfo(issued_at=NOW - 500, expires_at=NOW + 30, received_at=NOW - 500)
    _, actions = decide(State(SETTINGS, token=dying), TERM, NOW)
    start = next(a for a in actions if isinstance(a, StartRefresh))
    assert start.timeout == pytest.approx(10.0)
    _, actions = decide(PASSIVE, TERM, NOW)
    assert next(a for a in actions if isinstance(a, StartRefresh)).timeout == 30.0


def test_retry_after_is_not_jittered_but_other_retries_are() -> None:
    _, actions = decide(ACTIVE_BUSY, LIMITED, NOW)
    assert next(a for a in actions if isinstance(a, SetTimer)).jitter is False
    _, actions = decide(ACTIVE_BUSY, FAIL, NOW)
    assert next(a for a in actions if isinstance(a, SetTimer)).jitter is True


def test_shutdown_removes_trigger_before_exit() -> None:
    _, actions = decide(ACTIVE, TriggerFile("shutdown"), NOW)
    plain = [a for a in actions if not isinstance(a, (Log, Transition))]
    assert plain == [RemoveTrigger("shutdown"), Exit(0)]


def test_activation_cancels_the_passive_deadline() -> None:
    _, actions = decide(PASSIVE, TERM, NOW)
    assert CancelTimer(TimerKind.DEADLINE) in actions
