"""Schedules are pure functions of fixed numbers, including clock skew of an hour either way."""

from __future__ import annotations

from typing import Any

import pytest

from refresher import schedule
from refresher.events import FailureKind, TokenInfo

T0 = 1_700_000_000.0
HOUR = 3600.0


def token(iat: float, exp: float, received: float) -> TokenInfo:
    return TokenInfo(issued_at=iat, expires_at=exp, received_at=received)


@pytest.mark.parametrize("skew", [-HOUR, -300.0, 0.0, 300.0, HOUR])
def test_fresh_token_remaining_life_ignores_skew(skew: float) -> None:
    # Local clock = server clock + skew; the token was received just now (local T0 + skew).
    t = token(T0, T0 + 600, T0 + skew)
    offset = -skew  # server minus local, as measured from the Date header
    left = schedule.remaining(t, T0 + skew, offset)
    assert left == pytest.approx(600)
    delay = schedule.refresh_delay(t, T0 + skew, refresh_interval=HOUR)
    assert delay == pytest.approx(480)  # 80% of the lifetime, not hammering, not too late


@pytest.mark.parametrize("skew", [-HOUR, HOUR])
def test_unknown_skew_still_never_overestimates(skew: float) -> None:
    # No Date header seen yet (offset 0): take the earlier of the two estimates.
    t = token(T0, T0 + 2 * HOUR, T0 + skew)
    left = schedule.remaining(t, T0 + skew, 0.0)
    assert left <= 2 * HOUR + 1e-6


def test_activation_rules() -> None:
    day = token(T0, T0 + 24 * HOUR, T0)
    at, reason = schedule.activation(day, refresh_interval=HOUR, offset=0.0)
    assert at == pytest.approx(T0 + 0.85 * 24 * HOUR) and reason == "stale_kubelet"
    short = token(T0, T0 + 2 * HOUR, T0)
    at, reason = schedule.activation(short, refresh_interval=HOUR, offset=0.0)
    assert at == pytest.approx(T0 + 0.5 * HOUR) and reason == "expiry"


@pytest.mark.parametrize(("left", "expected"), [(None, 30.0), (3600, 30.0), (30, 10.0),
                                                (0.6, 1.0), (-5, 1.0)])
def test_request_timeout(left: float | None, expected: float) -> None:
    assert schedule.request_timeout(left) == pytest.approx(expected)


KW: dict[str, Any] = {"sleep": 20.0, "max_attempts": 3, "refresh_interval": HOUR}


@pytest.mark.parametrize(("failures", "kind", "left", "retry_after", "expected"), [
    (1, FailureKind.TRANSIENT, 10 * HOUR, None, 20.0),
    (2, FailureKind.TRANSIENT, 10 * HOUR, None, 40.0),
    (3, FailureKind.TRANSIENT, 10 * HOUR, None, HOUR),  # burst over: pause
    (4, FailureKind.TRANSIENT, 10 * HOUR, None, 20.0),  # next burst
    (2, FailureKind.TRANSIENT, 100.0, None, 25.0),  # a quarter of the remaining life
    (1, FailureKind.PERMANENT, 10 * HOUR, None, HOUR),  # slow pace
    (1, FailureKind.PERMANENT, 2 * HOUR, None, 1800.0),
    (1, FailureKind.RATE_LIMITED, 10 * HOUR, 7.0, 7.0),  # Retry-After honoured
    (1, FailureKind.RATE_LIMITED, 10.0, 7.0, 2.5),  # ...within the bounds
    (1, FailureKind.TRANSIENT, 0.0, None, 1.0),  # expired: floor, never a busy loop
    (1, FailureKind.TRANSIENT, None, None, 20.0),
])
def test_retry_delay(failures: int, kind: FailureKind, left: float | None,
                     retry_after: float | None, expected: float) -> None:
    assert schedule.retry_delay(failures, kind, remaining_life=left, retry_after=retry_after,
                                **KW) == pytest.approx(expected)


def test_retry_delay_never_exceeds_bounds() -> None:
    for failures in range(1, 40):
        for left in (5.0, 60.0, 600.0, 7200.0, 86400.0):
            d = schedule.retry_delay(failures, FailureKind.TRANSIENT, remaining_life=left, **KW)
            assert d <= max(min(HOUR, left / 4), 1.0) + 1e-9
