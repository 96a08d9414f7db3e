"""Namespace name validation: the one gate between a URL segment and a path under the data dir.

Names become file names (``namespaces/<name>/<name>.db``, see ``_layout``), so only
``^[a-z0-9][a-z0-9_-]{0,62}$`` passes: no dots, slashes, percent signs or non-ASCII, hence no
traversal and no collision with the server's own entries (``_state/``, ``_spool/``,
``archive/``). A leading ``_`` is reserved for those, and ``healthz``/``readyz`` are reserved
because the bare paths are the probes (upstream let the name through and then routed
``/healthz`` and ``/healthz/x`` differently). The data proxy validates the *raw* (still
percent-encoded) segment, so ``%2e%2e`` or ``%2f`` never decode into something that passes.
Called by ``_proxy``, ``_admin``, ``_state`` (loading), ``_layout`` and ``_supervisor``. Owners
(``is_valid_owner``) are checked here too, for ``_state``, ``_admin`` and ``_auth`` (a token's owner).
"""

from __future__ import annotations

import re

from ._errors import InvalidNamespaceError

NAMESPACE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_NAME_LENGTH = 63
RESERVED_PREFIX = "_"
RESERVED_NAMES = frozenset({"healthz", "readyz"})
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
#: The longest ``owner`` a namespace can record (a Kubernetes namespace is at most 63).
MAX_OWNER_LENGTH = 253


def validate_name(name: str) -> str:
    """Return ``name`` when it is a usable namespace, else raise :class:`InvalidNamespaceError`."""
    if NAMESPACE_PATTERN.fullmatch(name) and name not in RESERVED_NAMES:
        return name
    raise InvalidNamespaceError(_explain(name))


def is_valid_name(name: str) -> bool:
    """``True`` when :func:`validate_name` would accept ``name``."""
    return bool(NAMESPACE_PATTERN.fullmatch(name)) and name not in RESERVED_NAMES


def is_valid_owner(value: str) -> bool:
    """An owner is opaque to the server: 1 to :data:`MAX_OWNER_LENGTH` visible ASCII characters."""
    return 0 < len(value) <= MAX_OWNER_LENGTH and all("!" <= char <= "~" for char in value)


def _explain(name: str) -> str:
    if not name:
        return "namespace is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"namespace is longer than {MAX_NAME_LENGTH} characters"
    if name.startswith(RESERVED_PREFIX):
        return f"namespaces starting with {RESERVED_PREFIX!r} are reserved for the server"
    if name in RESERVED_NAMES:
        return f"namespace {name!r} is reserved for the health endpoints"
    for index, char in enumerate(name):
        if char not in _ALLOWED:
            return f"invalid character {char!r} at position {index}: use a-z, 0-9, '-' or '_'"
    return "namespace must start with a lower-case letter or digit"
