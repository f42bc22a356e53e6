"""Configuration: built in one place from flags and environment, validated before anything runs.

Every flag accepts snake_case (the original tool's spelling) and kebab-case, and falls back to the
upper-case environment variable of its snake name. A flag beats its variable. `parse_command_line`
does no I/O; `resolve_identity` fills namespace and service account from the default token.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from . import __version__
from .claims import decode_claims
from .durations import format_duration, parse_duration
from .errors import ConfigError, TokenError

COMMANDS = ("run", "init", "demo", "inspect")
DEFAULT_COMMAND = "run"

DEFAULT_TOKEN_FILE = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
DEFAULT_OWN_TOKEN_FILE = "/var/run/secrets/token-refresher/token"
DEFAULT_AUDIENCES = ("sts.amazonaws.com",)
DEFAULT_EXPIRATION = 2 * 3600.0
DEFAULT_REFRESH_INTERVAL = 3600.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_SLEEP = 20.0
DEFAULT_SHUTDOWN_INTERVAL = 60.0
DEFAULT_TOKEN_FILE_MODE = 0o644
DEFAULT_READY_MIN_VALIDITY = 600.0
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
API_MIN_EXPIRATION = 600.0  # the API server refuses shorter TokenRequests
MAX_DURATION = 10 * 365 * 86400.0  # anything longer is a typo
MAX_ATTEMPTS_LIMIT = 1000
ON_SIGTERM_CHOICES = ("activate", "exit")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class Config:
    """Validated settings. Durations are seconds (float); paths are strings."""

    namespace: str | None = None  # -n; None until resolve_identity()
    service_account: str | None = None  # -s; None until resolve_identity()
    kubeconfig: str | None = None  # None: in-cluster, else ~/.kube/config
    default_token_file: str = DEFAULT_TOKEN_FILE  # kubelet's projected token
    token_file: str = DEFAULT_OWN_TOKEN_FILE  # the file the app reads
    token_audience: tuple[str, ...] = DEFAULT_AUDIENCES
    expiration_duration: float = DEFAULT_EXPIRATION  # requested token lifetime, s
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL  # s between refreshes when active
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # tries per retry burst
    sleep: float = DEFAULT_SLEEP  # first backoff delay, s
    shutdown_interval: float = DEFAULT_SHUTDOWN_INTERVAL  # polling period if inotify fails, s
    trigger_dir: str = os.path.dirname(DEFAULT_OWN_TOKEN_FILE)  # `activate`/`shutdown` live here
    pod_name: str | None = None  # bind tokens to this Pod (with pod_uid)
    pod_uid: str | None = None
    token_file_mode: int = DEFAULT_TOKEN_FILE_MODE  # permission bits of token_file
    on_sigterm: str = "activate"  # or "exit" (native sidecars)
    log_level: str = "info"
    log_format: str = "json"
    health_port: int = 0  # 0 = no health/metrics server
    health_address: str = "0.0.0.0"  # the pod IP (kubelet probes it); 127.0.0.1 in tests
    ready_min_validity: float = DEFAULT_READY_MIN_VALIDITY  # /readyz margin, s
    inspect_path: str | None = None  # `inspect [PATH]`

    @property
    def bound_to_pod(self) -> bool:
        return self.pod_name is not None and self.pod_uid is not None


@dataclass(frozen=True, slots=True)
class _Option:
    name: str  # snake_case flag name == Config field == lower-case env name
    short: str | None
    help: str
    convert: Callable[[str, str], Any]
    default: Any
    metavar: str | None = None
    repeatable: bool = False


def _text(flag: str, value: str) -> str:
    if not value.strip():
        raise ConfigError(f"--{flag}: value must not be empty")
    return value


def _duration(flag: str, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ConfigError(
            f"--{flag}: invalid duration {value!r} (Go syntax, e.g. 20s, 1m30s, 2h)"
        ) from None
    if seconds <= 0 or seconds > MAX_DURATION:
        raise ConfigError(f"--{flag}: duration {value!r} must be positive and at most 10 years")
    return seconds


def _int_in(low: int, high: int) -> Callable[[str, str], int]:
    def convert(flag: str, value: str) -> int:
        try:
            number = int(value.strip(), 10)
        except ValueError:
            raise ConfigError(f"--{flag}: {value!r} is not an integer") from None
        if not low <= number <= high:
            raise ConfigError(f"--{flag}: {number} is out of range {low}..{high}")
        return number

    return convert


def _mode(flag: str, value: str) -> int:
    text = value.strip().lower().removeprefix("0o")
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"--{flag}: {value!r} is not an octal mode such as 0644") from None
    if mode & ~0o777:
        raise ConfigError(f"--{flag}: {value!r} has bits outside 0777")
    if not mode & 0o400:
        raise ConfigError(f"--{flag}: {value!r} would make the token unreadable by its owner")
    if mode & 0o022:
        raise ConfigError(f"--{flag}: {value!r} would let others rewrite the token")
    return mode


def _choice(choices: Sequence[str]) -> Callable[[str, str], str]:
    def convert(flag: str, value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ConfigError(f"--{flag}: {value!r} is not one of {', '.join(choices)}")
        return v

    return convert


def _audiences(flag: str, value: str) -> tuple[str, ...]:
    items = tuple(a.strip() for a in value.split(",") if a.strip())
    if not items:
        raise ConfigError(f"--{flag}: {value!r} names no audience")
    return items


OPTIONS: tuple[_Option, ...] = (
    _Option("namespace", "-n", "namespace of the service account (default: from the default "
            "token's sub claim, then the in-cluster namespace file)", _text, None),
    _Option("service_account", "-s", "service account to issue tokens for (default: from the "
            "default token's sub claim)", _text, None),
    _Option("kubeconfig", None, "kubeconfig file (default: in-cluster config, else "
            "~/.kube/config)", _text, None),
    _Option("default_token_file", None, "kubelet's projected token", _text, DEFAULT_TOKEN_FILE),
    _Option("token_file", None, "the token file the app reads (managed by the refresher)",
            _text, DEFAULT_OWN_TOKEN_FILE),
    _Option("token_audience", None, "token audiences, comma separated and repeatable",
            _audiences, DEFAULT_AUDIENCES, metavar="AUD[,AUD]", repeatable=True),
    _Option("expiration_duration", None, "lifetime requested for minted tokens", _duration,
            DEFAULT_EXPIRATION, metavar="DURATION"),
    _Option("refresh_interval", None, "refresh period once active", _duration,
            DEFAULT_REFRESH_INTERVAL, metavar="DURATION"),
    _Option("max_attempts", None, "tries per retry burst", _int_in(1, MAX_ATTEMPTS_LIMIT),
            DEFAULT_MAX_ATTEMPTS, metavar="N"),
    _Option("sleep", None, "first delay between retries (exponential backoff with jitter)",
            _duration, DEFAULT_SLEEP, metavar="DURATION"),
    _Option("shutdown_interval", None, "polling period used only if inotify is unavailable",
            _duration, DEFAULT_SHUTDOWN_INTERVAL, metavar="DURATION"),
    _Option("trigger_dir", None, "directory of the activate/shutdown trigger files (default: "
            "the token file's directory)", _text, None),
    _Option("pod_name", None, "bind minted tokens to this Pod (needs --pod_uid)", _text, None),
    _Option("pod_uid", None, "UID of the Pod named by --pod_name", _text, None),
    _Option("token_file_mode", None, "permission bits of the token file (octal)", _mode,
            DEFAULT_TOKEN_FILE_MODE, metavar="MODE"),
    _Option("on_sigterm", None, "first SIGTERM/SIGINT: activate (classic sidecar) or exit "
            "(native sidecar)", _choice(ON_SIGTERM_CHOICES), "activate"),
    _Option("log_level", None, "debug, info, warning or error", _choice(LOG_LEVELS), "info"),
    _Option("log_format", None, "json (one object per line) or text", _choice(LOG_FORMATS),
            "json"),
    _Option("health_port", None, "port of /livez, /readyz and /metrics (0: off)",
            _int_in(0, 65535), 0, metavar="PORT"),
    _Option("health_address", None, "address the health server binds", _text, "0.0.0.0",
            metavar="ADDR"),
    _Option("ready_min_validity", None, "/readyz fails when the token has less left than this",
            _duration, DEFAULT_READY_MIN_VALIDITY, metavar="DURATION"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="token-refresher",
        description=(
            "A sidecar which keeps a service-account token file valid: it points at kubelet's "
            "projected token while kubelet rotates it, and mints tokens through the "
            "TokenRequest API once the pod terminates or kubelet's token goes stale.\n\n"
            "commands: run (default) | init (set up the token file and exit) | demo (the "
            "whole story on a built-in development API server) | inspect [PATH] (summarise "
            "a token file)\n\nEvery flag may be spelled with _ or -, and read from the "
            "upper-case environment variable of its name (TOKEN_FILE, ...)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for opt in OPTIONS:
        names = [f"--{opt.name}"]
        if "_" in opt.name:
            names.append(f"--{opt.name.replace('_', '-')}")
        if opt.short:
            names.insert(0, opt.short)
        default_text = _default_text(opt)
        help_text = f"{opt.help} (env {opt.name.upper()}{default_text})"
        parser.add_argument(
            *names,
            dest=opt.name,
            action="append" if opt.repeatable else "store",
            default=None,
            metavar=opt.metavar or opt.name.upper(),
            help=help_text,
        )
    return parser


def _default_text(opt: _Option) -> str:
    if opt.default is None:
        return ""
    if opt.convert is _duration:
        return f", default {format_duration(opt.default)}"
    if opt.convert is _mode:
        return f", default {opt.default:04o}"
    if isinstance(opt.default, tuple):
        return f", default {','.join(opt.default)}"
    return f", default {opt.default}"


def parse_command_line(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, Config]:
    """Flags and environment -> (command, Config). No I/O. Raises ConfigError."""
    args = list(argv)
    command = DEFAULT_COMMAND
    if args and args[0] in COMMANDS:
        command = args.pop(0)
    parser = build_parser()
    if command == "inspect":
        parser.add_argument("path", nargs="?", default=None)
    ns = parser.parse_args(args)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = getattr(ns, opt.name)
        env_value = env.get(opt.name.upper())
        if raw is not None:
            items = raw if opt.repeatable else [raw]
        elif env_value is not None and env_value != "":
            items = [env_value]
        else:
            values[opt.name] = opt.default
            continue
        converted = [opt.convert(opt.name, item) for item in items]
        values[opt.name] = (
            tuple(a for part in converted for a in part) if opt.repeatable else converted[0]
        )
    if values["trigger_dir"] is None:
        values["trigger_dir"] = os.path.dirname(values["token_file"]) or "."
    if command == "inspect":
        values["inspect_path"] = ns.path
    config = Config(**values)
    validate(config)
    return command, config


def validate(config: Config) -> None:
    """Cross-field rules; each failure names the flags and values involved."""
    if config.refresh_interval >= config.expiration_duration:
        raise ConfigError(
            f"--refresh_interval ({format_duration(config.refresh_interval)}) must be shorter "
            f"than --expiration_duration ({format_duration(config.expiration_duration)})"
        )
    if (config.pod_name is None) != (config.pod_uid is None):
        given, missing = ("--pod_name", "--pod_uid")
        if config.pod_uid is not None:
            given, missing = missing, given
        raise ConfigError(f"{given} is set but {missing} is not: binding needs both")
    token = os.path.abspath(config.token_file)
    if token == os.path.abspath(config.default_token_file):
        raise ConfigError(
            f"--token_file and --default_token_file are the same path ({config.token_file})"
        )
    if os.path.isabs(config.trigger_dir) and token == os.path.abspath(config.trigger_dir):
        raise ConfigError(f"--trigger_dir {config.trigger_dir} is the token file itself")


def config_warnings(config: Config) -> list[str]:
    warnings = []
    if config.expiration_duration < API_MIN_EXPIRATION:
        warnings.append(
            f"--expiration_duration {format_duration(config.expiration_duration)} is under the "
            "API server's 10m minimum; a real API server will refuse it"
        )
    return warnings


def resolve_identity(
    config: Config, *, namespace_file: str = IN_CLUSTER_NAMESPACE_FILE
) -> Config:
    """Fill namespace/service account from the default token's `sub`, then the namespace file."""
    namespace, service_account = config.namespace, config.service_account
    why = f"the default token {config.default_token_file} has no system:serviceaccount subject"
    if namespace is None or service_account is None:
        from_token, problem = _identity_from_token(config.default_token_file)
        if from_token is not None:
            namespace = namespace or from_token[0]
            service_account = service_account or from_token[1]
        elif problem is not None:
            why = problem
    if namespace is None:
        try:
            with open(namespace_file, encoding="utf-8") as fh:
                namespace = fh.read(256).strip() or None
        except OSError:
            namespace = None
    if namespace is None:
        raise ConfigError(
            f"no namespace: pass -n/--namespace or NAMESPACE ({why}, and {namespace_file} "
            "is not readable)"
        )
    if service_account is None:
        raise ConfigError(f"no service account: pass -s/--service_account or SERVICE_ACCOUNT "
                          f"({why})")
    return replace(config, namespace=namespace, service_account=service_account)


def _identity_from_token(path: str) -> tuple[tuple[str, str] | None, str | None]:
    """((namespace, name) or None, why not)."""
    from .tokenfile import read_token  # local: tokenfile imports config constants

    try:
        return decode_claims(read_token(path).text).service_account, None
    except TokenError as exc:
        return None, str(exc)
