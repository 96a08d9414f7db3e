"""Structured logs on stderr in kopf's own JSON format, with the fields buntime and turso-server use.

Every record (the operator's and kopf's) goes through one formatter built on kopf's
``ObjectJsonFormatter``, so kopf's per-object logs keep their ``object`` reference and
``severity``; the common fields are renamed to what the runtime and turso-server write: ``time``
(UTC, ISO 8601 with ``Z``), ``level``, ``logger``, ``msg``, extras, and ``exc`` for a traceback.
``auto`` picks text (kopf's ``[namespace/name]`` prefix included) on a terminal and JSON otherwise.

Tokens never reach the output: every environment value whose name ends in ``TOKEN``, ``KEY``,
``SECRET`` or ``PASSWORD`` is replaced by ``[redacted]`` in each formatted line. Called by ``cli``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from kopf._core.actions.loggers import ObjectJsonFormatter, ObjectPrefixingTextFormatter

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SECRET_SUFFIXES = ("TOKEN", "KEY", "SECRET", "PASSWORD")
_MIN_SECRET_LENGTH = 4
_RENAMED = {"levelname": "level", "name": "logger", "message": "msg", "exc_info": "exc"}


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


class JsonFormatter(ObjectJsonFormatter):
    """kopf's JSON formatter with the common field names and redaction."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt=["levelname", "name", "message"], rename_fields=_RENAMED, refkey="object")
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_record["time"] = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        super().add_fields(log_record, record, message_dict)

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record), self.secrets)


class TextFormatter(ObjectPrefixingTextFormatter):
    """``time LEVEL logger: [namespace/name] msg`` for a terminal, with the same redaction."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record), self.secrets)


def configure_logging(
    level: str,
    log_format: str = "auto",
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route every record to ``stream`` (stderr) at ``level``; used instead of ``kopf.configure``."""
    stream = sys.stderr if stream is None else stream
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    secrets = secret_values(os.environ if env is None else env)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(secrets) if log_format == "text" else JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
