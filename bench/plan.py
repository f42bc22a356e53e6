"""How much to measure: the full run (docs/benchmarks.md), --quick for iteration, --smoke for CI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    # 1. reaction latency
    trigger_samples: int  # fresh refresher processes per trigger kind (SIGTERM, activate)
    at_start_samples: int  # SIGTERM sent the moment `started` is logged (informational)
    token_changed_samples: int  # `..data` swaps observed by one passive refresher
    baseline_sigterm_samples: int  # fresh baseline processes signalled
    roundtrip_warm: int  # TokenRequests over one kept-alive connection
    roundtrip_cold: int  # TokenRequests on a new TLS connection each
    curl_samples: int  # the baseline's curl, process start included
    # 2. idle cost (and the baseline's poll-bound latencies, measured in the same window)
    idle_seconds: float  # at least this long; longer if the baseline pollers need it
    poll_interval: float  # s: the baseline's --shutdown_interval (the original polled each minute)
    pollers: int  # baseline processes per poll-bound trigger (activate, shutdown)
    # 3. footprint over refreshes
    refreshes: int  # refresher, compressed clock
    refresh_interval: str  # the refresher's --refresh_interval for the footprint run
    baseline_refreshes: int  # the baseline forks ~6 processes per refresh: fewer of them
    sample_every: int  # refreshes between RSS/fd samples
    warmup_fraction: float  # the first part of the run not counted in growth
    # 4. herd
    herd: int  # pods signalled at once
    herd_down: float  # s the API server answers 503 in the failing herd
    herd_sleep: str  # --sleep (first retry delay) in the failing herd

    @property
    def full(self) -> bool:
        return self.name == "full"


FULL = Plan(
    name="full", trigger_samples=100, at_start_samples=20, token_changed_samples=200,
    baseline_sigterm_samples=100, roundtrip_warm=300, roundtrip_cold=100, curl_samples=100,
    idle_seconds=60, poll_interval=60, pollers=100,
    refreshes=10_000, refresh_interval="1ms", baseline_refreshes=1_000, sample_every=100,
    warmup_fraction=0.2, herd=50, herd_down=1.0, herd_sleep="400ms",
)

QUICK = Plan(
    name="quick", trigger_samples=20, at_start_samples=5, token_changed_samples=40,
    baseline_sigterm_samples=20, roundtrip_warm=60, roundtrip_cold=20, curl_samples=20,
    idle_seconds=10, poll_interval=5, pollers=20,
    refreshes=1_000, refresh_interval="1ms", baseline_refreshes=100, sample_every=50,
    warmup_fraction=0.2, herd=50, herd_down=1.0, herd_sleep="400ms",
)

SMOKE = Plan(
    name="smoke", trigger_samples=1, at_start_samples=0, token_changed_samples=2,
    baseline_sigterm_samples=1, roundtrip_warm=3, roundtrip_cold=2, curl_samples=2,
    idle_seconds=1, poll_interval=0.5, pollers=1,
    refreshes=40, refresh_interval="1ms", baseline_refreshes=5, sample_every=10,
    warmup_fraction=0.2, herd=1, herd_down=0.3, herd_sleep="100ms",
)
