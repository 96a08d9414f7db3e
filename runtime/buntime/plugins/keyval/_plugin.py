"""``@buntime/plugin-keyval``: opens the Kv store on the Turso service, serves ``/keyval/api``.

It depends on ``@buntime/plugin-turso`` directly (a required dependency, so it starts after it
and stops before it). ``on_init`` runs the migrations, loads the search indexes and starts the
TTL and stale-lease sweeps; ``provides()`` returns the :class:`Kv` for other plugins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...turso import TursoService
from .._plugin import Plugin, PluginContext
from ..turso import TURSO_PLUGIN_NAME
from ._config import KeyValSettings
from ._errors import KeyValConfigError
from ._kv import Kv
from ._metrics import KvMetrics
from ._routes import create_app

if TYPE_CHECKING:
    from aiohttp import web

KEYVAL_PLUGIN_NAME = "@buntime/plugin-keyval"


class KeyValPlugin(Plugin):
    """The plugin; ``kv`` is ``None`` until ``on_init`` succeeded."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self.kv: Kv | None = None

    async def on_init(self, ctx: PluginContext) -> None:
        service = ctx.get_plugin(TURSO_PLUGIN_NAME)
        if not isinstance(service, TursoService):
            raise KeyValConfigError(
                f"plugin-keyval requires {TURSO_PLUGIN_NAME} to be loaded first", code="MISSING_TURSO_SERVICE"
            )
        settings = KeyValSettings.from_settings(ctx.settings)
        metrics = KvMetrics(ctx.metrics)
        kv = Kv(service, metrics=metrics, queue_lock_duration=settings.queue_lock_duration)
        try:
            await kv.open()
        except BaseException:
            metrics.unregister()
            raise
        kv.start_background(
            sweep_interval=settings.sweep_interval,
            queue_cleanup_interval=settings.queue_cleanup_interval,
            metrics_flush_interval=settings.metrics_flush_every,
        )
        self.kv = kv
        ctx.logger.info(
            "KeyVal plugin initialised (namespace: %s, sweep: %ss, queue lease: %ss)",
            kv.namespace,
            settings.sweep_interval,
            settings.queue_lock_duration,
        )

    def provides(self) -> Kv | None:
        return self.kv

    def routes(self) -> web.Application | None:
        return create_app(self.kv) if self.kv is not None else None

    async def on_shutdown(self) -> None:
        if self.kv is not None:
            await self.kv.aclose()


def create(options: Mapping[str, Any]) -> KeyValPlugin:
    return KeyValPlugin(options)
