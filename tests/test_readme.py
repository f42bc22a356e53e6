"""The README stays true to the parser: every flag, its env variable and its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from refresher.config import OPTIONS, _default_text

README = (Path(__file__).parent.parent / "README.md").read_text()
ROWS = {m.group(1): m.group(0) for m in re.finditer(r"^\| `--(\w+)`.*$", README, re.M)}


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_flag_is_documented_with_env_and_default(option: object) -> None:
    name = option.name  # type: ignore[attr-defined]
    row = ROWS.get(name)
    assert row is not None, f"--{name} missing from the README flag table"
    assert f"`{name.upper()}`" in row
    default = _default_text(option).removeprefix(", default ") or "—"  # type: ignore[arg-type]
    assert f"| {default} |" in row


def test_no_stale_flags_in_the_readme() -> None:
    assert set(ROWS) == {o.name for o in OPTIONS}


def test_two_setup_commands() -> None:
    assert "make demo" in README and "make test" in README
