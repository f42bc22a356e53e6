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

from .config import Config
from .errors import ApiError, ConfigError, PermanentApiError, TransientApiError
from .worker import MintResult

log = logging.getLogger(__name__)

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409, 422})
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
    except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = config.kubeconfig or "in-cluster config / ~/.kube/config"
        raise ConfigError(f"cannot load API credentials from {where}: "
                          f"{type(exc).__name__}: {str(exc)[:MAX_MESSAGE]}") from None
    cfg.retries = False  # our backoff retries; urllib3 must not retry behind our back
    return cfg


class TokenMinter:
    def __init__(self, config: Config) -> None:
        from kubernetes import client as k8s_client

        assert config.namespace and config.service_account
        self._config = config
        self._api: Any = k8s_client.CoreV1Api(k8s_client.ApiClient(_configuration(config)))
        self._body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": list(config.token_audience),
                "expirationSeconds": int(config.expiration_duration),
            },
        }
        if config.bound_to_pod:
            self._body["spec"]["boundObjectRef"] = {
                "apiVersion": "v1", "kind": "Pod",
                "name": config.pod_name, "uid": config.pod_uid,
            }

    def close(self) -> None:
        self._api.api_client.close()

    def mint(self, timeout: float) -> MintResult:
        """One TokenRequest. Raises TransientApiError or PermanentApiError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        sent = time.time()
        try:
            response = self._api.create_namespaced_service_account_token(
                self._config.service_account, self._config.namespace, self._body,
                _preload_content=False, _request_timeout=timeout)
            data = response.data
        except ApiException as exc:
            raise _classify(exc) from None
        except (HTTPError, OSError) as exc:
            raise TransientApiError(f"connection failed: {type(exc).__name__}") from None
        received = time.time()
        token = _token_from_body(data)
        server_time = _date(response.headers.get("Date"))
        offset = None if server_time is None else server_time - (sent + received) / 2
        return MintResult(token=token, received_at=received, server_time=server_time,
                          offset=offset)


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
    status = int(exc.status or 0)
    message = _status_message(exc.body)
    text = f"HTTP {status}" + (f": {message}" if message else "") if status else \
        f"request failed: {str(exc.reason)[:MAX_MESSAGE]}"
    if status == 429:
        return TransientApiError(text, status=status,
                                 retry_after=_retry_after(exc.headers))
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
