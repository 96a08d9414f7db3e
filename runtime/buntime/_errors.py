"""The root of every error the runtime raises, and the whole tree in one picture.

Each area defines its leaves in its own ``_errors`` module, under this one root; every error has
a stable ``code`` (what HTTP layers, logs and tests key on, never the wording) and subclasses the
matching built-in, so ``except ValueError`` keeps working for callers that do not know us::

    BuntimeError
    ├── TursoError                              buntime.turso._errors (the Turso service)
    │   ├── TursoConfigError (ValueError)       INVALID_TURSO_MODE, TURSO_MODE_CONFLICT, ...
    │   ├── InvalidNamespaceError (ValueError)  INVALID_TURSO_NAMESPACE
    │   ├── TursoQueryError                     → TursoBusyError, DDLInConcurrentTransactionError
    │   ├── TursoUnavailableError (ConnectionError) → TursoCommitUnknownError
    │   └── TursoClosedError (RuntimeError)
    ├── ServerConfigError (ValueError)          buntime.server._config: INVALID_BUNTIME_PORT, ...
    └── PluginError                             buntime.plugins._errors (the host and the plugins)
        ├── ManifestError (ValueError)          INVALID_MANIFEST
        ├── PluginLoadError                     PLUGIN_LOAD_FAILED
        ├── PluginInitError                     PLUGIN_INIT_FAILED (retried by the host)
        ├── PluginConfigError (ValueError)      INVALID_<VARIABLE>: a setting cannot be used
        │   ├── GatewayConfigError, ProxyConfigError
        │   └── KeyValConfigError (also a KeyValError)
        └── ApiError                            an admin API's answer: ``status`` + ``code``
            ├── InvalidTextError (ValueError)   INVALID_UNICODE: client JSON with a lone surrogate
            ├── RuleError (ValueError)          PROXY_INVALID_* (buntime.plugins.proxy)
            └── KeyValError                     KEY_NOT_FOUND, LEASE_LOST, ... (buntime.plugins.keyval)

Imported by every layer; imports nothing.
"""

from __future__ import annotations


class BuntimeError(Exception):
    """Root of every error the runtime raises; ``code`` is stable, the message is one line."""

    code = "BUNTIME_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""
