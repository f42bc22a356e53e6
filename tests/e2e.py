"""End-to-end harness: the real `token-refresher` process, its JSON logs, a token-file reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refresher.claims import decode_claims
from refresher.devkubelet import ProjectedVolume
from refresher.devserver import DevApiServer
from refresher.errors import TokenError

NS, SA = "drain", "app"
WAIT = 30.0


class RefresherProcess:
    """A running `python -m refresher ...` with its stdout parsed line by line."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1",
                    "HOME": os.environ.get("HOME", "/root")}
        full_env.update(env or {})
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "refresher", *args], env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True),
                             name="refresher-stdout", daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False),
                             name="refresher-stderr", daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, parse: bool) -> None:
        for line in stream:
            with self._cond:
                self.raw.append(line)
                if parse:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = {"event": "unparsed", "message": line}
                    self.lines.append(record)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = WAIT,
                 start: int = 0, what: str = "log line") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self.lines[start:]:
                    if predicate(record):
                        return record
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._alive_readers()):
                    tail = "".join(self.raw[-15:])
                    raise AssertionError(f"no {what} within {timeout}s; last output:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def _alive_readers(self) -> bool:
        return any(t.is_alive() for t in self._readers)

    def wait_event(self, event: str, *, start: int = 0, timeout: float = WAIT,
                   **fields: Any) -> dict[str, Any]:
        return self.wait_log(
            lambda r: r.get("event") == event and all(r.get(k) == v for k, v in fields.items()),
            timeout=timeout, start=start, what=f"event {event} {fields}")

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [r for r in self.lines if r.get("event") == name]

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout)
        for t in self._readers:
            t.join(timeout)
        return code

    def output(self) -> str:
        with self._cond:
            return "".join(self.raw)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait_exit()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@dataclass
class ReaderReport:
    reads: int = 0
    anomalies: list[str] = field(default_factory=list)
    fingerprints: set[int] = field(default_factory=set)


class TokenReader(threading.Thread):
    """Reads the token file in a tight loop, like an app that may open it at any instant."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 interval: float = 0.002) -> None:
        super().__init__(name="token-reader", daemon=True)
        self.path = path
        self.clock = clock
        self.interval = interval
        self.report = ReaderReport()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            self.report.reads += 1
            problem = self._check()
            if problem is not None:
                self.report.anomalies.append(problem)
            self._stopped.wait(self.interval)

    def _check(self) -> str | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
        if not data.strip():
            return "empty"
        try:
            claims = decode_claims(data.decode("ascii"))
        except (TokenError, UnicodeDecodeError):
            return "partial or malformed"
        self.report.fingerprints.add(hash(data))
        self.on_token(data)
        if claims.expires_at <= self.clock():
            return "expired"
        return None

    def on_token(self, data: bytes) -> None:
        """Called with every well-formed token read (subclasses collect them; never printed)."""

    def stop(self) -> ReaderReport:
        self._stopped.set()
        self.join(10)
        return self.report


@dataclass
class Pod:
    """One pod's worth of files: a projected volume and a shared emptyDir."""

    root: Path
    server: DevApiServer
    volume: ProjectedVolume
    projected: Path
    shared: Path
    kubeconfig: Path

    @property
    def default_token(self) -> Path:
        return self.projected / "token"

    @property
    def token_file(self) -> Path:
        return self.shared / "token"

    def kubelet_token(self, *, lifetime: int = 3600, audiences: tuple[str, ...] = (
            "sts.amazonaws.com",)) -> None:
        issued = self.server.issue_token(NS, SA, audiences=audiences,
                                         expiration_seconds=lifetime)
        self.volume.write(issued.token)

    def args(self, *extra: str, **flags: str) -> list[str]:
        base = {
            "kubeconfig": str(self.kubeconfig), "default_token_file": str(self.default_token),
            "token_file": str(self.token_file), "namespace": NS, "service_account": SA,
            "expiration_duration": "20s", "refresh_interval": "5s", "sleep": "100ms",
            "log_level": "debug",
        }
        base.update(flags)
        return [*extra, *[f"--{k}={v}" for k, v in base.items()]]


@contextmanager
def running(pod: Pod, *extra: str, env: dict[str, str] | None = None,
            **flags: str) -> Iterator[RefresherProcess]:  # flags: --name=value
    proc = RefresherProcess(pod.args(*extra, **flags), env=env)
    try:
        yield proc
    finally:
        proc.close()


def stop_gracefully(proc: RefresherProcess) -> int:
    """SIGTERM twice, the second only once the first was handled (pending signals coalesce)."""
    mark = proc.mark()
    proc.send(signal.SIGTERM)
    handled = proc.wait_log(
        lambda r: r.get("event") in ("signal", "exiting") or (
            r.get("event") == "state_change" and r.get("reason") in ("signal", "sigterm")),
        start=mark, what="the first SIGTERM handled")
    if handled.get("to_state") != "stopping" and handled.get("event") != "exiting":
        proc.send(signal.SIGTERM)
    return proc.wait_exit()


def scan_for_leaks(text: str, tokens: list[str]) -> list[int]:
    """Indexes of tokens that have any 16-character piece in `text`."""
    leaked = []
    for index, token in enumerate(tokens):
        if any(token[i:i + 16] in text for i in range(0, len(token) - 15)):
            leaked.append(index)
    return leaked
