"""What /proc says about a process tree: CPU time, context switches, RSS, open fds.

Counters are read from the outside, so reading them never wakes the measured process. A process
*tree* (the process and its live descendants) matters for the shell baseline, whose work happens
in short-lived children (`sleep`, `curl`, `sed`): their CPU time is in the parent's cutime/cstime
once reaped, and their context switches are kept from the last sample in which they were alive.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        return fh.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of every thread (and of reaped children with `children`), in seconds.

    Resolution 1/CLK_TCK (10 ms on this kernel).
    """
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    if children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime (fields 16, 17)
    return ticks / CLK_TCK


def start_ticks(pid: int) -> int:
    """Start time since boot in clock ticks (tells a reused pid from the original)."""
    return int(_stat_fields(pid)[19])


def status_fields(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_mb(pid: int) -> float:
    """VmRSS in MiB."""
    value = status_fields(f"/proc/{pid}/status").get("VmRSS", "0 kB")
    return int(value.split()[0]) / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_ids(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def ctx_switches(pid: int) -> dict[int, int]:
    """voluntary + nonvoluntary context switches per thread (every /proc/PID/task/*/status)."""
    out: dict[int, int] = {}
    for tid in thread_ids(pid):
        with contextlib.suppress(OSError):
            st = status_fields(f"/proc/{pid}/task/{tid}/status")
            out[tid] = int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
    return out


def sched_ns(pid: int) -> int:
    """CPU time on the run queue summed over live threads, in ns (/proc/PID/task/*/schedstat)."""
    total = 0
    for tid in thread_ids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError), \
                open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
            total += int(fh.read().split()[0])
    return total


def activity_ns(pid: int) -> int:
    """Run time plus run-queue wait time of every thread, in ns (schedstat fields 1 and 2).

    Unchanged over an interval means no thread ran *or wanted to run*: unlike CPU time alone,
    a thread starved of CPU on a busy machine still counts as active.
    """
    total = 0
    for tid in thread_ids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError), \
                open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
            fields = fh.read().split()
            total += int(fields[0]) + int(fields[1])
    return total


def children(pid: int) -> list[int]:
    """Direct children of pid (every thread's /proc/PID/task/TID/children)."""
    kids: list[int] = []
    for tid in thread_ids(pid):
        with contextlib.suppress(OSError), \
                open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
            kids.extend(int(k) for k in fh.read().split())
    return kids


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for kid in children(current):
                out.append(kid)
                todo.append(kid)
    return out


@dataclass
class TreeSample:
    cpu: float  # s: root's threads + reaped children + live descendants
    rss_mb: float  # root + live descendants
    fds: int  # root only
    switches: int  # every thread ever seen in the tree (last value seen for ended ones)


@dataclass
class TreeMeter:
    """Cumulative counters of a process tree, sampled from outside.

    Call `sample()` often enough (<= 1 s) that short-lived descendants are seen; a descendant that
    lives less than one sampling period is counted in CPU (via the root's cutime/cstime once its
    parent reaps it) but not in context switches or RSS.
    """

    pid: int
    _switches: dict[tuple[int, int], int] = field(default_factory=dict)  # (pid, tid) -> last
    _live_cpu: dict[int, float] = field(default_factory=dict)

    def sample(self) -> TreeSample:
        root_cpu = cpu_seconds(self.pid, children=True)
        rss = rss_mb(self.pid)
        fds = open_fds(self.pid)
        for tid, value in ctx_switches(self.pid).items():
            self._switches[(self.pid, tid)] = value
        live_cpu = 0.0
        for kid in descendants(self.pid):
            with contextlib.suppress(OSError, ValueError, KeyError):
                live_cpu += cpu_seconds(kid)
                rss += rss_mb(kid)
                for tid, value in ctx_switches(kid).items():
                    self._switches[(kid, tid)] = value
        return TreeSample(cpu=root_cpu + live_cpu, rss_mb=rss, fds=fds,
                          switches=sum(self._switches.values()))


def system_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat, all CPUs)."""
    with open("/proc/stat", encoding="ascii") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU seconds of this process and every child it has reaped."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_pressure_us() -> int:
    """Total µs some task waited for a CPU (/proc/pressure/cpu `some`), 0 if unsupported."""
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open("/proc/pressure/cpu", encoding="ascii") as fh:
        return int(fh.readline().split("total=")[1])
    return 0


@dataclass
class LoadMeter:
    """What else the machine did while a benchmark ran (other users' work disturbs timings)."""

    wall: float = 0.0
    busy: float = 0.0
    own: float = 0.0
    pressure: int = 0

    def start(self) -> LoadMeter:
        self.wall, self.busy = time.monotonic(), system_busy_seconds()
        self.own, self.pressure = own_cpu_seconds(), cpu_pressure_us()
        return self

    def stop(self) -> tuple[float, float, float]:
        """(CPU used outside the bench, % of all CPUs; CPU pressure `some`, %; load average)."""
        wall = time.monotonic() - self.wall
        foreign = (system_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        cpus = os.cpu_count() or 1
        pressure = (cpu_pressure_us() - self.pressure) / 1e6
        load = os.getloadavg()[0]
        return (max(0.0, 100 * foreign / (wall * cpus)) if wall else 0.0,
                100 * pressure / wall if wall else 0.0, load)


@dataclass(frozen=True)
class Machine:
    nproc: int
    model: str
    python: str
    kernel: str
    memory_gib: float


def machine() -> Machine:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0.0
    with contextlib.suppress(OSError, ValueError, KeyError):
        mem = int(status_fields("/proc/meminfo")["MemTotal"].split()[0]) / 1024 / 1024
    return Machine(nproc=os.cpu_count() or 0, model=model,
                   python=f"{platform.python_implementation()} {sys.version.split()[0]}",
                   kernel=platform.release(), memory_gib=mem)
