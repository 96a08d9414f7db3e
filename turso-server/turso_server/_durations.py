"""The one duration grammar of buntime, turso-server and the operator.

A duration is either a bare number of seconds (``60``, ``2.5``, ``0``) or one or more
``<number><unit>`` parts with units ``d h m s ms`` (``1d12h``, ``1h30m``, ``5s``, ``500ms``).
Signs, spaces inside the value and other units are rejected; surrounding whitespace is ignored.
:data:`DURATION_PATTERN` is the same grammar as a JSON-schema pattern, used verbatim by the CRD
and ``charts/buntime/values.schema.json``.

The three parts are independent packages (import-linter forbids cross imports), so each ships
this file unchanged: ``tests/test_durations.py`` checks the copies are byte-identical and runs one
table of cases through every copy and through the schema patterns. Durations past
:data:`MAX_DURATION` (what ``timedelta`` holds, about 2.7 million years; a huge digit string would
otherwise be float infinity) are a ``ValueError`` like any other bad text, never an
``OverflowError``. Callers wrap the ``ValueError`` into their own configuration error, naming the
variable.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

#: The grammar as a JSON-schema ``pattern`` (ECMA and RE2 compatible). ``ms`` comes before ``m``
#: so a backtracking engine reads ``500ms`` as one part.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?(ms|d|h|m|s))+)$"
#: How the grammar reads in help texts and error messages.
DURATION_HELP = (
    "a number of seconds or <number><unit> parts with units d, h, m, s, ms (60, 1h30m, 1d12h, 500ms)"
)

MAX_DURATION = timedelta.max

_MAX_SECONDS = MAX_DURATION.total_seconds()
_UNIT_SECONDS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(DURATION_PATTERN)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")


def duration_seconds(text: str) -> float:
    """Parse ``text`` (``60``, ``1d12h``, ``500ms``) into seconds or raise ``ValueError``."""
    value = text.strip()
    if _NUMBER.fullmatch(value):
        seconds = float(value)
    elif _DURATION.fullmatch(value):
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(value))
    else:
        raise ValueError(f"invalid duration {text[:40]!r}: use {DURATION_HELP}")
    if not seconds <= _MAX_SECONDS:  # also catches infinity
        raise ValueError(f"duration {text[:40]!r} is too long (at most {MAX_DURATION.days} days)")
    return seconds


def parse_duration(text: str) -> timedelta:
    """:func:`duration_seconds` as a ``timedelta``."""
    try:
        return timedelta(seconds=duration_seconds(text))
    except OverflowError:  # the float nearest timedelta.max rounds just past it
        raise ValueError(f"duration {text[:40]!r} is too long (at most {MAX_DURATION.days} days)") from None


def format_duration(delta: timedelta | float) -> str:
    """Render ``delta`` (or a number of seconds) compactly in the same grammar (``7d``, ``1h30m``,
    ``2.5s``, ``1h0.00001s``; ``0s`` for none): whole days, hours and minutes, then the rest as
    the exact decimal of its seconds, never in exponent notation (which the grammar refuses)."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    rest = Decimal(repr(seconds))
    if rest <= 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if rest:
        parts.append(f"{rest.normalize():f}s")
    return "".join(parts)
