"""The health server: `/livez`, `/readyz` and `/metrics` on `--health_port`.

    health-server ──accept──> health-conn-N (at most MAX_CONNECTIONS at once; one request each)

The accepting thread blocks in a selector on the listening socket and a wake socket, so an idle
server costs no wakeups at all; `stop()` writes to the wake socket. Each connection gets its own
named thread, one request (HTTP/1.0, then close) and REQUEST_TIMEOUT seconds in all to send its
request line and headers, so a slow or silent client holds one slot for a few seconds at most.
Beyond MAX_CONNECTIONS a new connection gets a canned 503 and is closed at once. Request lines are
never logged, and no response carries token material: `/readyz` reads the token file for its
claims and reports only times and where the token comes from.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from .claims import decode_claims
from .config import Config
from .errors import TokenError
from .metrics import CONTENT_TYPE, Metrics
from .prepare import StartupError
from .threads import BaseThread
from .tokenfile import read_token

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # connection threads at once; kubelet and Prometheus need two or three
REQUEST_TIMEOUT = 5.0  # s a client has, in all, to send its request line and headers
WRITE_TIMEOUT = 5.0  # s for sending a response (they are a few KiB: this only bounds a stall)
JOIN_TIMEOUT = 1.0  # s to wait, in all, for the connection threads at stop()
LISTEN_BACKLOG = 64
LINGER_TIMEOUT = 1.0  # s to drain what a client still sends after our response (no RST)
LINGER_BYTES = 256 * 1024
EMFILE_PAUSE = 0.1  # s to back off when accept() fails for lack of file descriptors
BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 42\r\nConnection: close\r\n\r\n"
                 b'{"status":"fail","reason":"server busy"}\r\n')
ALLOWED = "GET, HEAD"

Liveness = Callable[[], tuple[bool, str]]


class HealthServer(BaseThread):
    """A tiny HTTP server in its own thread. The socket is bound at construction."""

    def __init__(
        self,
        config: Config,
        *,
        liveness: Liveness,
        metrics: Metrics,
        port: int | None = None,  # override config.health_port (tests: 0 picks a free port)
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="health-server")
        self.liveness = liveness
        self.metrics = metrics
        self.token_file = config.token_file
        self.min_validity = config.ready_min_validity
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.clock = clock
        self._listener = _listen(config.health_address,
                                 config.health_port if port is None else port)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._numbers = itertools.count(1)

    @property
    def port(self) -> int:
        """The port actually bound (useful when constructed with port=0)."""
        return int(self._listener.getsockname()[1])

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    # -- thread life -----------------------------------------------------------------------------

    def on_stop(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self.ident is None:  # never started: nothing else will close the sockets
            self._close_sockets()

    def run_loop(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            log.info("health server listening on %s:%d", *self._listener.getsockname()[:2],
                     extra={"event": "health_listening", "port": self.port})
            while not self.stopped:
                for key, _ in selector.select():  # no timeout: idle means asleep
                    if key.fileobj is self._listener:
                        self._accept_all()
        finally:
            selector.close()
            self._close_sockets()
            self._close_connections()

    def _accept_all(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE/ENFILE/ENOBUFS: back off instead of spinning
                log.warning("health server cannot accept: %s", exc.strerror,
                            extra={"event": "health_accept_failed"})
                self._stopped.wait(EMFILE_PAUSE)
                return
            self._dispatch(conn)

    def _dispatch(self, conn: socket.socket) -> None:
        with self._lock:
            busy = len(self._connections) >= self.max_connections
            if not busy:
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                          name=f"health-conn-{next(self._numbers)}")
                self._connections[conn] = thread
        if busy:
            _reject(conn)
            return
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread: shed the connection
            with self._lock:
                self._connections.pop(conn, None)
            _reject(conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            _Handler(conn, self, deadline=time.monotonic() + self.request_timeout)
            _linger(conn)
        except Exception as exc:  # a client that vanished mid-request, a reset, ...
            log.debug("health connection ended: %s", type(exc).__name__,
                      extra={"event": "health_connection_error"})
        finally:
            with self._lock:
                self._connections.pop(conn, None)
                conn.close()

    def _close_sockets(self) -> None:
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _close_connections(self) -> None:
        with self._lock:
            threads = list(self._connections.values())
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv/send
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.1fs", thread.name, JOIN_TIMEOUT,
                            extra={"event": "thread_leftover", "thread_name": thread.name})

    # -- the endpoints ---------------------------------------------------------------------------

    def livez(self) -> tuple[int, dict[str, Any] | None]:
        try:
            alive, reason = self.liveness()
        except Exception as exc:
            alive, reason = False, f"liveness check failed: {type(exc).__name__}"
        if alive:
            return HTTPStatus.OK, None
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "fail", "reason": reason}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """200 if the token file holds a token valid for at least `min_validity` seconds."""
        path = self.token_file
        try:
            text = read_token(path)
            claims = decode_claims(text.text)
        except TokenError as exc:
            reason = str(exc)
            if path not in reason:
                reason = f"token file {path}: {reason}"
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "fail", "reason": reason}
        left = claims.expires_at - self.clock()
        body: dict[str, Any] = {
            "expires_in_seconds": round(left, 3),
            "min_validity_seconds": self.min_validity,
            "managed_by": "kubelet" if text.is_symlink else "token-refresher",
            "symlink": text.is_symlink,
        }
        if left < self.min_validity:
            state = "expired" if left <= 0 else f"expires in {left:.0f}s"
            reason = f"token {state}, less than the {self.min_validity:g}s margin"
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "fail", "reason": reason, **body}
        return HTTPStatus.OK, {"status": "ok", **body}


def _listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.create_server((address, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        # create_server() appends the address to strerror and turns getaddrinfo errors
        # (negative errno) into plain OSError: rebuild a short reason.
        if exc.errno is not None and exc.errno < 0:
            reason = "not a valid --health_address"
        else:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StartupError(f"--health_port: cannot listen on {address}:{port}: {reason}") \
            from None
    sock.setblocking(False)
    return sock


def _reject(conn: socket.socket) -> None:
    """Answer 503 without reading anything (the send buffer is empty: never blocks) and close."""
    try:
        conn.setblocking(False)
        conn.send(BUSY_RESPONSE)
    except OSError:
        pass
    finally:
        conn.close()


def _linger(conn: socket.socket) -> None:
    """Half-close, then read what the client still sends until it closes: closing with unread
    input would reset the connection and could destroy the response in flight."""
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + LINGER_TIMEOUT
    drained = 0
    while drained < LINGER_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        conn.settimeout(left)
        chunk = conn.recv(16384)
        if not chunk:
            return
        drained += len(chunk)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes with sendall (no makefile(): it would keep the socket open)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _DeadlineReader(io.RawIOBase):
    """Socket reads that all share one deadline: a trickling client cannot extend its time."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    """One request per connection. http.server caps the request line at 64 KiB (414) and the
    headers at 100 lines of 64 KiB each (431)."""

    server_version = "token-refresher"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def __init__(self, conn: socket.socket, app: HealthServer, *, deadline: float) -> None:
        # Not BaseRequestHandler.__init__: there is no socketserver here.
        self.app = app
        self.request = conn
        self.client_address = ("", 0)
        self._deadline = deadline
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self._deadline))
        self.wfile = _SocketWriter(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines are client data and may carry anything."""

    # -- responses -------------------------------------------------------------------------------

    def _reply(self, code: int, body: bytes, content_type: str,
               headers: dict[str, str] | None = None) -> None:
        self.close_connection = True
        self.connection.settimeout(WRITE_TIMEOUT)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(payload, sort_keys=True) + "\n").encode("utf-8")
        self._reply(code, body, "application/json", headers)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors never echo the request (the base class puts the request line in the body),
        and always carry a status line (a malformed request is no HTTP/0.9 request)."""
        self.request_version = "HTTP/1.0"
        self._json(code, {"status": "error", "reason": HTTPStatus(code).phrase.lower()},
                   {"Allow": ALLOWED} if code == HTTPStatus.METHOD_NOT_ALLOWED else None)

    # -- methods ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/livez":
                code, payload = self.app.livez()
                if payload is None:
                    self._reply(code, b"ok\n", "text/plain; charset=utf-8")
                else:
                    self._json(code, payload)
            elif path == "/readyz":
                self._json(*self.app.readyz())
            elif path == "/metrics":
                self._reply(HTTPStatus.OK, self.app.metrics.render(), CONTENT_TYPE)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except OSError:
            raise  # the client went away: nothing to answer
        except Exception:
            log.exception("health endpoint %s failed", path if path in _PATHS else "?",
                          extra={"event": "health_handler_failed"})
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed


_PATHS = ("/livez", "/readyz", "/metrics")
