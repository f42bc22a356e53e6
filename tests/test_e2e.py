"""The real `token-refresher` process against the stand-in API server and a kubelet-like volume.

Each test maps to a numbered behaviour of the sidecar issue: start-up/init (1), passive (2),
active (3), failures (4), stop (5), logs (6). A reader thread checks the token file every few
milliseconds wherever continuity is claimed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from refresher.claims import decode_claims
from refresher.devserver import DevApiServer, Fault
from tests.e2e import (
    NS,
    SA,
    Pod,
    RefresherProcess,
    TokenReader,
    running,
    scan_for_leaks,
    stop_gracefully,
)
from tests.helpers import sa_token, wait_for


def review_ok(server: DevApiServer, path: Path, audience: str = "sts.amazonaws.com") -> bool:
    return server.review_token(path.read_text(), [audience]).authenticated


def assert_no_leaks(server: DevApiServer, *procs: RefresherProcess) -> None:
    text = "".join(p.output() for p in procs)
    assert scan_for_leaks(text, server.issued_tokens()) == [], "token material in the output"


# -- 1. start-up and init ------------------------------------------------------------------

def test_init_links_the_token_file_and_exits(pod: Pod) -> None:
    with running(pod, "init") as proc:
        assert proc.wait_exit() == 0
    assert pod.token_file.is_symlink()
    assert os.readlink(pod.token_file) == str(pod.default_token)
    assert pod.shared.is_dir()
    assert review_ok(pod.server, pod.token_file)


def test_init_keeps_a_valid_own_token_and_replaces_an_expired_one(pod: Pod) -> None:
    pod.shared.mkdir()
    own = pod.server.issue_token(NS, SA, audiences=["sts.amazonaws.com"],
                                 expiration_seconds=600).token
    pod.token_file.write_text(own)
    (pod.shared / ".token-refresher-token-dead.tmp").write_text("partial")
    with running(pod, "init") as proc:
        assert proc.wait_exit() == 0
    assert not pod.token_file.is_symlink() and pod.token_file.read_text() == own
    assert not (pod.shared / ".token-refresher-token-dead.tmp").exists()
    pod.token_file.write_text(sa_token(iat=1, exp=2))
    with running(pod, "init") as proc:
        assert proc.wait_exit() == 0
        proc.wait_event("token_file_replaced")
    assert pod.token_file.is_symlink()


def test_missing_default_token_is_a_clear_error(pod: Pod) -> None:
    with running(pod, "init", default_token_file=str(pod.root / "nope")) as proc:
        assert proc.wait_exit() == 1
        line = proc.wait_event("startup_failed")
    assert str(pod.root / "nope") in line["message"]
    assert not pod.token_file.exists()


@pytest.mark.parametrize(("flag", "value", "fragment"), [
    ("sleep", "20x", "--sleep: invalid duration '20x'"),
    ("refresh_interval", "1h", "--refresh_interval (1h0m0s) must be shorter"),
    ("token_file_mode", "0777", "--token_file_mode"),
])
def test_bad_configuration_exits_2_with_one_line(pod: Pod, flag: str, value: str,
                                                 fragment: str) -> None:
    with running(pod, **{flag: value}) as proc:  # type: ignore[arg-type]
        assert proc.wait_exit() == 2
        err = "".join(line for line in proc.raw if not line.startswith("{"))
    assert err.count("\n") == 1 and fragment in err


# -- 2. passive ------------------------------------------------------------------------------

def test_passive_follows_kubelet_without_api_calls_then_sigterm_activates(pod: Pod) -> None:
    reader = TokenReader(pod.token_file)
    with running(pod, refresh_interval="1s") as proc:
        proc.wait_event("started")
        assert pod.token_file.is_symlink()
        reader.start()
        mark = proc.mark()
        pod.kubelet_token(lifetime=3600)  # a `..data` swap
        proc.wait_event("token_changed", start=mark)
        assert pod.server.token_requests_count == 0  # passive: no API calls

        proc.send(signal.SIGTERM)
        proc.wait_event("state_change", to_state="active", reason="signal")
        first = proc.wait_event("refresh_succeeded")
        assert not pod.token_file.is_symlink()
        assert stat.S_IMODE(pod.token_file.stat().st_mode) == 0o644
        assert (pod.shared / "activate").is_file()
        assert review_ok(pod.server, pod.token_file)
        claims = decode_claims(pod.token_file.read_text())
        assert claims.issued_at is not None
        assert claims.expires_at - claims.issued_at == pytest.approx(20, abs=1)
        proc.wait_event("refresh_succeeded", start=proc.lines.index(first) + 1)
        (pod.shared / "shutdown").write_text("")
        assert proc.wait_exit() == 0
        proc.wait_event("state_change", to_state="stopping", reason="shutdown_file")
    report = reader.stop()
    assert report.anomalies == [] and report.reads > 100
    assert not (pod.shared / "shutdown").exists()
    assert_no_leaks(pod.server, proc)


@pytest.mark.parametrize(("iat_ago", "exp_in", "reason"), [
    (3200, 400, "stale_kubelet"),  # older than 85% of its lifetime: kubelet stopped rotating
    (100, 60, "expiry"),  # less than 1.5 x refresh_interval (60 s) left
])
def test_stale_or_expiring_kubelet_token_activates(pod: Pod, iat_ago: int, exp_in: int,
                                                   reason: str) -> None:
    now = time.time()
    pod.volume.write(sa_token(iat=now - iat_ago, exp=now + exp_in, ns=NS, sa=SA))
    with running(pod, refresh_interval="60s", expiration_duration="120s") as proc:
        proc.wait_event("state_change", to_state="active", reason=reason)
        proc.wait_event("refresh_succeeded")
    assert review_ok(pod.server, pod.token_file)


def test_activation_instant_is_scheduled_from_claims(pod: Pod) -> None:
    iat = int(time.time()) - 83
    # lifetime 100 s, issued 83 s ago: the 85% instant is about 2 s away, not now
    pod.volume.write(sa_token(iat=iat, exp=iat + 100, ns=NS, sa=SA))
    with running(pod, refresh_interval="1s") as proc:
        proc.wait_event("token_changed")
        proc.wait_event("started")
        assert time.time() < iat + 85  # still passive before the instant
        proc.wait_event("state_change", to_state="active", reason="stale_kubelet")
        assert time.time() >= iat + 85 - 0.05
        proc.wait_event("refresh_succeeded")


def test_activate_file_then_kill_and_restart_resumes_active(pod: Pod) -> None:
    reader = TokenReader(pod.token_file)
    with running(pod, refresh_interval="1s") as proc:
        proc.wait_event("started")
        reader.start()
        (pod.shared / "activate").write_text("")
        proc.wait_event("state_change", to_state="active", reason="activate_file")
        proc.wait_event("refresh_succeeded")
        proc.send(signal.SIGKILL)
        proc.wait_exit()
    with running(pod, refresh_interval="1s") as again:
        again.wait_event("token_file_kept")
        again.wait_event("state_change", to_state="active", reason="restart")
        again.wait_event("refresh_succeeded")
        assert stop_gracefully(again) == 0
    report = reader.stop()
    assert report.anomalies == []


# -- 3. active: continuity -------------------------------------------------------------------

def test_refreshes_keep_the_file_valid_for_a_reader(pod: Pod) -> None:
    reader = TokenReader(pod.token_file)
    with running(pod, "--token_file_mode=0640", refresh_interval="300ms",
                 expiration_duration="3s") as proc:
        proc.wait_event("started")
        reader.start()
        proc.send(signal.SIGTERM)
        wait_for(lambda: len(proc.events("refresh_succeeded")) >= 8, timeout=30,
                 what="8 refreshes")
        assert stat.S_IMODE(pod.token_file.stat().st_mode) == 0o640
        assert stop_gracefully(proc) == 0
    report = reader.stop()
    assert report.anomalies == []
    assert len(report.fingerprints) >= 8


def test_bound_to_pod(pod: Pod) -> None:
    uid = pod.server.add_pod(NS, "web-0", SA)
    with running(pod, pod_name="web-0", pod_uid=uid) as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        proc.wait_event("refresh_succeeded")
        claims = decode_claims(pod.token_file.read_text())
        assert (claims.pod_name, claims.pod_uid) == ("web-0", uid)
        assert review_ok(pod.server, pod.token_file)
        pod.server.delete_pod(NS, "web-0")
        assert not review_ok(pod.server, pod.token_file)
        assert stop_gracefully(proc) == 0


def test_wrong_pod_uid_is_logged_with_hint_and_never_crashes(pod: Pod) -> None:
    pod.server.add_pod(NS, "web-0", SA)
    with running(pod, pod_name="web-0", pod_uid="not-the-uid", sleep="50ms",
                 refresh_interval="500ms") as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        failed = proc.wait_event("refresh_failed", status=409)
        assert "--pod_uid" in failed["hint"]
        wait_for(lambda: len(proc.events("refresh_failed")) >= 3, what="slow retries")
        assert proc.proc.poll() is None
        assert pod.token_file.is_symlink()  # kubelet's token is still served
        assert stop_gracefully(proc) == 0


# -- 4. failures -----------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [
    Fault.status(503), Fault.status(500), Fault.reset(), Fault.garbage(),
    Fault.expired_token(), Fault.wrong_audience(), Fault.wrong_subject(),
    Fault.status(429, retry_after=1),
], ids=lambda f: f.name)
def test_transient_faults_are_retried_without_replacing_the_token(pod: Pod,
                                                                  fault: Fault) -> None:
    pod.server.inject(fault, count=2)
    reader = TokenReader(pod.token_file)
    with running(pod, sleep="100ms") as proc:
        proc.wait_event("started")
        reader.start()
        proc.send(signal.SIGTERM)
        proc.wait_event("refresh_failed", attempt=1)
        proc.wait_event("refresh_failed", attempt=2)
        assert pod.token_file.is_symlink()  # nothing invalid was written
        proc.wait_event("refresh_succeeded")
        assert review_ok(pod.server, pod.token_file)
        assert stop_gracefully(proc) == 0
    assert reader.stop().anomalies == []
    assert_no_leaks(pod.server, proc)


def test_retry_after_is_honoured(pod: Pod) -> None:
    pod.server.inject(Fault.status(429, retry_after=2), count=1)
    with running(pod, sleep="50ms") as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        failed = proc.wait_event("refresh_failed", status=429)
        assert failed["retry_in_seconds"] == pytest.approx(2.0)
        ok = proc.wait_event("refresh_succeeded")
        assert ok["time"] > failed["time"]
        assert stop_gracefully(proc) == 0


def test_hung_request_times_out_within_a_third_of_the_remaining_life(pod: Pod) -> None:
    now = time.time()
    pod.volume.write(sa_token(iat=now - 3590, exp=now + 9, ns=NS, sa=SA))
    pod.server.inject(Fault.hang(60), count=1)
    with running(pod, refresh_interval="1s") as proc:
        proc.wait_event("started")
        failed = proc.wait_event("refresh_failed", attempt=1)
        assert failed["status"] is None
        assert time.time() - now < 9  # gave up while the old token was still valid
        proc.wait_event("refresh_succeeded")
        assert stop_gracefully(proc) == 0


def test_forbidden_is_a_configuration_error_with_the_rbac_hint(pod: Pod) -> None:
    pod.server.revoke(NS, SA, SA)
    with running(pod, sleep="50ms", refresh_interval="500ms") as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        failed = proc.wait_event("refresh_failed", status=403)
        assert failed["level"] == "ERROR"
        assert "serviceaccounts/token" in failed["hint"]
        pod.server.grant(NS, SA, SA)
        proc.wait_event("refresh_succeeded", timeout=30)
        assert stop_gracefully(proc) == 0


def test_outage_shorter_than_token_life_never_lapses(pod: Pod) -> None:
    reader = TokenReader(pod.token_file)
    with running(pod, refresh_interval="500ms", expiration_duration="6s",
                 sleep="100ms") as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        proc.wait_event("refresh_succeeded")
        reader.start()
        pod.server.set_down(True)
        mark = proc.mark()
        wait_for(lambda: len(proc.events("refresh_failed")) >= 4, what="failures in outage")
        pod.server.set_down(False)
        recovered = proc.wait_event("refresh_succeeded", start=mark)
        last_failure = proc.events("refresh_failed")[-1]
        # back within one backoff step of the API answering again
        assert recovered["time"] >= last_failure["time"]
        assert stop_gracefully(proc) == 0
    report = reader.stop()
    assert report.anomalies == []


# -- 5. stop ---------------------------------------------------------------------------------

@pytest.mark.parametrize("active", [False, True], ids=["passive", "active"])
def test_shutdown_file_exits_promptly_in_any_state(pod: Pod, active: bool) -> None:
    with running(pod, shutdown_interval="1h") as proc:
        proc.wait_event("started")
        if active:
            proc.send(signal.SIGTERM)
            proc.wait_event("refresh_succeeded")
        (pod.shared / "shutdown").write_text("")
        assert proc.wait_exit(timeout=10) == 0
        leftover = proc.wait_event("exiting")["leftover_threads"]
        # right after start-up the worker may still be importing the API client in the
        # background; it is never waited for. Once a refresh is done it is idle and joins.
        assert leftover == [] if active else set(leftover) <= {"refresh-worker"}
    assert not (pod.shared / "shutdown").exists()


def test_shutdown_does_not_wait_for_a_hung_request(pod: Pod) -> None:
    pod.server.inject(Fault.hang(60), count=1)
    with running(pod) as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        wait_for(lambda: pod.server.token_requests_count >= 1, what="the hung request")
        (pod.shared / "shutdown").write_text("")
        assert proc.wait_exit(timeout=10) == 0


def test_second_sigterm_exits(pod: Pod) -> None:
    with running(pod) as proc:
        proc.wait_event("started")
        proc.send(signal.SIGINT)
        proc.wait_event("state_change", to_state="active")
        proc.send(signal.SIGTERM)
        assert proc.wait_exit() == 0
        proc.wait_event("state_change", to_state="stopping", reason="sigterm")


def test_on_sigterm_exit_for_native_sidecars(pod: Pod) -> None:
    with running(pod, on_sigterm="exit") as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        assert proc.wait_exit() == 0
    assert pod.server.token_requests_count == 0


# -- 6. logs ---------------------------------------------------------------------------------

def test_logs_are_json_lines_with_events_and_no_token_material(pod: Pod) -> None:
    with running(pod, log_level="debug") as proc:
        proc.wait_event("started")
        proc.send(signal.SIGTERM)
        proc.wait_event("refresh_succeeded")
        assert stop_gracefully(proc) == 0
    stdout = [line for line in proc.raw if line.startswith("{")]
    assert stdout
    for line in stdout:
        record = json.loads(line)
        assert {"time", "level", "message", "event"} <= record.keys()
    ok = proc.events("refresh_succeeded")[0]
    assert ok["expires_in_seconds"] > 0 and "expires_at" in ok
    assert_no_leaks(pod.server, proc)
