"""3. Footprint over time: RSS and open fds across many refreshes on a compressed clock.

The refresher runs with `--expiration_duration=2s` and a `--refresh_interval` of a millisecond, so
each refresh follows the previous one as soon as the API answers (the loop is bound by the round
trip). RSS (VmRSS) and the fd count (/proc/PID/fd) are sampled every `sample_every` refreshes,
counted from the `refresh_succeeded` lines as the bench reads them. Growth is the median of the
last tenth minus the median of the tenth right after warm-up.

It also measures what the refresher's RSS is made of: the interpreter, its own modules, and each
step of the `kubernetes` client import, each in a fresh interpreter.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from . import procs
from .cluster import Cluster, Pod
from .latency import EXIT_TIMEOUT, START_TIMEOUT, touch
from .plan import Plan
from .procfs import TreeMeter, open_fds, rss_mb
from .results import Footprint, FootprintRun

Say = Callable[[str], None]
RATE_FLOOR = 5.0  # refreshes/s below which the run is cut short
MAX_SECONDS = 600.0  # and never longer than this

_MINTER = ("import sys; import refresher.daemon; from refresher.config import parse_command_line; "
           "from refresher.kubeapi import TokenMinter; "
           "TokenMinter(parse_command_line(sys.argv[1:], {})[1])")
IMPORT_STEPS = [
    ("python interpreter", "pass"),
    ("+ refresher daemon modules (with watchdog, logging, ...)", "import refresher.daemon"),
    ("+ kubernetes package (client, models, config loader)",
     "import refresher.daemon; import kubernetes.client; import kubernetes.config"),
    ("+ the API client as `refresher.kubeapi.TokenMinter` builds it", _MINTER),
    ("+ kubernetes.client.CoreV1Api on top (reference)",
     _MINTER + "; from kubernetes.client.api import core_v1_api"),
]


def import_costs(pod: Pod) -> list[tuple[str, float]]:
    """RSS after each step, each in a fresh interpreter."""
    out = []
    probe = ("; print(int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]))")
    argv = ["run", *pod.refresher_args()]
    for label, code in IMPORT_STEPS:
        done = subprocess.run([sys.executable, "-c", code + probe, *argv], capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode == 0:
            out.append((label, int(done.stdout.split()[-1]) / 1024))
    return out


class _Counter:
    def __init__(self, ok: str, failed: str) -> None:
        self.ok, self.failed = ok, failed
        self.refreshes = 0
        self.failures = 0
        self.changed = threading.Event()

    def __call__(self, line: procs.Line) -> None:
        if line.event == self.ok:
            self.refreshes += 1
            self.changed.set()
        elif line.event == self.failed:
            self.failures += 1


def _measure(child: procs.Child, counter: _Counter, run: FootprintRun, target: int,
             every: int, *, tree: bool, say: Say) -> None:
    meter = TreeMeter(child.pid)
    start = time.monotonic()
    next_mark = 0
    while counter.refreshes < target:
        counter.changed.wait(1.0)
        counter.changed.clear()
        n = counter.refreshes
        if n >= next_mark:
            sample = meter.sample()
            mem = sample.rss_mb if tree else rss_mb(child.pid)
            run.points.append((n, mem, open_fds(child.pid)))
            next_mark = n - n % every + every
            if next_mark % (every * 20) == 0:
                say(f"  {run.label}: {n} refreshes, RSS {mem:.1f} MiB")
        elapsed = time.monotonic() - start
        if (elapsed > 10 and n / elapsed < RATE_FLOOR) or elapsed > MAX_SECONDS:
            raise procs.BenchError(f"{run.label}: only {n} refreshes in {elapsed:.0f}s")
        if child.returncode is not None:
            raise procs.BenchError(f"{run.label}: exited with {child.returncode}")
    run.seconds = time.monotonic() - start
    run.refreshes = counter.refreshes
    run.failures = counter.failures


def run_ours(plan: Plan, say: Say, imports: list[tuple[str, float]] | None = None
             ) -> FootprintRun:
    run = FootprintRun("refresher", plan.refresh_interval,
                       warmup=int(plan.refreshes * plan.warmup_fraction))
    counter = _Counter("refresh_succeeded", "refresh_failed")
    with Cluster("footprint") as cluster:
        pod = cluster.pod("footprint")
        if imports is not None:
            imports.extend(import_costs(pod))
        child = procs.refresher(
            pod.refresher_args(refresh_interval=plan.refresh_interval,
                               expiration_duration="2s", sleep="100ms"),
            name="footprint", on_line=counter)
        try:
            child.wait_event("started", timeout=START_TIMEOUT)
            child.settle(quiet=0.2)
            run.points.append((0, rss_mb(child.pid), open_fds(child.pid)))
            child.signal(signal.SIGTERM)
            _measure(child, counter, run, plan.refreshes, plan.sample_every, tree=False,
                     say=say)
            touch(str(pod.shared / "shutdown"))
            if child.wait_exit(EXIT_TIMEOUT) is None:
                raise procs.BenchError("footprint: the refresher did not exit on `shutdown`")
        finally:
            child.close()
    return run


def run_baseline(plan: Plan, say: Say) -> FootprintRun:
    run = FootprintRun("baseline", "0.001", warmup=int(plan.baseline_refreshes *
                                                       plan.warmup_fraction))
    counter = _Counter("refreshed", "refresh_failed")
    every = max(1, plan.baseline_refreshes // 50)
    with Cluster("footprint-baseline") as cluster:
        pod = cluster.pod("footprint-baseline")
        child = procs.baseline(pod.baseline_args(refresh_interval="0.001",
                                                 expiration_seconds="2", shutdown_interval="1"),
                               name="footprint-baseline", on_line=counter)
        try:
            child.wait_event("started", timeout=START_TIMEOUT)
            run.points.append((0, TreeMeter(child.pid).sample().rss_mb, open_fds(child.pid)))
            child.signal(signal.SIGTERM)
            _measure(child, counter, run, plan.baseline_refreshes, every, tree=True, say=say)
        finally:
            child.close()
    return run


def run(plan: Plan, say: Say) -> Footprint:
    out = Footprint()
    say(f"  refresher: {plan.refreshes} refreshes, --refresh_interval={plan.refresh_interval} "
        "--expiration_duration=2s")
    out.ours = run_ours(plan, say, out.imports if plan.name != "smoke" else None)
    say(f"  baseline: {plan.baseline_refreshes} refreshes, --refresh_interval=0.001")
    out.baseline = run_baseline(plan, say)
    for r in (out.ours, out.baseline):
        if r.failures:
            out.problems.append(f"{r.label}: {r.failures} failed refreshes")
    return out
