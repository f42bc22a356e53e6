"""Child processes under measurement: the real refresher and the shell baseline.

Each child runs in its own session (so its whole tree can be killed), with stdout and stderr merged
and read line by line by one thread that stamps every line with `time.monotonic()` as it is read.
The refresher's lines are JSON (`event` names its kind); the baseline's are plain words (the first
word is the event). A pidfd tells the exact instant a child exits without polling.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE_SCRIPT = Path(__file__).with_name("baseline.sh")


@dataclass(frozen=True, slots=True)
class Line:
    at: float  # time.monotonic() when the bench read the line
    event: str
    record: dict[str, Any]


class Child:
    """A child process with timestamped stdout lines and an exact exit instant."""

    def __init__(self, argv: list[str], *, name: str, json_lines: bool,
                 env: dict[str, str] | None = None,
                 on_line: Callable[[Line], None] | None = None) -> None:
        self.name = name
        self.json_lines = json_lines
        self._on_line = on_line
        self.lines: list[Line] = []
        self._cond = threading.Condition()
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1",
                    "HOME": os.environ.get("HOME", "/root"), "LC_ALL": "C.UTF-8"}
        full_env.update(env or {})
        self.exec_at = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=full_env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self._pidfd = os.pidfd_open(self.pid)
        self.exit_at: float | None = None
        self._reader = threading.Thread(target=self._read, name=f"bench-read-{name}",
                                        daemon=True)
        self._reader.start()

    # -- output ------------------------------------------------------------------------------
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            at = time.monotonic()
            text = raw.decode("utf-8", "replace").rstrip("\n")
            record: dict[str, Any]
            if self.json_lines:
                try:
                    record = json.loads(text)
                    event = str(record.get("event", "log"))
                except ValueError:
                    record, event = {"message": text}, "unparsed"
            else:
                record, event = {"message": text}, (text.split() or [""])[0]
            line = Line(at, event, record)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            if self._on_line is not None:
                self._on_line(line)
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_line(self, predicate: Callable[[Line], bool], *, timeout: float,
                  start: int = 0, what: str = "a log line") -> Line:
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    tail = "\n".join(str(x.record)[:300] for x in self.lines[-8:])
                    raise BenchError(f"{self.name}: no {what} within {timeout:.0f}s "
                                     f"(exit {self.proc.poll()}); last lines:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def wait_event(self, event: str, *, timeout: float, start: int = 0) -> Line:
        return self.wait_line(lambda ln: ln.event == event, timeout=timeout, start=start,
                              what=f"{event!r}")

    def events(self, event: str) -> list[Line]:
        with self._cond:
            return [ln for ln in self.lines if ln.event == event]

    def count(self, event: str) -> int:
        with self._cond:
            return sum(1 for ln in self.lines if ln.event == event)

    # -- process -----------------------------------------------------------------------------
    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> float | None:
        """Block until the child exits (pidfd: no polling); its monotonic exit time or None."""
        if self.exit_at is None:
            ready, _, _ = select.select([self._pidfd], [], [], max(timeout, 0.0))
            if not ready:
                return None
            self.exit_at = time.monotonic()
            self.proc.wait()
        return self.exit_at

    @property
    def pidfd(self) -> int:
        """Readable once the child has exited (for select())."""
        return self._pidfd

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def settle(self, *, quiet: float = 0.2, timeout: float = 20.0) -> float:
        """Wait until no thread of the child ran or waited to run for `quiet` seconds.

        That is the end of its start-up work even on a busy machine (a thread starved of CPU
        still shows run-queue wait in schedstat). Returns the seconds waited.
        """
        return settle([self.pid], quiet=quiet, timeout=timeout)


    def close(self) -> None:
        """Kill the child's whole session if still running; reap it; join the reader."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # the child, or stragglers left in its session
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def settle(pids: list[int], *, quiet: float, timeout: float, step: float = 0.02) -> float:
    """Wait until none of `pids` ran or waited for a CPU for `quiet` seconds (bounded)."""
    from .procfs import activity_ns

    def activity() -> list[int]:
        out = []
        for pid in pids:
            try:
                out.append(activity_ns(pid))
            except OSError:
                out.append(-1)
        return out

    begin = time.monotonic()
    last = activity()
    still_since = begin
    while time.monotonic() - begin < timeout:
        time.sleep(step)
        now = activity()
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return time.monotonic() - begin


class BenchError(RuntimeError):
    """A benchmark could not complete (a child misbehaved or a deadline passed)."""


def close_all(children: Iterable[Child]) -> None:
    errors: list[BaseException] = []
    for child in list(children):
        try:
            child.close()
        except Exception as exc:  # keep closing the others
            errors.append(exc)
    if errors:
        raise errors[0]


def refresher(argv: list[str], *, name: str,
              on_line: Callable[[Line], None] | None = None) -> Child:
    return Child([sys.executable, "-m", "refresher", "run", *argv], name=name,
                 json_lines=True, on_line=on_line)


def baseline(argv: list[str], *, name: str,
             on_line: Callable[[Line], None] | None = None) -> Child:
    return Child(["bash", str(BASELINE_SCRIPT), *argv], name=name, json_lines=False,
                 on_line=on_line)
