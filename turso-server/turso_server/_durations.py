"""Duration parsing for the environment, TTLs and token expiries.

Upstream used Go's ``time.ParseDuration`` for env values (no ``d`` unit, so ``"7d"`` silently fell
back to the default) and a separate parser for TTLs. One grammar serves every place here: a
sequence of ``<number><unit>`` with units ``d h m s ms us µs ns``, e.g. ``30d``, ``168h``,
``1h30m``, ``1.5s``, ``300ms``. A bare ``0`` is zero. Signs are rejected: nothing here is negative.
Durations past :data:`MAX_DURATION` (what ``timedelta`` holds, about 2.7 million years) are a
``ValueError`` like any other bad text, never an ``OverflowError``.
Used by ``_config`` (env and flags), ``_admin`` (``ttl``, token ``expiresIn``) and ``_gc``.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS: dict[str, float] = {
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
MAX_DURATION = timedelta.max
# Longest units first so "ms" is not read as "m" followed by garbage.
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|d|h|m|s)")


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` (``30d``, ``1h30m``, ``250ms``, ``0``) or raise ``ValueError``."""
    value = text.strip()
    if value == "0":
        return timedelta(0)
    if not value:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: use <number><unit> parts with units d, h, m, s, ms, us, ns "
                "(e.g. 30d, 1h30m, 500ms)"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    try:
        return timedelta(seconds=total)
    except OverflowError:  # past timedelta.max, or float infinity from a huge digit string
        raise ValueError(f"duration {text[:40]!r} is too long (at most {MAX_DURATION.days} days)") from None


def format_duration(delta: timedelta) -> str:
    """Render ``delta`` compactly for logs and metrics help (``7d``, ``1h30m``, ``2.5s``)."""
    seconds = delta.total_seconds()
    if seconds <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds:
        parts.append(f"{seconds:g}s")
    return "".join(parts)
