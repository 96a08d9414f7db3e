"""Structured logs on stderr: JSON lines by default, text for a person at a terminal.

buntime, turso-server and the operator write the same fields, so one log pipeline reads all
three: ``time`` (UTC, ISO 8601 with ``Z``), ``level`` (``INFO``...), ``logger``, ``msg``, any
``extra={...}`` fields, and ``exc`` (the traceback) when there is one. ``auto`` picks text when
stderr is a terminal and JSON otherwise (a pod, a pipe, a file).

Tokens never reach the output: every environment value whose name ends in ``TOKEN``, ``KEY``,
``SECRET`` or ``PASSWORD`` is replaced by ``[redacted]`` in each formatted line, whatever logged
it (a library's error message, an URL with a token in it). Called by ``cli`` at startup.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[redacted]"
_SECRET_SUFFIXES = ("TOKEN", "KEY", "SECRET", "PASSWORD")
_MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def secret_values(env: Mapping[str, str]) -> frozenset[str]:
    """The values of the environment's secret-looking variables (long enough to be told apart)."""
    return frozenset(
        value.strip()
        for name, value in env.items()
        if name.upper().endswith(_SECRET_SUFFIXES) and len(value.strip()) >= _MIN_SECRET_LENGTH
    )


def _redact(line: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
    return line


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``{"time","level","logger","msg",...extra,"exc"}``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(_extras(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return _redact(json.dumps(payload, default=str, ensure_ascii=False), self.secrets)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: msg key=value ...`` for a terminal, with the same redaction."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        return _redact(f"{line} {extras}" if extras else line, self.secrets)


def make_formatter(log_format: str, *, stream: TextIO, secrets: Iterable[str] = ()) -> logging.Formatter:
    """``json``, ``text`` or ``auto`` (text when ``stream`` is a terminal)."""
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    return TextFormatter(secrets) if log_format == "text" else JsonFormatter(secrets)


def configure_logging(
    level: str,
    log_format: str = "auto",
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route every record (ours, aiohttp's, the plugins') to ``stream`` (stderr) at ``level``."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format, stream=stream, secrets=secret_values(env or os.environ)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
