"""Tables for the terminal and docs/benchmarks.md, target verdicts, and the PNG plots."""

from __future__ import annotations

import datetime
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .herd import MAX_ATTEMPTS
from .plan import Plan
from .procfs import machine
from .results import FootprintRun, HerdRun, IdleProcess, Results
from .stats import Summary, ms, percentile, ratio, table

OK_STATUSES = (200, 201)
TARGET_OVERHEAD = 0.025  # s over the API round trip (SIGTERM / activate -> fresh token, p99)
TARGET_SHUTDOWN = 0.100  # s (p99)
TARGET_IDLE_CPU = 0.1  # % of one core, passive
TARGET_IDLE_SWITCHES = 1.0  # per second, passive
TARGET_RSS = 60.0  # MB (MiB as the kernel counts kB)
TARGET_GROWTH = 1.0  # MiB after warm-up: "no growth" within measurement noise
TARGET_STARTUP = 1.0  # s exec -> passive
TARGET_HERD = 2.0  # s until every pod holds a fresh token
TARGET_JITTER = 0.25  # p10..p90 of first-retry delays, as a fraction of the nominal delay


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _fmt_mb(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f} MiB"


def growth(run: FootprintRun) -> tuple[float, float, float]:
    """(RSS right after warm-up, RSS at the end, fd growth) over a tenth of the run each.

    RSS: medians; fds: minimums (a sample can catch a temp file or the token being read).
    """
    points = [p for p in run.points if p[0] >= run.warmup]
    if len(points) < 4:
        return math.nan, math.nan, math.nan
    tenth = max(1, len(points) // 10)
    early, late = points[:tenth], points[-tenth:]
    rss0 = statistics.median(p[1] for p in early)
    rss1 = statistics.median(p[1] for p in late)
    fd0 = min(p[2] for p in early)  # the fds held for good; a sample may catch a temp file
    fd1 = min(p[2] for p in late)
    return rss0, rss1, fd1 - fd0


def retry_delays(run: HerdRun) -> list[float]:
    """Per pod: arrival of its 2nd TokenRequest minus its 1st (failing herd)."""
    by_pod: dict[str, list[float]] = {}
    for t, pod, _status in run.arrivals:
        by_pod.setdefault(pod, []).append(t)
    return [ts[1] - ts[0] for ts in by_pod.values() if len(ts) >= 2]


@dataclass(frozen=True)
class Jitter:
    n: int
    p10: float
    p90: float
    early: float  # share of retries sooner than the nominal delay (a fixed sleep never is)


def jitter(run: HerdRun, nominal: float) -> Jitter:
    delays = retry_delays(run)
    if not delays:
        return Jitter(0, math.nan, math.nan, 0.0)
    return Jitter(len(delays), percentile(delays, 10), percentile(delays, 90),
                  sum(1 for d in delays if d < nominal) / len(delays))


def first_arrivals(run: HerdRun) -> list[float]:
    by_pod: dict[str, float] = {}
    for t, pod, _status in run.arrivals:
        by_pod.setdefault(pod, t)
    return sorted(by_pod.values())


class Report:
    def __init__(self, *, plan: Plan, command: str, results: Results) -> None:
        self.plan = plan
        self.command = command
        self.r = results
        self.when = datetime.datetime.now(datetime.UTC)

    # ------------------------------------------------------------------ sections
    def section_text(self, name: str) -> str:
        return {"latency": self._latency, "idle": self._idle, "footprint": self._footprint,
                "herd": self._herd}[name]()

    def _latency(self) -> str:
        lat = self.r.latency
        if lat is None:
            return "_Not run._"
        rt = Summary.of(lat.roundtrip_cold)
        rows: list[list[str]] = []

        def row(label: str, ours: Sequence[float], base: Sequence[float] | None) -> None:
            a = Summary.of(ours)
            b = Summary.of(base) if base is not None else None
            rows.append([label, str(a.n), ms(a.p50), ms(a.p95), ms(a.p99), ms(a.max),
                         ms(b.p50) if b else "n/a", ms(b.p99) if b else "n/a",
                         ratio(a.p50, b.p50) if b else "n/a",
                         ratio(a.p99, b.p99) if b else "n/a"])

        row("API round trip, new TLS connection (official client)", lat.roundtrip_cold,
            lat.curl)
        row("API round trip, kept-alive connection (official client)", lat.roundtrip_warm,
            None)
        row("API round trip, first call of a process (official client)", lat.roundtrip_first,
            None)
        row("atomic write of a token-sized file (fsync, rename, dir fsync)", lat.write_atomic,
            None)
        row("SIGTERM -> fresh token in place", lat.sigterm, lat.base_sigterm)
        row("`activate` file -> fresh token in place", lat.activate, lat.base_activate)
        row("  the refresh itself (its `duration_seconds`: API call, checks, write)",
            lat.refresh_work, None)
        row("`shutdown` file -> process exit", lat.shutdown, lat.base_shutdown)
        row("  `shutdown` file -> `exiting` logged (file seen, threads stopped)",
            lat.shutdown_logged, None)
        row("  `exiting` logged -> process gone (flush, exit, teardown)", lat.teardown, None)
        row("kubelet `..data` swap -> `token_changed` read", lat.token_changed, None)
        row("  of which `ProjectedVolume.write()` itself (bench side)", lat.swap_write, None)
        row("SIGTERM at `started` -> fresh token (client not ready yet)", lat.sigterm_at_start,
            None)
        row("exec -> `started` (passive)", lat.startup, lat.base_startup)
        row("exec -> start-up work done (no CPU for 0.2 s)", lat.settle, None)
        headers = ["", "n", "p50", "p95", "p99", "max", "baseline p50", "baseline p99",
                   "ratio p50", "ratio p99"]
        text = table(headers, rows)
        extra = [f"Limit for SIGTERM/activate: the cold round trip, p99 {ms(rt.p99)}; "
                 f"target p99 <= {ms(rt.p99 + TARGET_OVERHEAD)}."]
        if lat.curl:
            extra.append("Baseline column of the round-trip row: `curl` with process start, "
                         "as the baseline calls it.")
        if not lat.base_activate:
            extra.append("Baseline activate/shutdown are measured in the idle window.")
        else:
            extra.append(f"Baseline activate/shutdown: --shutdown_interval="
                         f"{lat.poll_interval:g}s (its poll).")
        return text + "\n\n" + "\n".join(extra) + self._problems(lat.problems)

    def _idle(self) -> str:
        idle = self.r.idle
        if idle is None:
            return "_Not run._"
        rows = []
        for p in idle.processes:
            rows.append([p.label, f"{p.seconds:.0f} s", f"{p.cpu:.2f} s",
                         f"{p.cpu_percent:.3f} %", f"{100 * p.sched_cpu / p.seconds:.4f} %",
                         f"{p.switches}", f"{p.switches_per_second:.2f}", _fmt_mb(p.rss_mb),
                         str(p.threads)])
        text = table(["process", "window", "CPU", "CPU % of a core (stat)",
                      "CPU % (schedstat)", "context switches", "per second", "RSS", "threads"],
                     rows)
        pairs = []
        for mode in ("passive", "active"):
            ours = self._idle_proc(f"refresher {mode}")
            base = self._idle_proc(f"baseline {mode}")
            if ours is None or base is None:
                continue
            pairs.append([f"{mode}: CPU", f"{ours.cpu_percent:.3f} %",
                          f"{base.cpu_percent:.3f} %", ratio(ours.cpu, base.cpu)])
            pairs.append([f"{mode}: context switches/s", f"{ours.switches_per_second:.2f}",
                          f"{base.switches_per_second:.2f}",
                          ratio(ours.switches, base.switches)])
            pairs.append([f"{mode}: RSS", _fmt_mb(ours.rss_mb), _fmt_mb(base.rss_mb),
                          ratio(ours.rss_mb, base.rss_mb)])
        if pairs:
            text += "\n\n" + table(["metric", "refresher", "baseline", "ratio"], pairs)
        busiest = []
        for p in idle.processes:
            if p.label.startswith("refresher") and p.per_thread:
                top = sorted(p.per_thread.values(), reverse=True)
                busiest.append(f"{p.label}: {len(top)} threads, switches per thread in the "
                               f"window {top}")
        if busiest:
            text += "\n\n" + "\n".join(busiest)
        return text + self._problems(idle.problems)

    def _idle_proc(self, label: str) -> IdleProcess | None:
        if self.r.idle is None:
            return None
        return next((p for p in self.r.idle.processes if p.label == label), None)

    def _footprint(self) -> str:
        fp = self.r.footprint
        if fp is None:
            return "_Not run._"
        rows = []
        for run in (fp.ours, fp.baseline):
            if run is None:
                continue
            rss0, rss1, dfd = growth(run)
            fds = [p[2] for p in run.points]
            rate = run.refreshes / run.seconds if run.seconds else math.nan
            rows.append([run.label, str(run.refreshes), str(run.failures), f"{rate:.0f}/s",
                         _fmt_mb(run.points[0][1]) if run.points else "n/a",
                         _fmt_mb(rss0), _fmt_mb(rss1), f"{rss1 - rss0:+.2f} MiB",
                         f"{min(fds)}..{max(fds)}" if fds else "n/a", f"{dfd:+.0f}"])
        text = table(["", "refreshes", "failed", "rate", "RSS before first refresh",
                      "RSS after warm-up", "RSS at end", "growth", "fds (min..max)",
                      "fd growth"], rows)
        text += ("\n\nWarm-up: the first "
                 f"{self.plan.warmup_fraction:.0%} of refreshes. Baseline RSS: bash plus the "
                 "children alive at the sample (curl, sed, sleep).")
        if fp.imports:
            base = fp.imports[0][1]
            imp_rows = [[label, _fmt_mb(mb), f"{mb - base:+.1f} MiB"] for label, mb in fp.imports]
            text += "\n\nWhat the refresher's RSS is made of (fresh interpreter per row):\n\n"
            text += table(["import", "RSS", "vs bare interpreter"], imp_rows)
        return text + self._problems(fp.problems)

    def _herd(self) -> str:
        herd = self.r.herd
        if herd is None:
            return "_Not run._"
        rows = []
        for run in herd.runs:
            fresh = list(run.fresh.values())
            ok = [a for a in run.arrivals if a[2] in OK_STATUSES]
            failed = [a for a in run.arrivals if a[2] not in OK_STATUSES]
            firsts = first_arrivals(run)
            delays = retry_delays(run)
            rows.append([
                run.label, f"{len(fresh)}/{run.pods}",
                ms(max(fresh)) if fresh else "n/a", ms(percentile(fresh, 50)),
                str(len(run.arrivals)), str(len(failed)),
                ms(max(firsts) - min(firsts)) if firsts else "n/a",
                ms(max(a[0] for a in ok) - min(a[0] for a in ok)) if ok else "n/a",
                str(run.peak_concurrency),
                f"{ms(min(delays))}..{ms(max(delays))}" if delays else "-",
                ms(statistics.pstdev(delays)) if len(delays) > 1 else "-",
            ])
        text = table(["herd", "fresh", "all fresh after", "p50 fresh", "requests",
                      "failed (503)", "first-attempt spread", "success spread",
                      "peak concurrency", "1st retry delay (min..max)", "retry delay stdev"],
                     rows)
        text += ("\n\nTimes from the signal loop's start (sending all signals took "
                 + ", ".join(f"{r.label}: {ms(r.signal_spread)}" for r in herd.runs)
                 + "). Arrival = when the server recorded the request (just before its answer).")
        return text + self._problems(herd.problems)

    def _load_text(self) -> str:
        if not self.r.load:
            return "not measured."
        parts = [f"{name}: {foreign:.0f} % of all CPUs used by other processes, CPU pressure "
                 f"{pressure:.0f} %, load {load:.1f}"
                 for name, (foreign, pressure, load) in self.r.load.items()]
        return "; ".join(parts) + "."

    @staticmethod
    def _problems(problems: list[str]) -> str:
        if not problems:
            return ""
        shown = problems[:10]
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        return "\n\nProblems: " + "; ".join(shown) + more

    def breakdown(self) -> str:
        """Where the time and the memory go, computed from this run's measurements."""
        lines: list[str] = []
        lat, fp = self.r.latency, self.r.footprint
        if lat is not None and lat.shutdown:
            slow = [x for x in lat.shutdown_logged if x > 0.1]
            text = (f"- `shutdown` -> exit, p50 {ms(percentile(lat.shutdown, 50))}: "
                    f"{ms(percentile(lat.shutdown_logged, 50))} until the refresher logs "
                    f"`exiting` (the file seen, its threads stopped), then "
                    f"{ms(percentile(lat.teardown, 50))} (p99 {ms(percentile(lat.teardown, 99))})"
                    " from that line until the process is gone (whatever runs after `exiting`: "
                    "flushing, interpreter teardown unless it exits with `os._exit`).")
            if slow:
                text += (f" In {len(slow)} of {len(lat.shutdown_logged)} samples the `exiting` "
                         f"line came only {ms(min(slow))}..{ms(max(slow))} after the file.")
            lines.append(text)
        if lat is not None and lat.sigterm and lat.refresh_work and lat.roundtrip_cold:
            total = percentile(lat.sigterm, 50)
            work = percentile(lat.refresh_work, 50)
            rt = percentile(lat.roundtrip_cold, 50)
            lines.append(
                f"- SIGTERM -> fresh token, p50 {ms(total)}: the refresh itself (the refresher's "
                f"`duration_seconds`: request, checks, atomic write) p50 {ms(work)}, against a "
                f"new-connection round trip of p50 {ms(rt)} and an atomic write of p50 "
                f"{ms(percentile(lat.write_atomic, 50))}; the remaining {ms(total - work)} is "
                "the signal reaching the lifecycle loop and what the loop does before it "
                "hands the refresh to the worker.")
        if lat is not None and lat.sigterm_at_start:
            lines.append(
                f"- A SIGTERM right at `started` waits for the API client, prepared in the "
                f"background: p50 {ms(percentile(lat.sigterm_at_start, 50))} to the fresh "
                f"token; start-up work ends p50 {ms(percentile(lat.settle, 50))} after exec.")
        if fp is not None and len(fp.imports) >= 5:
            (_, bare), (_, own), (_, pkg), (_, minter), (_, api) = fp.imports[:5]
            steady = fp.ours.points[-1][1] if fp.ours is not None and fp.ours.points else minter
            lines.append(
                f"- RSS, {_fmt_mb(steady)} while refreshing: the interpreter {_fmt_mb(bare)}, "
                f"the refresher's modules and their dependencies (watchdog, logging, "
                f"prometheus-client, ...) {own - bare:+.1f} MiB, the `kubernetes` package "
                f"{pkg - own:+.1f} MiB, the API client as the refresher builds it "
                f"{minter - pkg:+.1f} MiB; the rest ({steady - minter:+.1f} MiB) is the "
                "running threads, the TLS connection and the heap. For reference, the "
                f"generated `CoreV1Api` class would add {api - minter:+.1f} MiB.")
        return "\n".join(lines) if lines else "_Not run._"

    # ------------------------------------------------------------------ targets
    def verdicts(self) -> list[Verdict]:
        out: list[Verdict] = []
        lat, idle, fp, herd = self.r.latency, self.r.idle, self.r.footprint, self.r.herd
        if lat is not None and lat.roundtrip_cold:
            limit = Summary.of(lat.roundtrip_cold).p99 + TARGET_OVERHEAD
            for label, values in (("SIGTERM", lat.sigterm), ("`activate`", lat.activate)):
                p99 = Summary.of(values).p99
                out.append(Verdict(
                    f"{label} -> fresh token: p99 <= API round trip + 25 ms",
                    f"p99 {ms(p99)} (limit {ms(limit)}: cold round trip p99 "
                    f"{ms(limit - TARGET_OVERHEAD)} + 25 ms)",
                    bool(values) and p99 <= limit))
            p99 = Summary.of(lat.shutdown).p99
            base = Summary.of(lat.base_shutdown).p99
            out.append(Verdict("`shutdown` file -> exit: p99 < 100 ms",
                               f"p99 {ms(p99)} (baseline p99 {ms(base)})",
                               bool(lat.shutdown) and p99 < TARGET_SHUTDOWN))
        else:
            out.append(Verdict("reaction latency targets", "not run", None))
        passive = self._idle_proc("refresher passive")
        if passive is not None:
            out.append(Verdict("passive idle: < 0.1 % of one core",
                               f"{passive.cpu_percent:.3f} % ({passive.cpu:.2f} s CPU in "
                               f"{passive.seconds:.0f} s)",
                               passive.cpu_percent < TARGET_IDLE_CPU))
            out.append(Verdict("passive idle: < 1 context switch per second",
                               f"{passive.switches_per_second:.2f}/s ({passive.switches} in "
                               f"{passive.seconds:.0f} s, all threads)",
                               passive.switches_per_second < TARGET_IDLE_SWITCHES))
        else:
            out.append(Verdict("idle targets", "not run", None))
        steady: list[tuple[str, float]] = []
        if idle is not None:
            steady += [(p.label, p.rss_max_mb) for p in idle.processes
                       if p.label.startswith("refresher")]
        if fp is not None and fp.ours is not None:
            rss0, rss1, dfd = growth(fp.ours)
            steady.append(("during refreshes", max(rss0, rss1)))
            out.append(Verdict(
                f"no RSS/fd growth over {fp.ours.refreshes} refreshes (after warm-up)",
                f"RSS {rss1 - rss0:+.2f} MiB ({_fmt_mb(rss0)} -> {_fmt_mb(rss1)}), "
                f"fds {dfd:+.0f}",
                abs(rss1 - rss0) <= TARGET_GROWTH and dfd <= 0
                and (fp.ours.refreshes >= 10_000 or not self.plan.full)))
        if steady:
            worst = max(v for _, v in steady)
            out.append(Verdict("RSS under 60 MB steady",
                               ", ".join(f"{k} {_fmt_mb(v)}" for k, v in steady),
                               worst < TARGET_RSS))
        if lat is not None and lat.startup:
            s = Summary.of(lat.startup)
            out.append(Verdict("exec -> passive under 1 s",
                               f"p50 {ms(s.p50)}, p99 {ms(s.p99)}, max {ms(s.max)} "
                               f"(n={s.n})", s.p99 < TARGET_STARTUP))
        if herd is not None:
            healthy = next((r for r in herd.runs if r.label == "refresher"), None)
            failing = next((r for r in herd.runs if r.label.startswith("refresher (")), None)
            if healthy is not None:
                fresh = list(healthy.fresh.values())
                failed = [a for a in healthy.arrivals if a[2] not in OK_STATUSES]
                worst_fresh = max(fresh) if fresh else math.inf
                out.append(Verdict(
                    f"herd of {healthy.pods}: every pod fresh within 2 s, no failed request",
                    f"{len(fresh)}/{healthy.pods} fresh, last after {ms(worst_fresh)}; "
                    f"{len(failed)} failed of {len(healthy.arrivals)} requests",
                    len(fresh) == healthy.pods and worst_fresh <= TARGET_HERD and not failed))
            if failing is not None:
                nominal = self._herd_sleep()
                ours_j = jitter(failing, nominal)
                base_run = next((r for r in herd.runs if r.label.startswith("baseline (")), None)
                base_text = ""
                if base_run is not None:
                    b = jitter(base_run, nominal)
                    base_text = (f"; baseline: p10..p90 {ms(b.p10)}..{ms(b.p90)}, "
                                 f"{b.early:.0%} early")
                out.append(Verdict(
                    "herd: retries after failures are jittered",
                    f"1st retry delay of {ours_j.n} pods p10..p90 {ms(ours_j.p10)}.."
                    f"{ms(ours_j.p90)}, {ours_j.early:.0%} before the nominal {ms(nominal)} "
                    f"(equal jitter: {ms(nominal / 2)}..{ms(nominal)}){base_text}",
                    ours_j.n > 1 and ours_j.p90 - ours_j.p10 >= TARGET_JITTER * nominal
                    and ours_j.early >= 0.5))
        else:
            out.append(Verdict("herd targets", "not run", None))
        return out

    def _herd_sleep(self) -> float:
        from refresher.durations import parse_duration

        return parse_duration(self.plan.herd_sleep)

    def targets_text(self) -> str:
        rows = [[v.target, v.measured,
                 "not run" if v.met is None else "met" if v.met else "**missed**"]
                for v in self.verdicts()]
        return table(["target", "measured", "verdict"], rows)

    # ------------------------------------------------------------------ document
    def write(self, out: Path, img_dir: Path) -> list[Path]:
        from . import plots

        img_dir.mkdir(parents=True, exist_ok=True)
        images = plots.draw(self.r, img_dir, self.plan)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.markdown(images, out.parent))
        return images

    def markdown(self, images: list[Path], doc_dir: Path) -> str:
        m = machine()
        p = self.plan

        def img(name: str, alt: str) -> str:
            for path in images:
                if path.name == name:
                    rel = path.resolve().relative_to(doc_dir.resolve()) \
                        if path.resolve().is_relative_to(doc_dir.resolve()) else path
                    return f"\n\n![{alt}]({rel.as_posix()})"
            return ""

        durations = ", ".join(f"{k} {v:.0f} s" for k, v in self.r.durations.items())
        lines = [
            "# Benchmarks",
            "",
            "<!-- Generated by `python -m bench`; do not edit by hand: re-run the bench. -->",
            "",
            f"- Date: {self.when:%Y-%m-%d %H:%M} UTC",
            f"- Machine: {m.nproc} CPUs (`nproc`), {m.model}, {m.memory_gib:.0f} GiB, "
            f"Linux {m.kernel}",
            f"- Python: {m.python}",
            f"- Command: `{self.command}` (`make bench`), run `{p.name}`; took {durations}",
            "- Everything runs on this machine: the stand-in API server "
            "(`refresher.devserver.DevApiServer`, HTTPS on 127.0.0.1, RS256 tokens) lives in "
            "the bench process; each refresher is the real process `python -m refresher run` "
            "with a kubeconfig holding its own 24 h credential; kubelet's projected volume is "
            "`refresher.devkubelet.ProjectedVolume` with one 24 h token.",
            "- Baseline: [`bench/baseline.sh`](../bench/baseline.sh), a curl-and-sleep loop "
            "like the original tool began: it wakes every `--shutdown_interval` to look for "
            "`shutdown` and `activate`; SIGTERM is trapped (its sleep runs in the background, "
            "so the trap fires at once); once active it POSTs a TokenRequest with `curl` every "
            "`--refresh_interval`, cuts the token out with `sed`, writes a temp file and `mv`s "
            "it over the token file; retries are `--sleep` apart, without jitter.",
            "- Other users of this machine during the run (their work disturbs timings): "
            + self._load_text(),
            "",
            "## Targets",
            "",
            self.targets_text(),
            "",
            "## 1. Reaction latency",
            "",
            "How it is measured: SIGTERM and `activate` switch a refresher to active for good, "
            "so every sample is a new refresher process: start, wait for the `started` line, "
            "wait until it has used no CPU for 0.2 s (the API client is prepared in the "
            "background after `started`), then trigger. The fresh token's arrival is the "
            "`rename()` onto `token`, seen by the bench through **inotify** (IN_MOVED_TO on "
            "the shared directory, a blocking `select()`; resolution: the bench thread's "
            "wake-up latency, tens of microseconds, with the GIL switch interval set to "
            "0.5 ms), and the token is checked to be issued after the trigger. Then "
            "`shutdown` is created and the exit is timed with a **pidfd** (no polling). The "
            "`..data` swaps use one passive refresher; the time is from the start of "
            "`ProjectedVolume.write()` to the moment the bench reads the `token_changed` line "
            "from the refresher's stdout. The bare round trip is a TokenRequest made with "
            "the official `kubernetes` client in its own process (`bench/roundtrip.py`), on "
            "a new TLS connection (as the first refresh after passive must) and on a "
            "kept-alive one. The baseline's `activate` and `shutdown` reactions are bound by "
            f"its poll (--shutdown_interval={p.poll_interval:g}s, the original's minute): "
            f"{p.pollers} baselines per trigger are started evenly over one interval and "
            "triggered at once. Ratio = refresher / baseline.",
            "",
            self._latency() + img("bench-latency.png", "reaction latency CDFs"),
            "",
            "## 2. Idle cost",
            "",
            "Four processes idle in the same window: the refresher passive, the refresher "
            "active (`--refresh_interval=1h`: one refresh after SIGTERM, then idle), and the "
            f"baseline in both modes (`--shutdown_interval={p.poll_interval:g}s`). CPU is "
            "utime+stime from `/proc/PID/stat` (10 ms ticks; the schedstat column sums "
            "`/proc/PID/task/*/schedstat`, in ns); context switches are voluntary + "
            "nonvoluntary summed over every thread in `/proc/PID/task/*/status`; RSS is "
            "VmRSS. For the baseline the figures include its children (`sleep`, `curl`), "
            "sampled every 0.5 s and through cutime/cstime. Start-up (exec -> `started`) is in "
            "the latency table.",
            "",
            self._idle() + img("bench-idle.png", "idle cost"),
            "",
            "## 3. Footprint over refreshes",
            "",
            f"The refresher refreshes {p.refreshes} times back to back on a compressed clock "
            f"(`--refresh_interval={p.refresh_interval} --expiration_duration=2s`: each "
            "refresh starts as soon as the previous one is written, so the rate is bound by "
            f"the round trip); RSS and open fds are sampled every {p.sample_every} refreshes. "
            f"The baseline does {p.baseline_refreshes} (it forks curl, sed, mktemp, chmod, mv "
            "and sleep for each).",
            "",
            self._footprint() + img("bench-footprint.png", "RSS and fds vs refreshes"),
            "",
            "## 4. Herd",
            "",
            f"{p.herd} pods (one process each, own shared directory, own service account so "
            "each request names its pod) against one stand-in API server; all are started, "
            "left to finish start-up, then sent SIGTERM in one loop, like a node drain. Then "
            f"the same with the API server answering 503 for the first {p.herd_down:g} s "
            f"(`set_down`), with `--sleep={p.herd_sleep}` (first retry delay) and "
            f"`--max_attempts={MAX_ATTEMPTS}` for both. A fresh server per herd, so the peak "
            "concurrency is the herd's own.",
            "",
            self._herd() + img("bench-herd.png", "herd request arrivals"),
            "",
            "## 5. Where the time and the memory go",
            "",
            "Computed from the measurements above (the breakdown rows of section 1 and the "
            "import table of section 3).",
            "",
            self.breakdown(),
            "",
        ]
        return "\n".join(lines)
