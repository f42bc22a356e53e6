"""Prometheus metrics, fed by the lifecycle loop and rendered for `/metrics`.

`Metrics.observe` runs on the lifecycle loop thread after each `decide()`: it only updates metric
objects (a few short locks inside prometheus_client), never I/O. The token file is read at scrape
time, on the health server's connection thread. Everything lives in a private registry; no label
value ever comes from a token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__
from .claims import decode_claims
from .config import Config
from .errors import TokenError
from .events import Event, FailureKind, RefreshFailed, RefreshSucceeded
from .lifecycle import Action, Mode, State, Transition
from .tokenfile import read_token

# No `*_created` series: they double the output and no alert here needs them. (A process-wide
# switch of prometheus_client; this process has no other registry.)
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "token_refresher"
CONTENT_TYPE = CONTENT_TYPE_LATEST
TRIGGER_SOURCES = ("signal", "activate_file", "expiry", "stale_kubelet", "restart",
                   "invalid_token")
RESULTS = ("success", "failure")
# s: TokenRequest round trips, from a local API server (ms) to a hung one cut off by the timeout
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric of the refresher, in its own `CollectorRegistry`."""

    def __init__(self, config: Config, *, process_metrics: bool = True) -> None:
        self.token_file = config.token_file
        self.registry = CollectorRegistry(auto_describe=True)
        self._observed_expiry: float | None = None  # from the lifecycle state (server clock)
        r = self.registry
        self.build_info = Gauge(f"{PREFIX}_build_info", "Always 1; the version as a label.",
                                ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.state = Gauge(f"{PREFIX}_state", "1 for the current lifecycle state, 0 for the "
                           "others.", ["state"], registry=r)
        self.refresh_total = Counter(f"{PREFIX}_refresh", "Token refreshes (TokenRequest, "
                                     "check and write) by result.", ["result"], registry=r)
        self.refresh_failures = Counter(f"{PREFIX}_refresh_failures", "Failed refreshes by "
                                        "kind of failure.", ["kind"], registry=r)
        self.refresh_duration = Histogram(f"{PREFIX}_refresh_duration_seconds", "Time one "
                                          "refresh attempt took, successful or not.",
                                          buckets=DURATION_BUCKETS, registry=r)
        self.consecutive_failures = Gauge(f"{PREFIX}_consecutive_failures", "Failed refreshes "
                                          "since the last success.", registry=r)
        self.last_success = Gauge(f"{PREFIX}_last_success_timestamp_seconds", "Unix time of the "
                                  "last successful refresh (0: none yet).", registry=r)
        self.triggers_total = Counter(f"{PREFIX}_triggers", "Switches from passive to active, "
                                      "by what caused them.", ["source"], registry=r)
        for mode in Mode:
            self.state.labels(str(mode)).set(1 if mode is Mode.PASSIVE else 0)
        for result in RESULTS:
            self.refresh_total.labels(result)
        for kind in FailureKind:
            self.refresh_failures.labels(str(kind))
        for source in TRIGGER_SOURCES:
            self.triggers_total.labels(source)
        r.register(_TokenFileCollector(self))
        if process_metrics:
            ProcessCollector(registry=r)
        self._mode = Mode.PASSIVE

    # -- the lifecycle loop's side: cheap, no I/O ---------------------------------------------

    def observe(self, event: Event, state: State, actions: list[Action]) -> None:
        """Called on the lifecycle loop thread after each decide(). Never blocks on I/O."""
        if isinstance(event, RefreshSucceeded):
            self.refresh_total.labels("success").inc()
            self.refresh_duration.observe(event.duration)
            self.last_success.set(event.token.received_at)
        elif isinstance(event, RefreshFailed):
            self.refresh_total.labels("failure").inc()
            self.refresh_failures.labels(str(event.kind)).inc()
            self.refresh_duration.observe(event.duration)
        for action in actions:
            if isinstance(action, Transition) and action.after is Mode.ACTIVE:
                self.triggers_total.labels(action.reason).inc()
        self.consecutive_failures.set(state.failures)
        if state.mode is not self._mode:
            self.state.labels(str(self._mode)).set(0)
            self.state.labels(str(state.mode)).set(1)
            self._mode = state.mode
        if state.token is not None:
            self._observed_expiry = state.token.expires_at

    # -- the scrape side -------------------------------------------------------------------------

    def served_expiry(self) -> tuple[float, bool]:
        """(exp of the token the file serves, readable). Falls back to the last observed exp
        (NaN if none) when the file cannot be read or parsed."""
        try:
            return decode_claims(read_token(self.token_file).text).expires_at, True
        except TokenError:
            fallback = self._observed_expiry
            return (math.nan if fallback is None else fallback), False

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _TokenFileCollector(Collector):
    """Reads the token file once per scrape: its expiry and whether it could be read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families(math.nan, False)

    def collect(self) -> Iterable[Metric]:
        expiry, readable = self._metrics.served_expiry()
        return self._families(expiry, readable)

    @staticmethod
    def _families(expiry: float, readable: bool) -> list[Metric]:
        return [
            GaugeMetricFamily(f"{PREFIX}_token_expiry_timestamp_seconds",
                              "Unix time the served token expires (its exp claim); the last "
                              "known value if the file cannot be read.", value=expiry),
            GaugeMetricFamily(f"{PREFIX}_token_file_readable",
                              "1 if the token file holds a parseable token, else 0.",
                              value=1.0 if readable else 0.0),
        ]
