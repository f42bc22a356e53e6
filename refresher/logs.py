"""Logging set-up, done once at start: JSON lines on stdout (python-json-logger) or text."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


class _EventDefault(logging.Filter):
    """Every record gets a machine-readable `event` (default: `log`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "event"):
            record.event = "log"
        return True


def configure(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_EventDefault())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(levelname)s %(message)s %(event)s",
            rename_fields={"levelname": "level"},
            timestamp="time",
        ))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(event)s] %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
