"""1. Reaction latency: trigger -> fresh token renamed into place, shutdown -> exit, `..data` swap
-> `token_changed` logged; beside the bare API round trip measured in the same run.

SIGTERM and `activate` switch a refresher to active for good, so each sample is a fresh process:
start it, wait for `started`, wait until it has used no CPU for 0.2 s (its API client is prepared
in the background after `started`; a real SIGTERM comes minutes or days later), trigger, observe
the rename of `token` with inotify, then create `shutdown` and time the exit with a pidfd. The
`..data` swaps reuse one passive process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from refresher.claims import decode_claims
from refresher.errors import TokenError

from . import procs
from .cluster import AUDIENCE, NS, Cluster, Pod
from .inotify import Inotify
from .plan import Plan
from .results import Latency

START_TIMEOUT = 30.0
TOKEN_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0
QUIET = 0.2  # s without CPU use that counts as settled
PAUSE = 0.02  # s between samples (plus up to as much again at random)

Say = Callable[[str], None]


def touch(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.close(fd)


def _fresh(pod: Pod, wall_at_trigger: float) -> str | None:
    """None if token_file is our own, fresh token; else what is wrong."""
    path = pod.token_file
    if path.is_symlink():
        return "token file is still the symlink"
    try:
        claims = decode_claims(path.read_text())
    except (OSError, TokenError) as exc:
        return f"unreadable token: {exc}"
    if claims.issued_at is None or claims.issued_at < int(wall_at_trigger) - 1:
        return "token was not issued after the trigger"
    return None


def roundtrip(cluster: Cluster, pod: Pod, plan: Plan, out: Latency) -> None:
    """The official client in its own process, warm and cold; curl as the baseline runs it."""
    cmd = [sys.executable, "-m", "bench.roundtrip", f"--kubeconfig={pod.kubeconfig}",
           f"--namespace={NS}", f"--service_account={pod.service_account}",
           f"--audience={AUDIENCE}", f"--warm={plan.roundtrip_warm}",
           f"--cold={plan.roundtrip_cold}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise procs.BenchError(f"bench.roundtrip failed: {done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    out.roundtrip_warm = [float(x) for x in data["warm"]]
    out.roundtrip_cold = [float(x) for x in data["cold"]]
    out.roundtrip_first = [float(x) for x in data["first"]]
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"audiences": [AUDIENCE], "expirationSeconds": 7200}})
    credential = pod.credential.read_text().strip()
    url = (f"{cluster.server.url}/api/v1/namespaces/{NS}/serviceaccounts/"
           f"{pod.service_account}/token")
    for _ in range(plan.curl_samples):
        start = time.perf_counter()
        res = subprocess.run(
            ["curl", "-sS", "--fail", "--max-time", "10", "--cacert", cluster.server.ca_file,
             "-H", f"Authorization: Bearer {credential}", "-H", "Content-Type: application/json",
             "-X", "POST", "--data", body, url], capture_output=True, check=False, timeout=30)
        elapsed = time.perf_counter() - start
        if res.returncode != 0 or b'"token"' not in res.stdout:
            out.problems.append(f"curl round trip failed: exit {res.returncode}")
            continue
        out.curl.append(elapsed)
        time.sleep(0.005)


def write_probe(directory: str, samples: int, out: Latency) -> None:
    """What one atomic write costs on this filesystem: temp file, fsync, rename, dir fsync."""
    target = os.path.join(directory, "probe")
    data = b"x" * 900  # about a token's size
    for i in range(samples):
        temp = os.path.join(directory, f".probe-{i}.tmp")
        start = time.perf_counter()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, target)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        out.write_atomic.append(time.perf_counter() - start)
        time.sleep(0.005)
    os.unlink(target)


def _ours_sample(pod: Pod, kind: str, ino: Inotify, out: Latency) -> None:
    pod.reset_shared()
    shared = str(pod.shared)
    ino.watch(shared)
    child = procs.refresher(pod.refresher_args(), name=f"{pod.name}-{kind}")
    try:
        started = child.wait_event("started", timeout=START_TIMEOUT)
        out.startup.append(started.at - child.exec_at)
        if kind != "sigterm_at_start":
            child.settle(quiet=QUIET)
            out.settle.append(time.monotonic() - child.exec_at - QUIET)
        mark = child.mark()
        ino.drain()
        wall = time.time()
        t0 = time.monotonic()
        if kind == "activate":
            touch(os.path.join(shared, "activate"))
        else:
            child.signal(signal.SIGTERM)
        seen = ino.wait_for("token", timeout=TOKEN_TIMEOUT, directories={shared})
        if shared not in seen:
            out.problems.append(f"{kind}: no fresh token within {TOKEN_TIMEOUT}s")
            return
        problem = _fresh(pod, wall)
        if problem is not None:
            out.problems.append(f"{kind}: {problem}")
            return
        getattr(out, kind).append(seen[shared] - t0)
        done = child.wait_event("refresh_succeeded", timeout=TOKEN_TIMEOUT, start=mark)
        out.refresh_work.append(float(done.record.get("duration_seconds", "nan")))
        mark = child.mark()
        t1 = time.monotonic()
        touch(os.path.join(shared, "shutdown"))
        exited = child.wait_exit(EXIT_TIMEOUT)
        if exited is None or child.returncode != 0:
            out.problems.append(f"shutdown: exit {child.returncode} after {EXIT_TIMEOUT}s")
            return
        out.shutdown.append(exited - t1)
        exiting = child.wait_event("exiting", timeout=EXIT_TIMEOUT, start=mark)
        out.shutdown_logged.append(exiting.at - t1)
        out.teardown.append(exited - exiting.at)
    finally:
        child.close()


def ours(pod: Pod, plan: Plan, out: Latency, say: Say) -> None:
    kinds = ["sigterm", "activate"] * plan.trigger_samples + \
        ["sigterm_at_start"] * plan.at_start_samples
    random.Random(6).shuffle(kinds)
    with Inotify() as ino:
        for i, kind in enumerate(kinds, 1):
            _ours_sample(pod, kind, ino, out)
            if i % 20 == 0:
                say(f"  refresher: {i}/{len(kinds)} trigger samples")
            time.sleep(PAUSE * (1 + random.random()))


def token_changed(cluster: Cluster, pod: Pod, plan: Plan, out: Latency) -> None:
    """One passive refresher; kubelet-style `..data` swaps; time to the `token_changed` line."""
    pod.reset_shared()
    tokens = [cluster.kubelet_token(pod) for _ in range(plan.token_changed_samples)]
    child = procs.refresher(pod.refresher_args(), name=f"{pod.name}-passive")
    try:
        child.wait_event("started", timeout=START_TIMEOUT)
        child.settle(quiet=QUIET)
        for token in tokens:
            mark = child.mark()
            t0 = time.monotonic()
            pod.volume.write(token)
            out.swap_write.append(time.monotonic() - t0)
            line = child.wait_event("token_changed", timeout=TOKEN_TIMEOUT, start=mark)
            out.token_changed.append(line.at - t0)
            time.sleep(PAUSE * (1 + random.random()))
        touch(str(pod.shared / "shutdown"))
        if child.wait_exit(EXIT_TIMEOUT) is None:
            out.problems.append("passive refresher did not exit on `shutdown`")
    finally:
        child.close()


def baseline_sigterm(pod: Pod, plan: Plan, out: Latency) -> None:
    """Fresh baseline per sample: started, in its `wait`, SIGTERM -> curl -> mv."""
    with Inotify() as ino:
        for _ in range(plan.baseline_sigterm_samples):
            pod.reset_shared()
            shared = str(pod.shared)
            ino.watch(shared)
            child = procs.baseline(pod.baseline_args(shutdown_interval=str(plan.poll_interval)),
                                   name=f"{pod.name}-baseline")
            try:
                started = child.wait_event("started", timeout=START_TIMEOUT)
                out.base_startup.append(started.at - child.exec_at)
                child.settle(quiet=QUIET)  # in `wait` on its background sleep
                ino.drain()
                wall = time.time()
                t0 = time.monotonic()
                child.signal(signal.SIGTERM)
                seen = ino.wait_for("token", timeout=TOKEN_TIMEOUT, directories={shared})
                if shared not in seen:
                    out.problems.append("baseline sigterm: no fresh token")
                    continue
                problem = _fresh(pod, wall)
                if problem is not None:
                    out.problems.append(f"baseline sigterm: {problem}")
                    continue
                out.base_sigterm.append(seen[shared] - t0)
            finally:
                child.close()
            time.sleep(PAUSE * (1 + random.random()))


def run(plan: Plan, say: Say) -> Latency:
    out = Latency(poll_interval=plan.poll_interval)
    with Cluster("latency") as cluster:
        pod = cluster.pod("latency")
        say("  bare API round trip (official client, own process), curl, an atomic write")
        roundtrip(cluster, pod, plan, out)
        write_probe(str(pod.shared), plan.roundtrip_warm, out)
        say(f"  refresher: {plan.trigger_samples} x SIGTERM, {plan.trigger_samples} x activate, "
            f"{plan.at_start_samples} x SIGTERM at `started` (one process each)")
        ours(pod, plan, out, say)
        say(f"  refresher: {plan.token_changed_samples} x `..data` swap")
        token_changed(cluster, cluster.pod("swaps"), plan, out)
        say(f"  baseline: {plan.baseline_sigterm_samples} x SIGTERM")
        baseline_sigterm(cluster.pod("baseline"), plan, out)
    return out
