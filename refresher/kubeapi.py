"""The only module that talks to the Kubernetes API (and the only importer of `kubernetes`).

`TokenMinter.mint()` makes one TokenRequest with a timeout and no client-side retries (our own
backoff decides), and classifies every failure as transient or permanent. Error messages carry the
status and the API server's Status message, never a token or a request body.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from email.utils import parsedate_to_datetime
from typing import Any

from .claims import decode_claims
from .config import Config
from .errors import (
    ApiError,
    ConfigError,
    PermanentApiError,
    TokenError,
    TransientApiError,
)
from .worker import MintResult

log = logging.getLogger(__name__)

TOKEN_REQUEST_PATH = "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409, 422})
CREDENTIAL_RENEW_FACTOR = 1.5  # renew our own credential when < 1.5 x refresh_interval is left
CREDENTIAL_RENEW_MIN = 120.0  # ...and never later than 2 minutes before it expires
MAX_MESSAGE = 300


def _configuration(config: Config) -> Any:
    from kubernetes import client as k8s_client

    k8s_config: Any = importlib.import_module("kubernetes.config")

    cfg = k8s_client.Configuration()
    try:
        if config.kubeconfig:
            k8s_config.load_kube_config(config_file=config.kubeconfig, client_configuration=cfg)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg, try_refresh_token=True)
        else:
            k8s_config.load_kube_config(client_configuration=cfg)
    except Exception as exc:  # YAML errors, bad base64, missing keys: all name the file
        where = config.kubeconfig or "in-cluster config / ~/.kube/config"
        raise ConfigError(f"cannot load API credentials from {where}: "
                          f"{type(exc).__name__}: {str(exc)[:MAX_MESSAGE]}") from None
    cfg.retries = False  # our backoff retries; urllib3 must not retry behind our back
    return cfg


class TokenMinter:
    """Mints tokens for the target service account, and keeps its own credential alive.

    The refresher authenticates with its own service-account token, which kubelet also stops
    rotating once the pod terminates. Before that credential gets close to its expiry, the minter
    requests a token for the credential's own service account (the API audience, bound to the pod
    when known) and uses it for the next calls. On a 401 it re-reads its configured credential
    and retries once before the failure goes to the backoff.
    """

    def __init__(self, config: Config) -> None:
        from kubernetes import client as k8s_client

        assert config.namespace and config.service_account
        self._config = config
        self._client_module: Any = k8s_client
        self._api: Any = self._new_api()
        self._own: str | None = None  # self-minted credential in use, if any
        self._offset = 0.0
        self._renew_failed_logged = False
        self._body = _token_request(config.token_audience, config.expiration_duration, config)

    def _new_api(self) -> Any:
        # The ApiClient alone, not CoreV1Api: that module (every core route and its models)
        # costs ~20 MiB of RSS for the one route we call.
        return self._client_module.ApiClient(_configuration(self._config))

    def close(self) -> None:
        self._api.close()

    def mint(self, timeout: float) -> MintResult:
        """One TokenRequest (plus a credential renewal when due). Raises ApiError subclasses."""
        self._renew_credential_if_due(timeout)
        try:
            return self._request(self._config.namespace or "", self._config.service_account or "",
                                 self._body, timeout)
        except PermanentApiError as exc:
            if exc.status != 401 or not self._reload_credential():
                raise
            log.warning("API server rejected the refresher's credential (401): retrying once "
                        "with a freshly read one", extra={"event": "credential_rejected"})
            return self._request(self._config.namespace or "", self._config.service_account or "",
                                 self._body, timeout)

    def _request(self, namespace: str, name: str, body: dict[str, Any],
                 timeout: float) -> MintResult:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        request = self._api.param_serialize(
            method="POST", resource_path=TOKEN_REQUEST_PATH,
            path_params={"namespace": namespace, "name": name},
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body, auth_settings=["BearerToken"])
        sent = time.time()
        try:
            response = self._api.call_api(*request, _request_timeout=timeout)
            data = response.read()
        except ApiException as exc:
            raise _classify(exc) from None
        except (HTTPError, OSError) as exc:
            raise TransientApiError(f"connection failed: {type(exc).__name__}") from None
        received = time.time()
        if not 200 <= response.status <= 299:
            raise _classify_status(response.status, data, response.getheaders(), response.reason)
        token = _token_from_body(data)
        server_time = _date(response.getheader("Date"))
        offset = None if server_time is None else server_time - (sent + received) / 2
        if offset is not None:
            self._offset = offset
        return MintResult(token=token, received_at=received, server_time=server_time,
                          offset=offset)

    # -- the refresher's own credential --------------------------------------------------------
    def _credential(self) -> str | None:
        cfg = self._api.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        value = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
        if not value:
            return None
        text = str(value)
        return text.split(" ", 1)[1] if text.lower().startswith("bearer ") else text

    def _renew_credential_if_due(self, timeout: float) -> None:
        token = self._credential()
        if token is None:
            return  # client certificates or another scheme: nothing expires under us
        try:
            claims = decode_claims(token)
        except TokenError:
            return  # not a JWT: not ours to renew
        identity = claims.service_account
        left = claims.expires_at - (time.time() + self._offset)
        margin = max(CREDENTIAL_RENEW_FACTOR * self._config.refresh_interval,
                     CREDENTIAL_RENEW_MIN)
        if identity is None or left > margin:
            return
        body = _token_request(claims.audiences, self._config.expiration_duration, self._config)
        try:
            result = self._request(identity[0], identity[1], body, timeout)
            fresh = decode_claims(result.token)
        except (ApiError, TokenError) as exc:
            if not self._renew_failed_logged:
                self._renew_failed_logged = True
                log.warning("cannot renew the refresher's own credential (%.0fs left): %s",
                            left, exc, extra={"event": "credential_renew_failed"})
            return
        cfg = self._api.configuration
        cfg.refresh_api_key_hook = None  # the file behind it is no longer rotated
        cfg.api_key["BearerToken"] = f"Bearer {result.token}"
        cfg.api_key.pop("authorization", None)
        self._own = result.token
        self._renew_failed_logged = False
        log.info("renewed the refresher's own API credential", extra={
            "event": "credential_renewed", "expires_at": fresh.expires_at,
            "previous_seconds_left": round(left, 1)})

    def _reload_credential(self) -> bool:
        """Re-read the configured credential; True if it differs from the rejected one."""
        rejected = self._credential()
        try:
            api = self._new_api()
        except ConfigError:
            return False
        self._api.close()
        self._api, self._own = api, None
        return self._credential() != rejected


def _token_request(audiences: tuple[str, ...], expiration: float,
                   config: Config) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": list(audiences), "expirationSeconds": int(expiration)},
    }
    if config.bound_to_pod:
        body["spec"]["boundObjectRef"] = {
            "apiVersion": "v1", "kind": "Pod", "name": config.pod_name, "uid": config.pod_uid,
        }
    return body


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _token_from_body(data: bytes) -> str:
    try:
        body = json.loads(data)
        token = body["status"]["token"]
    except (ValueError, KeyError, TypeError):
        raise TransientApiError("API server answered with an unreadable body") from None
    if not isinstance(token, str) or not token:
        raise TransientApiError("API server answered without a token")
    return token


def _status_message(body: Any) -> str:
    try:
        status = json.loads(body)
        message = status.get("message") or status.get("reason") or ""
    except (TypeError, ValueError, AttributeError):
        message = ""
    return str(message)[:MAX_MESSAGE]


def _classify(exc: Any) -> ApiError:
    return _classify_status(int(exc.status or 0), exc.body, exc.headers, exc.reason)


def _classify_status(status: int, body: Any, headers: Any, reason: Any) -> ApiError:
    message = _status_message(body)
    text = f"HTTP {status}" + (f": {message}" if message else "") if status else \
        f"request failed: {str(reason)[:MAX_MESSAGE]}"
    if status == 429:
        return TransientApiError(text, status=status, retry_after=_retry_after(headers))
    if status in PERMANENT_STATUSES:
        return PermanentApiError(text, status=status)
    return TransientApiError(text, status=status or None)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = _date(value)
        return None if when is None else max(when - time.time(), 0.0)
    return seconds if seconds >= 0 else None
