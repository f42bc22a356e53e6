"""4. Herd: many pods on one node drained at once, against one API server.

Every pod has its own service account, so each TokenRequest in `server.requests` names the pod it
came from. All processes are started, left to finish start-up, then signalled in one loop. A
rename of `token` in a pod's shared directory (inotify) marks its fresh token. A second herd runs
against a server that answers 503 for the first `herd_down` seconds: the retry arrivals show
whether retries are spread (the refresher's equal jitter) or synchronised (the baseline's fixed
sleep).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable

from refresher.durations import parse_duration

from . import procs
from .cluster import Cluster, Pod
from .inotify import Inotify
from .latency import START_TIMEOUT
from .plan import Plan
from .results import Herd, HerdRun

FRESH_TIMEOUT = 30.0
SETTLE_TIMEOUT = 90.0
QUIET = 0.3  # s without CPU use, for every process of the herd
MAX_ATTEMPTS = "10"
_SA_PATH = re.compile(r"/serviceaccounts/([^/]+)/token$")

Say = Callable[[str], None]


def _one(plan: Plan, *, ours: bool, down: float, say: Say) -> HerdRun:
    label = ("refresher" if ours else "baseline") + (" (API down first)" if down else "")
    run = HerdRun(label=label, pods=plan.herd, down=down)
    sleep = parse_duration(plan.herd_sleep)
    children: list[procs.Child] = []
    with Cluster("herd") as cluster, Inotify() as ino:
        try:
            pods: list[Pod] = [cluster.pod(f"herd-{i}", service_account=f"app-{i}")
                               for i in range(plan.herd)]
            by_sa = {p.service_account: p.name for p in pods}
            for pod in pods:
                if ours:
                    args = pod.refresher_args(sleep=plan.herd_sleep, max_attempts=MAX_ATTEMPTS)
                    children.append(procs.refresher(args, name=pod.name))
                else:
                    args = pod.baseline_args(sleep=f"{sleep:g}", max_attempts=MAX_ATTEMPTS)
                    children.append(procs.baseline(args, name=pod.name))
            for child in children:
                child.wait_event("started", timeout=START_TIMEOUT * 3)
            run.settle = procs.settle([c.pid for c in children], quiet=QUIET,
                                      timeout=SETTLE_TIMEOUT, step=0.05)
            dirs = {str(p.shared): p.name for p in pods}
            for d in dirs:
                ino.watch(d)
            ino.drain()
            if down:
                cluster.server.set_down(True)
            t0 = time.monotonic()
            for child in children:
                child.signal(signal.SIGTERM)
            run.signal_spread = time.monotonic() - t0
            seen: dict[str, float] = {}
            if down:
                seen = ino.wait_for("token", timeout=max(0.0, t0 + down - time.monotonic()))
                cluster.server.set_down(False)
            seen.update(ino.wait_for("token", timeout=FRESH_TIMEOUT,
                                     directories=set(dirs) - seen.keys()))
            run.fresh = {dirs[d]: at - t0 for d, at in seen.items()}
            time.sleep(0.05)  # the last answers are recorded before they are sent
            for record in cluster.server.requests:
                m = _SA_PATH.search(record.path)
                if m is None or record.method != "POST" or record.time < t0 - 1:
                    continue
                run.arrivals.append((record.time - t0, by_sa.get(m.group(1), "?"),
                                     record.status))
            run.arrivals.sort()
            run.peak_concurrency = cluster.server.peak_concurrency
        finally:
            procs.close_all(children)
    return run


def run(plan: Plan, say: Say) -> Herd:
    out = Herd()
    for ours in (True, False):
        for down in (0.0, plan.herd_down):
            who = "refresher" if ours else "baseline"
            say(f"  {plan.herd} x {who}" + (f", API down for {down:g}s" if down else ""))
            r = _one(plan, ours=ours, down=down, say=say)
            out.runs.append(r)
            if len(r.fresh) < r.pods:
                out.problems.append(f"{r.label}: only {len(r.fresh)}/{r.pods} pods got a "
                                    f"fresh token within {FRESH_TIMEOUT:.0f}s")
    return out
