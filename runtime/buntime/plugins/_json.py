"""JSON from clients (request bodies, query parameters, headers): one parser for every plugin.

``json.loads`` raises ``RecursionError`` rather than ``ValueError`` for input nested deeper than
the interpreter's recursion limit (``[[[[…`` a few thousand bytes long), which a handler that
catches ``ValueError`` turned into a 500. :func:`client_json` raises ``ValueError`` for every
input it refuses (``UnicodeDecodeError`` and ``JSONDecodeError`` already are), so each caller's
4xx mapping covers it.

JSON may escape a lone surrogate (``"\\ud800"``), which ``json.loads`` turns into a ``str`` that
UTF-8 cannot encode: the engine refused it as a parameter (500), RE2 and the key encoder raised
``UnicodeEncodeError`` (500), and a rule that took it failed on every request. So every string of
the parsed value, object keys included, must be text: else :class:`~._errors.InvalidTextError`
(a ``ValueError``, 400 ``INVALID_UNICODE``), for every plugin at once. A surrogate *pair* is one
character and passes. Raw bytes that are not UTF-8 mostly fail to decode (``ValueError``), but
``json.loads`` decodes bytes with ``surrogatepass``: a surrogate UTF-8-encoded as bytes
(``ED A0 80``, never valid UTF-8, not even two of them making a pair) reached the handlers the
same way as an escaped one, so such bytes are checked too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._errors import InvalidTextError

__all__ = ["client_json"]

#: A ``\u`` escape of a surrogate (``D800``-``DFFF``): only input holding one needs the walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")  # or one UTF-8-encoded


def client_json(raw: str | bytes) -> Any:
    """``raw`` parsed as JSON; ``ValueError`` for anything that is not JSON this parser can take."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if isinstance(raw, bytes):
        suspect = _SURROGATE_ESCAPE_BYTES.search(raw) is not None
    else:  # a query parameter: the text itself may hold a surrogate too
        suspect = _SURROGATE_ESCAPE.search(raw) is not None or not _is_text(raw)
    if suspect:
        _require_text(value)
    return value


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_text(value: Any) -> None:
    """Raise :class:`InvalidTextError` when a string of ``value`` is not text; the message never
    repeats the string (it may be a header value of a proxy rule: a credential)."""
    stack = [value]  # not recursive: json.loads takes nesting deeper than a Python walk could
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _is_text(item):
                raise InvalidTextError(
                    "a JSON string is not Unicode text (it holds a lone surrogate escape, \\ud800 to "
                    "\\udfff without its pair, or a surrogate encoded as bytes): every string must be "
                    "encodable as UTF-8"
                )
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
