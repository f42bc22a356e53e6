"""`/livez`, `/readyz` and `/metrics` of the real process through passive, active, an outage,
the recovery and the shutdown; and refreshes that keep their pace while slow clients pile up."""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from refresher.claims import decode_claims
from tests.e2e import (
    Pod,
    RefresherProcess,
    TokenReader,
    running,
    scan_for_leaks,
    stop_gracefully,
)
from tests.helpers import wait_for

WAIT = 30.0
MARGIN = 2.0  # s: --ready_min_validity
LIFETIME = 6.0  # s: --expiration_duration (the dev server truncates iat to whole seconds: a
#                token has between LIFETIME - 2 and LIFETIME - 1 s left at each refresh)
INTERVAL = 1.0  # s: --refresh_interval


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """HTTP GETs against the refresher's health port; keeps every body for the leak scan."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[str] = []

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        self.bodies.append(body)
        return response.status, body

    def json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        payload: dict[str, Any] = json.loads(body)
        return status, payload

    def livez(self) -> tuple[int, str]:
        return self.get("/livez")

    def readyz(self) -> tuple[int, dict[str, Any]]:
        return self.json("/readyz")

    def metric(self, name: str, **labels: str) -> float:
        status, text = self.get("/metrics")
        assert status == 200
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return float(sample.value)
        raise AssertionError(f"no sample {name} {labels}")

    def wait_metric(self, name: str, predicate: Callable[[float], bool], what: str,
                    **labels: str) -> float:
        seen: list[float] = []

        def check() -> bool:
            seen.append(self.metric(name, **labels))
            return predicate(seen[-1])

        wait_for(check, timeout=WAIT, interval=0.05, what=what)
        return seen[-1]

    def wait_ready(self, code: int) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def check() -> bool:
            status, body = self.readyz()
            found.update(body)
            return status == code

        wait_for(check, timeout=WAIT, interval=0.05, what=f"/readyz {code}")
        return found


def run_with_health(pod: Pod, port: int) -> AbstractContextManager[RefresherProcess]:
    return running(pod, health_port=str(port), health_address="127.0.0.1",
                   ready_min_validity=f"{MARGIN:g}s", expiration_duration=f"{LIFETIME:g}s",
                   refresh_interval=f"{INTERVAL:g}s", sleep="100ms")


def started(proc: RefresherProcess) -> None:
    proc.wait_event("health_listening")
    proc.wait_event("started")


def test_endpoints_through_the_whole_story(pod: Pod) -> None:
    port = free_port()
    client = Client(port)
    with run_with_health(pod, port) as proc:
        started(proc)
        # passive: kubelet's symlinked token, nothing minted
        assert client.livez() == (200, "ok\n")
        status, ready = client.readyz()
        assert status == 200 and ready["status"] == "ok"
        assert ready["managed_by"] == "kubelet" and ready["symlink"] is True
        assert 3500 < ready["expires_in_seconds"] <= 3600
        kubelet_exp = decode_claims(pod.default_token.read_text()).expires_at
        assert client.metric("token_refresher_state", state="passive") == 1
        assert client.metric("token_refresher_state", state="active") == 0
        assert client.metric("token_refresher_refresh_total", result="success") == 0
        assert client.metric("token_refresher_triggers_total", source="signal") == 0
        assert client.metric("token_refresher_token_expiry_timestamp_seconds") == kubelet_exp
        assert client.get("/nope")[0] == 404

        # active (SIGTERM): the refresher's own file
        proc.send(signal.SIGTERM)
        proc.wait_event("state_change", to_state="active", reason="signal")
        proc.wait_event("refresh_succeeded")
        ready = client.wait_ready(200)
        wait_for(lambda: client.readyz()[1]["managed_by"] == "token-refresher",
                 what="/readyz to report the refresher's own file")
        assert client.metric("token_refresher_state", state="active") == 1
        assert client.metric("token_refresher_state", state="passive") == 0
        assert client.metric("token_refresher_triggers_total", source="signal") == 1
        assert client.metric("token_refresher_triggers_total", source="activate_file") == 0
        client.wait_metric("token_refresher_refresh_total", lambda v: v >= 2,
                           "two successful refreshes", result="success")
        assert client.metric("token_refresher_consecutive_failures") == 0
        assert client.metric("token_refresher_last_success_timestamp_seconds") > time.time() - 5
        assert client.metric("token_refresher_refresh_duration_seconds_count") >= 2
        expiry = client.metric("token_refresher_token_expiry_timestamp_seconds")
        assert time.time() < expiry <= time.time() + LIFETIME + 1

        # the API goes down: failures pile up until the token is inside the margin
        pod.server.set_down(True)
        mark = proc.mark()
        proc.wait_event("refresh_failed", start=mark)
        failing = client.wait_ready(503)
        assert failing["status"] == "fail" and "margin" in failing["reason"]
        assert failing["expires_in_seconds"] < MARGIN
        client.wait_metric("token_refresher_consecutive_failures", lambda v: v >= 2,
                           "consecutive failures to rise")
        assert client.metric("token_refresher_refresh_total", result="failure") >= 2
        assert client.metric("token_refresher_refresh_failures_total", kind="transient") >= 2
        assert client.livez() == (200, "ok\n")  # failing to refresh is not being dead
        successes = client.metric("token_refresher_refresh_total", result="success")

        # recovered
        pod.server.set_down(False)
        recovered = client.wait_ready(200)
        assert recovered["managed_by"] == "token-refresher"
        assert recovered["expires_in_seconds"] >= MARGIN
        client.wait_metric("token_refresher_consecutive_failures", lambda v: v == 0,
                           "consecutive failures back to 0")
        assert client.metric("token_refresher_refresh_total", result="success") > successes
        assert client.metric("token_refresher_triggers_total", source="signal") == 1

        # shutdown file: the process exits, and the port with it
        (pod.shared / "shutdown").write_text("")
        assert proc.wait_exit() == 0
        assert proc.wait_event("exiting")["leftover_threads"] == []
    with pytest.raises(OSError):
        client.livez()
    leaks = scan_for_leaks("".join(client.bodies) + proc.output(), pod.server.issued_tokens())
    assert leaks == [], "token material in a response or the logs"
    assert len(client.bodies) > 20


class Slowloris(threading.Thread):
    """Keeps `count` connections open, each trickling a request line a byte at a time."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(name="slowloris", daemon=True)
        self.port = port
        self.count = count
        self.opened = 0
        self.cut_off = 0
        self._stopped = threading.Event()
        self.holding = threading.Event()

    def run(self) -> None:
        socks: list[socket.socket] = []
        try:
            while not self._stopped.is_set():
                while len(socks) < self.count:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    sock.setblocking(False)
                    socks.append(sock)
                    self.opened += 1
                self.holding.set()
                for sock in list(socks):
                    try:
                        sock.send(b"G")
                        if sock.recv(4096) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        continue  # still held open by the server
                    except OSError:
                        pass
                    self.cut_off += 1
                    socks.remove(sock)
                    sock.close()
                self._stopped.wait(0.2)
        finally:
            for sock in socks:
                sock.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(10)


def test_refreshes_keep_their_pace_while_slow_clients_hold_connections(pod: Pod) -> None:
    port = free_port()
    client = Client(port)
    reader = TokenReader(pod.token_file)
    try:
        with run_with_health(pod, port) as proc:
            started(proc)
            proc.send(signal.SIGTERM)
            proc.wait_event("refresh_succeeded")
            reader.start()
            _slow_clients_do_not_matter(proc, client, port)
            assert stop_gracefully(proc) == 0
    finally:
        if reader.ident is not None:
            reader.stop()
    assert reader.report.anomalies == []
    leaks = scan_for_leaks("".join(client.bodies) + proc.output(), pod.server.issued_tokens())
    assert leaks == []


def _slow_clients_do_not_matter(proc: RefresherProcess, client: Client, port: int) -> None:
    # a few stalled clients: probes are still answered at once
    few = Slowloris(port, 4)
    few.start()
    try:
        few.holding.wait(WAIT)
        for path in ("/livez", "/readyz", "/metrics"):
            begun = time.monotonic()
            status, body = client.get(path)
            assert status == 200, body
            assert time.monotonic() - begun < 1.0
    finally:
        few.stop()

    # more stalled clients than the server has slots: refreshes go on, on time
    many = Slowloris(port, 48)
    many.start()
    try:
        many.holding.wait(WAIT)
        mark = proc.mark()
        before = _count_before(proc, mark)
        wait_for(lambda: len(proc.events("refresh_succeeded")) >= before + 6, timeout=WAIT,
                 what="six refreshes under load")
        assert many.is_alive()
    finally:
        many.stop()
    times = [_ts(r["time"]) for r in proc.lines[mark:] if r.get("event") == "refresh_succeeded"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and max(gaps) < INTERVAL + 1.0, gaps
    assert many.cut_off > 0  # the server closed stalled connections (limit or deadline)
    assert proc.events("refresh_failed") == []

    # the slow clients gone, the server answers normally again
    wait_for(lambda: client.livez()[0] == 200, what="/livez after the slow clients")
    status, ready = client.readyz()
    assert status == 200, ready


def _count_before(proc: RefresherProcess, mark: int) -> int:
    return sum(1 for r in proc.lines[:mark] if r.get("event") == "refresh_succeeded")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
