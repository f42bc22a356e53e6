"""Raw measurements, filled in by each benchmark and read by the report (seconds unless noted)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Latency:
    roundtrip_warm: list[float] = field(default_factory=list)
    roundtrip_cold: list[float] = field(default_factory=list)
    roundtrip_first: list[float] = field(default_factory=list)  # a process's first call
    curl: list[float] = field(default_factory=list)
    write_atomic: list[float] = field(default_factory=list)  # temp+fsync+rename+dir fsync
    # ours
    sigterm: list[float] = field(default_factory=list)
    activate: list[float] = field(default_factory=list)
    sigterm_at_start: list[float] = field(default_factory=list)
    shutdown: list[float] = field(default_factory=list)  # in active mode, after the first token
    shutdown_logged: list[float] = field(default_factory=list)  # -> `exiting` line read
    teardown: list[float] = field(default_factory=list)  # `exiting` read -> process gone
    refresh_work: list[float] = field(default_factory=list)  # refresh_succeeded duration
    token_changed: list[float] = field(default_factory=list)
    swap_write: list[float] = field(default_factory=list)  # ProjectedVolume.write() itself
    startup: list[float] = field(default_factory=list)  # exec -> `started` read
    settle: list[float] = field(default_factory=list)  # exec -> no CPU used for 0.2 s
    # baseline
    base_sigterm: list[float] = field(default_factory=list)
    base_activate: list[float] = field(default_factory=list)  # measured in the idle window
    base_shutdown: list[float] = field(default_factory=list)  # measured in the idle window
    base_startup: list[float] = field(default_factory=list)
    poll_interval: float = 0.0  # the baseline pollers' --shutdown_interval
    problems: list[str] = field(default_factory=list)


@dataclass
class IdleProcess:
    label: str  # "refresher passive", ...
    seconds: float  # window length
    cpu: float  # s of CPU in the window (utime+stime; tree incl. children for the baseline)
    sched_cpu: float  # s on CPU from schedstat (ns resolution; live threads only)
    switches: int  # voluntary + nonvoluntary, all threads (and descendants for the baseline)
    rss_mb: float  # at the end of the window
    rss_max_mb: float
    threads: int
    per_thread: dict[int, int] = field(default_factory=dict)  # tid -> switches in the window

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu / self.seconds if self.seconds else 0.0

    @property
    def switches_per_second(self) -> float:
        return self.switches / self.seconds if self.seconds else 0.0


@dataclass
class Idle:
    processes: list[IdleProcess] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class FootprintRun:
    label: str
    interval: str
    refreshes: int = 0
    failures: int = 0
    seconds: float = 0.0
    points: list[tuple[int, float, int]] = field(default_factory=list)  # (refreshes, MiB, fds)
    warmup: int = 0  # refreshes not counted in growth


@dataclass
class Footprint:
    ours: FootprintRun | None = None
    baseline: FootprintRun | None = None
    imports: list[tuple[str, float]] = field(default_factory=list)  # (what is imported, MiB RSS)
    problems: list[str] = field(default_factory=list)


@dataclass
class HerdRun:
    label: str
    pods: int
    down: float  # s the server answered 503 after the signal (0: healthy)
    signal_spread: float = 0.0  # s to send every signal
    fresh: dict[str, float] = field(default_factory=dict)  # pod -> s from signal to rename
    arrivals: list[tuple[float, str, int | None]] = field(default_factory=list)  # (t, pod, status)
    peak_concurrency: int = 0
    settle: float = 0.0  # s spent waiting for the herd to be idle before the signal


@dataclass
class Herd:
    runs: list[HerdRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Results:
    latency: Latency | None = None
    idle: Idle | None = None
    footprint: Footprint | None = None
    herd: Herd | None = None
    durations: dict[str, float] = field(default_factory=dict)  # benchmark -> wall seconds
    # benchmark -> (CPU used by other processes, % of all CPUs; CPU pressure some %; loadavg)
    load: dict[str, tuple[float, float, float]] = field(default_factory=dict)
