"""Errors of the KeyVal plugin: a branch under :class:`~buntime.plugins.ApiError`.

Every error has a stable ``code`` (what HTTP clients key on) and the ``status`` the HTTP layer
answers with; each also subclasses the matching built-in so plain ``except ValueError`` works
(the runtime's whole tree is drawn in ``buntime/_errors.py``)::

    KeyValError (ApiError)
    ├── InvalidKeyError (ValueError)              400 INVALID_KEY
    ├── InvalidValueError (ValueError)            400 INVALID_VALUE, INVALID_MUTATION, INVALID_TRIGGER, ...;
    │                                             413 VALUE_TOO_LARGE (a value over 64 KiB as JSON)
    ├── InvalidRequestError (ValueError)          400 INVALID_REQUEST, INVALID_JSON, INVALID_FILTER, ...
    ├── KeyValNotFoundError (LookupError)         404 KEY_NOT_FOUND, INDEX_NOT_FOUND, MESSAGE_NOT_FOUND
    ├── KeyValConflictError                       409 LEASE_LOST — a queue lease ended, the message moved on
    ├── KeyValConfigError (PluginConfigError)     500 MISSING_TURSO_SERVICE, INVALID_KEYVAL_CONFIG
    ├── KeyValStorageError                        500 KEYVAL_STORAGE_ERROR — the engine rejected a statement
    ├── KeyValCommitUnknownError                  504 KEYVAL_COMMIT_OUTCOME_UNKNOWN — may have been written
    └── KeyValUnavailableError (ConnectionError)  503 KEYVAL_UNAVAILABLE, KEYVAL_BUSY — storage down or busy

:func:`storage_errors` translates the Turso service's errors at the Kv boundary; the one engine
refusal that is the client's doing (a ``where`` filter too deep to parse) becomes 400.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ...turso import (
    TursoBusyError,
    TursoClosedError,
    TursoCommitUnknownError,
    TursoError,
    TursoQueryError,
    TursoUnavailableError,
)
from .._errors import ApiError, PluginConfigError

log = logging.getLogger("buntime.plugin.keyval")

INVALID_FILTER = "INVALID_FILTER"
#: What the engine says of an expression over its depth limit (100). Every other expression of
#: KeyVal's SQL is a constant of the code, so only a client's ``where`` filter can make one; the
#: compiler keeps every filter it accepts far below (balanced trees), this is the safety net.
_EXPRESSION_TOO_DEEP = "Expression tree is too large"


class KeyValError(ApiError):
    """Root of every error the KeyVal plugin raises."""

    code = "KEYVAL_ERROR"
    status = 500


class InvalidKeyError(KeyValError, ValueError):
    """A key (or prefix, cursor bound) is not a sequence of str/bytes/int/float/bool parts."""

    code = "INVALID_KEY"
    status = 400


class InvalidValueError(KeyValError, ValueError):
    """A value is not JSON-serialisable, or a mutation does not fit the stored value."""

    code = "INVALID_VALUE"
    status = 400


class InvalidRequestError(KeyValError, ValueError):
    """A malformed request: bad JSON body, parameter or cursor."""

    code = "INVALID_REQUEST"
    status = 400


class KeyValNotFoundError(KeyValError, LookupError):
    """A key, search index or queue message does not exist."""

    code = "NOT_FOUND"
    status = 404


class KeyValConflictError(KeyValError):
    """The caller's claim is out of date: its queue lease ended and the message was leased again."""

    code = "LEASE_LOST"
    status = 409


class KeyValConfigError(KeyValError, PluginConfigError):
    """The plugin cannot start with its configuration or dependencies."""

    code = "INVALID_KEYVAL_CONFIG"
    status = 500

    def __init__(self, message: str, *, variable: str = "", code: str | None = None) -> None:
        PluginConfigError.__init__(self, message, variable=variable, code=code)


class KeyValStorageError(KeyValError):
    """The engine rejected a statement (a bug or a corrupt database, not a client error)."""

    code = "KEYVAL_STORAGE_ERROR"
    status = 500


class KeyValCommitUnknownError(KeyValError):
    """A write whose push may or may not have landed (``TursoCommitUnknownError``): unlike a 503,
    nothing says it was not applied, so a client must read before it writes again."""

    code = "KEYVAL_COMMIT_OUTCOME_UNKNOWN"
    status = 504


class KeyValUnavailableError(KeyValError, ConnectionError):
    """Storage is closed, cannot be opened, or stayed busy through every retry."""

    code = "KEYVAL_UNAVAILABLE"
    status = 503


def outcome_unknown(exc: BaseException) -> bool:
    """Whether ``exc`` says a write may or may not have landed (so it must not be re-run)."""
    return isinstance(exc, TursoCommitUnknownError | KeyValCommitUnknownError)


def translate_storage_error(exc: BaseException) -> KeyValError | None:
    """The KeyVal error for a Turso error (``None`` for anything else).

    An unavailable, busy or unknown-outcome error says so without the Turso text, which names
    replica paths and server URLs: that goes to the log (``buntime.plugin.keyval``, INFO).
    """
    if isinstance(exc, TursoCommitUnknownError | TursoUnavailableError | TursoClosedError | TursoBusyError):
        log.info("KeyVal storage: %s", exc)
    if isinstance(exc, TursoCommitUnknownError):  # before its base, TursoUnavailableError
        return KeyValCommitUnknownError("KeyVal write outcome unknown (read before writing again)")
    if isinstance(exc, TursoUnavailableError | TursoClosedError):
        return KeyValUnavailableError("KeyVal storage unavailable")
    if isinstance(exc, TursoBusyError):
        return KeyValUnavailableError("KeyVal storage busy", code="KEYVAL_BUSY")
    if isinstance(exc, TursoQueryError) and _EXPRESSION_TOO_DEEP in str(exc):
        return InvalidRequestError(
            "invalid where filter: too complex for the engine to parse", code=INVALID_FILTER
        )
    if isinstance(exc, TursoError):
        return KeyValStorageError(f"KeyVal storage error: {exc}")
    return None


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Map Turso errors to KeyVal errors, chained to the original."""
    try:
        yield
    except TursoError as exc:
        mapped = translate_storage_error(exc)
        assert mapped is not None
        raise mapped from exc
