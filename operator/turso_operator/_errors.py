"""Errors of the operator's I/O layer::

OperatorError
├── AdminError                      turso-server's admin API
│   ├── AdminUnavailableError       unreachable, timed out or 5xx: retry later
│   └── AdminRejectedError          a 4xx that retrying will not heal
│       └── AdminNotFoundError      404
└── KubeError                       the Kubernetes API
    └── KubeNotFoundError           404
"""

from __future__ import annotations


class OperatorError(Exception):
    """Root of the operator's errors."""


class AdminError(OperatorError):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AdminUnavailableError(AdminError, ConnectionError):
    """turso-server cannot be reached or failed (5xx): temporary."""


class AdminRejectedError(AdminError):
    """turso-server refused the request (4xx): permanent until the spec changes."""


class AdminNotFoundError(AdminRejectedError):
    """The database does not exist on turso-server."""


class KubeError(OperatorError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeNotFoundError(KubeError):
    """The Kubernetes object does not exist."""
