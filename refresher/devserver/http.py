"""HTTP plumbing of the development API server: TLS listener, request handler, routes."""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import logging
import socket
import socketserver
import ssl
import struct
import threading
import uuid
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .values import (
    _PROBE_PATHS,
    _SELF_SUBJECT_REVIEW_PATH,
    _TOKEN_MUTATIONS,
    _TOKEN_REQUEST_PATH,
    _TOKEN_REVIEW_PATH,
    DEFAULT_EXPIRATION_SECONDS,
    DEFAULT_ISSUER,
    LOOPBACK,
    SERVER_VERSION,
    TOKEN_REQUEST_API_VERSION,
    ApiStatusError,
    Fault,
    IssuedToken,
    RequestRecord,
    TokenReviewResult,
    _bad_request,
    _Exchange,
    _Identity,
    _invalid,
    rfc3339,
    status_object,
)

if TYPE_CHECKING:
    from .server import DevApiServer

# --------------------------------------------------------------------------- HTTP plumbing

_log = logging.getLogger("refresher.devserver")  # one logger for the package


class _HttpServer(ThreadingHTTPServer):
    """Threading HTTP server doing TLS per connection, in named, tracked threads."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], app: DevApiServer, context: ssl.SSLContext
    ) -> None:
        self.app = app
        self._context = context
        self._conn_lock = threading.Lock()
        self._connections: set[ssl.SSLSocket] = set()
        self._conn_threads: set[threading.Thread] = set()
        self._counter = itertools.count(1)
        self._closing = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the FQDN of the address, which can block on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            if self._closing:
                request.close()
                return
            self._conn_threads = {t for t in self._conn_threads if t.is_alive()}
            thread = threading.Thread(
                target=self._serve_connection,
                args=(request, client_address),
                name=f"devserver-{self.server_port}-conn-{next(self._counter)}",
                daemon=True,
            )
            self._conn_threads.add(thread)
        thread.start()

    def _serve_connection(self, raw: socket.socket, client_address: tuple[str, int]) -> None:
        connection: ssl.SSLSocket | None = None
        try:
            raw.settimeout(self.app.connection_timeout)
            connection = self._context.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            )
            with self._conn_lock:
                if self._closing:
                    return
                self._connections.add(connection)
            connection.do_handshake()
            _Handler(connection, client_address, self)
        except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts and resets are OSErrors
            _log.debug("devserver: connection ended: %s", type(exc).__name__)
        except Exception:
            _log.exception("devserver: unexpected error while serving a connection")
        finally:
            if connection is None:
                raw.close()
            else:
                with self._conn_lock:
                    self._connections.discard(connection)
                connection.close()

    def close_connections(self) -> None:
        """Refuse new connections and wake every connection thread (shutdown both ways)."""
        with self._conn_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            # socket.socket.shutdown, not SSLSocket.shutdown: leave the TLS state alone so the
            # reading thread just sees end-of-stream.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)

    def connection_threads(self) -> list[threading.Thread]:
        with self._conn_lock:
            return list(self._conn_threads)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("devserver: error while accepting a connection", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "token-refresher-devserver"
    sys_version = ""
    disable_nagle_algorithm = True

    server: _HttpServer
    _exchange: _Exchange | None = None

    # ---- plumbing overrides

    def log_message(self, format: str, *args: Any) -> None:
        """Never log request lines, headers or bodies: they may carry tokens."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.formatdate(
            self.server.app.now() if timestamp is None else timestamp, usegmt=True
        )

    def version_string(self) -> str:
        return self.server_version

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError) as exc:  # client went away, reset, closed by stop()
            _log.debug("devserver: connection dropped: %s", type(exc).__name__)
            self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Used by the stdlib for unparsable requests and unknown methods: answer a Status."""
        self.close_connection = True
        if self._exchange is None:  # failed before _dispatch: record it here
            path = urlsplit(getattr(self, "path", "") or "").path
            self._exchange = _Exchange(getattr(self, "command", "") or "", path)
        self._send_json(code, status_object(code, message))
        self._exchange = None

    def _conclude(self, status: int | None) -> None:
        """Record the exchange (once) just before the answer goes out (or instead of one).

        Doing it before the write means a client that has its answer also finds it recorded.
        """
        exchange = self._exchange
        if exchange is None or exchange.concluded:
            return
        exchange.concluded = True
        self.server.app._record(exchange.method, exchange.path, status, exchange.fault)

    # ---- responses

    def _send_bytes(
        self,
        code: int,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._conclude(int(code))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(
        self, code: int, value: Mapping[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._send_bytes(code, json.dumps(value).encode(), "application/json", headers)

    def _send_status(
        self, status: Mapping[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._send_json(int(status["code"]), status, headers)

    # ---- dispatch

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        method = self.command
        path = urlsplit(self.path).path
        token_match = _TOKEN_REQUEST_PATH.fullmatch(path)
        exchange = _Exchange(
            method, path, token_request=token_match is not None and method == "POST"
        )
        self._exchange = exchange
        if exchange.token_request:
            self.server.app._token_request_started()
        try:
            body = self._read_body()
            if body is None:
                return
            if token_match is not None and method == "POST":
                self._token_request(token_match["namespace"], token_match["name"], body)
            else:
                self._route(method, path, body, token_match is not None)
        except (OSError, ValueError):
            self.close_connection = True
            raise
        except Exception:
            _log.exception("devserver: internal error handling %s %s", method, path)
            self.close_connection = True
            if not exchange.concluded:
                self._send_status(status_object(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error"))
        finally:
            self._conclude(None)  # no answer was sent (client gone)
            self._exchange = None
            if exchange.token_request:
                self.server.app._token_request_finished()

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an error (or when the client left)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_status(status_object(HTTPStatus.LENGTH_REQUIRED, "Content-Length required"))
            return None
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            self.close_connection = True
            self._send_status(status_object(HTTPStatus.BAD_REQUEST, "invalid Content-Length"))
            return None
        if length > self.server.app.max_body_bytes:
            self.close_connection = True
            self._send_status(
                status_object(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the request body is larger than {self.server.app.max_body_bytes} bytes",
                )
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-body
            self.close_connection = True
            return None
        return body

    def _route(self, method: str, path: str, body: bytes, token_path: bool) -> None:
        app = self.server.app
        if path in _PROBE_PATHS and method in ("GET", "HEAD"):
            self._send_bytes(HTTPStatus.OK, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/version" and method in ("GET", "HEAD"):
            self._send_json(HTTPStatus.OK, {**SERVER_VERSION, "platform": "linux/amd64"})
            return
        identity = app._authenticate(self.headers.get("Authorization"))
        if identity is None:
            self._send_status(status_object(HTTPStatus.UNAUTHORIZED))
            return
        if token_path or path == _TOKEN_REVIEW_PATH:
            if method != "POST":
                self._send_status(status_object(HTTPStatus.METHOD_NOT_ALLOWED))
            else:
                self._token_review(identity, body)
            return
        if path == _SELF_SUBJECT_REVIEW_PATH:
            if method != "POST":
                self._send_status(status_object(HTTPStatus.METHOD_NOT_ALLOWED))
                return
            self._send_json(
                HTTPStatus.CREATED,
                {
                    "kind": "SelfSubjectReview",
                    "apiVersion": TOKEN_REQUEST_API_VERSION,
                    "metadata": {"creationTimestamp": None},
                    "status": {"userInfo": identity.user_info()},
                },
            )
            return
        if path == "/api" and method == "GET":
            address = f"{LOOPBACK}:{self.server.server_port}"
            cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
            self._send_json(
                HTTPStatus.OK,
                {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs},
            )
            return
        if path == "/apis" and method == "GET":
            version = {"groupVersion": TOKEN_REQUEST_API_VERSION, "version": "v1"}
            group = {
                "name": "authentication.k8s.io",
                "versions": [version],
                "preferredVersion": version,
            }
            self._send_json(
                HTTPStatus.OK, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
            )
            return
        self._send_status(status_object(HTTPStatus.NOT_FOUND))

    def _json_body(self, body: bytes, kind: str) -> dict[str, Any] | None:
        """Decode a request object, or answer 400 and return None."""
        try:
            value = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._send_status(
                status_object(
                    HTTPStatus.BAD_REQUEST, f"the body of the request is not a valid {kind} object"
                )
            )
            return None
        if not isinstance(value, dict) or value.get("kind", kind) != kind:
            self._send_status(status_object(HTTPStatus.BAD_REQUEST, f"expected a {kind} object"))
            return None
        return value

    # ---- TokenRequest

    def _token_request(self, namespace: str, name: str, body: bytes) -> None:
        app = self.server.app
        exchange = self._exchange
        assert exchange is not None
        if app.is_down:
            exchange.fault = "down"
            self._send_status(status_object(HTTPStatus.SERVICE_UNAVAILABLE))
            return
        fault = app._next_fault()
        mutation = None
        if fault is not None:
            exchange.fault = fault.name
            if fault.kind in _TOKEN_MUTATIONS:
                mutation = fault.kind
            else:
                self._apply_fault(fault)
                return
        identity = app._authenticate(self.headers.get("Authorization"))
        if identity is None:
            self._send_status(status_object(HTTPStatus.UNAUTHORIZED))
            return
        if not app._may_mint(identity, namespace, name):
            self._send_status(
                status_object(
                    HTTPStatus.FORBIDDEN,
                    f'serviceaccounts "{name}" is forbidden: User "{identity.username}" cannot '
                    f'create resource "serviceaccounts/token" in API group "" in the namespace '
                    f'"{namespace}"',
                    details={"name": name, "kind": "serviceaccounts"},
                )
            )
            return
        request = self._json_body(body, "TokenRequest")
        if request is None:
            return
        try:
            spec, bound = _parse_token_request(request, namespace, name)
            issued = app._issue(
                namespace,
                name,
                audiences=spec["audiences"],
                expiration_seconds=spec["expirationSeconds"],
                bound=bound,
                mutation=mutation,
            )
        except ApiStatusError as exc:
            self._send_status(exc.status)
            return
        spec["audiences"] = list(issued.audiences)
        spec["expirationSeconds"] = issued.expiration_seconds
        response = {
            "kind": "TokenRequest",
            "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": rfc3339(app.now()),
            },
            "spec": spec,
            "status": {
                "token": issued.token,
                "expirationTimestamp": rfc3339(issued.expires_at),
            },
        }
        headers = [("Warning", f'299 - "{warning}"') for warning in issued.warnings]
        self._send_json(HTTPStatus.CREATED, response, headers)

    def _apply_fault(self, fault: Fault) -> None:
        if fault.kind == "status":
            code = fault.code or HTTPStatus.INTERNAL_SERVER_ERROR
            details: dict[str, object] = {}
            headers: list[tuple[str, str]] = []
            if fault.retry_after is not None:
                details["retryAfterSeconds"] = fault.retry_after
                headers.append(("Retry-After", str(fault.retry_after)))
            self._send_status(status_object(code, details=details), headers)
        elif fault.kind == "reset":
            self._reset_connection()
        elif fault.kind == "hang":
            self.close_connection = True
            self._conclude(None)  # recorded now; still counted in flight while it hangs
            self.server.app.stopping.wait(fault.seconds)
        elif fault.kind == "garbage":
            self._send_bytes(
                HTTPStatus.CREATED, b"<html><body>this is not JSON", "application/json"
            )
        else:  # pragma: no cover - Fault's constructors make only known kinds
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _reset_connection(self) -> None:
        """Abort with RST: linger 0, then close the descriptor (no TLS close_notify, no FIN)."""
        self.close_connection = True
        self._conclude(None)
        connection = self.connection
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile() reference so close() really closes the fd
        connection.close()

    # ---- TokenReview

    def _token_review(self, identity: _Identity, body: bytes) -> None:
        if not identity.admin:
            self._send_status(
                status_object(
                    HTTPStatus.FORBIDDEN,
                    f'tokenreviews.authentication.k8s.io is forbidden: User "{identity.username}" '
                    'cannot create resource "tokenreviews" in API group "authentication.k8s.io" '
                    "at the cluster scope",
                    details={"group": "authentication.k8s.io", "kind": "tokenreviews"},
                )
            )
            return
        review = self._json_body(body, "TokenReview")
        if review is None:
            return
        spec = review.get("spec")
        token = spec.get("token") if isinstance(spec, dict) else None
        audiences = spec.get("audiences") if isinstance(spec, dict) else None
        if not isinstance(token, str) or not _is_string_list(audiences, optional=True):
            self._send_status(status_object(HTTPStatus.BAD_REQUEST, "spec.token must be a string"))
            return
        result = self.server.app.review_token(token, audiences)
        response = {
            "kind": "TokenReview",
            "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": {"creationTimestamp": None},
            # Like kube-apiserver, echo the spec (the typed clients require spec.token).
            "spec": {"token": token, **({"audiences": list(audiences)} if audiences else {})},
            "status": result.to_status(),
        }
        self._send_json(HTTPStatus.CREATED, response)


def _is_string_list(value: object, *, optional: bool) -> bool:
    if value is None:
        return optional
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _parse_token_request(
    request: Mapping[str, Any], namespace: str, name: str
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Check a TokenRequest's shape; return (spec with defaults, boundObjectRef or None)."""
    metadata = request.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _bad_request("metadata must be an object")
    if metadata.get("name") and metadata["name"] != name:
        raise _invalid(
            name,
            "metadata.name",
            metadata["name"],
            "must match the service account name if specified",
        )
    if metadata.get("namespace") and metadata["namespace"] != namespace:
        raise _invalid(
            name,
            "metadata.namespace",
            metadata["namespace"],
            "must match the service account namespace if specified",
        )
    spec = request.get("spec") or {}
    if not isinstance(spec, dict):
        raise _bad_request("spec must be an object")
    audiences = spec.get("audiences")
    if not _is_string_list(audiences, optional=True):
        raise _bad_request("spec.audiences must be a list of strings")
    expiration = spec.get("expirationSeconds")
    if expiration is None:
        expiration = DEFAULT_EXPIRATION_SECONDS
    if not isinstance(expiration, int) or isinstance(expiration, bool):
        raise _bad_request("spec.expirationSeconds must be an integer")
    ref = spec.get("boundObjectRef")
    bound: dict[str, str] | None = None
    if ref is not None:
        if not isinstance(ref, dict) or not all(isinstance(v, str) for v in ref.values()):
            raise _bad_request("spec.boundObjectRef must be an object of strings")
        bound = dict(ref)
    clean: dict[str, Any] = {"audiences": list(audiences or []), "expirationSeconds": expiration}
    if bound is not None:
        clean["boundObjectRef"] = bound
    return clean, bound


__all__ = [
    "DEFAULT_ISSUER",
    "ApiStatusError",
    "DevApiServer",
    "Fault",
    "IssuedToken",
    "RequestRecord",
    "TokenReviewResult",
    "rfc3339",
    "status_object",
]

