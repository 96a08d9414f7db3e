"""Every error turso-server raises, and the HTTP status and ``code`` each one is rendered with.

Handlers on both listeners raise these and one middleware per listener turns them into
``{"code": ..., "detail": ...}`` JSON, so statuses are decided here and nowhere else. The codes keep
the upstream Go wrapper's spelling where it had one, so existing admin clients keep matching::

    TursoServerError
    ├── ConfigError (ValueError)                 startup: names the offending variable or flag
    ├── StateError (RuntimeError)                startup: state file unreadable or of a newer version
    └── ApiError                                 rendered as JSON with .status and .code
        ├── BadRequestError (ValueError)         400 "bad request"
        │   ├── MissingNamespaceError            400 "missing namespace"
        │   ├── InvalidNamespaceError            400 "invalid namespace"
        │   ├── InvalidBodyError                 400 "invalid body"
        │   ├── InvalidPipelineError             400 "invalid pipeline"  (not strict Hrana JSON)
        │   ├── InvalidTTLError                  400 "invalid ttl"
        │   └── MalformedRequestError            400 "malformed request"  (head or framing unusable)
        ├── UnauthorizedError (PermissionError)  401 "unauthorized"  (+ WWW-Authenticate)
        ├── ForbiddenError (PermissionError)     403 "forbidden"
        │   └── StatementForbiddenError          403 "statement forbidden"  (SQL guard)
        ├── NotFoundError (LookupError)          404 "not found"
        │   ├── NamespaceNotFoundError           404 "namespace not found"
        │   └── UnknownRouteError                404 "unknown route"  (nothing turso-server serves)
        ├── RequestTimeoutError (TimeoutError)   408 "request timeout"  (body not received in time)
        ├── ConflictError                        409 "conflict"
        │   ├── LeaseBusyError                   409 "lease busy"  (+ Retry-After)
        │   ├── LeaseLostError                   409 "lease lost"
        │   ├── OwnerMismatchError               409 "owner mismatch"  (create, mint: another owner's)
        │   ├── NotOwnedError                    409 "not owned"  (create: exists with no owner)
        │   └── NamespaceChangedError            409 "namespace changed"  (mint: another createdAt)
        ├── NamespaceLimitError                  429 "max namespaces reached"
        ├── ClientClosedError (ConnectionError)  499 "client closed request"  (nobody left to answer)
        ├── InternalError                        500 "internal error"
        │   └── BackupError                      500 "backup failed"
        ├── UpstreamError (ConnectionError)      502 "upstream error"
        │   ├── UpstreamConnectError             502 "upstream unreachable"  (nothing was sent)
        │   └── UpstreamTimeoutError (TimeoutError) 504 "upstream timeout"
        └── UnavailableError (ConnectionError)   503 "namespace unavailable"  (+ Retry-After)
            ├── ChildStartError                  503 "start failed"
            ├── NoFreePortError                  503 "no free port"
            └── SpoolFullError                   503 "spool full"  (no room to buffer a reply)
"""

from __future__ import annotations

import math
from typing import ClassVar


class TursoServerError(Exception):
    """Root of every error turso-server raises."""

    @property
    def detail(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(TursoServerError, ValueError):
    """A setting cannot be used; the message names the environment variable (and flag)."""


class StateError(TursoServerError, RuntimeError):
    """The state file cannot be read, or was written by a newer turso-server."""


class ApiError(TursoServerError):
    """An error with an HTTP status, rendered as ``{"code","detail"}`` by the listener middleware."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal error"
    #: Close the connection after the reply (the rest of the request cannot be trusted or read).
    closes_connection: ClassVar[bool] = False

    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (``WWW-Authenticate``, ``Retry-After``)."""
        return {}


class BadRequestError(ApiError, ValueError):
    status = 400
    code = "bad request"


class MissingNamespaceError(BadRequestError):
    code = "missing namespace"


class InvalidNamespaceError(BadRequestError):
    code = "invalid namespace"


class InvalidBodyError(BadRequestError):
    code = "invalid body"


class InvalidTTLError(BadRequestError):
    code = "invalid ttl"


class InvalidPipelineError(BadRequestError):
    """A ``/v2/pipeline`` body the SQL guard cannot read strictly (so it cannot vouch for it)."""

    code = "invalid pipeline"


class MalformedRequestError(BadRequestError):
    """The request head or body framing cannot be used: bytes outside visible ASCII in the target or
    a header value, a head aiohttp's parser refused, a broken chunked body. The detail names the part
    (never its value: it may be a credential)."""

    code = "malformed request"
    closes_connection = True


class UnauthorizedError(ApiError, PermissionError):
    """No credentials, or credentials that do not verify."""

    status = 401
    code = "unauthorized"
    realm: ClassVar[str] = "turso-server"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Bearer realm="{self.realm}"'}


class ForbiddenError(ApiError, PermissionError):
    """Valid credentials that do not cover this namespace or operation."""

    status = 403
    code = "forbidden"


class StatementForbiddenError(ForbiddenError):
    """A statement that would reach past the namespace's own database (files, other databases)."""

    code = "statement forbidden"


class NotFoundError(ApiError, LookupError):
    status = 404
    code = "not found"


class NamespaceNotFoundError(NotFoundError):
    code = "namespace not found"


class UnknownRouteError(NotFoundError):
    """A path or method turso-server neither serves nor forwards (the code of aiohttp's own 404)."""

    code = "unknown route"


class RequestTimeoutError(ApiError, TimeoutError):
    """The client did not send its whole body within ``TURSO_CLIENT_RECEIVE_TIMEOUT``."""

    status = 408
    code = "request timeout"
    closes_connection = True


class ClientClosedError(ApiError, ConnectionError):
    """The client went away while its body was being read or its lease was awaited; the status only
    reaches the metrics."""

    status = 499  # nginx's convention
    code = "client closed request"
    closes_connection = True


class ConflictError(ApiError):
    status = 409
    code = "conflict"


class LeaseBusyError(ConflictError):
    """Another replica holds the namespace's write lease past the caller's wait."""

    code = "lease busy"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class LeaseLostError(ConflictError):
    """The request names a write lease that expired, was replaced, or predates a restart."""

    code = "lease lost"


class OwnerMismatchError(ConflictError):
    """An admin ``create`` with an ``owner`` for a namespace another owner holds; nothing changed."""

    code = "owner mismatch"


class NotOwnedError(ConflictError):
    """An admin ``create`` with an ``owner`` for a namespace that exists with none (made before
    owners, by hand, or auto-provisioned); ``"adopt": true`` claims it. Nothing changed."""

    code = "not owned"


class NamespaceChangedError(ConflictError):
    """A mint's ``namespaceCreatedAt`` precondition names another incarnation than the stored one
    (the namespace was deleted and created again since the caller looked): nothing was minted."""

    code = "namespace changed"


class NamespaceLimitError(ApiError):
    """``TURSO_MAX_NAMESPACES`` namespaces exist already."""

    status = 429
    code = "max namespaces reached"


class InternalError(ApiError):
    status = 500
    code = "internal error"


class BackupError(InternalError):
    code = "backup failed"


class UpstreamError(ApiError, ConnectionError):
    """The namespace's tursodb failed mid-request (reset, bad reply)."""

    status = 502
    code = "upstream error"


class UpstreamConnectError(UpstreamError):
    """The child did not accept the connection; the request was not sent, so it may be retried."""

    code = "upstream unreachable"


class UpstreamNoReplyError(UpstreamError):
    """The request was sent but not one byte came back (reset or close).

    The child may or may not have run it, so only a read-only request may be resent.
    """


class UpstreamTimeoutError(UpstreamError, TimeoutError):
    """The exchange outlived ``TURSO_UPSTREAM_TIMEOUT``."""

    status = 504
    code = "upstream timeout"


class UnavailableError(ApiError, ConnectionError):
    """The namespace's tursodb is not serving yet; the client should retry after ``retry_after``."""

    status = 503
    code = "namespace unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ChildStartError(UnavailableError):
    code = "start failed"


class NoFreePortError(UnavailableError):
    code = "no free port"


class SpoolFullError(UnavailableError):
    """A child's reply does not fit the spool (``TURSO_SPOOL_MEMORY`` + ``TURSO_SPOOL_DISK``)."""

    code = "spool full"
