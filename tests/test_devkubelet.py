"""The simulated kubelet writes projected tokens like kubelet's AtomicWriter and rotates them.

No assertion or message ever contains a token: readers record what was wrong, tests compare
claims, counts and digests.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from refresher import jwtsign
from refresher.devkubelet import ProjectedVolume, SimulatedKubelet
from refresher.devserver import ApiStatusError, DevApiServer

NS = "apps"
SA = "web"
AUDIENCE = "sts.amazonaws.com"
TIMESTAMP_DIR = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+")
WAIT = 5.0  # generous bound for any single event; tests normally wait milliseconds


class FakeClock:
    """A settable wall clock shared by the server and the kubelet."""

    def __init__(self, start: float = 1_800_000_000.25) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[DevApiServer]:
    with DevApiServer(min_expiration_seconds=1, clock=clock) as srv:
        srv.add_service_account(NS, SA)
        yield srv


def timestamp_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TIMESTAMP_DIR.fullmatch(p.name))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_complete_token(text: str) -> bool:
    """Three JWS parts, JSON header and claims, and a whole RSA-2048 signature."""
    try:
        _, claims = jwtsign.decode_unverified(text)
        signature = jwtsign.b64url_decode(text.rsplit(".", 1)[1])
    except ValueError:
        return False
    return len(signature) == 256 and "exp" in claims and "sub" in claims


# --------------------------------------------------------------------------- ProjectedVolume


def test_projected_volume_matches_kubelets_layout(tmp_path: Path) -> None:
    volume = ProjectedVolume(tmp_path / "vol")
    assert volume.write("first.token.value") is True

    directory = tmp_path / "vol"
    token, data = directory / "token", directory / "..data"
    assert token.is_symlink() and os.readlink(token) == "..data/token"
    assert data.is_symlink()
    first_dir = os.readlink(data)
    assert TIMESTAMP_DIR.fullmatch(first_dir)
    assert timestamp_dirs(directory) == [first_dir]
    assert stat.S_IMODE((directory / first_dir).stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / first_dir / "token").stat().st_mode) == 0o644
    assert token.read_text() == "first.token.value" == volume.read()
    token_inode = os.lstat(token).st_ino

    assert volume.write("second.token.value") is True
    second_dir = os.readlink(data)
    assert second_dir != first_dir
    assert timestamp_dirs(directory) == [second_dir]  # the old one is gone after the swap
    assert not os.path.lexists(directory / "..data_tmp")
    assert os.lstat(token).st_ino == token_inode  # the user-visible symlink was created once
    assert token.read_text() == "second.token.value"
    assert sorted(os.listdir(directory)) == sorted(["..data", second_dir, "token"])

    assert volume.write("second.token.value") is False  # unchanged payload: nothing written
    assert os.readlink(data) == second_dir


def test_projected_volume_options_and_leftovers(tmp_path: Path) -> None:
    directory = tmp_path / "vol"
    directory.mkdir()
    os.symlink("..2001_01_01_00_00_00.1", directory / "..data_tmp")  # an interrupted write
    (directory / "..2001_01_01_00_00_00.1").mkdir()
    volume = ProjectedVolume(directory, filename="jwt", mode=0o600, clock=lambda: 978307200.0)
    volume.write("a.b.c")
    assert os.readlink(directory / "jwt") == "..data/jwt"
    assert os.readlink(directory / "..data").startswith("..2001_01_01_00_00_00.")
    assert stat.S_IMODE(os.stat(directory / "jwt").st_mode) == 0o600
    assert len(timestamp_dirs(directory)) == 1
    assert not os.path.lexists(directory / "..data_tmp")
    for bad in ("", "a/b", "..data"):
        with pytest.raises(ValueError):
            ProjectedVolume(directory, filename=bad)


# --------------------------------------------------------------------------- SimulatedKubelet


def test_fifty_rotations_never_show_a_partial_token(
    server: DevApiServer, clock: FakeClock, tmp_path: Path
) -> None:
    volume = ProjectedVolume(tmp_path / "vol", clock=clock)
    rotated = threading.Event()
    kubelet = SimulatedKubelet(
        server,
        volume,
        namespace=NS,
        service_account=SA,
        audiences=[AUDIENCE],
        expiration_seconds=2,
        sync_period=0.002,
        on_rotate=lambda n: rotated.set(),
    )
    problems: list[str] = []
    seen: set[str] = set()
    reads = 0
    done = threading.Event()

    def read_in_a_tight_loop() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                text = volume.path.read_text()
            except OSError as exc:
                problems.append(f"read failed: {type(exc).__name__}")
                continue
            reads += 1
            if not is_complete_token(text):
                problems.append(f"incomplete token of {len(text)} characters")
            else:
                seen.add(digest(text))

    kubelet.start()
    assert kubelet.name == f"devkubelet-{NS}-{SA}"
    reader = threading.Thread(target=read_in_a_tight_loop, name="test-token-reader")
    reader.start()
    try:
        for rotation in range(1, 51):
            clock.advance(2)  # the previous token reached 100% of its life
            assert rotated.wait(WAIT), f"rotation {rotation} did not happen"
            rotated.clear()
            assert kubelet.rotations == rotation
    finally:
        done.set()
        reader.join(WAIT)
        kubelet.stop()
        kubelet.join(WAIT)
    assert not kubelet.is_alive()
    assert problems == []
    assert reads > 0 and len(seen) >= 2
    assert timestamp_dirs(volume.directory) == [os.readlink(volume.data_dir)]
    token = volume.read()
    review = server.review_token(token, [AUDIENCE])
    assert review.authenticated, review.error
    claims = jwtsign.decode_unverified(token)[1]
    assert claims["exp"] - claims["iat"] == 2
    assert server.token_requests_count == 0  # minted in-process, not over HTTP


def test_rotates_at_eighty_percent_of_the_lifetime(
    server: DevApiServer, clock: FakeClock, tmp_path: Path
) -> None:
    rotated = threading.Event()
    kubelet = SimulatedKubelet(
        server,
        ProjectedVolume(tmp_path / "vol"),
        namespace=NS,
        service_account=SA,
        expiration_seconds=100,
        sync_period=0.002,
        on_rotate=lambda n: rotated.set(),
    )
    kubelet.start()
    try:
        issued_at = kubelet.expires_at - 100
        assert kubelet.refresh_at == issued_at + 80
        clock.advance(kubelet.refresh_at - clock() - 0.5)  # just before the 80% mark
        assert not rotated.wait(0.05)  # a bounded negative check: several sync periods pass
        clock.advance(0.5)
        assert rotated.wait(WAIT)
        assert kubelet.rotations == 1
    finally:
        kubelet.stop()
        kubelet.join(WAIT)


def test_rotates_with_short_real_lifetimes(tmp_path: Path) -> None:
    with DevApiServer(min_expiration_seconds=1) as server:
        server.add_service_account(NS, SA)
        rotated = threading.Event()
        kubelet = SimulatedKubelet(
            server,
            ProjectedVolume(tmp_path / "vol"),
            namespace=NS,
            service_account=SA,
            expiration_seconds=1,
            sync_period=0.05,
            on_rotate=lambda n: rotated.set(),
        )
        kubelet.start()
        try:
            first = digest(kubelet.volume.read())
            assert rotated.wait(WAIT)  # about 0.8 s of real time
            assert digest(kubelet.volume.read()) != first
        finally:
            kubelet.stop()
            kubelet.join(WAIT)


def test_stop_rotating_leaves_the_last_token(
    server: DevApiServer, clock: FakeClock, tmp_path: Path
) -> None:
    kubelet = SimulatedKubelet(
        server,
        ProjectedVolume(tmp_path / "vol"),
        namespace=NS,
        service_account=SA,
        expiration_seconds=10,
        sync_period=0.002,
    )
    kubelet.start()
    last = digest(kubelet.volume.read())
    kubelet.stop_rotating()  # the pod is terminating
    kubelet.join(WAIT)
    assert not kubelet.is_alive() and not kubelet.rotating
    clock.advance(3600)
    assert kubelet.rotations == 0
    assert digest(kubelet.volume.read()) == last


def test_bound_token_and_failed_rotation_after_pod_deletion(
    server: DevApiServer, clock: FakeClock, tmp_path: Path
) -> None:
    pod_uid = server.add_pod(NS, "web-0", SA)
    failed = threading.Event()
    messages: list[str] = []

    def on_failure(message: str) -> None:
        messages.append(message)
        failed.set()

    kubelet = SimulatedKubelet(
        server,
        ProjectedVolume(tmp_path / "vol"),
        namespace=NS,
        service_account=SA,
        audiences=[AUDIENCE],
        expiration_seconds=600,
        pod_name="web-0",
        sync_period=0.002,
        on_failure=on_failure,
    )
    kubelet.start()
    try:
        token = kubelet.volume.read()
        claims = jwtsign.decode_unverified(token)[1]
        assert claims["kubernetes.io"]["pod"] == {"name": "web-0", "uid": pod_uid}
        assert server.review_token(token, [AUDIENCE]).authenticated

        server.delete_pod(NS, "web-0")
        clock.advance(500)
        assert failed.wait(WAIT)
        assert kubelet.failures >= 1 and kubelet.rotations == 0
        assert "404" in messages[0] and "NotFound" in messages[0]
        assert kubelet.last_error == messages[-1]
        same = kubelet.volume.read() == token
        assert same  # the old token stays in place
    finally:
        kubelet.stop()
        kubelet.join(WAIT)


def test_start_fails_loudly_when_the_server_refuses(server: DevApiServer, tmp_path: Path) -> None:
    kubelet = SimulatedKubelet(
        server,
        ProjectedVolume(tmp_path / "vol"),
        namespace=NS,
        service_account="missing",
    )
    with pytest.raises(ApiStatusError) as refused:
        kubelet.start()
    assert refused.value.code == 404
    assert not kubelet.is_alive()
    assert not os.path.lexists(tmp_path / "vol" / "token")


def test_rejects_bad_timing_arguments(server: DevApiServer, tmp_path: Path) -> None:
    volume = ProjectedVolume(tmp_path / "vol")
    with pytest.raises(ValueError):
        SimulatedKubelet(server, volume, namespace=NS, service_account=SA, refresh_fraction=0)
    with pytest.raises(ValueError):
        SimulatedKubelet(server, volume, namespace=NS, service_account=SA, sync_period=0)
