"""Structured logs on stderr, one JSON object per record, for the server and its children.

Log collectors parse one JSON object per line, so every record (including re-emitted tursodb
output, tagged ``src=tursodb.<name>``) goes through :class:`JsonFormatter`: ``time`` (UTC, ISO 8601
with ``Z``), ``level``, ``logger``, ``msg``, the ``extra={...}`` fields, and ``exc`` for a
traceback, the same fields buntime and the operator write. ``TURSO_LOG_FORMAT=text`` (or ``auto``
at a terminal) prints ``time LEVEL logger: msg key=value`` for a person instead.

Auth code logs outcomes, not headers; as a second guard every configured credential (the data,
admin and metrics tokens and the signing key) is replaced by ``[redacted]`` in every formatted
line, also as a JSON line or a ``repr`` escapes it (a secret may hold ``"``, ``'`` or ``\\``, so
the raw value alone would not match). Called by ``cli`` (setup) and every module that
logs.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "turso_server"
REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def get_logger(component: str) -> logging.Logger:
    """The logger for one component, e.g. ``get_logger("supervisor")``."""
    return logging.getLogger(f"{LOGGER_NAME}.{component}")


def _redact(line: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
    return line


def _spellings(secret: str) -> set[str]:
    """``secret`` as it is, and as the ``repr`` of a value holding it shows it (``{'v': ...}``, an
    exception): a backslash doubled, a single quote escaped when the string is in single quotes."""
    if not secret:
        return set()
    doubled = secret.replace("\\", "\\\\")
    return {secret, doubled, doubled.replace("'", "\\'")}


def _longest_first(forms: set[str]) -> tuple[str, ...]:
    return tuple(sorted(forms, key=len, reverse=True))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """Render a record as ``{"time","level","logger","msg",...extra}`` on one line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Each spelling as it appears inside a JSON string of the line (escaping is per character).
        self.secrets = _longest_first(
            {json.dumps(form, ensure_ascii=False)[1:-1] for secret in secrets for form in _spellings(secret)}
        )

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
        self.secrets = _longest_first({form for secret in secrets for form in _spellings(secret)})

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        return _redact(f"{line} {extras}" if extras else line, self.secrets)


def configure_logging(
    level: str, log_format: str = "json", *, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Send our records (and aiohttp's warnings) to ``stream`` (stderr) at ``level``.

    ``log_format`` is ``json``, ``text`` or ``auto`` (text when ``stream`` is a terminal).
    """
    stream = sys.stderr if stream is None else stream
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(secrets) if log_format == "text" else JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger(LOGGER_NAME).setLevel(level.upper())
