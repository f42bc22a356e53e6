"""PNG plots for docs/benchmarks.md (matplotlib, Agg backend): docs/img/bench-*.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plan import Plan
from .results import HerdRun, Results

OURS = "#1f77b4"
BASE = "#d62728"
LIMIT = "#7f7f7f"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(results: Results, img_dir: Path, plan: Plan) -> list[Path]:
    out: list[Path] = []
    if results.latency is not None:
        out.append(_latency(results, img_dir / "bench-latency.png"))
    if results.idle is not None and results.idle.processes:
        out.append(_idle(results, img_dir / "bench-idle.png"))
    if results.footprint is not None and results.footprint.ours is not None:
        out.append(_footprint(results, img_dir / "bench-footprint.png"))
    if results.herd is not None and results.herd.runs:
        out.append(_herd(results.herd.runs, img_dir / "bench-herd.png", plan))
    return out


def _ecdf(ax: Any, values: Sequence[float], label: str, color: str, style: str = "-") -> None:
    if not values:
        return
    data = sorted(v * 1000 for v in values)
    ys = [0.0] + [(i + 1) / len(data) for i in range(len(data))]
    ax.step([data[0], *data], ys, where="post", label=f"{label} (n={len(data)})", color=color,
            linestyle=style)


def _latency(results: Results, path: Path) -> Path:
    plt = _plt()
    from matplotlib import ticker

    lat = results.latency
    assert lat is not None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        ("SIGTERM -> fresh token", lat.sigterm, lat.base_sigterm, True),
        ("`activate` file -> fresh token", lat.activate, lat.base_activate, True),
        ("`shutdown` file -> exit", lat.shutdown, lat.base_shutdown, False),
        ("kubelet `..data` swap -> `token_changed` read", lat.token_changed, [], False),
    ]
    for ax, (title, ours, base, with_rt) in zip(axes.flat, panels, strict=True):
        _ecdf(ax, ours, "refresher", OURS)
        _ecdf(ax, base, "baseline", BASE)
        if with_rt:
            _ecdf(ax, lat.roundtrip_cold, "API round trip, new connection", LIMIT, "--")
            _ecdf(ax, lat.roundtrip_warm, "API round trip, kept-alive", LIMIT, ":")
        ax.set_xscale("log")
        shown = [v for v in (*ours, *base, *(lat.roundtrip_cold if with_rt else [])) if v > 0]
        wide = bool(shown) and max(shown) / min(shown) > 300  # more than ~2.5 decades
        subs = (1.0,) if wide else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("milliseconds (log)")
        ax.set_ylabel("fraction of samples")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Reaction latency (CDF): refresher vs curl-and-sleep baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _idle(results: Results, path: Path) -> Path:
    plt = _plt()
    assert results.idle is not None
    procs = results.idle.processes
    labels = [p.label.replace(" ", "\n") for p in procs]
    colors = [OURS if p.label.startswith("refresher") else BASE for p in procs]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    series = [
        ("CPU, % of one core", [p.cpu_percent for p in procs], 0.1),
        ("context switches per second", [p.switches_per_second for p in procs], 1.0),
        ("RSS, MiB", [p.rss_mb for p in procs], 60.0),
    ]
    for ax, (title, values, target) in zip(axes, series, strict=True):
        ax.bar(labels, values, color=colors)
        ax.axhline(target, color=LIMIT, linestyle="--", linewidth=1, label="target (passive)")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"Idle cost over {procs[0].seconds:.0f} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _footprint(results: Results, path: Path) -> Path:
    plt = _plt()
    fp = results.footprint
    assert fp is not None
    runs = [(r, c) for r, c in ((fp.ours, OURS), (fp.baseline, BASE)) if r is not None and r.points]
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 3.6 * len(runs)), squeeze=False)
    for (run, color), (ax1, ax2) in zip(runs, axes, strict=True):
        xs = [p[0] for p in run.points]
        ax1.plot(xs, [p[1] for p in run.points], color=color, label=run.label)
        ax2.plot(xs, [p[2] for p in run.points], color=color, label=run.label)
        for ax in (ax1, ax2):
            if run.warmup:
                ax.axvline(run.warmup, color=LIMIT, linestyle=":", linewidth=1,
                           label="end of warm-up")
            ax.set_xlabel("refreshes")
            ax.grid(True, alpha=0.3)
        top = max(p[1] for p in run.points)
        if run.label == "refresher":
            ax1.axhline(60, color=LIMIT, linestyle="--", linewidth=1, label="60 MB target")
            top = max(top, 60)
        ax1.set_ylim(0, top * 1.15)
        ax1.set_title(f"{run.label}: RSS (VmRSS)" +
                      (", with live children" if run.label == "baseline" else ""), fontsize=10)
        ax1.set_ylabel("MiB")
        ax2.set_title(f"{run.label}: open file descriptors", fontsize=10)
        ax2.set_ylabel("fds")
        ax2.set_ylim(0, max(p[2] for p in run.points) + 2)
        ax1.legend(fontsize=8, loc="lower right")
        ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle("Footprint over back-to-back refreshes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _herd(runs: list[HerdRun], path: Path, plan: Plan) -> Path:
    from refresher.durations import parse_duration

    from .report import retry_delays

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(16, 7.5))
    order = {("refresher", False): (0, 0), ("refresher", True): (0, 1),
             ("baseline", False): (1, 0), ("baseline", True): (1, 1)}
    width = 0.025
    nominal = parse_duration(plan.herd_sleep)
    top = max([a[0] for r in runs for a in r.arrivals] + [1.0])
    delay_top = max([d * 1000 for r in runs for d in retry_delays(r)] + [nominal * 1000])
    bins = [i * width for i in range(int(top / width) + 2)]
    for run in runs:
        who = "refresher" if run.label.startswith("refresher") else "baseline"
        ax = axes[order[(who, run.down > 0)]]
        ok = [a[0] for a in run.arrivals if a[2] in (200, 201)]
        bad = [a[0] for a in run.arrivals if a[2] not in (200, 201)]
        ax.hist([ok, bad], bins=bins, stacked=True, color=["#2ca02c", BASE],
                label=["answered 201", "answered 503 (down)"])
        if run.fresh:
            last = max(run.fresh.values())
            ax.axvline(last, color="black", linestyle="--", linewidth=1,
                       label=f"all {len(run.fresh)} fresh: {last * 1000:.0f} ms")
        if run.down:
            ax.axvspan(0, run.down, color=LIMIT, alpha=0.15, label="API down")
            delays = [d * 1000 for d in retry_delays(run)]
            hx = axes[0 if who == "refresher" else 1, 2]
            if delays:
                hx.hist(delays, bins=30, color=OURS if who == "refresher" else BASE)
            hx.axvspan(nominal * 500, nominal * 1000, color=LIMIT, alpha=0.15,
                       label="equal jitter range")
            hx.axvline(nominal * 1000, color="black", linestyle=":", linewidth=1,
                       label=f"--sleep {nominal * 1000:.0f} ms")
            hx.set_title(f"{who}: delay between a pod's 1st and 2nd request", fontsize=10)
            hx.set_xlabel("milliseconds")
            hx.set_ylabel("pods")
            hx.set_xlim(0, delay_top * 1.05)
            hx.legend(fontsize=7)
            hx.grid(True, alpha=0.3)
        ax.set_title(f"{run.label}: {run.pods} pods, peak concurrency {run.peak_concurrency}",
                     fontsize=10)
        ax.set_ylabel(f"requests per {width * 1000:.0f} ms")
        ax.set_xlabel("seconds after the signals")
        ax.set_xlim(0, top + width)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Herd: TokenRequest arrivals at the API server (--sleep={plan.herd_sleep})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
