"""`python -m bench --smoke`: every benchmark runs end to end in a tiny configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", f"--out={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    for heading in ("## Targets", "## 1. Reaction latency", "## 2. Idle cost",
                    "## 3. Footprint over refreshes", "## 4. Herd"):
        assert heading in text
    assert "not run" not in text
    for name in ("latency", "idle", "footprint", "herd"):
        assert (tmp_path / "img" / f"bench-{name}.png").stat().st_size > 10_000
    assert "Problems:" not in text, text
