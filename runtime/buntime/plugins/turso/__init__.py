"""The built-in ``@buntime/plugin-turso``: a hook-only plugin that provides the TursoService."""

from ._plugin import TURSO_PLUGIN_NAME, TursoPlugin, create

__all__ = ["TURSO_PLUGIN_NAME", "TursoPlugin", "create"]
