"""Errors of the plugin host and the built-in plugins: the ``PluginError`` branch of the tree.

The whole runtime's tree is drawn in ``buntime/_errors.py``; this branch::

    PluginError
    ├── ManifestError (ValueError)     INVALID_MANIFEST — a manifest cannot be read or is invalid
    ├── PluginLoadError                PLUGIN_LOAD_FAILED — the entry point cannot be imported or built
    ├── PluginInitError                PLUGIN_INIT_FAILED — on_init failed or timed out (retried)
    ├── PluginConfigError (ValueError) INVALID_<VARIABLE> — a setting cannot be used (never retried)
    └── ApiError                       an admin API's answer: ``status`` and ``{"error", "code"}``
        └── InvalidTextError (ValueError)  400 INVALID_UNICODE — client JSON holds a string that is not text

Plugins subclass these for their own causes (``GatewayConfigError``, ``RuleError``,
``KeyValError``, ...), so the host, the server and the admin middleware handle them all alike.
"""

from __future__ import annotations

from pathlib import Path

from .._errors import BuntimeError


class PluginError(BuntimeError):
    """Root of the plugin host's and the plugins' errors."""

    code = "PLUGIN_ERROR"


class ManifestError(PluginError, ValueError):
    """A manifest cannot be read or is invalid; the message starts with the file's path.

    ``path`` is that file, kept apart so the host can name the manifest without parsing the
    message (a directory's name may hold a ``:``).
    """

    code = "INVALID_MANIFEST"

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class PluginLoadError(PluginError):
    """A plugin's entry point cannot be imported or its factory failed."""

    code = "PLUGIN_LOAD_FAILED"


class PluginInitError(PluginError):
    """A plugin's ``on_init`` raised or timed out."""

    code = "PLUGIN_INIT_FAILED"


class PluginConfigError(PluginError, ValueError):
    """A plugin setting cannot be used; the one-line message starts with the variable's name.

    ``variable`` is the environment variable (or option) at fault; ``code`` is
    ``INVALID_<VARIABLE>`` unless a cause needs its own. A configuration does not fix itself, so
    the host never retries a plugin that failed with this error.
    """

    code = "INVALID_PLUGIN_CONFIG"

    def __init__(self, message: str, *, variable: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code or (f"INVALID_{variable}" if variable else None))
        self.variable = variable


class ApiError(PluginError):
    """An error an admin API answers with ``status`` and ``{"error": message, "code": code}``.

    Subclasses set ``code`` and ``status`` as class attributes; either can be given per raise.
    """

    code = "API_ERROR"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        if status is not None:
            self.status = status


class InvalidTextError(ApiError, ValueError):
    """Client JSON (a body, a query parameter) holds a string that is not Unicode text: a lone
    surrogate escape such as ``"\\ud800"``, which JSON's grammar allows but UTF-8 cannot encode.

    Raised by ``_json.client_json`` for every plugin, before a handler sees the value (the
    engine, RE2 and the key encoder all refuse such a string, some as a 500). Callers that map
    their ``ValueError`` to a code of their own let this one through, so the code is the same
    on every route.
    """

    code = "INVALID_UNICODE"
    status = 400
