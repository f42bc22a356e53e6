"""Shared machinery of the reliability tests (tests/test_reliability.py, tests/soak).

- `Lab`: one test's servers, pods and refresher processes; at the end it scans every process's
  output (and any HTTP body fetched) for token material and closes everything.
- `CheckingReader`: a `TokenReader` that also checks claims, the file mode, temp-file modes, and
  remembers every distinct content it saw (a torn read is content the server never issued).
- `python -m tests.reliability read PATH ...`: the same checks in a tight loop in another process
  (no GIL shared with the API server), for the torn-read test.
- `Recorder`: every scenario's numbers, appended as JSON lines to $RELIABILITY_RECORD when set;
  `tools/reliability_report.py` turns them into docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refresher.claims import decode_claims
from refresher.devkubelet import ProjectedVolume
from refresher.devserver import DevApiServer
from refresher.errors import TokenError
from refresher.tokenfile import TEMP_PREFIX, TEMP_SUFFIX
from tests.e2e import NS, SA, Pod, RefresherProcess, TokenReader, scan_for_leaks

RECORD_ENV = "RELIABILITY_RECORD"
AUDIENCE = "sts.amazonaws.com"
SUBJECT = f"system:serviceaccount:{NS}:{SA}"
RECOVERY_SLACK = 2.5  # s on top of the logged retry delay: scheduling noise on a busy CI box

# Reads that mean the app could not use the file: the things the refresher must never serve.
LAPSES = frozenset({"missing", "empty", "partial", "expired", "invalid", "unreadable"})
TORN = frozenset({"partial"})


# -- time and logs ------------------------------------------------------------------------------

def log_time(record: dict[str, Any]) -> float:
    """Epoch seconds of a JSON log line's `time` field."""
    return datetime.datetime.fromisoformat(str(record["time"])).timestamp()


@dataclass(frozen=True)
class Recovery:
    """From the last failure of a run of failures to the success that ended it."""

    seconds: float  # success time minus last failure time (the refresher's own log clock)
    retry_in: float  # the last failure's logged retry_in_seconds
    failures: int  # failures in the run
    last_failure: dict[str, Any]
    success: dict[str, Any]

    @property
    def within_one_step(self) -> bool:
        return self.seconds <= self.retry_in + RECOVERY_SLACK


def recovery(proc: RefresherProcess, *, start: int, timeout: float = 30.0) -> Recovery:
    """Wait for a refresh_succeeded that follows at least one refresh_failed after `start`."""
    from tests.helpers import wait_for

    def ended() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        if proc.proc.poll() is not None:
            raise AssertionError(f"refresher exited ({proc.proc.returncode}) before recovering")
        failures: list[dict[str, Any]] = []
        for record in proc.lines[start:]:  # a slice of a list is atomic under the GIL
            if record.get("event") == "refresh_failed":
                failures.append(record)
            elif record.get("event") == "refresh_succeeded" and failures:
                return failures, record
        return None

    found = wait_for(ended, timeout=timeout, interval=0.02,
                     what="a refresh_succeeded after refresh_failed")
    assert found is not None
    failures, success = found
    last = failures[-1]
    return Recovery(seconds=log_time(success) - log_time(last),
                    retry_in=float(last["retry_in_seconds"]), failures=len(failures),
                    last_failure=last, success=success)


def tracebacks(text: str) -> bool:
    return "Traceback (most recent call last)" in text


# -- leak scanning ------------------------------------------------------------------------------

_TOKEN_RUN = re.compile(r"[A-Za-z0-9_.\-]{16,}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.\-]*")


def leaked_tokens(texts: Iterable[str], tokens: list[str]) -> list[int]:
    """Same answer as `tests.e2e.scan_for_leaks` (any 16-character piece), in linear time.

    A piece of a JWT (base64url and dots) can only occur inside a run of such characters of at
    least 16, so we index every 16-character window of those runs once.
    """
    texts = list(texts)
    if not all(_TOKEN_CHARS.fullmatch(t) for t in tokens):  # not JWT-shaped: the slow way
        return scan_for_leaks("\n".join(texts), tokens)
    windows: set[str] = set()
    for text in texts:
        for match in _TOKEN_RUN.finditer(text):
            run = match.group()
            windows.update(run[i:i + 16] for i in range(len(run) - 15))
    return [index for index, token in enumerate(tokens)
            if any(token[i:i + 16] in windows for i in range(len(token) - 15))]


# -- the checking reader ------------------------------------------------------------------------

@dataclass
class TokenCheck:
    """What a consumer of the token file would check, plus the refresher's promises."""

    path: Path
    clock: Callable[[], float] = time.time
    mode: int | None = None  # the token file's exact mode once it is a regular file
    audience: str = AUDIENCE
    subject: str = SUBJECT
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    contents: Counter[bytes] = field(default_factory=Counter)
    reads: int = 0
    temps_seen: int = 0
    regular_reads: int = 0  # reads of our own regular file (mode checked)
    lapse_times: list[float] = field(default_factory=list)  # wall clock of lapse reads
    last_read: bytes | None = None  # content of the latest read, if it got that far
    _last: bytes = b""
    _last_claims: tuple[float, bool] = (0.0, False)  # (exp, claims ok) of _last

    def read_once(self) -> str | None:
        """One read, as an app would do it; returns the problem, if any."""
        self.reads += 1
        self.last_read = None
        problem = self._read()
        if self.mode is not None:
            problem = self._check_temps() or problem
        if problem is not None:
            self.problems[problem] += 1
            if problem in LAPSES and len(self.lapse_times) < 100_000:
                self.lapse_times.append(time.time())
            if len(self.examples) < 20:
                self.examples.append(f"{time.time():.3f} {problem}")
        return problem

    def _read(self) -> str | None:
        path = os.fspath(self.path)
        regular = True
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            regular = False  # a symlink (passive: kubelet's token) or nothing at all
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except FileNotFoundError:
                return "missing"
            except OSError as exc:
                return "missing" if exc.errno == errno.ENOTDIR else "unreadable"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return "unreadable"
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
                if sum(map(len, chunks)) > 1 << 20:
                    break
            data = b"".join(chunks)
        except OSError:
            return "unreadable"
        finally:
            os.close(fd)
        if regular and self.mode is not None:
            self.regular_reads += 1
            if stat.S_IMODE(st.st_mode) != self.mode:
                return "mode"
        if not data.strip():
            return "empty"
        self.contents[data] += 1
        self.last_read = data
        if data != self._last:
            self._last = data
            self._last_claims = self._claims(data)
        exp, ok = self._last_claims
        if exp < 0:
            return "partial"
        if not ok:
            return "invalid"
        if exp <= self.clock():
            return "expired"
        return None

    def _claims(self, data: bytes) -> tuple[float, bool]:
        try:
            claims = decode_claims(data.decode("ascii"))
        except (TokenError, UnicodeDecodeError):
            return -1.0, False
        return claims.expires_at, (self.audience in claims.audiences
                                   and claims.subject == self.subject)

    def _check_temps(self) -> str | None:
        assert self.mode is not None
        prefix = f"{TEMP_PREFIX}{self.path.name}-"
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return None
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX)):
                continue
            try:
                st = os.lstat(entry.path)
            except OSError:
                continue  # renamed away in between
            if stat.S_ISREG(st.st_mode):
                self.temps_seen += 1
                if stat.S_IMODE(st.st_mode) & ~self.mode:
                    return "temp-mode"
        return None

    def summary(self) -> dict[str, Any]:
        return {"reads": self.reads, "problems": dict(self.problems),
                "examples": self.examples, "distinct": len(self.contents),
                "temps_seen": self.temps_seen, "regular_reads": self.regular_reads}


class CheckingReader(TokenReader):
    """`TokenReader` with `TokenCheck`'s checks; problems inside `tolerating()` are set apart."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time,
                 interval: float = 0.002, mode: int | None = None,
                 after_valid: bool = False) -> None:
        """`after_valid`: problems before the file first serves a valid token don't count
        (bad input at start, before the refresher minted anything)."""
        super().__init__(path, clock=clock, interval=interval)
        self.check = TokenCheck(path, clock=clock, mode=mode)
        self.tolerated: Counter[str] = Counter()
        self.seen_valid = False
        self._tolerate = False
        self._after_valid = after_valid
        self._lock = threading.Lock()

    def _check(self) -> str | None:
        with self._lock:
            tolerate = self._tolerate
        problem = self.check.read_once()
        if problem is None:
            self.seen_valid = True
            return None
        if tolerate or (self._after_valid and not self.seen_valid):
            self.tolerated[problem] += 1
            self.check.problems[problem] -= 1
            if problem in LAPSES and self.check.lapse_times:
                self.check.lapse_times.pop()
            if self.check.last_read is not None:  # nor does what it read then
                self.check.contents[self.check.last_read] -= 1
            return None
        return problem

    @contextmanager
    def tolerating(self) -> Iterator[None]:
        """A window in which the test itself broke the file (e.g. deleted its directory)."""
        with self._lock:
            self._tolerate = True
        try:
            yield
        finally:
            with self._lock:
                self._tolerate = False

    @property
    def problems(self) -> Counter[str]:
        return +self.check.problems

    def lapses(self) -> int:
        return sum(n for p, n in self.check.problems.items() if p in LAPSES)

    def torn(self, issued: Iterable[str] = ()) -> int:
        return torn_reads(self.check, issued)


def torn_reads(check: TokenCheck, issued: Iterable[str]) -> int:
    """Partial reads, plus reads of content that is neither an issued token nor kubelet's."""
    known = {t.encode("ascii") for t in issued}
    unknown = sum(n for data, n in check.contents.items()
                  if n > 0 and data.strip() not in known)
    return check.problems["partial"] + unknown if known else check.problems["partial"]


class PauseDetector(threading.Thread):
    """Notices when the whole machine stopped (a VM paused or snapshotted, or starved).

    It wakes every 50 ms; a wake-up that comes more than `threshold` seconds of wall clock late
    is a pause: (wall clock when it began, when it ended, monotonic seconds that elapsed).
    """

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__(name="pause-detector", daemon=True)
        self.threshold = threshold
        self.pauses: list[tuple[float, float, float]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        wall, mono = time.time(), time.monotonic()
        while not self._stopped.wait(0.05):
            now_wall, now_mono = time.time(), time.monotonic()
            if now_wall - wall > self.threshold + 0.05:
                self.pauses.append((wall, now_wall, now_mono - mono))
            wall, mono = now_wall, now_mono

    def stop(self) -> list[tuple[float, float, float]]:
        self._stopped.set()
        self.join(10)
        return self.pauses


# -- the reader in its own process --------------------------------------------------------------

class ReaderProcess:
    """`python -m tests.reliability read`: a tight-loop reader with no GIL in common with us."""

    def __init__(self, path: Path, *, mode: int | None, clock_offset: float = 0.0,
                 pause: float = 0.0, nice: int = 0) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": root, "PYTHONUNBUFFERED": "1"}
        args = [sys.executable, "-m", "tests.reliability", "read", os.fspath(path),
                f"--clock_offset={clock_offset}", f"--pause={pause}", f"--nice={nice}"]
        if mode is not None:
            args.append(f"--mode={mode:o}")
        self.proc = subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "reading":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"reader did not start: {line!r} {err[-2000:]}")

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        try:
            return dict(json.loads(out))
        except ValueError:
            raise AssertionError(f"reader output unreadable: {out!r} {err!r}") from None


def _reader_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability read")
    parser.add_argument("path")
    parser.add_argument("--mode", type=lambda v: int(v, 8), default=None)
    parser.add_argument("--clock_offset", type=float, default=0.0)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    os.nice(args.nice)
    offset = args.clock_offset
    check = TokenCheck(Path(args.path), clock=lambda: time.time() + offset, mode=args.mode)
    print("reading", flush=True)
    pause = args.pause
    while not stop.is_set():
        check.read_once()
        if pause:
            time.sleep(pause)
    summary = check.summary()
    summary["sha256"] = {hashlib.sha256(data.strip()).hexdigest(): n
                         for data, n in check.contents.items()}
    print(json.dumps(summary), flush=True)
    return 0


# -- one test's world ---------------------------------------------------------------------------

def make_pod(root: Path, server: DevApiServer, *, kubelet_lifetime: int = 3600,
             credential_lifetime: int = 86400) -> Pod:
    """A pod's files under `root`: projected volume with a kubelet token, kubeconfig, shared."""
    root.mkdir(parents=True, exist_ok=True)
    projected = root / "projected"
    projected.mkdir()
    own = server.issue_token(NS, SA, audiences=list(server.api_audiences),
                             expiration_seconds=credential_lifetime)
    kubeconfig = Path(server.write_kubeconfig(root / "kubeconfig", token=own.token))
    pod = Pod(root=root, server=server, volume=ProjectedVolume(str(projected)),
              projected=projected, shared=root / "shared", kubeconfig=kubeconfig)
    pod.kubelet_token(lifetime=kubelet_lifetime)
    return pod


@contextmanager
def maybe_tmpfs(directory: Path, size: str = "16k") -> Iterator[bool]:
    """A tiny tmpfs on `directory` (created first) when mounting is allowed; yields whether."""
    from tests.fsfaults import tiny_tmpfs

    directory.mkdir(parents=True, exist_ok=True)
    with tiny_tmpfs(str(directory), size) as mounted:
        yield mounted


def new_server(**kwargs: Any) -> DevApiServer:
    kwargs.setdefault("min_expiration_seconds", 1)
    server = DevApiServer(**kwargs).start()
    server.add_service_account(NS, SA)
    return server


class Lab:
    """A test's servers, processes, readers, fetched HTTP bodies and report rows."""

    def __init__(self, root: Path, *, test: str = "") -> None:
        self.root = root
        self.recorder = Recorder(test)
        self.servers: list[DevApiServer] = []
        self.processes: list[RefresherProcess] = []
        self.readers: list[CheckingReader] = []
        self.fetched: list[str] = []
        self._lock = threading.Lock()
        self._closed = False

    def scenario(self, name: str, *, group: str, injected: str) -> Scenario:
        return self.recorder.scenario(name, group=group, injected=injected)

    def server(self, **kwargs: Any) -> DevApiServer:
        server = new_server(**kwargs)
        with self._lock:
            self.servers.append(server)
        return server

    def pod(self, server: DevApiServer, name: str = "pod", **kwargs: Any) -> Pod:
        return make_pod(self.root / name, server, **kwargs)

    def start(self, pod: Pod, flags: Mapping[str, str], *extra: str,
              env: dict[str, str] | None = None) -> RefresherProcess:
        """`token-refresher *extra --flag=value...` for `pod` (Pod.args defaults, then flags)."""
        proc = RefresherProcess(pod.args(*extra, **flags), env=env)
        with self._lock:
            self.processes.append(proc)
        return proc

    def reader(self, path: Path, **kwargs: Any) -> CheckingReader:
        reader = CheckingReader(path, **kwargs)
        with self._lock:
            self.readers.append(reader)
        reader.start()
        return reader

    def outputs(self) -> list[str]:
        with self._lock:
            procs = list(self.processes)
        return [p.output() for p in procs] + list(self.fetched)

    def issued(self) -> list[str]:
        with self._lock:
            servers = list(self.servers)
        return [t for s in servers for t in s.issued_tokens()]

    def leaks(self) -> int:
        """Issued tokens that have any 16-character piece in any output or fetched body."""
        return len(leaked_tokens(self.outputs(), self.issued()))

    def close(self) -> int:
        """Stop everything; returns the leak count (scanned after every process ended)."""
        if self._closed:
            return 0
        self._closed = True
        for reader in self.readers:
            reader.stop()
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.close()
        leaks = self.leaks()
        for server in self.servers:
            server.stop()
        return leaks


# -- the recorder -------------------------------------------------------------------------------

@dataclass
class Scenario:
    """One row of docs/reliability.md."""

    name: str
    group: str
    injected: str
    count: int = 0  # how many times the fault was injected (requests hit, kills, writes...)
    lapses: int = 0
    torn: int = 0
    leaks: int = 0
    reads: int = 0
    recovery: list[float] = field(default_factory=list)  # s, one per recovery
    notes: str = ""
    test: str = ""
    seconds: float = 0.0

    def absorb(self, reader: CheckingReader, issued: Iterable[str] = ()) -> None:
        self.reads += reader.check.reads
        self.lapses += reader.lapses()
        self.torn += reader.torn(issued)


class Recorder:
    """Collects a test's scenarios; `flush()` appends them to $RELIABILITY_RECORD (if set)."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[Scenario] = []
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def scenario(self, name: str, *, group: str, injected: str) -> Scenario:
        row = Scenario(name=name, group=group, injected=injected, test=self.test)
        with self._lock:
            self.rows.append(row)
        return row

    def flush(self, *, leaks: int = 0) -> None:
        elapsed = time.monotonic() - self._started
        for row in self.rows:
            row.leaks = max(row.leaks, leaks)
            row.seconds = row.seconds or round(elapsed, 2)
        path = os.environ.get(RECORD_ENV)
        if path:
            append_records(path, self.rows)


def append_records(path: str, rows: Iterable[Scenario]) -> None:
    lines = "".join(json.dumps(asdict(row), sort_keys=True) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        sys.exit(_reader_main(sys.argv[2:]))
    sys.exit("usage: python -m tests.reliability read PATH [--mode=640] [--clock_offset=S]")
