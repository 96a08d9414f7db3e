"""``@buntime/plugin-proxy``: lifecycle and the pieces the runtime server installs.

Static rules work without storage, so the turso plugin is an *optional* dependency: when it is
absent or failed, the proxy still serves its static rules and refuses dynamic-rule writes with
503 ``PROXY_STORAGE_DISABLED`` (upstream declared it required, so a storage outage at start took
its static redirects down too). Migrations failing with turso present do fail the plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from ...turso import TursoService
from .._plugin import Plugin, PluginContext
from ..turso import TURSO_PLUGIN_NAME
from ._config import proxy_config
from ._proxy import Proxy
from ._routes import build_admin_app
from ._store import ProxyStore

PROXY_PLUGIN_NAME = "@buntime/plugin-proxy"


class ProxyPlugin(Plugin):
    """Proxies or redirects requests that match a rule (see ``_routes`` for the admin API)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self.proxy: Proxy | None = None
        self._admin: web.Application | None = None

    async def on_init(self, ctx: PluginContext) -> None:
        config = proxy_config(ctx.settings)
        service: TursoService | None = ctx.get_plugin(TURSO_PLUGIN_NAME)
        store: ProxyStore | None = None
        if service is None:
            ctx.logger.warning("Turso plugin not available: dynamic proxy rules disabled")
        else:
            store = ProxyStore(service, logger=ctx.logger)
            await store.start()
        self.proxy = Proxy(config, store, metrics=ctx.metrics, reserved=ctx.reserved)
        self._admin = build_admin_app(self.proxy)
        ctx.logger.info(
            "proxy ready (%d static rules, %d dynamic rules, timeout %.1fs, API key: %s)",
            len(config.static_rules),
            len(store.rules) if store is not None else 0,
            config.timeout,
            "required" if config.api_key else "not required (the rules API is open)",
        )

    def provides(self) -> Proxy | None:
        return self.proxy

    def routes(self) -> web.Application | None:
        return self._admin

    def middlewares(self) -> Sequence[Middleware]:
        return [self.proxy.intercept] if self.proxy is not None else []

    async def on_shutdown(self) -> None:
        if self.proxy is not None:
            await self.proxy.aclose()


def create(options: Mapping[str, Any]) -> ProxyPlugin:
    return ProxyPlugin(options)
