"""Issue 5: the token never lapses, under API faults, crashes, filesystem faults and bad input.

Everything runs in compressed time: tokens live a few seconds (`DevApiServer(min_expiration_
seconds=1)`), the refresher refreshes every second or faster and retries after 50 ms. A checking
reader (tests/reliability.py) opens the token file every ~2 ms, as an app could at any instant,
and counts every read of a missing, empty, partial, expired or foreign token (a lapse), every
torn read (content the server never issued), and every wrong file or temp-file mode. Every test
scans the output of all its refresher processes for token material. With RELIABILITY_RECORD=path
each scenario appends its numbers to that file; tools/reliability_report.py makes
docs/reliability.md out of them.

Sections follow the issue: 1 fault matrix, 2 torn reads, 3 kill -9, 4 filesystem faults, 5 bad
input, 6 security, 7 clock skew, 8 the refresher's own credential; known refresher bugs last.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import itertools
import os
import random
import shutil
import signal
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from refresher.config import Config
from refresher.devserver import DevApiServer, Fault
from refresher.events import RefreshSucceeded
from refresher.tokenfile import TEMP_PREFIX, TEMP_SUFFIX, write_atomic
from refresher.worker import MintResult, RefreshWorker
from tests.e2e import NS, SA, Pod, RefresherProcess, scan_for_leaks
from tests.fsfaults import read_only
from tests.helpers import b64, make_jwt, sa_token, wait_for
from tests.reliability import (
    AUDIENCE,
    RECOVERY_SLACK,
    CheckingReader,
    Lab,
    ReaderProcess,
    Recovery,
    Scenario,
    TokenCheck,
    leaked_tokens,
    log_time,
    maybe_tmpfs,
    recovery,
    torn_reads,
    tracebacks,
)

MODE = 0o640  # a non-default --token_file_mode, checked on every read
LIFETIME = 6.0  # s, --expiration_duration of minted tokens
FLAGS = {"expiration_duration": "6s", "refresh_interval": "1s", "sleep": "50ms",
         "token_file_mode": "0640"}
PASSIVE_LIFETIME = 20  # s, kubelet's token while a fault hits the first TokenRequest: it must
# outlive the refresher's cold start (importing `kubernetes` takes seconds on a loaded machine)
HANG_SECONDS = 10.0  # a hung request outlives the refresher's timeout (a third of the life left)
PARALLEL = int(os.environ.get("RELIABILITY_PARALLEL", "8"))  # fault scenarios run at once
SEED = int(os.environ.get("RELIABILITY_SEED", str(int(time.time()))))


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """One test's world; at the end every process output is scanned for token material."""
    world = Lab(tmp_path, test=request.node.nodeid)
    yield world
    leaks = world.close()
    world.recorder.flush(leaks=leaks)
    assert leaks == 0, f"{leaks} issued token(s) appear in process output or fetched bodies"


def shutdown(proc: RefresherProcess, trigger_dir: Path) -> int:
    (trigger_dir / "shutdown").write_text("")
    return proc.wait_exit()


def temps(directory: Path) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(TEMP_PREFIX) and n.endswith(TEMP_SUFFIX))


def review_ok(server: DevApiServer, path: Path) -> bool:
    return server.review_token(path.read_text(), [AUDIENCE]).authenticated


def failures_after(proc: RefresherProcess, start: int) -> list[dict[str, Any]]:
    return [r for r in proc.lines[start:] if r.get("event") == "refresh_failed"]


def finish(row: Scenario, server: DevApiServer, reader: CheckingReader,
           *procs: RefresherProcess) -> None:
    """Common end checks: the reader saw no lapse and no torn read, nothing crashed."""
    reader.stop()
    issued = server.issued_tokens()
    row.absorb(reader, issued)
    for proc in procs:
        assert not tracebacks(proc.output()), proc.output()[-3000:]
    summary = reader.check.summary()
    assert reader.lapses() == 0, summary
    assert reader.torn(issued) == 0, summary
    assert reader.problems == Counter(), summary


# == 0. the instruments (positive controls: they do catch what they look for) ==================

def test_the_leak_scan_catches_any_16_character_piece() -> None:
    now = time.time()
    tokens = [sa_token(iat=now, exp=now + 60, ns=NS, sa=f"sa-{n}") for n in range(3)]
    at = next(i for i in range(len(tokens[1]) - 16)  # a piece only the second token has
              if not any(tokens[1][i:i + 16] in t for t in (tokens[0], tokens[2])))
    text = f'{{"message": "oops {tokens[1][at:at + 16]} end"}}\n'
    assert leaked_tokens([text], tokens) == scan_for_leaks(text, tokens) == [1]
    near_miss = f"only fifteen {tokens[1][at:at + 15]}!"
    assert leaked_tokens([near_miss], tokens) == scan_for_leaks(near_miss, tokens) == []


def test_the_checking_reader_flags_every_kind_of_bad_read(tmp_path: Path) -> None:
    now = time.time()
    good = sa_token(iat=now, exp=now + 60, ns=NS, sa=SA)
    path = tmp_path / "token"
    check = TokenCheck(path, mode=MODE)
    cases = [
        ("missing", None, MODE), ("empty", "", MODE), ("partial", good[:-40], MODE),
        ("partial", good[:len(good) // 2], MODE),
        ("expired", sa_token(iat=now - 60, exp=now - 1, ns=NS, sa=SA), MODE),
        ("invalid", sa_token(iat=now, exp=now + 60, ns=NS, sa="other"), MODE),
        ("invalid", sa_token(iat=now, exp=now + 60, ns=NS, sa=SA, aud=["x"]), MODE),
        ("mode", good, 0o644), (None, good, MODE),
    ]
    for expected, content, mode in cases:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if content is not None:
            path.write_text(content)
            path.chmod(mode)
        assert check.read_once() == expected, (expected, content and content[:20])
    temp = tmp_path / f"{TEMP_PREFIX}token-x{TEMP_SUFFIX}"
    temp.write_text("partial")
    temp.chmod(0o644)  # more permissive than the token's 0640
    assert check.read_once() == "temp-mode"
    # a signature cut short still decodes: only the content check catches that torn read
    temp.unlink()
    fresh = TokenCheck(path, mode=MODE)
    assert fresh.read_once() is None and torn_reads(fresh, [good]) == 0
    path.write_text(good[:-5])
    path.chmod(MODE)
    assert fresh.read_once() is None
    assert torn_reads(fresh, [good]) == 1


# == 1. fault matrix ===========================================================================

@dataclass(frozen=True)
class FaultCase:
    id: str
    fault: Fault | None  # None: an API outage (every TokenRequest answers 503) for half a life
    count: int  # TokenRequests the fault answers
    kind: str  # the failure kind the refresher must log
    status: int | None  # the status it must log

    @property
    def recorded(self) -> str:
        """The devserver's name for a request this fault answered."""
        return "down" if self.fault is None else self.fault.name

    @property
    def label(self) -> str:
        if self.fault is None:
            return f"API outage (503 for all) for {LIFETIME / 2:g}s, half the token lifetime"
        if self.fault.kind == "hang":
            return f"hang {self.fault.seconds:g}s (client timeout)"
        if self.fault.retry_after is not None:
            return f"HTTP {self.fault.code} Retry-After {self.fault.retry_after}"
        return f"HTTP {self.fault.code}" if self.fault.kind == "status" else self.fault.kind


def _status(code: int, kind: str, **kw: int) -> FaultCase:
    return FaultCase(str(code), Fault.status(code, **kw), 2, kind, code)


FAULT_MATRIX = (
    _status(500, "transient"), _status(502, "transient"), _status(503, "transient"),
    _status(504, "transient"), _status(429, "rate_limited", retry_after=1),
    FaultCase("reset", Fault.reset(), 2, "transient", None),
    FaultCase("hang", Fault.hang(HANG_SECONDS), 1, "transient", None),
    FaultCase("garbage", Fault.garbage(), 2, "transient", None),
    FaultCase("expired_token", Fault.expired_token(), 2, "invalid_token", None),
    FaultCase("wrong_audience", Fault.wrong_audience(), 2, "invalid_token", None),
    FaultCase("wrong_subject", Fault.wrong_subject(), 2, "invalid_token", None),
    _status(401, "permanent"), _status(403, "permanent"), _status(404, "permanent"),
    _status(422, "permanent"),
    FaultCase("outage", None, 0, "transient", 503),
)


def _inject(server: DevApiServer, case: FaultCase) -> None:
    if case.fault is None:
        server.set_down(True)
    else:
        server.inject(case.fault, count=case.count)


def fault_scenario(lab: Lab, case: FaultCase) -> None:
    procs: list[RefresherProcess] = []
    try:
        _fault_scenario(lab, case, procs)
    except Exception as exc:
        tail = "".join(procs[0].raw[-12:]) if procs else ""
        raise AssertionError(f"{exc}\n--- refresher output (last lines) ---\n{tail}") from exc


def _fault_scenario(lab: Lab, case: FaultCase, procs: list[RefresherProcess]) -> None:
    """One server, one refresher: the fault hits its first TokenRequest, then a later one."""
    server = lab.server()
    pod = lab.pod(server, name=case.id, kubelet_lifetime=PASSIVE_LIFETIME)
    proc = lab.start(pod, FLAGS)
    procs.append(proc)
    proc.wait_event("started")
    for phase in ("passive", "active"):
        row = lab.scenario(f"{case.id} ({phase})", group="1. API faults", injected=case.label)
        clock = time.monotonic()
        reader = lab.reader(pod.token_file, mode=MODE)
        seen = len(server.requests)
        mark = proc.mark()
        began: float | None = None
        if phase == "passive":  # queued before activation: the first TokenRequest hits it
            _inject(server, case)
            proc.send(signal.SIGTERM)
        else:  # the passive phase ended with a success: the next refresh hits it
            began = time.time()
            _inject(server, case)
        first = proc.wait_event("refresh_failed", start=mark)
        cleared: float | None = None
        if case.fault is None:  # half the minted tokens' life, from the first refused request
            began = began if began is not None else log_time(first)
            threading.Event().wait(max(0.0, LIFETIME / 2 - (time.time() - began)))
            server.set_down(False)
            cleared = time.time()
        rec = recovery(proc, start=mark)
        assert review_ok(server, pod.token_file)
        finish(row, server, reader, proc)

        requests = [r for r in server.requests[seen:] if r.path.endswith("/token")]
        row.seconds = round(time.monotonic() - clock, 2)
        row.count = sum(1 for r in requests if r.fault == case.recorded)
        row.recovery.append(round(rec.seconds, 3))
        if cleared is not None:
            row.notes = f"first success {log_time(rec.success) - cleared:.2f}s after the API " \
                        "was back"
        assert (first["kind"], first["status"]) == (case.kind, case.status), first
        if case.kind == "permanent":
            assert first.get("hint"), first
        if phase == "passive":
            assert first["attempt"] == 1 and requests[0].fault == case.recorded, requests[0]
        assert row.count >= max(case.count, 1)
        assert rec.within_one_step, (
            f"{phase}: recovered {rec.seconds:.2f}s after the last failure, which said retry "
            f"in {rec.retry_in}s (+{RECOVERY_SLACK}s slack)")
        if cleared is not None:
            assert log_time(rec.success) - cleared <= rec.retry_in + RECOVERY_SLACK
    assert shutdown(proc, pod.shared) == 0


def test_fault_matrix_never_lapses_and_recovers_within_one_backoff_step(lab: Lab) -> None:
    """Every fault x {hits the first TokenRequest, hits a later refresh}, several at a time."""
    failed: dict[str, str] = {}
    with concurrent.futures.ThreadPoolExecutor(PARALLEL, thread_name_prefix="fault") as pool:
        futures = {pool.submit(fault_scenario, lab, case): case for case in FAULT_MATRIX}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            if error is not None:
                failed[futures[future].id] = f"{type(error).__name__}: {error}"
    order = {f"{case.id} ({phase})": n for n, (phase, case) in enumerate(
        itertools.product(("passive", "active"), FAULT_MATRIX))}
    lab.recorder.rows.sort(key=lambda row: order.get(row.name, len(order)))  # report order
    assert not failed, "\n".join(f"[{k}] {v}" for k, v in failed.items())


# == 2. torn reads =============================================================================

REFRESHES = 1000


def test_no_torn_read_over_1000_refreshes(lab: Lab) -> None:
    """The real process refreshes every 10 ms; another process reads in a tight loop."""
    row = lab.scenario("1000 refreshes under a tight-loop reader", group="2. torn reads",
                       injected="a refresh every 10 ms, reader in its own process")
    server = lab.server()
    pod = lab.pod(server)
    proc = lab.start(pod, {**FLAGS, "refresh_interval": "10ms", "expiration_duration": "3s"})
    proc.wait_event("started")
    proc.send(signal.SIGTERM)
    proc.wait_event("refresh_succeeded")
    # Each open of the token file is an inotify event the refresher's watcher must handle in
    # Python: a reader with no pause at all would slow refreshes to a crawl. 0.1 ms is a few
    # thousand reads a second, dozens per refresh; at the lowest priority it yields the CPU to
    # the refresher and the API server at once.
    reader = ReaderProcess(pod.token_file, mode=MODE, pause=0.0001, nice=19)
    try:
        start = len(proc.events("refresh_succeeded"))
        wait_for(lambda: len(proc.events("refresh_succeeded")) - start >= REFRESHES,
                 timeout=150, interval=0.25, what=f"{REFRESHES} refreshes")
    finally:
        summary = reader.stop()
    refreshes = len(proc.events("refresh_succeeded")) - start
    assert shutdown(proc, pod.shared) == 0
    issued = {hashlib.sha256(t.encode()).hexdigest()
              for t in server.issued_tokens()}
    unknown = sum(n for digest, n in summary["sha256"].items() if digest not in issued)
    row.count, row.reads = refreshes, summary["reads"]
    row.torn = summary["problems"].get("partial", 0) + unknown
    row.lapses = sum(summary["problems"].values())
    row.notes = (f"{summary['distinct']} distinct tokens read, {summary['temps_seen']} temp "
                 f"files seen (mode checked on every read)")
    assert summary["problems"] == {}, summary
    assert unknown == 0
    assert summary["regular_reads"] == summary["reads"] > 5 * REFRESHES
    assert summary["distinct"] >= REFRESHES // 2
    assert not tracebacks(proc.output())
    assert temps(pod.shared) == []


WRITES = 20_000


def test_no_torn_read_at_the_write_atomic_level(lab: Lab) -> None:
    """`tokenfile.write_atomic` at full speed against a reader with no pause at all."""
    row = lab.scenario(f"{WRITES} write_atomic calls", group="2. torn reads",
                       injected="tokens of different lengths, written back to back")
    directory = lab.root / "tokens"
    path = directory / "token"
    now = time.time()
    tokens = [sa_token(iat=now, exp=now + 3600, ns=NS, sa=SA, pad="x" * (i * 97 % 900))
              for i in range(64)]
    with maybe_tmpfs(directory, "1m"):  # the rename semantics are the same; fsync is free
        write_atomic(str(path), tokens[0].encode(), mode=MODE)
        reader = ReaderProcess(path, mode=MODE)
        try:
            for i in range(WRITES):
                write_atomic(str(path), tokens[i % len(tokens)].encode(), mode=MODE)
        finally:
            summary = reader.stop()
        left = temps(directory)
    known = {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    unknown = sum(n for digest, n in summary["sha256"].items() if digest not in known)
    row.count, row.reads = WRITES, summary["reads"]
    row.torn = summary["problems"].get("partial", 0) + unknown
    row.lapses = sum(summary["problems"].values())
    row.notes = f"{summary['temps_seen']} temp files seen by the reader"
    assert summary["problems"] == {} and unknown == 0, summary
    assert summary["reads"] > 1000
    assert left == []


# == 3. kill -9 ================================================================================

KILLS = 50
KILL_FLAGS = {**FLAGS, "refresh_interval": "20ms", "expiration_duration": "10s"}


def _kill_during_write(proc: RefresherProcess, directory: Path, timeout: float = 2.0) -> None:
    """SIGKILL as soon as a temp file of a write in progress shows up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not temps(directory):
        pass
    proc.proc.kill()


def _kill_lineage(lab: Lab, server: DevApiServer, name: str, kills: int,
                  rng: random.Random, row: Scenario) -> Counter[str]:
    """One pod: start, SIGKILL at a random instant, restart... `kills` times, then stop."""
    pod = lab.pod(server, name=name)
    proc = lab.start(pod, KILL_FLAGS)
    proc.wait_event("started")
    reader = lab.reader(pod.token_file, mode=MODE)  # runs across every kill and restart
    (pod.shared / "activate").write_text("")
    proc.wait_event("state_change", to_state="active", reason="activate_file")
    procs = [proc]
    left: list[str] = []
    styles: Counter[str] = Counter()
    for i in range(kills + 1):
        if i:
            proc = lab.start(pod, KILL_FLAGS)
            procs.append(proc)
            proc.wait_event("started")
            assert not [n for n in left if (pod.shared / n).exists()], \
                f"{name} run {i}: temp files of the killed run survived start-up: {left}"
            change = proc.wait_event("state_change")
            assert (change["to_state"], change["reason"]) == ("active", "restart"), change
            ok = proc.wait_event("refresh_succeeded")
            row.recovery.append(round(log_time(ok) - log_time(change), 3))
        if i == kills:
            break
        style = ("any instant", "after a refresh", "during a write")[i % 3]
        styles[style] += 1
        if style == "any instant":  # often before or during the first TokenRequest
            threading.Event().wait(rng.uniform(0.0, 0.6))
            proc.proc.kill()
        elif style == "after a refresh":
            proc.wait_event("refresh_succeeded")
            threading.Event().wait(rng.uniform(0.0, 0.1))
            proc.proc.kill()
        else:
            proc.wait_event("refresh_succeeded")
            _kill_during_write(proc, pod.shared)
        proc.wait_exit()
        left = temps(pod.shared)
        styles["left a temp file"] += bool(left)
    assert shutdown(proc, pod.shared) == 0
    assert temps(pod.shared) == []
    finish(row, server, reader, *procs)
    return styles


def test_kill_9_at_random_instants_never_lapses_and_resumes(lab: Lab) -> None:
    """Two pods side by side (half the wall time), each killed KILLS / 2 times."""
    row = lab.scenario(f"kill -9 x{KILLS}, restart", group="3. crashes",
                       injected="SIGKILL at a random instant after activation (a third of them "
                                "the moment a temp file appears), then restart")
    server = lab.server()
    styles: Counter[str] = Counter()
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="kills") as pool:
        futures = [pool.submit(_kill_lineage, lab, server, f"pod{n}", KILLS // 2,
                               random.Random(SEED + n), row) for n in range(2)]
        for future in futures:
            styles.update(future.result())
    row.count = KILLS
    row.notes = (f"seed {SEED}; " + ", ".join(f"{k}: {v}" for k, v in sorted(styles.items()))
                 + "; recovery = restart to first refresh")
    assert styles["left a temp file"] >= 1  # some kills did land inside a write


# == 4. filesystem faults ======================================================================

def _wait_write_failures(proc: RefresherProcess, start: int, names: str, count: int = 3) -> None:
    def enough() -> bool:
        failures = [f for f in failures_after(proc, start) if f.get("kind") == "write"]
        return len(failures) >= count and all(names in f["message"] for f in failures)

    wait_for(enough, timeout=30, what=f"{count} write failures naming {names}")


def _fill(directory: Path) -> Path:
    junk = directory / "junk"
    fd = os.open(junk, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return junk


@pytest.mark.parametrize("fault", ["read_only", "full", "token_dir_recreated",
                                   "trigger_dir_recreated"])
def test_filesystem_fault_keeps_the_old_token_and_recovers(lab: Lab, fault: str) -> None:
    server = lab.server()
    pod = lab.pod(server)
    triggers = pod.root / "triggers"
    with maybe_tmpfs(pod.shared) if fault == "full" else contextlib.nullcontext(True) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root")
        proc = lab.start(pod, {**FLAGS, "trigger_dir": str(triggers)})
        proc.wait_event("started")
        reader = lab.reader(pod.token_file, mode=MODE)
        proc.send(signal.SIGTERM)
        proc.wait_event("refresh_succeeded")
        mark = proc.mark()
        injected = {"read_only": "token directory bind-mounted read-only",
                    "full": "token directory on a full tmpfs (ENOSPC)",
                    "token_dir_recreated": "token directory deleted, recreated later",
                    "trigger_dir_recreated": "trigger directory deleted, recreated later"}
        row = lab.scenario(fault.replace("_", " "), group="4. filesystem faults",
                           injected=injected[fault])
        cleared = 0.0
        if fault == "read_only":
            with read_only(str(pod.shared)):
                _wait_write_failures(proc, mark, str(pod.shared))
            cleared = time.time()
        elif fault == "full":
            junk = _fill(pod.shared)
            _wait_write_failures(proc, mark, str(pod.token_file))
            junk.unlink()
            cleared = time.time()
        elif fault == "token_dir_recreated":
            with reader.tolerating():  # the test itself deleted the token with its directory
                shutil.rmtree(pod.shared)
                _wait_write_failures(proc, mark, str(pod.shared))
                pod.shared.mkdir()
                cleared = time.time()
                recovery(proc, start=mark)
            assert set(reader.tolerated) <= {"missing"}, reader.tolerated
        else:
            shutil.rmtree(triggers)
            ok = len(proc.events("refresh_succeeded"))
            wait_for(lambda: len(proc.events("refresh_succeeded")) > ok,
                     what="a refresh while the trigger directory is gone")
            triggers.mkdir()
            cleared = time.time()
            proc.wait_event("watch_restored", path=str(triggers), start=mark)
        if fault != "trigger_dir_recreated":
            rec: Recovery = recovery(proc, start=mark)
            row.recovery.append(round(rec.seconds, 3))
            row.notes = f"first success {log_time(rec.success) - cleared:.2f}s after the fix"
            assert rec.within_one_step, rec
            assert log_time(rec.success) - cleared <= rec.retry_in + RECOVERY_SLACK
            row.count = len([f for f in failures_after(proc, mark) if f["kind"] == "write"])
        else:
            row.count = 1
            row.notes = "refreshes go on; the shutdown trigger works in the recreated directory"
        assert review_ok(server, pod.token_file)
        assert shutdown(proc, triggers) == 0  # the trigger watch works after all of it
        finish(row, server, reader, proc)
        assert temps(pod.shared) == []


# == 5. bad input ==============================================================================

def _default(pod: Pod, data: bytes) -> Path:
    target = pod.default_token.resolve()
    target.write_bytes(data)
    return pod.default_token


_HEADER = b64(b'{"alg":"RS256","kid":"x"}')
_SUB = f"system:serviceaccount:{NS}:{SA}"


@dataclass(frozen=True)
class BadInput:
    id: str
    outcome: str  # mint | exit1 | exit2 | ignored | keeps_passive
    prepare: Callable[[Pod], tuple[dict[str, str], str]]  # -> (flags, fragment of the message)


def _bad_default(data: bytes) -> Callable[[Pod], tuple[dict[str, str], str]]:
    return lambda pod: ({}, str(_default(pod, data)))


def _flag(name: str, value: str) -> Callable[[Pod], tuple[dict[str, str], str]]:
    return lambda pod: ({name: value}, f"--{name}")


def _symlink_loop(pod: Pod) -> tuple[dict[str, str], str]:
    loop = pod.root / "loop"
    os.symlink(loop, loop)
    return {"default_token_file": str(loop)}, str(loop)


def _default_dir(pod: Pod) -> tuple[dict[str, str], str]:
    directory = pod.root / "a-directory"
    directory.mkdir()
    return {"default_token_file": str(directory)}, str(directory)


def _token_file_dir(pod: Pod) -> tuple[dict[str, str], str]:
    pod.token_file.mkdir(parents=True)
    return {}, str(pod.token_file)


def _trigger_dir_file(pod: Pod) -> tuple[dict[str, str], str]:
    path = pod.root / "triggers"
    path.write_text("a file\n")
    return {"trigger_dir": str(path)}, str(path)


def _trigger_as(name: str, kind: str) -> Callable[[Pod], tuple[dict[str, str], str]]:
    def prepare(pod: Pod) -> tuple[dict[str, str], str]:
        pod.shared.mkdir(exist_ok=True)
        path = pod.shared / name
        if kind == "dir":
            path.mkdir()
        else:
            victim = pod.root / "victim"
            victim.write_text("victim\n")
            os.symlink(victim, path)
        return {}, str(path)

    return prepare


def _kubeconfig(content: str | None) -> Callable[[Pod], tuple[dict[str, str], str]]:
    def prepare(pod: Pod) -> tuple[dict[str, str], str]:
        if content is None:
            pod.kubeconfig.unlink()
        else:
            pod.kubeconfig.write_text(content)
        return {}, str(pod.kubeconfig)

    return prepare


# What the refresher does (prepare.py, lifecycle.py), and what each case asserts:
# - mint: the default token is readable text but no usable JWT (or expired): it logs
#   default_token_invalid naming the file, activates (invalid_token / expiry) and mints.
# - exit1: the default token cannot be read as text (10 MB, binary, empty, loop, directory), the
#   token file is a directory or the trigger dir a file: exit 1, one ERROR line naming the path.
# - exit2: absurd flags: exit 2, one line on stderr naming the flag, nothing on stdout.
# - ignored: activate/shutdown as a directory or symlink: a warning, never followed.
# - keeps_passive: no kubeconfig: it cannot mint, says so naming the file, keeps kubelet's token.
# Never a Python traceback; once the file served a valid token, never a lapse.
BAD_INPUTS = (
    BadInput("default-not-a-jwt", "mint", _bad_default(b"this is not a token\n")),
    BadInput("default-bad-base64", "mint", _bad_default(f"{_HEADER}.@@@!!.c2ln".encode())),
    BadInput("default-claims-not-json", "mint",
             _bad_default(f"{_HEADER}.{b64(b'{not json')}.c2ln".encode())),
    BadInput("default-exp-string", "mint",
             _bad_default(make_jwt(exp="tomorrow", iat=1, sub=_SUB).encode())),
    BadInput("default-no-exp-no-iat", "mint", _bad_default(make_jwt(sub=_SUB).encode())),
    BadInput("default-expired", "mint",
             lambda pod: ({}, str(_default(pod, sa_token(iat=1, exp=2, ns=NS, sa=SA).encode())))),
    BadInput("default-10MB-junk", "exit1", _bad_default(b"A" * (10 << 20))),
    BadInput("default-binary", "exit1", _bad_default(bytes(range(256)) * 8)),
    BadInput("default-empty", "exit1", _bad_default(b"")),
    BadInput("default-symlink-loop", "exit1", _symlink_loop),
    BadInput("default-is-a-directory", "exit1", _default_dir),
    BadInput("token-file-is-a-directory", "exit1", _token_file_dir),
    BadInput("trigger-dir-is-a-file", "exit1", _trigger_dir_file),
    BadInput("activate-is-a-directory", "ignored", _trigger_as("activate", "dir")),
    BadInput("activate-is-a-symlink", "ignored", _trigger_as("activate", "symlink")),
    BadInput("shutdown-is-a-directory", "ignored", _trigger_as("shutdown", "dir")),
    BadInput("shutdown-is-a-symlink", "ignored", _trigger_as("shutdown", "symlink")),
    BadInput("kubeconfig-missing", "keeps_passive", _kubeconfig(None)),
    BadInput("max_attempts=-1", "exit2", _flag("max_attempts", "-1")),
    BadInput("max_attempts=10^20", "exit2", _flag("max_attempts", "100000000000000000000")),
    BadInput("sleep=1000000h", "exit2", _flag("sleep", "1000000h")),
    BadInput("sleep=1e9h", "exit2", _flag("sleep", "1e9h")),
    BadInput("token_file_mode=7777", "exit2", _flag("token_file_mode", "7777")),
    BadInput("token_file_mode=0666", "exit2", _flag("token_file_mode", "0666")),
    BadInput("token_file_mode=0", "exit2", _flag("token_file_mode", "0")),
    BadInput("expiration_duration=0s", "exit2", _flag("expiration_duration", "0s")),
    BadInput("refresh_interval=-1s", "exit2", _flag("refresh_interval", "-1s")),
    BadInput("refresh_interval>=expiration", "exit2", _flag("refresh_interval", "6s")),
    BadInput("shutdown_interval=0", "exit2", _flag("shutdown_interval", "0")),
    BadInput("health_port=99999", "exit2", _flag("health_port", "99999")),
    BadInput("token_audience=,", "exit2", _flag("token_audience", ",")),
    BadInput("on_sigterm=maybe", "exit2", _flag("on_sigterm", "maybe")),
    BadInput("pod_name-without-uid", "exit2", lambda pod: ({"pod_name": "web-0"}, "--pod_uid")),
)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.id)
def test_bad_input_gets_one_clear_message_and_never_a_crash_or_lapse(
        lab: Lab, case: BadInput) -> None:
    server = lab.server()
    pod = lab.pod(server)
    flags, fragment = case.prepare(pod)
    row = lab.scenario(case.id, group="5. bad input", injected=f"expect: {case.outcome}")
    row.count = 1
    proc = lab.start(pod, {**FLAGS, **flags})
    if case.outcome in ("exit1", "exit2"):
        code = proc.wait_exit()
        out = proc.output()
        assert not tracebacks(out), out
        stderr = [line for line in proc.raw if not line.startswith("{")]
        if case.outcome == "exit2":
            assert code == 2 and proc.lines == [], out
            assert len(stderr) == 1 and fragment in stderr[0], stderr
        else:
            errors = [r for r in proc.lines if r.get("level") in ("ERROR", "CRITICAL")]
            assert code == 1 and stderr == [], out
            assert [r["event"] for r in errors] == ["startup_failed"], errors
            assert fragment in errors[0]["message"], errors
        row.notes = f"exit {code}"
        return
    proc.wait_event("started")
    reader = lab.reader(pod.token_file, mode=MODE, after_valid=True)
    victim = pod.root / "victim"
    if case.outcome == "mint":
        if case.id != "default-expired":  # an expired JWT is well-formed: no complaint
            complaint = proc.wait_event("default_token_invalid")
            assert complaint["level"] == "ERROR" and fragment in complaint["message"]
        change = proc.wait_event("state_change")
        assert change["to_state"] == "active", change
        assert change["reason"] == ("expiry" if case.id == "default-expired"
                                    else "invalid_token"), change
        proc.wait_event("refresh_succeeded")
        row.notes = f"activated ({change['reason']}) and minted"
    elif case.outcome == "ignored":
        warning = proc.wait_event("trigger_ignored")
        assert warning["level"] == "WARNING" and fragment in warning["message"], warning
        proc.send(signal.SIGTERM)  # had the trigger been followed, it would be active already
        change = proc.wait_event("state_change")
        assert (change["to_state"], change["reason"]) == ("active", "signal"), change
        proc.wait_event("refresh_succeeded")
        assert proc.proc.poll() is None  # a shutdown dir/symlink never stops it
        if victim.exists():
            assert victim.read_text() == "victim\n"
        trigger = Path(fragment)
        if trigger.name == "shutdown":
            (os.rmdir if trigger.is_dir() and not trigger.is_symlink() else os.unlink)(trigger)
        row.notes = "ignored with a warning, not followed"
    else:  # kubeconfig-missing: it cannot mint, so it keeps serving kubelet's token
        proc.send(signal.SIGTERM)
        failed = proc.wait_event("refresh_failed")
        assert failed["kind"] == "permanent" and fragment in failed["error"], failed
        assert pod.token_file.is_symlink()
        row.notes = "kubelet's token kept; refresh_failed names the kubeconfig"
    assert shutdown(proc, pod.shared) == 0
    finish(row, server, reader, proc)
    assert reader.check.reads > 0 and reader.seen_valid
    if victim.exists():
        assert victim.read_text() == "victim\n"


# == 6. security ===============================================================================

def test_planted_symlinks_are_never_followed(lab: Lab) -> None:
    """activate/shutdown/temp names and the token file itself planted as symlinks to a victim."""
    row = lab.scenario("planted symlinks", group="6. security",
                       injected="activate, shutdown, a temp name and token_file -> victim")
    server = lab.server()
    pod = lab.pod(server)
    victim = pod.root / "victim"
    victim.write_text("victim\n")
    victim.chmod(0o600)
    before = os.stat(victim)
    pod.shared.mkdir()
    planted_temp = pod.shared / f"{TEMP_PREFIX}token-planted{TEMP_SUFFIX}"
    for path in (pod.shared / "activate", pod.shared / "shutdown", planted_temp):
        os.symlink(victim, path)
    proc = lab.start(pod, FLAGS)
    proc.wait_event("started")
    proc.wait_event("stale_temps_removed")
    assert not os.path.lexists(planted_temp)
    ignored = {r["trigger"] for r in proc.events("trigger_ignored")}
    assert ignored == {"activate", "shutdown"}, ignored
    reader = lab.reader(pod.token_file, mode=MODE)
    proc.send(signal.SIGTERM)
    change = proc.wait_event("state_change")
    assert change["reason"] == "signal", change  # the activate symlink was not followed
    proc.wait_event("refresh_succeeded")
    wait_for(lambda: stat.S_ISREG(os.lstat(pod.shared / "activate").st_mode),
             what="activate replaced by the refresher's own file")
    # at runtime: a temp name, and the token file itself swapped for a symlink to the victim
    os.symlink(victim, pod.shared / f"{TEMP_PREFIX}token-runtime{TEMP_SUFFIX}")
    mark = proc.mark()
    with reader.tolerating():  # the test itself points the token file at the victim
        link = pod.shared / "planted-link"
        os.symlink(victim, link)
        os.rename(link, pod.token_file)
        wait_for(lambda: not pod.token_file.is_symlink() and review_ok(server, pod.token_file),
                 what="the token file replaced by a fresh token")
    proc.wait_event("refresh_succeeded", start=mark)
    assert set(reader.tolerated) <= {"invalid", "partial"}, reader.tolerated
    os.unlink(pod.shared / "shutdown")
    assert shutdown(proc, pod.shared) == 0
    # a restart removes the runtime-planted temp symlink, and only the symlink
    again = lab.start(pod, FLAGS)
    again.wait_event("stale_temps_removed")
    again.wait_event("refresh_succeeded")
    assert temps(pod.shared) == []
    assert shutdown(again, pod.shared) == 0
    after = os.stat(victim)
    assert victim.read_text() == "victim\n"
    assert (after.st_mode, after.st_mtime_ns, after.st_ino) == \
        (before.st_mode, before.st_mtime_ns, before.st_ino)
    finish(row, server, reader, proc, again)
    row.count = 5
    row.notes = "victim unchanged (content, mode, mtime, inode)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_health_endpoints_and_logs_carry_no_token_material(lab: Lab) -> None:
    row = lab.scenario("health endpoints", group="6. security",
                       injected="GET /livez /readyz /metrics while active")
    server = lab.server()
    pod = lab.pod(server)
    port = _free_port()
    proc = lab.start(pod, {**FLAGS, "health_port": str(port), "health_address": "127.0.0.1"})
    proc.wait_event("started")
    proc.send(signal.SIGTERM)
    proc.wait_event("refresh_succeeded")
    proc.wait_event("refresh_succeeded", start=proc.mark())
    for path in ("/livez", "/readyz", "/metrics"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                lab.fetched.append(resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            lab.fetched.append(exc.read().decode("utf-8", "replace"))
    assert any("refresh" in body for body in lab.fetched)
    assert shutdown(proc, pod.shared) == 0
    row.count = 3
    assert lab.leaks() == 0


class _FakeMinter:
    def __init__(self) -> None:
        self.calls = 0

    def mint(self, timeout: float) -> MintResult:
        self.calls += 1
        now = time.time()
        token = sa_token(iat=now, exp=now + 600, ns=NS, sa=SA, aud=[AUDIENCE], jti=self.calls)
        return MintResult(token=token, received_at=now, server_time=now, offset=0.0)

    def close(self) -> None:
        pass


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_stays_flat_over_10000_refreshes(lab: Lab) -> None:
    row = lab.scenario("10,000 refreshes in-process", group="6. security",
                       injected="RefreshWorker.refresh_once with a fake minter")
    directory = lab.root / "tokens"
    with maybe_tmpfs(directory, "1m"):  # no fsync cost on a tmpfs (as root); else the disk
        config = Config(namespace=NS, service_account=SA, token_file=str(directory / "token"),
                        token_file_mode=MODE, trigger_dir=str(directory))
        minter = _FakeMinter()
        worker = RefreshWorker(config, lambda event: None, minter_factory=lambda c: minter)
        for _ in range(1000):  # warm-up: caches, interned strings, allocator arenas
            assert isinstance(worker.refresh_once(5.0), RefreshSucceeded)
        gc.collect()
        rss, fds = _rss_kib(), len(os.listdir("/proc/self/fd"))
        results = Counter(type(worker.refresh_once(5.0)).__name__ for _ in range(10_000))
        gc.collect()
        grown, fds_after = _rss_kib() - rss, len(os.listdir("/proc/self/fd"))
        assert stat.S_IMODE(os.stat(directory / "token").st_mode) == MODE
        assert temps(directory) == []
    row.count = 10_000
    row.notes = f"RSS grew {grown} KiB after warm-up; fds {fds} -> {fds_after}"
    assert results == Counter({"RefreshSucceeded": 10_000})
    assert grown < 2048, f"RSS grew {grown} KiB over 10,000 refreshes"
    assert fds_after <= fds


# == 7. clock skew =============================================================================

@pytest.mark.parametrize("offset", [3600, -3600], ids=["server+1h", "server-1h"])
def test_clock_skew_neither_lapses_nor_hammers(lab: Lab, offset: int) -> None:
    row = lab.scenario(f"server clock {offset:+d}s", group="7. clock skew",
                       injected=f"DevApiServer(clock_offset={offset})")
    server = lab.server(clock_offset=offset)
    pod = lab.pod(server)
    interval = 0.5
    proc = lab.start(pod, {**FLAGS, "refresh_interval": "500ms", "expiration_duration": "4s"})
    proc.wait_event("started")
    reader = lab.reader(pod.token_file, mode=MODE, clock=server.now)
    proc.send(signal.SIGTERM)
    proc.wait_event("refresh_succeeded")
    began, before = time.monotonic(), server.token_requests_count
    wait_for(lambda: len(proc.events("refresh_succeeded")) >= 7, timeout=30,
             what="six more refreshes")
    requests = server.token_requests_count - before
    elapsed = time.monotonic() - began
    assert shutdown(proc, pod.shared) == 0
    finish(row, server, reader, proc)
    row.count = requests
    row.notes = f"{requests} TokenRequests in {elapsed:.1f}s at a {interval}s interval"
    assert len(proc.events("clock_skew")) == 1
    assert requests <= 1.5 * elapsed / interval + 3, row.notes


# == 8. the refresher's own credential ==========================================================

def test_expiring_credential_is_renewed_and_refreshes_go_on_past_it(lab: Lab) -> None:
    row = lab.scenario("own credential expires", group="8. own credential",
                       injected="kubeconfig token with a 4 s life (no leeway)")
    server = lab.server(leeway_seconds=0)
    pod = lab.pod(server)
    credential = server.issue_token(NS, SA, audiences=list(server.api_audiences),
                                    expiration_seconds=4)
    server.write_kubeconfig(pod.kubeconfig, token=credential.token)
    proc = lab.start(pod, {**FLAGS, "refresh_interval": "500ms", "expiration_duration": "4s"})
    proc.wait_event("started")
    reader = lab.reader(pod.token_file, mode=MODE)
    proc.send(signal.SIGTERM)
    proc.wait_event("credential_renewed")
    past = credential.expires_at + 2
    proc.wait_log(lambda r: r.get("event") == "refresh_succeeded" and log_time(r) > past,
                  timeout=30, what="a refresh 2 s after the original credential expired")
    assert not server.review_token(credential.token).authenticated  # it really is dead
    assert shutdown(proc, pod.shared) == 0
    finish(row, server, reader, proc)
    late = [r for r in proc.events("refresh_succeeded") if log_time(r) > credential.expires_at]
    row.count = len(proc.events("credential_renewed"))
    row.notes = f"{len(late)} refreshes after the original credential expired"
    assert len(late) >= 3
    assert not [f for f in proc.events("refresh_failed") if f.get("status") == 401]


def test_rejected_credential_is_reread_from_the_kubeconfig(lab: Lab) -> None:
    row = lab.scenario("credential rejected (401)", group="8. own credential",
                       injected="invalid kubeconfig token, then a valid one written")
    server = lab.server()
    pod = lab.pod(server)
    server.write_kubeconfig(pod.kubeconfig, token="not-a-valid-token")
    proc = lab.start(pod, FLAGS)
    proc.wait_event("started")
    reader = lab.reader(pod.token_file, mode=MODE)
    proc.send(signal.SIGTERM)
    failed = proc.wait_event("refresh_failed", status=401)
    assert "credential" in failed["hint"]
    good = server.issue_token(NS, SA, audiences=list(server.api_audiences),
                              expiration_seconds=3600)
    server.write_kubeconfig(pod.kubeconfig, token=good.token)
    cleared = time.time()
    proc.wait_event("credential_rejected")
    rec = recovery(proc, start=0)
    assert review_ok(server, pod.token_file)
    assert shutdown(proc, pod.shared) == 0
    finish(row, server, reader, proc)
    row.count = rec.failures
    row.recovery.append(round(rec.seconds, 3))
    row.notes = f"first success {log_time(rec.success) - cleared:.2f}s after the rewrite"
    assert rec.within_one_step, rec


# == regressions: refresher bugs this file found (fixed since) and one still open ==============

def test_retry_after_is_never_shortened_by_jitter(lab: Lab) -> None:
    """Was a bug: equal jitter made retries come after 50-100% of the server's Retry-After."""
    row = lab.scenario("429 Retry-After honoured", group="1. API faults",
                       injected="3 x HTTP 429 Retry-After 1")
    server = lab.server()
    pod = lab.pod(server)
    server.inject(Fault.status(429, retry_after=1), count=3)
    proc = lab.start(pod, {**FLAGS, "refresh_interval": "3s", "expiration_duration": "10s"})
    proc.wait_event("started")
    proc.send(signal.SIGTERM)
    rec = recovery(proc, start=0)
    assert shutdown(proc, pod.shared) == 0
    token = [r for r in server.requests if r.path.endswith("/token")]
    gaps = [b.time - a.time for a, b in itertools.pairwise(token) if a.status == 429]
    row.count = rec.failures
    row.notes = "gaps after 429: " + ", ".join(f"{g:.2f}s" for g in gaps)
    assert [f["retry_in_seconds"] for f in proc.events("refresh_failed")] == [1.0] * 3
    assert min(gaps) >= 1.0 - 0.02, row.notes


def test_recreated_trigger_dir_is_logged_and_gets_the_activate_marker_back(lab: Lab) -> None:
    """Was a bug: nothing was logged, and a restart after it came back passive."""
    row = lab.scenario("trigger dir recreated: marker", group="4. filesystem faults",
                       injected="trigger directory deleted and recreated while active")
    server = lab.server()
    pod = lab.pod(server)
    triggers = pod.root / "triggers"
    proc = lab.start(pod, {**FLAGS, "trigger_dir": str(triggers)})
    proc.wait_event("started")
    proc.send(signal.SIGTERM)
    proc.wait_event("refresh_succeeded")
    mark = proc.mark()
    shutil.rmtree(triggers)
    row.count = 1
    try:
        proc.wait_log(lambda r: r.get("level") in ("WARNING", "ERROR")
                      and str(triggers) in r.get("message", ""), start=mark, timeout=2,
                      what="a warning naming the missing trigger directory")
        logged = True
    except AssertionError:
        logged = False
    triggers.mkdir()
    proc.wait_event("watch_restored", path=str(triggers), start=mark)
    try:
        wait_for(lambda: (triggers / "activate").is_file(), timeout=2, what="activate again")
        restored = True
    except AssertionError:
        restored = False
    assert shutdown(proc, triggers) == 0
    row.notes = f"loss logged: {logged}; activate marker written again: {restored}"
    assert logged and restored, row.notes


def test_garbage_kubeconfig_error_names_the_file(lab: Lab) -> None:
    """Was a bug: 'cannot set up the API client: ParserError', without the file."""
    row = lab.scenario("kubeconfig not YAML", group="5. bad input",
                       injected="kubeconfig file holding '{{{ not yaml'")
    server = lab.server()
    pod = lab.pod(server)
    pod.kubeconfig.write_text("{{{ not yaml\n")
    proc = lab.start(pod, FLAGS)
    proc.wait_event("started")
    proc.send(signal.SIGTERM)
    failed = proc.wait_event("refresh_failed")
    assert pod.token_file.is_symlink()  # kubelet's token is still served
    assert shutdown(proc, pod.shared) == 0
    row.count = 1
    row.notes = failed["error"]
    assert str(pod.kubeconfig) in failed["error"], failed["error"]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_reading_the_token_file_costs_the_refresher_no_cpu(lab: Lab) -> None:
    """Was a bug: watchdog's default inotify mask has IN_OPEN/IN_CLOSE_NOWRITE, so each read
    of the token file by the app cost the refresher ~0.15 ms of CPU (20% of a CPU here)."""
    row = lab.scenario("app reads cost refresher CPU", group="6. security",
                       injected="an app reading the token file ~1,500 times a second")
    server = lab.server()
    pod = lab.pod(server)
    proc = lab.start(pod, {**FLAGS, "refresh_interval": "1h", "expiration_duration": "2h"})
    proc.wait_event("started")
    proc.send(signal.SIGTERM)
    proc.wait_event("refresh_succeeded")
    reader = ReaderProcess(pod.token_file, mode=None, pause=0.0005)
    try:
        before, began = _cpu_seconds(proc.proc.pid), time.monotonic()
        threading.Event().wait(2.0)  # the measured window of app reads
        used = (_cpu_seconds(proc.proc.pid) - before) / (time.monotonic() - began)
    finally:
        summary = reader.stop()
    assert shutdown(proc, pod.shared) == 0
    row.count = summary["reads"]
    row.notes = f"refresher used {used:.0%} of a CPU while idle-active"
    assert summary["reads"] > 1000
    assert used < 0.03, row.notes


class _JumpClock:
    """Wall clock that can jump ahead (a suspended or paused machine); monotonic does not."""

    def __init__(self) -> None:
        self.jump = 0.0

    def now(self) -> float:
        return time.time() + self.jump

    def monotonic(self) -> float:
        return time.monotonic()


class _ClockMinter:
    """Mints tokens the way the API server would, by the (jumping) wall clock."""

    def __init__(self, clock: _JumpClock, lifetime: float) -> None:
        self.clock, self.lifetime = clock, lifetime

    def mint(self, timeout: float) -> MintResult:
        now = self.clock.now()
        token = sa_token(iat=now, exp=now + self.lifetime, ns=NS, sa=SA, aud=[AUDIENCE])
        return MintResult(token=token, received_at=now, server_time=now, offset=0.0)

    def close(self) -> None:
        pass


@pytest.mark.xfail(strict=True, reason="BUG timers.Scheduler: refresh timers are monotonic only; "
                   "after the machine was suspended/paused past the token's expiry (wall clock "
                   "jumped) nothing refreshes until the monotonic timer fires (up to "
                   "refresh_interval)")
def test_bug_wall_clock_jump_past_expiry_refreshes_at_once(lab: Lab) -> None:
    from refresher.daemon import Daemon, Hooks
    from refresher.lifecycle import Action, State

    row = lab.scenario("wall clock jumps past expiry", group="open bugs (strict xfail)",
                       injected="wall clock +2h10m (machine suspended), monotonic unchanged")
    shared = lab.root / "shared"
    default = lab.root / "kubelet-token"
    default.write_text(sa_token(iat=time.time(), exp=time.time() + 3600, ns=NS, sa=SA))
    config = Config(namespace=NS, service_account=SA, default_token_file=str(default),
                    token_file=str(shared / "token"), trigger_dir=str(shared),
                    expiration_duration=7200.0, refresh_interval=3600.0)
    clock = _JumpClock()
    refreshed = threading.Semaphore(0)

    def observe(event: object, state: State, actions: list[Action]) -> None:
        if isinstance(event, RefreshSucceeded):
            refreshed.release()

    daemon = Daemon(config, clock=clock, handle_signals=False, hooks=Hooks(observers=[observe]),
                    minter_factory=lambda c: _ClockMinter(clock, config.expiration_duration))
    runner = threading.Thread(target=daemon.run, name="daemon-under-test")
    runner.start()
    try:
        shared.mkdir(exist_ok=True)
        (shared / "activate").write_text("")
        assert refreshed.acquire(timeout=30), "no first refresh"
        clock.jump = 7800.0  # the token in the file is now expired by the wall clock
        noticed = refreshed.acquire(timeout=8)
    finally:
        daemon.stop()
        runner.join(30)
    row.count = 1
    row.notes = f"refreshed within 8 s of the jump: {noticed}"
    assert noticed, row.notes
