"""`token-refresher demo`: the whole story on one machine, with no cluster.

A built-in development API server (HTTPS, the real TokenRequest route, RS256 tokens), a simulated
kubelet rotating a projected token, the real refresher process beside it, then the pod terminates:
kubelet stops rotating, the refresher gets SIGTERM and takes over, its tokens outlive kubelet's
last one, and the app's `shutdown` file ends it. The clock is compressed: lifetimes are seconds.
A reader samples the token file every 10 ms, like an app that may open it at any instant; the
timeline at the end shows that it never lapsed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .claims import decode_claims
from .config import Config
from .errors import TokenError

NAMESPACE, SERVICE_ACCOUNT, POD = "demo", "drain-app", "drain-app-0"
AUDIENCE = "sts.amazonaws.com"
KUBELET_LIFETIME = 8  # s: kubelet rotates at 80% (6.4 s)
REFRESH_INTERVAL = 0.8  # s: activation threshold 1.5 x 0.8 = 1.2 s < 1.6 s left at rotation
EXPIRATION = 4  # s: lifetime of the refresher's own tokens
SAMPLE = 0.01  # s between reads of the token file
KUBELET_ROTATIONS = 1  # before the pod terminates
DRAIN_PAST_KUBELET = 2.0  # s the drain lasts beyond the expiry of kubelet's last token


@dataclass
class Segment:
    source: str
    start: float
    end: float
    tokens: set[int] = field(default_factory=set)  # hashes only: never kept as text
    reads: int = 0
    bad: int = 0


class Sampler(threading.Thread):
    """Reads the token file every SAMPLE seconds and builds the timeline."""

    def __init__(self, path: Path, now: float, clock_offset: float = 0.0) -> None:
        super().__init__(name="demo-sampler", daemon=True)
        self.path, self.t0 = path, now
        self.segments: list[Segment] = []
        self.lapses: list[tuple[float, str]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(SAMPLE):
            self.sample()

    def sample(self) -> None:
        t = time.time() - self.t0
        problem, source, exp, text = None, "missing", None, ""
        try:
            source = "kubelet (symlink)" if self.path.is_symlink() else "refresher (own file)"
            text = self.path.read_text()
            exp = decode_claims(text).expires_at
            if exp <= time.time():
                problem = "expired"
        except FileNotFoundError:
            problem = "missing"
        except (OSError, TokenError, UnicodeDecodeError):
            problem = "empty, partial or malformed"
        if not self.segments or self.segments[-1].source != source:
            self.segments.append(Segment(source, t, t))
        seg = self.segments[-1]
        seg.end, seg.reads = t, seg.reads + 1
        if exp is not None:
            seg.tokens.add(hash(text))
        if problem is not None:
            seg.bad += 1
            self.lapses.append((t, problem))

    def stop(self) -> None:
        self._stopped.set()
        self.join(5)


class Story:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.t0 = time.time()
        self._lock = threading.Lock()

    def say(self, who: str, text: str) -> None:
        with self._lock:
            self.out.write(f"[{time.time() - self.t0:6.2f}s] {who:<9} {text}\n")
            self.out.flush()


def _follow(proc: subprocess.Popen[str], story: Story, events: list[dict[str, object]],
            cond: threading.Condition) -> None:
    assert proc.stdout is not None
    shown = {"started", "state_change", "refresh_succeeded", "refresh_failed", "trigger",
             "token_changed", "exiting", "token_file_linked", "signal"}
    for line in proc.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            story.say("refresher", line.rstrip())
            continue
        if record.get("event") in shown:
            text = str(record.get("message"))
            if record.get("event") == "refresh_succeeded":
                text += f" (valid for {record.get('expires_in_seconds')}s)"
            story.say("refresher", text)
        with cond:
            events.append(record)
            cond.notify_all()


def _wait_event(events: list[dict[str, object]], cond: threading.Condition, name: str,
                count: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with cond:
        while sum(1 for e in events if e.get("event") == name) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"demo: the refresher did not log {name!r} in {timeout}s")
            cond.wait(left)


def demo_command(config: Config, out: IO[str] = sys.stdout) -> int:
    try:
        from .devkubelet import ProjectedVolume, SimulatedKubelet
        from .devserver import DevApiServer
    except ImportError as exc:  # pragma: no cover
        print(f"token-refresher demo: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("refresher.devserver").setLevel(logging.WARNING)
    story = Story(out)
    with tempfile.TemporaryDirectory(prefix="token-refresher-demo-") as tmp, \
            DevApiServer(min_expiration_seconds=1) as server:
        return _run(server, Path(tmp), story, ProjectedVolume, SimulatedKubelet)


def _run(server: object, root: Path, story: Story, volume_cls: type,
         kubelet_cls: type) -> int:
    from .devserver import DevApiServer

    assert isinstance(server, DevApiServer)
    server.add_service_account(NAMESPACE, SERVICE_ACCOUNT)
    pod_uid = server.add_pod(NAMESPACE, POD, SERVICE_ACCOUNT)
    story.say("apiserver", f"development API server at {server.url} (TLS, RS256 tokens)")
    projected, shared = root / "projected", root / "shared"
    projected.mkdir()
    own = server.issue_token(NAMESPACE, SERVICE_ACCOUNT, audiences=list(server.api_audiences),
                             expiration_seconds=3600, bound_pod=POD, bound_pod_uid=pod_uid)
    kubeconfig = server.write_kubeconfig(root / "kubeconfig", token=own.token)

    rotations = threading.Semaphore(0)
    kubelet = kubelet_cls(
        server, volume_cls(str(projected)), namespace=NAMESPACE, service_account=SERVICE_ACCOUNT,
        audiences=(AUDIENCE,), expiration_seconds=KUBELET_LIFETIME, pod_name=POD,
        pod_uid=pod_uid, sync_period=0.05,
        on_rotate=lambda n: _rotated(story, rotations, n))
    kubelet.start()
    story.say("kubelet", f"projected a {KUBELET_LIFETIME}s token for {NAMESPACE}/"
                         f"{SERVICE_ACCOUNT}, rotating at 80% of its life")

    token_file = shared / "token"
    args = [
        sys.executable, "-m", "refresher", "run", f"--kubeconfig={kubeconfig}",
        f"--default_token_file={projected / 'token'}", f"--token_file={token_file}",
        f"--namespace={NAMESPACE}", f"--service_account={SERVICE_ACCOUNT}",
        f"--pod_name={POD}", f"--pod_uid={pod_uid}", f"--token_audience={AUDIENCE}",
        f"--expiration_duration={EXPIRATION}s", f"--refresh_interval={REFRESH_INTERVAL}s",
        "--sleep=200ms", "--log_level=info",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    events: list[dict[str, object]] = []
    cond = threading.Condition()
    follower = threading.Thread(target=_follow, args=(proc, story, events, cond),
                                name="demo-follower", daemon=True)
    follower.start()
    sampler = Sampler(token_file, story.t0)
    try:
        _wait_event(events, cond, "started")
        sampler.start()
        for _ in range(KUBELET_ROTATIONS):
            if not rotations.acquire(timeout=KUBELET_LIFETIME * 2):
                raise RuntimeError("demo: kubelet did not rotate")
        kubelet.stop_rotating()
        last_kubelet_exp = kubelet.expires_at
        story.say("kubelet", "pod is terminating: kubelet stops rotating (kubernetes#116481); "
                             f"its last token expires at +{last_kubelet_exp - story.t0:.2f}s")
        story.say("kubelet", "sends SIGTERM to the classic sidecar")
        proc.send_signal(signal.SIGTERM)
        _wait_event(events, cond, "refresh_succeeded")
        drain = last_kubelet_exp + DRAIN_PAST_KUBELET - time.time()
        story.say("app", f"preStop hook drains for {drain:.1f}s, past the expiry of kubelet's "
                         "last token")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=drain)  # the refresher exiting early would be a failure
        story.say("app", "drained: writes the `shutdown` file")
        (shared / "shutdown").write_text("")
        code = proc.wait(timeout=10)
        story.say("refresher", f"exited with status {code}")
    finally:
        sampler.stop()
        kubelet.stop()
        kubelet.join(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        follower.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
    reviewed = [server.review_token(t, [AUDIENCE]).authenticated
                for t in _refresher_tokens(server, own.token, kubelet)]
    return _report(story, sampler, last_kubelet_exp, reviewed, code)


def _rotated(story: Story, rotations: threading.Semaphore, count: int) -> None:
    story.say("kubelet", f"rotated the projected token (#{count})")
    rotations.release()


def _refresher_tokens(server: object, own: str, kubelet: object) -> list[str]:
    from .devserver import DevApiServer

    assert isinstance(server, DevApiServer)
    tokens = []
    for token in server.issued_tokens():
        try:
            claims = decode_claims(token)
        except TokenError:
            continue
        if token != own and AUDIENCE in claims.audiences and \
                claims.expires_at - (claims.issued_at or 0) == EXPIRATION:
            tokens.append(token)
    return tokens


def _report(story: Story, sampler: Sampler, kubelet_exp: float, reviewed: list[bool],
            code: int) -> int:
    out = story.out
    total = sum(s.reads for s in sampler.segments)
    out.write(f"\nTimeline of the token file the app reads ({total} reads, one every "
              f"{SAMPLE * 1000:.0f} ms):\n")
    out.write(f"  {'from':>8} {'to':>8}  {'served by':<22} {'tokens':>6} {'reads':>6} "
              f"{'bad':>4}\n")
    for s in sampler.segments:
        out.write(f"  {s.start:7.2f}s {s.end:7.2f}s  {s.source:<22} {len(s.tokens):>6} "
                  f"{s.reads:>6} {s.bad:>4}\n")
    out.write(f"\nKubelet's last token expired at +{kubelet_exp - story.t0:.2f}s: without the "
              "refresher the app would have read an expired token from then on.\n")
    out.write(f"Refreshed tokens accepted by TokenReview for {AUDIENCE}: "
              f"{sum(reviewed)}/{len(reviewed)}\n")
    out.write(f"Lapses (missing, empty, partial or expired reads): {len(sampler.lapses)}\n")
    ok = not sampler.lapses and reviewed and all(reviewed) and code == 0
    out.write("RESULT: the token file never lapsed.\n" if ok else "RESULT: FAILED\n")
    out.flush()
    return 0 if ok else 1
