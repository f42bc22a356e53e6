"""Pure scheduling arithmetic: when to activate, refresh, retry, and how long to wait for the API.

All inputs are numbers (seconds); nothing here reads a clock.
"""

from __future__ import annotations

import backoff

from .events import FailureKind, TokenInfo

ACTIVATE_REMAINING_FACTOR = 1.5  # activate when less than 1.5 x refresh_interval is left
STALE_FRACTION = 0.85  # kubelet rotates at 80%: older than 85% means it stopped
REFRESH_FRACTION = 0.80  # refresh our own tokens at 80% of their lifetime at the latest
RETRY_REMAINING_FRACTION = 0.25  # never wait more than a quarter of the remaining life
MAX_REQUEST_TIMEOUT = 30.0
REQUEST_TIMEOUT_FRACTION = 1 / 3
MIN_REQUEST_TIMEOUT = 1.0
MIN_RETRY_DELAY = 1.0  # floor between attempts (or --sleep when that is shorter)


def local_expiry(token: TokenInfo, offset: float) -> float:
    """Local instant the token expires: the earlier of two independent estimates.

    received + lifetime is immune to clock skew; exp - offset uses the measured skew.
    """
    return min(token.received_at + token.lifetime, token.expires_at - offset)


def remaining(token: TokenInfo, now: float, offset: float) -> float:
    return local_expiry(token, offset) - now


def activation(
    token: TokenInfo, *, refresh_interval: float, offset: float
) -> tuple[float, str]:
    """Local instant a passive refresher must take over, and why ('expiry' or 'stale_kubelet')."""
    by_expiry = local_expiry(token, offset) - ACTIVATE_REMAINING_FACTOR * refresh_interval
    issued_local = min(token.received_at, token.issued_at - offset)
    by_age = issued_local + STALE_FRACTION * token.lifetime
    return (by_expiry, "expiry") if by_expiry <= by_age else (by_age, "stale_kubelet")


def refresh_delay(token: TokenInfo, now: float, *, refresh_interval: float) -> float:
    """Delay to the next refresh: refresh_interval, or sooner at 80% of the token's lifetime."""
    at_fraction = token.received_at + REFRESH_FRACTION * token.lifetime
    return max(0.0, min(refresh_interval, at_fraction - now))


def request_timeout(remaining_life: float | None) -> float:
    """At most 30 s and at most a third of the token's remaining life."""
    if remaining_life is None:
        return MAX_REQUEST_TIMEOUT
    return max(MIN_REQUEST_TIMEOUT,
               min(MAX_REQUEST_TIMEOUT, remaining_life * REQUEST_TIMEOUT_FRACTION))


def _expo(first: float, n: int) -> float:
    """n-th (0-based) value of the backoff package's exponential sequence starting at `first`."""
    gen = backoff.expo(base=2, factor=first)
    gen.send(None)
    value = 0.0
    for _ in range(n + 1):
        value = float(next(gen))
    return value


def retry_delay(
    failures: int,
    kind: FailureKind,
    *,
    sleep: float,
    max_attempts: int,
    refresh_interval: float,
    remaining_life: float | None,
    retry_after: float | None = None,
) -> float:
    """Nominal delay before the next attempt after `failures` consecutive failures (>= 1).

    Bursts of max_attempts tries spaced sleep, 2 x sleep, ...; then a pause until the next burst.
    Permanent errors wait the burst pause at once (a slower pace). 429 honours Retry-After.
    Always capped by refresh_interval and a quarter of the token's remaining life.
    """
    floor = min(sleep, MIN_RETRY_DELAY)
    cap = refresh_interval
    if remaining_life is not None:
        cap = min(cap, max(remaining_life, 0.0) * RETRY_REMAINING_FRACTION)
    position = (max(failures, 1) - 1) % max_attempts
    if kind is FailureKind.RATE_LIMITED and retry_after is not None:
        nominal = retry_after
    elif kind is FailureKind.PERMANENT or position == max_attempts - 1:
        nominal = refresh_interval
    else:
        nominal = _expo(sleep, position)
    return max(floor, min(nominal, cap))
