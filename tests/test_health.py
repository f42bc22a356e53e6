"""The health server in-process: endpoints, metrics, and clients that misbehave."""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from refresher.config import Config
from refresher.events import (
    Event,
    FailureKind,
    RefreshFailed,
    RefreshSucceeded,
    SignalReceived,
    Stop,
    TokenInfo,
)
from refresher.health import HealthServer
from refresher.lifecycle import Settings, State, decide
from refresher.metrics import TRIGGER_SOURCES, Metrics
from refresher.prepare import StartupError
from tests.e2e import scan_for_leaks
from tests.helpers import sa_token, wait_for

MARGIN = 60.0
REQUEST_TIMEOUT = 0.5  # s: short, so the slow-client tests stay fast
PROMPT = 1.0  # s: what "served promptly" means here


class Probe:
    """A liveness callable the test can flip."""

    def __init__(self) -> None:
        self.result: tuple[bool, str] = (True, "ok")

    def __call__(self) -> tuple[bool, str]:
        return self.result


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(token_file=str(tmp_path / "shared" / "token"),
                  default_token_file=str(tmp_path / "projected" / "token"),
                  trigger_dir=str(tmp_path / "shared"), health_address="127.0.0.1",
                  ready_min_validity=MARGIN)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def metrics(config: Config) -> Metrics:
    return Metrics(config)


@pytest.fixture
def make_server(config: Config, probe: Probe,
                metrics: Metrics) -> Iterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def make(**kw: Any) -> HealthServer:
        kw.setdefault("request_timeout", REQUEST_TIMEOUT)
        server = HealthServer(config, liveness=probe, metrics=metrics, port=0, **kw)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
    for server in servers:
        server.join(5)
        assert not server.is_alive()


@pytest.fixture
def server(make_server: Callable[..., HealthServer]) -> HealthServer:
    return make_server()


def get(port: int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, headers, body = get(port, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


def scrape(port: int) -> str:
    status, headers, body = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return body.decode()


def write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token)


# -- /livez ----------------------------------------------------------------------------------

def test_livez_ok(server: HealthServer) -> None:
    status, headers, body = get(server.port, "/livez")
    assert (status, body) == (200, b"ok\n")
    assert headers["Cache-Control"] == "no-store"


def test_livez_fails_with_the_reason(server: HealthServer, probe: Probe) -> None:
    probe.result = (False, "lifecycle loop idle for 95s")
    assert get_json(server.port, "/livez") == (
        503, {"status": "fail", "reason": "lifecycle loop idle for 95s"})


def test_livez_fails_when_the_check_raises(server: HealthServer, probe: Probe) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server.liveness = broken
    status, body = get_json(server.port, "/livez")
    assert status == 503 and body["reason"] == "liveness check failed: RuntimeError"


# -- /readyz ---------------------------------------------------------------------------------

def test_readyz_own_file(server: HealthServer, config: Config) -> None:
    now = time.time()
    token = sa_token(iat=now, exp=now + 3600)
    write_token(Path(config.token_file), token)
    status, body = get_json(server.port, "/readyz")
    assert status == 200
    assert body["status"] == "ok" and body["managed_by"] == "token-refresher"
    assert body["symlink"] is False and body["min_validity_seconds"] == MARGIN
    assert 3590 < body["expires_in_seconds"] <= 3600
    assert scan_for_leaks(json.dumps(body), [token]) == []


def test_readyz_follows_kubelets_symlink(server: HealthServer, config: Config) -> None:
    now = time.time()
    write_token(Path(config.default_token_file), sa_token(iat=now, exp=now + 7200))
    Path(config.token_file).parent.mkdir(parents=True)
    os.symlink(config.default_token_file, config.token_file)
    status, body = get_json(server.port, "/readyz")
    assert status == 200
    assert body["managed_by"] == "kubelet" and body["symlink"] is True
    assert 7190 < body["expires_in_seconds"] <= 7200


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "No such file or directory"),
    ("", "is empty"),
    ("not-a-jwt", "not a JWT"),
    ("a.b!d.c", "not valid base64url"),
    (b"\x00\xff\xfe junk", "binary data"),
], ids=["missing", "empty", "not-jwt", "bad-base64", "binary"])
def test_readyz_fails_for_an_unusable_file(server: HealthServer, config: Config,
                                           content: str | bytes | None, fragment: str) -> None:
    path = Path(config.token_file)
    if content is not None:
        path.parent.mkdir(parents=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    status, body = get_json(server.port, "/readyz")
    assert status == 503 and body["status"] == "fail"
    assert fragment in body["reason"] and config.token_file in body["reason"]


@pytest.mark.parametrize(("left", "reason"), [
    (30, "token expires in 30s, less than the 60s margin"),
    (-5, "token expired, less than the 60s margin"),
], ids=["inside-margin", "expired"])
def test_readyz_fails_inside_the_margin(server: HealthServer, config: Config, left: int,
                                        reason: str) -> None:
    server.clock = lambda: 1_000_000.0
    write_token(Path(config.token_file), sa_token(iat=999_000, exp=1_000_000 + left))
    status, body = get_json(server.port, "/readyz")
    assert status == 503
    assert body["reason"] == reason
    assert body["expires_in_seconds"] == left and body["managed_by"] == "token-refresher"


# -- routing and HTTP ------------------------------------------------------------------------

def test_unknown_path_is_404_and_query_strings_are_ignored(server: HealthServer) -> None:
    status, body = get_json(server.port, "/secret/../livez")
    assert status == 404 and body == {"status": "error", "reason": "not found"}
    assert get(server.port, "/livez?verbose=1")[0] == 200
    assert get(server.port, "/")[0] == 404


def test_head_has_no_body_and_other_methods_are_refused(server: HealthServer) -> None:
    status, headers, body = get(server.port, "/livez", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == "3"
    status, headers, _ = get(server.port, "/livez", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert status_of(raw_exchange(server.port, b"BREW /livez HTTP/1.1\r\n\r\n")) == 501


def test_errors_never_echo_the_request(server: HealthServer) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9-looks-like-a-token"
    response = raw_exchange(server.port, f"GET /{secret} HTTP/9.Z\r\n\r\n".encode())
    assert status_of(response) == 400 and secret.encode() not in response
    response = raw_exchange(server.port, f"GET /x/{secret} HTTP/1.1\r\n\r\n".encode())
    assert status_of(response) == 404 and secret.encode() not in response


@pytest.mark.parametrize(("request_bytes", "code"), [
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /livez HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /livez HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
     431),
], ids=["long-request-line", "long-header", "too-many-headers"])
def test_oversized_requests_get_4xx(server: HealthServer, request_bytes: bytes,
                                    code: int) -> None:
    assert status_of(raw_exchange(server.port, request_bytes)) == code
    assert get(server.port, "/livez")[0] == 200
    assert server.is_alive()


# -- /metrics --------------------------------------------------------------------------------

SETTINGS = Settings(refresh_interval=3600.0, sleep=20.0, max_attempts=3)


class Loop:
    """Drives the real decide() and feeds each result to Metrics.observe, like the daemon."""

    def __init__(self, metrics: Metrics, state: State) -> None:
        self.metrics = metrics
        self.state = state

    def feed(self, event: Event, now: float = 1_000_000.0) -> None:
        self.state, actions = decide(self.state, event, now)
        self.metrics.observe(event, self.state, actions)


def test_metrics_series_exist_at_zero(server: HealthServer) -> None:
    text = scrape(server.port)
    assert sample(text, "token_refresher_state", state="passive") == 1
    for state in ("active", "stopping"):
        assert sample(text, "token_refresher_state", state=state) == 0
    for result in ("success", "failure"):
        assert sample(text, "token_refresher_refresh_total", result=result) == 0
    for source in TRIGGER_SOURCES:
        assert sample(text, "token_refresher_triggers_total", source=source) == 0
    assert sample(text, "token_refresher_consecutive_failures") == 0
    assert sample(text, "token_refresher_last_success_timestamp_seconds") == 0
    assert sample(text, "token_refresher_refresh_duration_seconds_count") == 0
    assert sample(text, "token_refresher_token_file_readable") == 0
    expiry = sample(text, "token_refresher_token_expiry_timestamp_seconds")
    assert expiry != expiry  # NaN: nothing known yet
    assert sample(text, "token_refresher_build_info") == 1


def test_metrics_follow_the_lifecycle(server: HealthServer, metrics: Metrics) -> None:
    kubelet = TokenInfo(issued_at=999_000.0, expires_at=1_080_000.0, received_at=999_000.0)
    loop = Loop(metrics, State(SETTINGS, token=kubelet))
    loop.feed(SignalReceived(int(signal.SIGTERM)))
    text = scrape(server.port)
    assert sample(text, "token_refresher_state", state="active") == 1
    assert sample(text, "token_refresher_state", state="passive") == 0
    assert sample(text, "token_refresher_triggers_total", source="signal") == 1
    assert sample(text, "token_refresher_token_expiry_timestamp_seconds") == 1_080_000

    for attempt in (1, 2):
        loop.feed(RefreshFailed(FailureKind.TRANSIENT, "HTTP 503", status=503, duration=0.3))
        assert sample(scrape(server.port), "token_refresher_consecutive_failures") == attempt
    own = TokenInfo(issued_at=1_000_000.0, expires_at=1_007_200.0, received_at=1_000_001.5,
                    own=True)
    loop.feed(RefreshSucceeded(own, offset=0.0, duration=0.02))
    text = scrape(server.port)
    assert sample(text, "token_refresher_refresh_total", result="failure") == 2
    assert sample(text, "token_refresher_refresh_total", result="success") == 1
    assert sample(text, "token_refresher_refresh_failures_total", kind="transient") == 2
    assert sample(text, "token_refresher_consecutive_failures") == 0
    assert sample(text, "token_refresher_last_success_timestamp_seconds") == 1_000_001.5
    assert sample(text, "token_refresher_refresh_duration_seconds_count") == 3
    assert sample(text, "token_refresher_refresh_duration_seconds_sum") == pytest.approx(0.62)
    assert sample(text, "token_refresher_refresh_duration_seconds_bucket", le="0.025") == 1
    assert sample(text, "token_refresher_token_expiry_timestamp_seconds") == 1_007_200

    loop.feed(Stop("shutdown"))
    text = scrape(server.port)
    assert sample(text, "token_refresher_state", state="stopping") == 1
    assert sample(text, "token_refresher_state", state="active") == 0


def test_expiry_is_read_from_the_token_file_at_scrape_time(server: HealthServer,
                                                         config: Config) -> None:
    token = sa_token(iat=1_000_000, exp=1_003_600)
    write_token(Path(config.token_file), token)
    text = scrape(server.port)
    assert sample(text, "token_refresher_token_expiry_timestamp_seconds") == 1_003_600
    assert sample(text, "token_refresher_token_file_readable") == 1
    assert scan_for_leaks(text, [token]) == []


# -- clients that misbehave ------------------------------------------------------------------

def timed_get(port: int, path: str = "/livez") -> tuple[int, float]:
    started = time.monotonic()
    status = get(port, path)[0]
    return status, time.monotonic() - started


def open_idle(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        socks.append(sock)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def test_slowloris_does_not_delay_other_requests(
        make_server: Callable[..., HealthServer]) -> None:
    server = make_server(request_timeout=30.0)  # the stalled clients keep their slots
    stalled = open_idle(server.port, 8, b"GET /liv")
    try:
        wait_for(lambda: server.active_connections == 8, what="stalled connections")
        for path in ("/livez", "/readyz", "/metrics"):
            status, took = timed_get(server.port, path)
            assert status in (200, 503) and took < PROMPT
    finally:
        close_all(stalled)
    wait_for(lambda: server.active_connections == 0, what="stalled connections to end")


def test_a_trickling_client_is_cut_off_at_the_request_deadline(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:
                sock.send(b"G")
            except OSError:
                closed = True
                break
            if select.select([sock], [], [], 0.05)[0]:
                closed = sock.recv(1024) == b""
                break
        took = time.monotonic() - started
    assert closed and REQUEST_TIMEOUT <= took < REQUEST_TIMEOUT + 2


def test_beyond_the_connection_limit_new_clients_get_503_at_once(
        make_server: Callable[..., HealthServer]) -> None:
    server = make_server(request_timeout=30.0, max_connections=4)
    held = open_idle(server.port, 4)
    try:
        wait_for(lambda: server.active_connections == 4, what="4 held connections")
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            response = b""
            while chunk := sock.recv(4096):
                response += chunk
        assert status_of(response) == 503 and b"server busy" in response
        assert time.monotonic() - started < PROMPT
    finally:
        close_all(held)
    wait_for(lambda: server.active_connections == 0, what="held connections to end")
    assert get(server.port, "/livez")[0] == 200


def test_two_hundred_held_connections_do_not_crash_it(server: HealthServer) -> None:
    held = open_idle(server.port, 200, b"GET /livez HTTP/1.1\r\n")
    try:
        assert server.is_alive()
        assert server.active_connections <= 16
    finally:
        close_all(held)
    wait_for(lambda: server.active_connections == 0, what="held connections to end")
    status, took = timed_get(server.port)
    assert status == 200 and took < PROMPT


def test_stop_closes_open_connections_and_joins(
        make_server: Callable[..., HealthServer]) -> None:
    server = make_server(request_timeout=30.0)
    held = open_idle(server.port, 3, b"GET /li")
    try:
        wait_for(lambda: server.active_connections == 3, what="held connections")
        names = {t.name for t in threading.enumerate()}
        assert {"health-server", "health-conn-1", "health-conn-2", "health-conn-3"} <= names
        started = time.monotonic()
        server.stop()
        server.join(5)
        assert not server.is_alive() and time.monotonic() - started < 2
        assert not any(t.name.startswith("health-") for t in threading.enumerate())
        for sock in held:
            assert sock.recv(1024) == b""
    finally:
        close_all(held)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_idle_server_does_not_wake_up(server: HealthServer) -> None:
    assert get(server.port, "/livez")[0] == 200
    wait_for(lambda: server.active_connections == 0, what="the connection to end")
    path = f"/proc/self/task/{server.native_id}/status"

    def switches() -> int:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
        raise AssertionError("no voluntary_ctxt_switches")

    before = switches()
    time.sleep(1.5)  # measuring idleness, not waiting for an outcome
    assert switches() - before <= 1


def test_port_in_use_is_a_startup_error(server: HealthServer, config: Config,
                                        probe: Probe, metrics: Metrics) -> None:
    with pytest.raises(StartupError, match=f"--health_port: cannot listen on 127.0.0.1:"
                                           f"{server.port}"):
        HealthServer(config, liveness=probe, metrics=metrics, port=server.port)


def test_stop_without_start_releases_the_port(config: Config, probe: Probe,
                                              metrics: Metrics) -> None:
    unstarted = HealthServer(config, liveness=probe, metrics=metrics, port=0)
    port = unstarted.port
    unstarted.stop()
    again = HealthServer(config, liveness=probe, metrics=metrics, port=port)
    again.stop()


def test_bad_address_is_a_startup_error(config: Config, probe: Probe, metrics: Metrics) -> None:
    bad = Config(token_file=config.token_file, health_address="256.1.1.1")
    with pytest.raises(StartupError, match="not a valid --health_address"):
        HealthServer(bad, liveness=probe, metrics=metrics, port=0)
