"""The Turso service: durable, synced SQLite-compatible state for plugins and worker apps.

``resolve_config()`` picks local / single-tenant sync / multi-tenant sync from the environment,
``TursoService`` opens the databases and runs transactions; see the README for the env table.
"""

from ._config import DEFAULT_LOCAL_PATH, TursoConfig, normalize_url, parse_interval, resolve_config
from ._database import BlockingDatabase, Database, QueryResult, RunResult, TransactionType
from ._durations import DURATION_HELP, DURATION_PATTERN, duration_seconds
from ._errors import (
    DDLInConcurrentTransactionError,
    InvalidNamespaceError,
    TursoBusyError,
    TursoClosedError,
    TursoCommitUnknownError,
    TursoConfigError,
    TursoError,
    TursoQueryError,
    TursoUnavailableError,
)
from ._health import NamespaceHealth, TursoHealth
from ._namespaces import DEFAULT_NAMESPACE, NAMESPACE_PATTERN, validate_namespace
from ._service import TursoService

__all__ = [
    "DEFAULT_LOCAL_PATH",
    "DEFAULT_NAMESPACE",
    "DURATION_HELP",
    "DURATION_PATTERN",
    "NAMESPACE_PATTERN",
    "BlockingDatabase",
    "DDLInConcurrentTransactionError",
    "Database",
    "InvalidNamespaceError",
    "NamespaceHealth",
    "QueryResult",
    "RunResult",
    "TransactionType",
    "TursoBusyError",
    "TursoClosedError",
    "TursoCommitUnknownError",
    "TursoConfig",
    "TursoConfigError",
    "TursoError",
    "TursoHealth",
    "TursoQueryError",
    "TursoService",
    "TursoUnavailableError",
    "duration_seconds",
    "normalize_url",
    "parse_interval",
    "resolve_config",
    "validate_namespace",
]
