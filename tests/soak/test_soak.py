"""Soak: a compressed-time drain of many token lifetimes, with random faults from the matrix.

Not part of `make test` (marker `soak`); `make soak` runs it. The length is SOAK_LIFETIMES token
lifetimes (default 500) of SOAK_LIFETIME seconds (default 4 s; refresh every SOAK_REFRESH,
default 0.5 s): about 33 minutes. `SOAK_LIFETIMES=20 make soak` checks it in ~2 minutes.

Why 4 s and not 2: the stand-in API server stamps `iat`/`exp` in whole seconds, so a "2 s" token
may really live 1.0 s, and the refresher's minimum request timeout is 1 s: a hung request near the
end of such a token would be a lapse caused by the time compression, not by the refresher.

After each successful refresh the test injects, with probability SOAK_FAULT_RATE (default 0.3),
one fault drawn from the reliability matrix (5xx, 429, reset, hang, garbage, bad tokens, 401-422,
an outage of half a lifetime), and measures the recovery. A reader checks the token file every
~2 ms throughout. Results go to $RELIABILITY_RECORD, else build/soak.jsonl, for
tools/reliability_report.py.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from refresher.devserver import Fault
from tests.e2e import RefresherProcess
from tests.reliability import (
    RECORD_ENV,
    RECOVERY_SLACK,
    Lab,
    PauseDetector,
    append_records,
    log_time,
    recovery,
    tracebacks,
)

LIFETIMES = int(os.environ.get("SOAK_LIFETIMES", "500"))
LIFETIME = float(os.environ.get("SOAK_LIFETIME", "4"))
REFRESH = float(os.environ.get("SOAK_REFRESH", "0.5"))
FAULT_RATE = float(os.environ.get("SOAK_FAULT_RATE", "0.3"))
SEED = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
DEFAULT_RECORD = Path(__file__).resolve().parents[2] / "build" / "soak.jsonl"
MODE = 0o640

FAULTS: tuple[tuple[str, Fault | None, int], ...] = (
    ("500", Fault.status(500), 2), ("502", Fault.status(502), 2),
    ("503", Fault.status(503), 2), ("504", Fault.status(504), 2),
    ("429", Fault.status(429, retry_after=1), 1), ("reset", Fault.reset(), 2),
    ("hang", Fault.hang(10), 1), ("garbage", Fault.garbage(), 2),
    ("expired_token", Fault.expired_token(), 1), ("wrong_audience", Fault.wrong_audience(), 1),
    ("wrong_subject", Fault.wrong_subject(), 1), ("401", Fault.status(401), 1),
    ("403", Fault.status(403), 1), ("404", Fault.status(404), 1), ("422", Fault.status(422), 1),
    ("outage", None, 0),
)

pytestmark = pytest.mark.soak


@pytest.mark.timeout(int(LIFETIMES * LIFETIME * 1.5) + 300)
def test_soak_drain_with_random_faults_never_lapses(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    lab = Lab(tmp_path, test="tests/soak/test_soak.py::test_soak_drain_with_random_faults")
    row = lab.scenario(f"soak: {LIFETIMES} lifetimes of {LIFETIME:g}s", group="9. soak",
                       injected=f"random matrix faults after {FAULT_RATE:.0%} of refreshes")
    injected: Counter[str] = Counter()
    timeline: list[tuple[float, str]] = []  # (wall clock, fault) of every injection
    slow: list[str] = []
    leaks = 0
    started = time.monotonic()
    pauses = PauseDetector()
    pauses.start()
    try:
        server = lab.server()
        pod = lab.pod(server)
        proc = lab.start(pod, {
            "expiration_duration": f"{LIFETIME:g}s", "refresh_interval": f"{REFRESH * 1000:g}ms",
            "sleep": "50ms", "token_file_mode": f"{MODE:04o}", "log_level": "info"})
        proc.wait_event("started")
        reader = lab.reader(pod.token_file, mode=MODE)
        proc.send(signal.SIGTERM)
        proc.wait_event("refresh_succeeded")
        deadline = started + LIFETIMES * LIFETIME
        while time.monotonic() < deadline:
            mark = proc.mark()
            proc.wait_event("refresh_succeeded", start=mark)  # a fault starts after a success
            if rng.random() >= FAULT_RATE:
                continue
            name, fault, count = rng.choice(FAULTS)
            injected[name] += 1
            timeline.append((time.time(), name))
            mark = proc.mark()
            if fault is None:
                server.set_down(True)
                threading.Event().wait(LIFETIME / 2)  # the injected outage length
                server.set_down(False)
            else:
                server.inject(fault, count=count)
            rec = recovery(proc, start=mark, timeout=60)
            row.recovery.append(round(rec.seconds, 3))
            if not rec.within_one_step:
                slow.append(f"{name}: {rec.seconds:.2f}s > {rec.retry_in}s + {RECOVERY_SLACK}s")
        (pod.shared / "shutdown").write_text("")
        assert proc.wait_exit() == 0
        reader.stop()
        row.absorb(reader, server.issued_tokens())
        # A read right after the whole machine stopped (a VM snapshot) is no refresher lapse:
        # nothing ran while the token's few seconds of life went by.
        stops = pauses.stop()
        explained = [t for t in reader.check.lapse_times
                     if any(resumed <= t <= resumed + REFRESH + 1.0 for _, resumed, _ in stops)]
        unexplained = sorted(set(reader.check.lapse_times) - set(explained))
        if unexplained:
            _explain(proc, unexplained[0], timeline)
        row.count = sum(injected.values())
        refreshes = len(proc.events("refresh_succeeded"))
        failures = len(proc.events("refresh_failed"))
        crashed = tracebacks(proc.output())
    finally:
        pauses.stop()
        leaks = lab.close()
        row.leaks = leaks
        row.seconds = round(time.monotonic() - started, 1)
    recoveries = row.recovery or [0.0]
    row.lapses = len(unexplained)
    machine = "; ".join(f"machine stopped {resumed - began:.1f}s (monotonic {mono:.1f}s) at "
                        f"{time.strftime('%H:%M:%S', time.gmtime(began))} UTC"
                        for began, resumed, mono in stops)
    row.notes = (f"seed {SEED}; {refreshes} refreshes, {failures} failures; "
                 + ", ".join(f"{k} x{v}" for k, v in sorted(injected.items()))
                 + (f"; {machine}; {len(explained)} expired reads right after it "
                    "(not counted)" if stops else ""))
    append_records(os.environ.get(RECORD_ENV) or _default_record(), [row])
    print(f"\nsoak: {LIFETIMES} lifetimes of {LIFETIME:g}s in {row.seconds:.0f}s, seed {SEED}\n"
          f"  lapses {row.lapses}, torn reads {row.torn}, leaks {leaks}, reads {row.reads}\n"
          f"  refreshes {refreshes}, failures {failures}, faults injected {row.count}\n"
          f"  recovery max {max(recoveries):.2f}s p50 {statistics.median(recoveries):.2f}s\n"
          f"  {row.notes}")
    assert row.lapses == 0 and row.torn == 0, reader.check.summary()  # unexplained ones
    assert leaks == 0 and not crashed
    assert not slow, slow


def _explain(proc: RefresherProcess, at: float, timeline: list[tuple[float, str]]) -> None:
    """Print what the refresher logged, and what was injected, around a lapse."""
    print(f"\nfirst lapse at {at:.3f}; faults injected in the 10 s before: "
          f"{[(round(t - at, 2), n) for t, n in timeline if at - 10 <= t <= at]}")
    for record in list(proc.lines):
        if at - 6 <= log_time(record) <= at + 2:
            print(f"  {log_time(record) - at:+.3f} {record.get('event')}: "
                  f"{str(record.get('message'))[:120]}")


def _default_record() -> str:
    DEFAULT_RECORD.parent.mkdir(parents=True, exist_ok=True)
    return str(DEFAULT_RECORD)
