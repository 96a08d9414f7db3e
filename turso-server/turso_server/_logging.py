"""JSON-lines logging on stdout, one object per record, for the server and its children.

Log collectors parse one JSON object per line, so every record (including re-emitted tursodb
output, tagged ``src=tursodb.<name>``) goes through :class:`JsonFormatter`. Extra fields are passed
with ``extra={...}``. Nothing here ever receives a token: auth code logs outcomes, not headers.
Called by ``cli`` (setup) and every module that logs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "turso_server"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def get_logger(component: str) -> logging.Logger:
    """The logger for one component, e.g. ``get_logger("supervisor")``."""
    return logging.getLogger(f"{LOGGER_NAME}.{component}")


class JsonFormatter(logging.Formatter):
    """Render a record as ``{"time","level","logger","msg",...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """Send our records (and aiohttp's warnings) to stdout as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger(LOGGER_NAME).setLevel(level.upper())
