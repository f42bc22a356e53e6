"""A simulated kubelet: a projected service-account token volume that it keeps rotating.

``ProjectedVolume`` writes files exactly like kubelet's ``AtomicWriter``: the payload goes into a
new hidden timestamped directory (``..2026_12_04_19_51_04.1234567890``), a ``..data_tmp`` symlink
to it is renamed over ``..data``, the user-visible ``token`` symlink (``-> ..data/token``) is
created once, and older timestamped directories are removed after the swap. A reader that opens
``token`` therefore always sees one complete token.

``SimulatedKubelet`` mints a token through the development API server (in-process), writes it,
and rotates it once 80% of its lifetime has passed, as kubelet's token manager does. It is used
by ``token-refresher demo`` and by the tests.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from refresher.devserver import ApiStatusError, DevApiServer, IssuedToken

_log = logging.getLogger(__name__)

DATA_DIR_NAME: Final = "..data"
DATA_TMP_NAME: Final = "..data_tmp"
TIMESTAMP_FORMAT: Final = "..%Y_%m_%d_%H_%M_%S."
TIMESTAMP_DIR_PATTERN: Final = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+")
DEFAULT_FILE_MODE: Final = 0o644
TIMESTAMP_DIR_MODE: Final = 0o755
DEFAULT_REFRESH_FRACTION: Final = 0.8  # kubelet refreshes once 80% of the TTL has passed
MAX_TOKEN_AGE_SECONDS: Final = 24 * 3600  # kubelet also refreshes tokens older than 24h
DEFAULT_SYNC_PERIOD_SECONDS: Final = 1.0
DEFAULT_EXPIRATION_SECONDS: Final = 3600
_MKDIR_ATTEMPTS: Final = 100


def _noop_rotate(rotation: int) -> None:
    """Default ``on_rotate`` hook."""


def _noop_failure(message: str) -> None:
    """Default ``on_failure`` hook."""


class ProjectedVolume:
    """A directory kept the way kubelet keeps a projected volume (one file: ``filename``).

    ``write()`` is thread-safe; readers need no locking. ``clock`` only names the timestamped
    directories (wall-clock seconds since the epoch, UTC).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        filename: str = "token",
        mode: int = DEFAULT_FILE_MODE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not filename or "/" in filename or filename.startswith(".."):
            raise ValueError(f"invalid projected file name {filename!r}")
        self._directory = Path(directory)
        self._filename = filename
        self._mode = mode
        self._clock = clock
        self._lock = threading.Lock()
        self._random = random.Random()
        self._directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ProjectedVolume({str(self._directory)!r}, filename={self._filename!r})"

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def path(self) -> Path:
        """The user-visible file (a symlink to ``..data/<filename>``)."""
        return self._directory / self._filename

    @property
    def data_dir(self) -> Path:
        """The ``..data`` symlink."""
        return self._directory / DATA_DIR_NAME

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def write(self, token: str) -> bool:
        """Publish ``token`` atomically; return False (and touch nothing) if it is unchanged."""
        payload = token.encode("utf-8")
        with self._lock:
            current = self._current_timestamp_dir()
            if current is not None and _read_bytes(current / self._filename) == payload:
                return False
            new_dir = self._new_timestamp_dir()
            self._write_payload(new_dir, payload)
            tmp_link = self._directory / DATA_TMP_NAME
            if os.path.lexists(tmp_link):  # left over from an interrupted write
                tmp_link.unlink()
            os.symlink(new_dir.name, tmp_link)
            os.replace(tmp_link, self.data_dir)  # the atomic swap
            if not os.path.lexists(self.path):
                os.symlink(f"{DATA_DIR_NAME}/{self._filename}", self.path)
            self._remove_old_dirs(keep=new_dir.name)
            return True

    def _current_timestamp_dir(self) -> Path | None:
        try:
            target = os.readlink(self.data_dir)
        except (FileNotFoundError, OSError):
            return None
        return self._directory / target

    def _new_timestamp_dir(self) -> Path:
        prefix = time.strftime(TIMESTAMP_FORMAT, time.gmtime(self._clock()))
        for _ in range(_MKDIR_ATTEMPTS):
            # Go's os.MkdirTemp appends a random uint32 in decimal.
            candidate = self._directory / f"{prefix}{self._random.randrange(1 << 32)}"
            try:
                candidate.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(candidate, TIMESTAMP_DIR_MODE)
            return candidate
        raise FileExistsError(f"could not create a timestamped directory in {self._directory}")

    def _write_payload(self, directory: Path, payload: bytes) -> None:
        target = directory / self._filename
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(target, self._mode)  # the umask may have narrowed it

    def _remove_old_dirs(self, *, keep: str) -> None:
        for entry in os.scandir(self._directory):
            if entry.name != keep and TIMESTAMP_DIR_PATTERN.fullmatch(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class SimulatedKubelet(threading.Thread):
    """Keeps a ``ProjectedVolume`` holding a fresh service-account token, like kubelet.

    ``start()`` mints and writes the first token before it returns (raising ``ApiStatusError``
    if the server refuses), then the thread rotates the token once ``refresh_fraction`` of its
    lifetime has passed (or it is 24 h old). Timing compares the token's server-time expiry
    with ``clock`` (the node's clock: by default the server's clock without its offset), checked
    at least every ``sync_period`` real seconds, so a test can drive rotations by advancing an
    injected clock. A failed mint is retried after ``sync_period``.

    ``stop_rotating()`` simulates the pod terminating: kubelet stops refreshing and the last
    token stays in place until it expires. ``stop()`` ends the thread; then ``join()``.
    ``on_rotate(n)`` runs in the thread after the n-th rotation (not after the first write);
    ``on_failure(message)`` after a failed mint. Neither ever receives token material.
    """

    def __init__(
        self,
        server: DevApiServer,
        volume: ProjectedVolume,
        *,
        namespace: str,
        service_account: str,
        audiences: Sequence[str] = (),
        expiration_seconds: int = DEFAULT_EXPIRATION_SECONDS,
        pod_name: str | None = None,
        pod_uid: str | None = None,
        refresh_fraction: float = DEFAULT_REFRESH_FRACTION,
        sync_period: float = DEFAULT_SYNC_PERIOD_SECONDS,
        clock: Callable[[], float] | None = None,
        on_rotate: Callable[[int], None] = _noop_rotate,
        on_failure: Callable[[str], None] = _noop_failure,
        name: str | None = None,
    ) -> None:
        if not 0.0 < refresh_fraction <= 1.0:
            raise ValueError("refresh_fraction must be in (0, 1]")
        if sync_period <= 0:
            raise ValueError("sync_period must be positive")
        super().__init__(name=name or f"devkubelet-{namespace}-{service_account}", daemon=True)
        self._server = server
        self._volume = volume
        self._namespace = namespace
        self._service_account = service_account
        self._audiences = tuple(audiences)
        self._expiration_seconds = expiration_seconds
        self._pod_name = pod_name
        self._pod_uid = pod_uid
        self._refresh_fraction = refresh_fraction
        self._sync_period = sync_period
        self._clock = clock or server.clock
        self._on_rotate = on_rotate
        self._on_failure = on_failure
        self._stopped = threading.Event()
        self._rotating = True
        self._lock = threading.Lock()
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._rotations = 0
        self._failures = 0
        self._last_error: str | None = None

    # ----------------------------------------------------------------- control

    def start(self) -> None:
        """Mint and write the first token, then start rotating in the background."""
        if self._pod_name is not None and self._pod_uid is None:
            self._pod_uid = self._server.pod_uid(self._namespace, self._pod_name)
        self._publish(self._mint())
        super().start()

    def stop(self) -> None:
        self._stopped.set()

    def stop_rotating(self) -> None:
        """The pod is terminating: never rotate again (the thread ends; the file stays)."""
        with self._lock:
            self._rotating = False
        self._stopped.set()

    @property
    def volume(self) -> ProjectedVolume:
        return self._volume

    @property
    def rotating(self) -> bool:
        with self._lock:
            return self._rotating

    @property
    def rotations(self) -> int:
        """Tokens written after the first one."""
        with self._lock:
            return self._rotations

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def refresh_at(self) -> float:
        """When (by ``clock``) the current token is due for rotation."""
        with self._lock:
            return self._refresh_at

    @property
    def expires_at(self) -> float:
        """The current token's ``exp`` (server time)."""
        with self._lock:
            return self._expires_at

    # ----------------------------------------------------------------- loop

    def run(self) -> None:
        delay = self._delay()
        while not self._stopped.wait(delay):
            if self._clock() < self.refresh_at:
                delay = self._delay()
                continue
            try:
                issued = self._mint()
            except ApiStatusError as exc:
                self._failed(f"TokenRequest refused: {exc.code} {exc.reason}: {exc}")
                delay = self._sync_period
                continue
            except Exception as exc:  # the simulation must not die silently
                self._failed(f"TokenRequest failed: {type(exc).__name__}")
                delay = self._sync_period
                continue
            with self._lock:
                if not self._rotating:
                    return
            self._publish(issued)
            with self._lock:
                self._rotations += 1
                rotation = self._rotations
            _log.debug(
                "kubelet rotated the token of %s/%s (rotation %d, expires in %ds)",
                self._namespace,
                self._service_account,
                rotation,
                issued.expiration_seconds,
            )
            self._on_rotate(rotation)
            delay = self._delay()

    def _delay(self) -> float:
        return max(0.0, min(self._sync_period, self.refresh_at - self._clock()))

    def _mint(self) -> IssuedToken:
        return self._server.issue_token(
            self._namespace,
            self._service_account,
            audiences=self._audiences,
            expiration_seconds=self._expiration_seconds,
            bound_pod=self._pod_name,
            bound_pod_uid=self._pod_uid,
        )

    def _publish(self, issued: IssuedToken) -> None:
        self._volume.write(issued.token)
        ttl = issued.expiration_seconds
        refresh_at = min(
            issued.expires_at - (1.0 - self._refresh_fraction) * ttl,
            issued.issued_at + MAX_TOKEN_AGE_SECONDS,
        )
        with self._lock:
            self._refresh_at = refresh_at
            self._expires_at = issued.expires_at

    def _failed(self, message: str) -> None:
        with self._lock:
            self._failures += 1
            self._last_error = message
        _log.warning(
            "kubelet could not refresh the token of %s/%s: %s",
            self._namespace,
            self._service_account,
            message,
        )
        self._on_failure(message)
