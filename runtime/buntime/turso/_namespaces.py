"""Namespace validation shared by the service, the worker helper and the servers.

The rule is turso-server's, the strictest consumer: lower-case, 1-63 characters, starting with a
letter or digit; a leading underscore is reserved for server state (``_state``), and ``healthz``
and ``readyz`` for turso-server's probes (its bare ``/healthz`` and ``/readyz``).
"""

from __future__ import annotations

import re

from ._errors import InvalidNamespaceError

NAMESPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_NAMESPACE = "runtime"
RESERVED_NAMESPACES = frozenset({"healthz", "readyz"})


def validate_namespace(value: object) -> str:
    """Return ``value`` if it is a valid namespace, else raise :class:`InvalidNamespaceError`."""
    if not isinstance(value, str):
        raise InvalidNamespaceError(value, "a namespace must be a string")
    if value.startswith("_"):
        raise InvalidNamespaceError(value, "names starting with '_' are reserved")
    if not NAMESPACE_PATTERN.fullmatch(value):
        raise InvalidNamespaceError(
            value,
            "use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    if value in RESERVED_NAMESPACES:
        raise InvalidNamespaceError(value, "reserved for turso-server's health endpoints")
    return value
