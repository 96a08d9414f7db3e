"""The size grammar of every turso-server setting counted in bytes (``TURSO_CHILD_MEMORY_LIMIT``,
``TURSO_SPOOL_MEMORY``, ``TURSO_SPOOL_DISK``, ``TURSO_MAX_REQUEST_BYTES``).

A size is a whole number of bytes (``268435456``, ``0``) or a whole number with one binary suffix
``Ki``, ``Mi`` or ``Gi`` (``256Mi``, ``2Gi``): the spelling of Kubernetes memory quantities, so a
chart value reads like a pod's ``resources.limits.memory``. Signs, fractions, spaces inside the
value, decimal suffixes (``M``, ``G``, ``MB``) and lowercase ones are rejected; surrounding
whitespace is ignored, like in ``_durations``. Sizes above :data:`MAX_SIZE` are a ``ValueError``
like any other bad text; callers wrap it into ``ConfigError``, naming the variable.
:data:`SIZE_PATTERN` is the same grammar as a JSON-schema pattern, used verbatim by
``charts/buntime/values.schema.json`` (``tests/turso_server/test_turso_server_units.py`` checks both
agree). Used by ``_config``.
"""

from __future__ import annotations

import re

#: The grammar as a JSON-schema ``pattern`` (ECMA and RE2 compatible).
SIZE_PATTERN = r"^[0-9]+(Ki|Mi|Gi)?$"
#: How the grammar reads in help texts and error messages.
SIZE_HELP = "a number of bytes or a whole number with Ki, Mi or Gi (268435456, 256Mi, 2Gi)"
#: 1 PiB: far above any host's memory, far below what ``setrlimit`` takes.
MAX_SIZE = 1 << 50

_UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
_SIZE = re.compile(r"([0-9]{1,20})(Ki|Mi|Gi)?")


def parse_size(text: str) -> int:
    """Parse ``text`` (``268435456``, ``256Mi``, ``2Gi``, ``0``) into bytes or raise ``ValueError``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text[:40]!r}: use {SIZE_HELP}")
    size = int(match.group(1)) * _UNITS[match.group(2) or ""]
    if size > MAX_SIZE:
        raise ValueError(f"size {text[:40]!r} is too large (at most {MAX_SIZE >> 30}Gi)")
    return size


def format_size(size: int) -> str:
    """Render ``size`` in the same grammar, with the largest suffix that divides it (``256Mi``)."""
    for unit in ("Gi", "Mi", "Ki"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)
