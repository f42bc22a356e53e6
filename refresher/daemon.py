"""The lifecycle loop: the one consumer of the event queue, and the threads that feed it.

    signal-catcher ─┐
    watch-observer ─┤                      ┌─> refresh-scheduler (SetTimer/CancelTimer)
    watch-guard ────┼─> queue ─> decide() ─┼─> refresh-worker    (StartRefresh)
    refresh-scheduler┤   (SimpleQueue)     └─> tokenfile         (WriteTrigger/RemoveTrigger)
    refresh-worker ─┘
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock, SystemClock
from .config import Config
from .errors import FileWriteError
from .events import Event, Stop, TokenChanged
from .lifecycle import (
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
    WriteTrigger,
    decide,
)
from .prepare import prepare
from .signals import SignalThread, block_signals
from .threads import stop_and_join
from .timers import Scheduler
from .tokenfile import remove_trigger, write_trigger
from .watchers import FileWatcher
from .worker import MinterFactory, RefreshWorker, default_minter

log = logging.getLogger(__name__)

TICK = 30.0  # s: the loop wakes at least this often, so liveness can be judged
LIVENESS_WINDOW = 3 * TICK  # s without an event or tick before /livez fails
JOIN_TIMEOUT = 0.8  # s for all threads together: exit promptly on `shutdown`
WORKER_JOIN_TIMEOUT = 0.1  # s: a refresh in flight finishes its write in ~1 ms

Observer = Callable[[Event, State, list[Action]], None]


@dataclass
class Hooks:
    """Optional callbacks (tests, health, metrics). Default: nothing."""

    observers: list[Observer] = field(default_factory=list)
    ready: threading.Event | None = None  # set once the loop runs


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        minter_factory: MinterFactory = default_minter,
        hooks: Hooks | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.hooks = hooks or Hooks()
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.state = State(Settings(
            refresh_interval=config.refresh_interval, sleep=config.sleep,
            max_attempts=config.max_attempts, on_sigterm=config.on_sigterm))
        self.last_activity = time.monotonic()
        self.scheduler = Scheduler(self.put, self.clock)
        self.worker = RefreshWorker(config, self.put, minter_factory=minter_factory)
        self.watcher = FileWatcher(
            token_file=config.token_file, default_token_file=config.default_token_file,
            trigger_dir=config.trigger_dir, put=self.put, clock=self.clock,
            poll_interval=config.shutdown_interval)
        self.signals = SignalThread(self.put) if handle_signals else None
        self.health: threading.Thread | None = None
        if config.health_port:
            from .health import HealthServer
            from .metrics import Metrics

            self.metrics = Metrics(config)
            self.hooks.observers.append(self.metrics.observe)
            self.health = HealthServer(config, liveness=self.liveness, metrics=self.metrics)
        self._handle_signals = handle_signals
        self._exit_code: int | None = None

    def put(self, event: Event) -> None:
        self.queue.put(event)

    def stop(self, reason: str = "stop") -> None:
        self.put(Stop(reason))

    @property
    def threads(self) -> list[threading.Thread]:
        own: list[threading.Thread] = [self.scheduler, self.worker]
        if self.signals is not None:
            own.append(self.signals)
        if self.health is not None:
            own.append(self.health)
        return own + self.watcher.threads

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason): every worker thread runs and the loop handled something recently."""
        dead = [t.name for t in self.threads if t.ident is not None and not t.is_alive()]
        if dead:
            return False, f"threads not running: {', '.join(dead)}"
        idle = time.monotonic() - self.last_activity
        if idle > LIVENESS_WINDOW:
            return False, f"lifecycle loop idle for {idle:.0f}s"
        return True, "ok"

    def run(self) -> int:
        """Prepare files, start the workers, run the loop until Exit; returns the exit code."""
        if self._handle_signals:
            block_signals()  # before any thread starts: they all inherit the mask
        prepared = prepare(self.config, self.clock)
        try:
            self.scheduler.start()
            self.worker.start()
            if self.signals is not None:
                self.signals.start()
            if self.health is not None:
                self.health.start()
            self.watcher.start()
            self.watcher.rescan(at_start=True)
            if prepared.default_problem and prepared.kept_own_token:
                self.put(TokenChanged(self.config.default_token_file, None,
                                      prepared.default_problem))
            log.info("started: passive, watching %s", ", ".join(self.watcher.directories),
                     extra={"event": "started", "mode": "passive",
                            "polling": self.watcher.polling})
            if self.hooks.ready is not None:
                self.hooks.ready.set()
            return self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> int:
        while self._exit_code is None:
            try:
                event = self.queue.get(timeout=TICK)
            except queue.Empty:
                self.last_activity = time.monotonic()
                continue
            self.last_activity = time.monotonic()
            self.state, actions = decide(self.state, event, self.clock.now())
            for observer in self.hooks.observers:
                observer(event, self.state, actions)
            for action in actions:
                self._execute(action)
        return self._exit_code

    def _execute(self, action: Action) -> None:
        match action:
            case SetTimer(kind=kind, delay=delay, jitter=jitter):
                self.scheduler.set(kind, delay, jitter=jitter)
            case CancelTimer(kind=kind):
                self.scheduler.cancel(kind)
            case StartRefresh(timeout=timeout):
                self.worker.submit(timeout)
            case WriteTrigger(name=name):
                self._file_op(write_trigger, name)
            case RemoveTrigger(name=name):
                self._file_op(remove_trigger, name)
            case Exit(code=code):
                self._exit_code = code
            case Log(level=level, event=event, message=message, fields=fields):
                log.log(level, "%s", message, extra={"event": event, **fields})

    def _file_op(self, op: Callable[[str, str], None], name: str) -> None:
        try:
            op(self.config.trigger_dir, name)
        except FileWriteError as exc:
            log.error("%s", exc, extra={"event": "trigger_write_failed", "trigger": name})

    def _shutdown(self) -> None:
        others = [t for t in self.threads if t is not self.worker]
        self.watcher.stop()
        self.worker.stop()
        leftover = stop_and_join(others, JOIN_TIMEOUT)
        # The worker may be inside a request or still importing the API client: anything it
        # writes is atomic, so it gets a short wait and is otherwise left behind (daemon thread).
        leftover += stop_and_join([self.worker], WORKER_JOIN_TIMEOUT)
        log.info("exiting with status %s", self._exit_code,
                 extra={"event": "exiting", "code": self._exit_code,
                        "mode": str(self.state.mode), "leftover_threads": leftover})

    @property
    def mode(self) -> Mode:
        return self.state.mode
