"""`python -m bench [--quick]`: run the benchmarks, print the tables, write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from . import footprint, herd, idle, latency
from .plan import FULL, QUICK, SMOKE, Plan
from .procfs import LoadMeter
from .procs import BenchError
from .report import Report
from .results import Results

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("latency", "idle", "footprint", "herd")
SWITCH_INTERVAL = 0.0005  # s: the bench's threads hand over the GIL quickly (observation delay)


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="fewer runs and a 10 s idle window, for iteration")
    size.add_argument("--smoke", action="store_true",
                      help="a tiny run that only proves the code works (tests)")
    ap.add_argument("--only", action="append", choices=SECTIONS,
                    help="run only this benchmark (repeatable); the report marks the others")
    ap.add_argument("--out", default=None,
                    help="Markdown report to write (default: docs/benchmarks.md for the full "
                         "run of every benchmark, else a file in the temp directory)")
    ap.add_argument("--raw", default=None, help="also write every measurement as JSON here")
    ap.add_argument("--img_dir", default=None,
                    help="directory of the PNG plots (default: img/ beside --out)")
    args = ap.parse_args(args_list)
    plan: Plan = QUICK if args.quick else SMOKE if args.smoke else FULL
    sections = args.only or list(SECTIONS)
    if args.out:
        out = Path(args.out)
    elif plan is FULL and not args.only:
        out = ROOT / "docs" / "benchmarks.md"
    else:  # a partial run never overwrites the published numbers
        out = Path(tempfile.gettempdir()) / "token-refresher-bench" / "benchmarks.md"
    img_dir = Path(args.img_dir) if args.img_dir else out.parent / "img"
    command = " ".join(["python -m bench", *args_list])

    os.chdir(ROOT)  # `python -m refresher` and `-m bench.roundtrip` resolve from the repo
    sys.setswitchinterval(SWITCH_INTERVAL)
    results = Results()
    report = Report(plan=plan, command=command, results=results)
    _say(f"token-refresher benchmarks ({plan.name}): {', '.join(sections)}")
    began = time.monotonic()
    try:
        for section in sections:
            _say(f"\n== {section} ==")
            t0 = time.monotonic()
            meter = LoadMeter().start()
            if section == "latency":
                results.latency = latency.run(plan, _say)
            elif section == "idle":
                results.idle = idle.run(plan, _say, results.latency)
            elif section == "footprint":
                results.footprint = footprint.run(plan, _say)
            elif section == "herd":
                results.herd = herd.run(plan, _say)
            results.durations[section] = time.monotonic() - t0
            results.load[section] = meter.stop()
            if section == "idle" and results.latency is not None:
                _say(report.section_text("latency"))
            _say(report.section_text(section))
    except BenchError as exc:
        _say(f"\nbenchmark failed: {exc}")
        return 1
    results.durations["total"] = time.monotonic() - began
    written = report.write(out, img_dir)
    if args.raw:
        Path(args.raw).write_text(json.dumps(dataclasses.asdict(results), indent=1))
    _say("\n" + report.breakdown())
    _say("\n" + report.targets_text())
    _say(f"\nwrote {out} and {len(written)} plot(s) in {img_dir} "
         f"({results.durations['total']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
