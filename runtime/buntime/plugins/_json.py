"""JSON from clients (request bodies, query parameters, headers): one parser for every plugin.

``json.loads`` raises ``RecursionError`` rather than ``ValueError`` for input nested deeper than
the interpreter's recursion limit (``[[[[…`` a few thousand bytes long), which a handler that
catches ``ValueError`` turned into a 500. :func:`client_json` raises ``ValueError`` for every
input it refuses (``UnicodeDecodeError`` and ``JSONDecodeError`` already are), so each caller's
4xx mapping covers it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["client_json"]


def client_json(raw: str | bytes) -> Any:
    """``raw`` parsed as JSON; ``ValueError`` for anything that is not JSON this parser can take."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
