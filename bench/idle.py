"""2. Idle cost: CPU, context switches and RSS of an idle refresher and an idle baseline.

Four processes idle side by side in one window of at least `idle_seconds`: the refresher passive,
the refresher active (SIGTERM, one refresh, next one in 1 h), the baseline passive and the
baseline active. Counters are read from /proc at the window's edges (and every 0.5 s, so the
baseline's short-lived children are seen).

The same window measures the baseline's poll-bound reactions, which take up to one
`--shutdown_interval` (the original polled once a minute): `pollers` baselines per trigger are
started evenly over one interval (so their polls have every phase), then `activate` or `shutdown`
is created for all of them at once; the latency is each one's rename (inotify) or exit (pidfd).
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import procs
from .cluster import Cluster, Pod
from .inotify import Inotify
from .latency import START_TIMEOUT, TOKEN_TIMEOUT, touch
from .plan import Plan
from .procfs import TreeMeter, TreeSample, ctx_switches, sched_ns, thread_ids
from .results import Idle, IdleProcess, Latency

SAMPLE_EVERY = 0.5  # s
SETTLE_AFTER = 0.5  # s after the last set-up step before the window opens

Say = Callable[[str], None]


@dataclass
class _Watched:
    label: str
    child: procs.Child
    meter: TreeMeter
    first: TreeSample | None = None
    last: TreeSample | None = None
    sched0: int = 0
    threads0: dict[int, int] | None = None
    rss_max: float = 0.0


@dataclass
class _Poller:
    kind: str  # "activate" or "shutdown"
    pod: Pod
    child: procs.Child | None = None
    triggered: float = 0.0
    done: float | None = None


def _start_idle_processes(cluster: Cluster, plan: Plan, out: list[_Watched]) -> None:
    """Start the four idle processes into `out` (the caller closes them, even on failure)."""
    for label in ("refresher passive", "refresher active"):
        pod = cluster.pod(label.replace(" ", "-"))
        child = procs.refresher(pod.refresher_args(), name=label)
        out.append(_Watched(label, child, TreeMeter(child.pid)))
    for label in ("baseline passive", "baseline active"):
        pod = cluster.pod(label.replace(" ", "-"))
        child = procs.baseline(pod.baseline_args(shutdown_interval=str(plan.poll_interval)),
                               name=label)
        out.append(_Watched(label, child, TreeMeter(child.pid)))
    for w in out:
        w.child.wait_event("started", timeout=START_TIMEOUT)
    for w in out:
        if w.label.endswith("active"):
            mark = w.child.mark()
            w.child.signal(signal.SIGTERM)
            done = "refresh_succeeded" if w.label.startswith("refresher") else "refreshed"
            w.child.wait_event(done, timeout=TOKEN_TIMEOUT, start=mark)
    for w in out:
        w.child.settle(quiet=0.3)


def run(plan: Plan, say: Say, latency: Latency | None) -> Idle:
    result = Idle()
    watched: list[_Watched] = []
    pollers: list[_Poller] = []
    with Cluster("idle") as cluster, Inotify() as ino:
        try:
            _start_idle_processes(cluster, plan, watched)
            template = cluster.pod("pollers")
            n = plan.pollers
            pollers = [_Poller("activate" if i % 2 == 0 else "shutdown",
                               template.sibling(f"poller-{i}")) for i in range(2 * n)]
            for p in pollers:
                if p.kind == "activate":
                    ino.watch(str(p.pod.shared))
            time.sleep(SETTLE_AFTER)
            say(f"  window of >= {plan.idle_seconds:.0f}s; {2 * n} baseline pollers "
                f"(--shutdown_interval={plan.poll_interval:g}s) started over one interval")
            _window(plan, watched, pollers, ino, result)
        finally:
            procs.close_all([w.child for w in watched] +
                            [p.child for p in pollers if p.child is not None])
    if latency is not None:
        for p in pollers:
            if p.done is None:
                result.problems.append(f"baseline {p.kind} poller never reacted")
                continue
            target = latency.base_activate if p.kind == "activate" else latency.base_shutdown
            target.append(p.done - p.triggered)
    return result


def _window(plan: Plan, watched: list[_Watched], pollers: list[_Poller], ino: Inotify,
            result: Idle) -> None:
    start = time.monotonic()
    for w in watched:
        w.first = w.meter.sample()
        w.sched0 = sched_ns(w.child.pid)
        w.threads0 = ctx_switches(w.child.pid)
    spawn_gap = plan.poll_interval / max(len(pollers), 1)
    trigger_at = start + plan.poll_interval + 0.5
    end = max(start + plan.idle_seconds, trigger_at)  # and every poller has reacted
    hard_end = trigger_at + plan.poll_interval + 10.0
    spawned = 0
    triggered = False
    next_sample = start
    by_dir = {str(p.pod.shared): p for p in pollers if p.kind == "activate"}
    while True:
        now = time.monotonic()
        pending = [p for p in pollers if p.done is None]
        if now >= end and (not pending or now >= hard_end):
            break
        if spawned < len(pollers) and now >= start + spawned * spawn_gap:
            p = pollers[spawned]
            p.child = procs.baseline(
                p.pod.baseline_args(shutdown_interval=str(plan.poll_interval)),
                name=f"poller-{spawned}")
            spawned += 1
            continue
        if not triggered and now >= trigger_at:
            for p in pollers:
                p.triggered = time.monotonic()
                touch(os.path.join(p.pod.shared, p.kind))
            triggered = True
            continue
        if now >= next_sample:
            for w in watched:
                w.last = w.meter.sample()
                w.rss_max = max(w.rss_max, w.last.rss_mb)
            next_sample += SAMPLE_EVERY
            continue
        deadlines = [next_sample, end]
        if spawned < len(pollers):
            deadlines.append(start + spawned * spawn_gap)
        if not triggered:
            deadlines.append(trigger_at)
        fds: dict[int, _Poller] = {}
        if triggered:
            for p in pending:
                if p.kind == "shutdown" and p.child is not None:
                    fds[p.child.pidfd] = p
        timeout = max(0.0, min(deadlines) - time.monotonic())
        ready, _, _ = select.select([ino.fd, *fds], [], [], timeout)
        at = time.monotonic()
        for fd in ready:
            if fd == ino.fd:
                for ev in ino.read(0):
                    poller = by_dir.get(ev.directory)
                    if poller is not None and ev.name == "token" and triggered and \
                            poller.done is None:
                        poller.done = ev.at
            else:
                poller = fds[fd]
                poller.done = at
                assert poller.child is not None
                poller.child.wait_exit(0)
    seconds = time.monotonic() - start
    for w in watched:
        final = w.meter.sample()
        assert w.first is not None and w.threads0 is not None
        threads1 = ctx_switches(w.child.pid)
        per_thread = {tid: threads1[tid] - w.threads0.get(tid, 0) for tid in threads1}
        result.processes.append(IdleProcess(
            label=w.label, seconds=seconds, cpu=final.cpu - w.first.cpu,
            sched_cpu=(sched_ns(w.child.pid) - w.sched0) / 1e9,
            switches=final.switches - w.first.switches, rss_mb=final.rss_mb,
            rss_max_mb=max(w.rss_max, final.rss_mb), threads=len(thread_ids(w.child.pid)),
            per_thread=per_thread))
