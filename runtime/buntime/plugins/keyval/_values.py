"""Values: JSON documents stored as UTF-8 BLOBs, validated before any statement runs.

Called by the Kv store and the queue. ``NaN`` and infinities are rejected because they are not
JSON; Python ints of any size are kept exactly (JSON numbers have no size limit). Values nest at
most :data:`MAX_VALUE_DEPTH` arrays/objects deep: the engine's JSON functions (``where``
filters) refuse documents a few hundred levels deep, and so would Python's recursion limit.
An encoded value is at most :data:`MAX_VALUE_BYTES` (Deno KV's 64 KiB), whatever wrote it (a
set, an atomic ``append``/``prepend`` result, a queue message): a write, its read and every
``append`` copy the whole value, the last inside the write transaction (in sync mode under the
namespace's cross-pod write lease).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._errors import InvalidValueError

#: How many arrays/objects a value may nest (``[]`` is depth 1, a scalar 0).
MAX_VALUE_DEPTH = 128
#: The most bytes of a value's compact UTF-8 JSON.
MAX_VALUE_BYTES = 64 * 1024
VALUE_TOO_LARGE = "VALUE_TOO_LARGE"


def too_deep(value: Any, limit: int = MAX_VALUE_DEPTH) -> bool:
    """Whether ``value`` nests more than ``limit`` arrays/objects (iterative: any depth is safe)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def _check_depth(value: Any) -> None:
    if too_deep(value):
        raise InvalidValueError(f"values nest at most {MAX_VALUE_DEPTH} arrays/objects deep")


def encode_value(value: Any) -> bytes:
    """Serialise ``value`` to compact JSON bytes; raise :class:`InvalidValueError` if it is not JSON,
    nests deeper than :data:`MAX_VALUE_DEPTH` or encodes to more than :data:`MAX_VALUE_BYTES`
    (413 ``VALUE_TOO_LARGE``, the status the HTTP layer gives a body over its size limit)."""
    _check_depth(value)
    try:
        raw = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValueError(f"the value is not JSON-serialisable: {exc}") from exc
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidValueError(
            f"the value is {len(raw)} bytes as JSON; the limit is {MAX_VALUE_BYTES}",
            code=VALUE_TOO_LARGE,
            status=413,
        )
    return raw


def decode_value(raw: bytes | str) -> Any:
    """The stored JSON back as Python objects."""
    return json.loads(raw)


def is_number(value: Any) -> bool:
    """A JSON number (bools are ints in Python but not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


BIGINT_TYPE = "bigint"


def is_now_placeholder(value: Any) -> bool:
    """``{"$now": true, "$offset"?: ms}``: the write time in epoch milliseconds (plus the offset).

    The offset must be finite: JSON bodies may spell ``NaN``/``Infinity`` (Python's parser takes
    them), and such an object is then no placeholder but a value, which encoding refuses (400)."""
    if not (isinstance(value, dict) and value.get("$now") is True and set(value) <= {"$now", "$offset"}):
        return False
    offset = value.get("$offset", 0)
    return is_number(offset) and math.isfinite(offset)


def resolve_now(value: Any, now_ms: int) -> Any:
    """``value`` with every ``$now`` placeholder, at any depth, replaced by ``now_ms + offset``;
    :class:`InvalidValueError` (before any recursion) for a value nested too deep."""
    _check_depth(value)
    return _resolve_now(value, now_ms)


def _resolve_now(value: Any, now_ms: int) -> Any:
    if is_now_placeholder(value):
        return now_ms + int(value.get("$offset", 0))
    if isinstance(value, dict):
        return {k: _resolve_now(v, now_ms) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_now(v, now_ms) for v in value]
    return value


def bigint_of(value: Any) -> int | None:
    """The integer of the upstream client's bigint encoding ``{"__type": "bigint", "value": "5"}``
    (``None`` for anything else)."""
    if isinstance(value, dict) and value.get("__type") == BIGINT_TYPE and set(value) == {"__type", "value"}:
        raw = value["value"]
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                return None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    return None


def bigint_value(number: int) -> dict[str, str]:
    """``number`` in the upstream client's bigint encoding."""
    return {"__type": BIGINT_TYPE, "value": str(number)}
