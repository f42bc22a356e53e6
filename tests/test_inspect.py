"""`token-refresher inspect [PATH]` as a real process: a JSON summary, never the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from refresher.devkubelet import ProjectedVolume
from tests.e2e import scan_for_leaks
from tests.helpers import b64, make_jwt, sa_token

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        assert self.code == 0, self.stderr
        value: dict[str, Any] = json.loads(self.stdout)
        return value


def inspect(*args: str, token_file: Path | None = None, secrets: list[str]) -> Result:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    if token_file is not None:
        env["TOKEN_FILE"] = str(token_file)
    proc = subprocess.run([sys.executable, "-m", "refresher", "inspect", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert scan_for_leaks(proc.stdout + proc.stderr, secrets) == [], "token material printed"
    return result


def failed(result: Result, *fragments: str) -> None:
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.startswith("token-refresher inspect: ")
    assert result.stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.stderr


def bound_token() -> str:
    now = time.time()
    return sa_token(iat=now - 60, exp=now + 3540, ns="drain", sa="app",
                    aud=["sts.amazonaws.com", "vault"],
                    **{"kubernetes.io": {"namespace": "drain",
                                         "pod": {"name": "web-0", "uid": "1234-abcd"}}})


def test_kubelet_symlinked_token(tmp_path: Path) -> None:
    token = bound_token()
    volume = ProjectedVolume(str(tmp_path / "projected"))
    volume.write(token)
    shared = tmp_path / "shared"
    shared.mkdir()
    token_file = shared / "token"
    os.symlink(volume.path, token_file)
    summary = inspect(str(token_file), token_file=token_file, secrets=[token]).summary
    assert summary["managed_by"] == "kubelet (symlink to the projected token)"
    assert summary["symlink"] is True
    target = summary["symlink_target"]
    assert target.startswith(str(tmp_path / "projected" / "..")) and target.endswith("/token")
    assert summary["subject"] == "system:serviceaccount:drain:app"
    assert summary["audiences"] == ["sts.amazonaws.com", "vault"]
    assert summary["issuer"] == "https://issuer.test"
    assert summary["bound_pod"] == {"name": "web-0", "uid": "1234-abcd"}
    assert summary["lifetime_seconds"] == 3600
    assert 3500 < summary["seconds_left"] <= 3540 and summary["expired"] is False
    assert summary["expires_at"].endswith("Z") and summary["issued_at"].endswith("Z")
    assert summary["file_mode"] == "0644"


def test_refresher_owned_file_is_the_default_path(tmp_path: Path) -> None:
    token = bound_token()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o640)
    summary = inspect(token_file=token_file, secrets=[token]).summary  # no PATH: TOKEN_FILE
    assert summary["path"] == str(token_file)
    assert summary["managed_by"] == "token-refresher (own file)"
    assert summary["symlink"] is False and summary["symlink_target"] is None
    assert summary["file_mode"] == "0640"


def test_regular_file_elsewhere_and_expired(tmp_path: Path) -> None:
    now = time.time()
    token = sa_token(iat=now - 7200, exp=now - 3600)
    path = tmp_path / "copy"
    path.write_text(token)
    summary = inspect(str(path), token_file=tmp_path / "token", secrets=[token]).summary
    assert summary["managed_by"] == "unknown (regular file, not --token_file)"
    assert summary["expired"] is True and summary["seconds_left"] < -3500
    assert summary["bound_pod"] is None


def test_missing_file(tmp_path: Path) -> None:
    failed(inspect(str(tmp_path / "nope"), secrets=[]), str(tmp_path / "nope"),
           "No such file or directory")


def test_dangling_symlink_names_its_target(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone" / "token", tmp_path / "token")
    failed(inspect(str(tmp_path / "token"), secrets=[]),
           f"dangling symlink to {tmp_path / 'gone' / 'token'}")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    failed(inspect(str(tmp_path / "token"), secrets=[]), "is empty")


def test_directory(tmp_path: Path) -> None:
    failed(inspect(str(tmp_path), secrets=[]), "not a regular file")


HEADER = b64(json.dumps({"alg": "RS256", "kid": "test-key-id-0123456789"}).encode())
SIGNATURE = b64(b"a-signature-that-must-never-be-printed-" * 4)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"this-is-not-a-jwt-but-a-long-secret-string", "not a JWT"),
    (f"{HEADER}.not*base64url*at*all*padding.{SIGNATURE}".encode(), "not valid base64url"),
    (f"{HEADER}.{b64(b'{not json at all, a very long payload')}.{SIGNATURE}".encode(),
     "claims are not JSON"),
    (f"{HEADER}.{b64(json.dumps(['a', 'list', 'of', 'claims']).encode())}.{SIGNATURE}".encode(),
     "not a JSON object"),
    (make_jwt(sub="system:serviceaccount:ns:app", iat=1).encode(), "no 'exp' claim"),
    (make_jwt(exp="tomorrow", sub="system:serviceaccount:ns:app").encode(),
     "'exp' is not a number"),
    (bytes(range(256)) * 4, "binary data"),
], ids=["not-a-jwt", "bad-base64", "not-json", "not-object", "no-exp", "exp-not-number",
        "binary-junk"])
def test_malformed_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    text = content.decode("latin-1")
    failed(inspect(str(path), secrets=[text, SIGNATURE, HEADER]), str(path), fragment)
