"""The refresh worker thread: mint, check, write, and report the outcome as an event.

It runs API calls off the lifecycle loop, so a hung request never delays a `shutdown` trigger.
The API client (and the `kubernetes` import) is prepared in the background at start-up, so the
first refresh after SIGTERM costs one round trip, and start-up to passive stays fast.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .claims import check_fresh_token, decode_claims
from .config import Config
from .errors import ApiError, ConfigError, FileWriteError, PermanentApiError, TokenError
from .events import Event, FailureKind, RefreshFailed, RefreshSucceeded, TokenInfo
from .threads import BaseThread
from .tokenfile import write_atomic

log = logging.getLogger(__name__)

SKEW_WARNING = 30.0  # s of measured clock offset worth one log line


@dataclass(frozen=True, slots=True)
class MintResult:
    token: str
    received_at: float  # local wall clock when the response arrived
    server_time: float | None  # the response's Date header, if any
    offset: float | None  # server clock minus local clock, if the Date header was usable


class Minter(Protocol):
    def mint(self, timeout: float) -> MintResult: ...

    def close(self) -> None: ...


MinterFactory = Callable[[Config], Minter]


def default_minter(config: Config) -> Minter:
    from .kubeapi import TokenMinter

    return TokenMinter(config)


class RefreshWorker(BaseThread):
    def __init__(
        self,
        config: Config,
        put: Callable[[Event], None],
        *,
        minter_factory: MinterFactory = default_minter,
    ) -> None:
        super().__init__(name="refresh-worker")
        self._config = config
        self._put = put
        self._factory = minter_factory
        self._minter: Minter | None = None
        self._cond = threading.Condition()
        self._job: float | None = None  # timeout of the pending refresh
        self._offset = 0.0
        self._skew_logged = False
        self.busy_since: float | None = None  # monotonic start of the attempt in flight

    def submit(self, timeout: float) -> None:
        with self._cond:
            self._job = timeout
            self._cond.notify()

    def on_stop(self) -> None:
        with self._cond:
            self._cond.notify()

    def run_loop(self) -> None:
        try:
            self._prepare()
        except ConfigError as exc:
            log.warning("API client not ready: %s", exc, extra={"event": "api_config"})
        while True:
            with self._cond:
                while self._job is None and not self.stopped:
                    self._cond.wait()
                if self.stopped:
                    break
                timeout, self._job = self._job, None
            assert timeout is not None
            self._put(self.refresh_once(timeout))
        if self._minter is not None:
            self._minter.close()

    def _prepare(self) -> Minter:
        if self._minter is None:
            try:
                self._minter = self._factory(self._config)
            except ConfigError:
                raise
            except Exception as exc:  # never let client construction kill the thread
                raise ConfigError(f"cannot set up the API client: {type(exc).__name__}") \
                    from None
        return self._minter

    def refresh_once(self, timeout: float) -> RefreshSucceeded | RefreshFailed:
        started = time.monotonic()
        self.busy_since = started
        try:
            return self._refresh(timeout, started)
        except ConfigError as exc:
            return RefreshFailed(FailureKind.PERMANENT, str(exc),
                                 duration=time.monotonic() - started)
        except PermanentApiError as exc:
            return RefreshFailed(FailureKind.PERMANENT, str(exc), status=exc.status,
                                 duration=time.monotonic() - started)
        except ApiError as exc:
            kind = FailureKind.RATE_LIMITED if exc.status == 429 else FailureKind.TRANSIENT
            return RefreshFailed(kind, str(exc), status=exc.status, retry_after=exc.retry_after,
                                 duration=time.monotonic() - started)
        except TokenError as exc:
            return RefreshFailed(FailureKind.INVALID_TOKEN, f"rejected issued token: {exc}",
                                 duration=time.monotonic() - started)
        except FileWriteError as exc:
            return RefreshFailed(FailureKind.WRITE, str(exc),
                                 duration=time.monotonic() - started)
        except Exception as exc:  # the refresher never crashes on an API error
            return RefreshFailed(FailureKind.TRANSIENT, f"unexpected {type(exc).__name__}",
                                 duration=time.monotonic() - started)
        finally:
            self.busy_since = None

    def _refresh(self, timeout: float, started: float) -> RefreshSucceeded:
        cfg = self._config
        minter = self._prepare()
        result = minter.mint(timeout)
        if result.offset is not None:
            self._offset = result.offset
            if abs(result.offset) > SKEW_WARNING and not self._skew_logged:
                self._skew_logged = True
                log.warning("node clock is %.0fs %s the API server's", abs(result.offset),
                            "behind" if result.offset > 0 else "ahead of",
                            extra={"event": "clock_skew", "offset_seconds": result.offset})
        claims = decode_claims(result.token)
        server_now = result.server_time if result.server_time is not None else \
            result.received_at + self._offset
        assert cfg.namespace and cfg.service_account
        check_fresh_token(claims, audiences=cfg.token_audience, namespace=cfg.namespace,
                          service_account=cfg.service_account, server_now=server_now)
        if cfg.bound_to_pod and claims.pod_uid is not None and claims.pod_uid != cfg.pod_uid:
            raise TokenError("issued token is bound to another pod")
        if self.stopped:
            raise FileWriteError("stopping: token not written")
        write_atomic(cfg.token_file, result.token.encode("ascii"), mode=cfg.token_file_mode)
        issued = claims.issued_at if claims.issued_at is not None else server_now
        info = TokenInfo(issued_at=issued, expires_at=claims.expires_at,
                         received_at=result.received_at, own=True)
        return RefreshSucceeded(info, self._offset, duration=time.monotonic() - started)
