"""turso-server: one ``tursodb --sync-server`` child per namespace behind one data port.

``turso-server`` (see :mod:`turso_server.cli`) is the normal way in; the names below let tests and
embedders load a config and serve in-process.
"""

from ._app import build_apps, serve
from ._auth import Access, ScopedTokens
from ._config import SETTINGS, ListenAddress, ServerConfig, load_config
from ._durations import parse_duration
from ._errors import (
    ApiError,
    ConfigError,
    NamespaceLimitError,
    NamespaceNotFoundError,
    StateError,
    TursoServerError,
    UnavailableError,
)
from ._names import NAMESPACE_PATTERN, validate_name
from ._sizes import SIZE_PATTERN, parse_size
from ._state import Origin

__all__ = [
    "NAMESPACE_PATTERN",
    "SETTINGS",
    "SIZE_PATTERN",
    "Access",
    "ApiError",
    "ConfigError",
    "ListenAddress",
    "NamespaceLimitError",
    "NamespaceNotFoundError",
    "Origin",
    "ScopedTokens",
    "ServerConfig",
    "StateError",
    "TursoServerError",
    "UnavailableError",
    "build_apps",
    "load_config",
    "parse_duration",
    "parse_size",
    "serve",
    "validate_name",
]
