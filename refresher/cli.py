"""`token-refresher [run|init|demo|inspect] [flags]`: exit 0 ok, 1 start-up/runtime error,
2 bad configuration (one line on stderr naming the flag and value)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

from .config import Config, config_warnings, parse_command_line, resolve_identity
from .errors import ConfigError
from .logs import configure

log = logging.getLogger("refresher")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    try:
        command, config = parse_command_line(argv, env)
    except ConfigError as exc:
        print(f"token-refresher: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure(config.log_level, config.log_format)
    if command == "inspect":
        from .inspect import inspect_command

        return int(inspect_command(config))
    if command == "demo":
        from .demo import demo_command

        return int(demo_command(config))
    for warning in config_warnings(config):
        log.warning("%s", warning, extra={"event": "config_warning"})
    if command == "init":
        return _init(config)
    return _run(config)


def _init(config: Config) -> int:
    from .clock import SystemClock
    from .prepare import StartupError, prepare

    try:
        prepare(config, SystemClock())
    except StartupError as exc:
        log.error("%s", exc, extra={"event": "startup_failed"})
        return EXIT_FAILURE
    log.info("token file ready at %s", config.token_file, extra={"event": "init_done"})
    return EXIT_OK


def _run(config: Config) -> int:
    from .daemon import Daemon
    from .prepare import StartupError

    try:
        config = resolve_identity(config)
    except ConfigError as exc:
        print(f"token-refresher: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("starting for %s/%s", config.namespace, config.service_account,
             extra={"event": "starting", "namespace": config.namespace,
                    "service_account": config.service_account,
                    "token_file": config.token_file, "bound_pod": config.pod_name})
    try:
        return Daemon(config).run()
    except StartupError as exc:
        log.error("%s", exc, extra={"event": "startup_failed"})
        return EXIT_FAILURE


def console() -> None:
    """Process entry point (`token-refresher`, `python -m refresher`).

    Every worker thread has been stopped and joined and every file written with fsync by the time
    main() returns, so the process leaves at once: tearing down the interpreter (the kubernetes
    client's thousands of objects) would add a quarter of a second to a `shutdown`.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
