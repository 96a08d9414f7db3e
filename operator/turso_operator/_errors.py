"""Every error the operator raises, in one tree::

OperatorError
├── OperatorConfigError (ValueError)  the environment is not a usable configuration (exit 2)
├── SpecError (ValueError)            a TursoNamespace spec that cannot be reconciled
├── InjectionRefusedError             a labelled pod cannot get its connection (webhook)
├── AdminError                        turso-server's admin API
│   ├── AdminUnavailableError         unreachable, timed out or 5xx: retry later (ConnectionError)
│   ├── DatabaseChangedError          409 on a mint: the database was created again since it was checked
│   └── AdminRejectedError            a 4xx that retrying will not heal
│       ├── AdminNotFoundError        404
│       └── DatabaseNotOwnedError     409 on create: another namespace's database, or one with no owner
└── KubeError                         the Kubernetes API (the operator's own calls, not kopf's)
    ├── KubeUnavailableError          unreachable, timed out, or not an API answer (ConnectionError)
    ├── KubeNotFoundError             404
    └── KubeConflictError             409: exists already, or not ours to touch

``_admin`` and ``_kube`` translate aiohttp's errors into these at the boundary (``raise ... from
exc``); ``_reconcile`` and ``_handlers`` turn them into status and kopf's retry classes.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Root of the operator's errors."""


class OperatorConfigError(OperatorError, ValueError):
    """The environment does not describe a usable operator configuration."""


class SpecError(OperatorError, ValueError):
    """The TursoNamespace spec cannot be reconciled (the API server's validation was bypassed)."""


class InjectionRefusedError(OperatorError):
    """Why a labelled pod cannot get its connection (the webhook refuses it or warns)."""


class AdminError(OperatorError):
    """A call to turso-server's admin API failed; ``status`` and ``code`` as the server said."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AdminUnavailableError(AdminError, ConnectionError):
    """turso-server cannot be reached or failed (5xx): temporary."""


class DatabaseChangedError(AdminError):
    """turso-server refused a mint whose ``namespaceCreatedAt`` names the database the operator had
    just checked (``code`` ``namespace changed``): it was deleted and created again in between.
    Nothing was minted; a new reconcile checks the new database (its owner) first."""


class AdminRejectedError(AdminError):
    """turso-server refused the request (4xx): permanent until the spec changes."""


class AdminNotFoundError(AdminRejectedError):
    """The database does not exist on turso-server."""


class DatabaseNotOwnedError(AdminRejectedError):
    """turso-server refused a create with our owner: the database is recorded as another owner's
    (``code`` ``owner mismatch``) or exists with no owner (``not owned``)."""


class KubeError(OperatorError):
    """A call of the operator's own Kubernetes client failed; ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeUnavailableError(KubeError, ConnectionError):
    """The API server cannot be reached, timed out, or answered with something not JSON."""


class KubeNotFoundError(KubeError):
    """The Kubernetes object does not exist."""


class KubeConflictError(KubeError):
    """409: the object exists already, or it is not ours to overwrite."""

    def __init__(self, message: str, *, status: int | None = 409) -> None:
        super().__init__(message, status=status)
