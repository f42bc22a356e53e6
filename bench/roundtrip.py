"""The bare API round trip: the limit the refresher's reaction latency is compared with.

Run as its own process (`python -m bench.roundtrip ...`), like the refresher, so the client never
shares a GIL with the stand-in server living in the bench process. It uses the official
`kubernetes` client the way `refresher.kubeapi` does (CoreV1Api, `_preload_content=False`, no
urllib3 retries) and prints one JSON object: seconds per TokenRequest,

- `warm`: one client, one kept-alive HTTPS connection (every refresh after the first);
- `cold`: a new ApiClient per call, so each call opens a new TLS connection (the first refresh
  after passive, which never talks to the API server); client construction is not timed;
- `first`: the process's very first call (new connection, plus the client's one-time work such
  as building its request validators).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _client(kubeconfig: str) -> Any:
    import importlib

    from kubernetes import client

    config: Any = importlib.import_module("kubernetes.config")
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.retries = False
    return client.CoreV1Api(client.ApiClient(cfg))


def _call(api: Any, namespace: str, name: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    response = api.create_namespaced_service_account_token(
        name, namespace, body, _preload_content=False, _request_timeout=10)
    data = response.data
    elapsed = time.perf_counter() - start
    if b'"token"' not in data:
        raise SystemExit("round trip: no token in the answer")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.roundtrip")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--service_account", required=True)
    ap.add_argument("--audience", required=True)
    ap.add_argument("--expiration_seconds", type=int, default=7200)
    ap.add_argument("--warm", type=int, default=100)
    ap.add_argument("--cold", type=int, default=50)
    ap.add_argument("--pause", type=float, default=0.005, help="seconds between calls")
    args = ap.parse_args(argv)
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [args.audience],
                     "expirationSeconds": args.expiration_seconds}}
    api = _client(args.kubeconfig)
    first = _call(api, args.namespace, args.service_account, body)  # connect and warm up
    warm = []
    for _ in range(args.warm):
        warm.append(_call(api, args.namespace, args.service_account, body))
        time.sleep(args.pause)
    api.api_client.close()
    cold = []
    for _ in range(args.cold):
        fresh = _client(args.kubeconfig)
        cold.append(_call(fresh, args.namespace, args.service_account, body))
        fresh.api_client.close()
        time.sleep(args.pause)
    json.dump({"warm": warm, "cold": cold, "first": [first]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
