"""Errors raised by the Turso service.

Every error carries a stable ``code`` (what HTTP layers and logs key on) and subclasses the
matching built-in, so ``except ValueError`` keeps working for callers that do not know us
(the runtime's whole tree, this branch included, is drawn in ``buntime/_errors.py``)::

    TursoError
    ├── TursoConfigError (ValueError)            INVALID_TURSO_MODE, TURSO_MODE_CONFLICT, ...
    ├── InvalidNamespaceError (ValueError)       INVALID_TURSO_NAMESPACE
    ├── TursoQueryError                          TURSO_QUERY_FAILED — the engine rejected a statement
    │   ├── TursoBusyError                       TURSO_BUSY — busy/conflict, retried by transaction()
    │   └── DDLInConcurrentTransactionError      TURSO_DDL_NEEDS_EXCLUSIVE
    ├── TursoUnavailableError (ConnectionError)  TURSO_UNAVAILABLE — a database or server is unreachable
    │   └── TursoCommitUnknownError              TURSO_COMMIT_OUTCOME_UNKNOWN — never retried for you
    └── TursoClosedError (RuntimeError)          TURSO_CLOSED — used after aclose()
"""

from __future__ import annotations

from .._errors import BuntimeError


class TursoError(BuntimeError):
    """Root of every error the Turso service raises (a branch of :class:`~buntime.BuntimeError`)."""

    code = "TURSO_ERROR"


class TursoConfigError(TursoError, ValueError):
    """The configuration (env or config mapping) cannot be used."""

    code = "INVALID_TURSO_CONFIG"


class InvalidNamespaceError(TursoError, ValueError):
    """A namespace name does not match what turso-server accepts."""

    code = "INVALID_TURSO_NAMESPACE"

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"Invalid Turso namespace {value!r}: {reason}")
        self.value = value
        self.reason = reason


class TursoQueryError(TursoError):
    """The engine rejected a statement; ``statement`` is the SQL (never its parameters)."""

    code = "TURSO_QUERY_FAILED"

    def __init__(self, message: str, *, statement: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.statement = statement


class TursoBusyError(TursoQueryError):
    """A busy or write-write conflict error: the transaction can be re-run."""

    code = "TURSO_BUSY"


class DDLInConcurrentTransactionError(TursoQueryError):
    """DDL was issued inside ``BEGIN CONCURRENT``; MVCC only allows it in exclusive transactions."""

    code = "TURSO_DDL_NEEDS_EXCLUSIVE"


class TursoUnavailableError(TursoError, ConnectionError):
    """A database or replica could not be opened (server unreachable, file locked, ...)."""

    code = "TURSO_UNAVAILABLE"


class TursoCommitUnknownError(TursoUnavailableError):
    """A commit's push may or may not have reached the server; nobody can tell any more.

    Like a database connection lost during ``COMMIT``: the transaction is *not* acknowledged and
    is never re-run by the service (re-running could apply it twice). The local replica is reset
    to the server's state before it answers another read, so a read shows which way it went;
    while the server cannot be reached, that read fails instead.
    """

    code = "TURSO_COMMIT_OUTCOME_UNKNOWN"


class TursoClosedError(TursoError, RuntimeError):
    """The service or database was used after ``aclose()``."""

    code = "TURSO_CLOSED"
