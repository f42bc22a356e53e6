"""Flags, environment, precedence and validation."""

from __future__ import annotations

import pytest

from refresher.config import (
    DEFAULT_TOKEN_FILE,
    Config,
    config_warnings,
    parse_command_line,
    resolve_identity,
)
from refresher.errors import ConfigError
from tests.helpers import sa_token


def parse(*argv: str, **env: str) -> tuple[str, Config]:
    return parse_command_line(list(argv), env)


def test_defaults_match_the_original_tool() -> None:
    command, c = parse()
    assert command == "run"
    assert c.default_token_file == DEFAULT_TOKEN_FILE
    assert c.token_file == "/var/run/secrets/token-refresher/token"
    assert c.token_audience == ("sts.amazonaws.com",)
    assert (c.expiration_duration, c.refresh_interval, c.sleep) == (7200, 3600, 20)
    assert (c.max_attempts, c.shutdown_interval) == (3, 60)
    assert c.trigger_dir == "/var/run/secrets/token-refresher"
    assert (c.token_file_mode, c.on_sigterm, c.log_format, c.health_port) == (
        0o644, "activate", "json", 0)


@pytest.mark.parametrize("spelling", ["--token_file", "--token-file"])
def test_snake_and_kebab(spelling: str) -> None:
    assert parse(spelling, "/x/t")[1].token_file == "/x/t"
    assert parse(f"{spelling}=/y/t")[1].token_file == "/y/t"


def test_short_flags_and_subcommands() -> None:
    command, c = parse("init", "-n", "ns", "-s", "sa")
    assert (command, c.namespace, c.service_account) == ("init", "ns", "sa")
    command, c = parse("inspect", "/some/token")
    assert (command, c.inspect_path) == ("inspect", "/some/token")


def test_env_fills_and_flag_beats_env() -> None:
    env = {"NAMESPACE": "env-ns", "TOKEN_FILE": "/env/t", "REFRESH_INTERVAL": "30m",
           "MAX_ATTEMPTS": "5", "POD_NAME": "p", "POD_UID": "u", "TOKEN_AUDIENCE": "a,b"}
    _, c = parse("--token_file", "/flag/t", **env)
    assert (c.namespace, c.token_file, c.refresh_interval, c.max_attempts) == (
        "env-ns", "/flag/t", 1800, 5)
    assert c.bound_to_pod and c.token_audience == ("a", "b")
    assert c.trigger_dir == "/flag"


def test_audiences_comma_separated_and_repeatable() -> None:
    _, c = parse("--token_audience", "a,b", "--token-audience", "c")
    assert c.token_audience == ("a", "b", "c")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--sleep", "20x"], "--sleep: invalid duration '20x'"),
    (["--refresh_interval", "2h"], "--refresh_interval (2h0m0s) must be shorter than "
                                   "--expiration_duration (2h0m0s)"),
    (["--expiration_duration", "0s"], "--expiration_duration: duration '0s' must be positive"),
    (["--max_attempts", "0"], "--max_attempts: 0 is out of range"),
    (["--max_attempts", "many"], "--max_attempts: 'many' is not an integer"),
    (["--token_file_mode", "0999"], "--token_file_mode: '0999' is not an octal mode"),
    (["--token_file_mode", "0200"], "unreadable by its owner"),
    (["--token_file_mode", "0666"], "others rewrite"),
    (["--on_sigterm", "ignore"], "--on_sigterm: 'ignore' is not one of activate, exit"),
    (["--log_format", "xml"], "--log_format"),
    (["--health_port", "70000"], "--health_port: 70000 is out of range"),
    (["--pod_name", "p"], "--pod_name is set but --pod_uid is not"),
    (["--pod_uid", "u"], "--pod_uid is set but --pod_name is not"),
    (["--token_audience", ","], "--token_audience: ',' names no audience"),
    (["--token_file", DEFAULT_TOKEN_FILE], "same path"),
    (["--namespace", " "], "--namespace: value must not be empty"),
    (["--sleep", "99999999h"], "at most 10 years"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_configuration_names_flag_and_value(argv: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(*argv)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_env_value_is_reported_with_the_flag_name() -> None:
    with pytest.raises(ConfigError, match="--sleep: invalid duration 'soon'"):
        parse(SLEEP="soon")


def test_short_expiration_warns() -> None:
    _, c = parse("--expiration_duration", "5m", "--refresh_interval", "1m")
    assert any("10m minimum" in w for w in config_warnings(c))
    assert not config_warnings(parse()[1])


def test_identity_from_default_token(tmp_path: pytest.TempPathFactory) -> None:
    token = tmp_path / "token"  # type: ignore[operator]
    token.write_text(sa_token(iat=1, exp=2, ns="prod", sa="api"))
    _, c = parse("--default_token_file", str(token), "--token_file", "/x/t")
    resolved = resolve_identity(c, namespace_file="/nonexistent")
    assert (resolved.namespace, resolved.service_account) == ("prod", "api")
    _, c = parse("--default_token_file", str(token), "--token_file", "/x/t", "-s", "other")
    assert resolve_identity(c).service_account == "other"


def test_identity_namespace_file_then_clear_error(tmp_path: pytest.TempPathFactory) -> None:
    ns_file = tmp_path / "namespace"  # type: ignore[operator]
    ns_file.write_text("from-file\n")
    _, c = parse("--default_token_file", "/missing", "--token_file", "/x/t", "-s", "sa")
    assert resolve_identity(c, namespace_file=str(ns_file)).namespace == "from-file"
    with pytest.raises(ConfigError, match="no namespace: pass -n/--namespace"):
        resolve_identity(c, namespace_file="/missing-too")
    _, c = parse("--default_token_file", "/missing", "--token_file", "/x/t", "-n", "ns")
    with pytest.raises(ConfigError, match="no service account"):
        resolve_identity(c)
