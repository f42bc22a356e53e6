"""`token-refresher demo` runs the whole story and reports no lapse."""

import subprocess
import sys


def test_demo_story_end_to_end() -> None:
    result = subprocess.run([sys.executable, "-m", "refresher", "demo"], capture_output=True,
                            text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out[-2000:] + result.stderr[-2000:]
    for step in ("passive -> active (signal)", "rotated the projected token (#1)",
                 "kubelet stops rotating", "wrote a fresh token", "writes the `shutdown` file",
                 "exited with status 0", "kubelet (symlink)", "refresher (own file)",
                 "Lapses (missing, empty, partial or expired reads): 0",
                 "RESULT: the token file never lapsed."):
        assert step in out
    reviewed = next(line for line in out.splitlines() if "accepted by TokenReview" in line)
    accepted, total = reviewed.rsplit(" ", 1)[1].split("/")
    assert accepted == total and int(total) >= 3
