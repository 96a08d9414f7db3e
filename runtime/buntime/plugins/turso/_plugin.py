"""``@buntime/plugin-turso``: resolves the config, opens the service, provides it to others.

Hook-only (no ``base``): consumers declare it in ``dependencies`` and call
``ctx.get_plugin("@buntime/plugin-turso")`` to get the :class:`~buntime.turso.TursoService`.
The service is per plugin instance, not a module singleton, so tests and hosts stay isolated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...turso import TursoService, resolve_config
from .._plugin import Plugin, PluginContext

TURSO_PLUGIN_NAME = "@buntime/plugin-turso"


class TursoPlugin(Plugin):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self.service: TursoService | None = None

    async def on_init(self, ctx: PluginContext) -> None:
        config = resolve_config(self._options, ctx.env)
        self.service = TursoService(config)
        await self.service.connect()  # open the default namespace: fail at start, not later
        ctx.logger.info(
            "Turso plugin initialised (mode: %s, topology: %s, localPath: %s)",
            config.mode,
            config.topology,
            config.local_path,
        )

    def provides(self) -> TursoService | None:
        return self.service

    async def on_shutdown(self) -> None:
        if self.service is not None:
            await self.service.aclose()  # final push in sync mode


def create(options: Mapping[str, Any]) -> TursoPlugin:
    return TursoPlugin(options)
