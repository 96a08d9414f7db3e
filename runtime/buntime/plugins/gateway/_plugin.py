"""``@buntime/plugin-gateway``: lifecycle, metrics and the pieces the runtime server installs.

The turso plugin is an *optional* dependency: without it the gateway still starts (with a
warning) and serves env-only data; with it, migrations run at ``on_init`` and a failure there
fails the plugin (the runtime then reports not ready rather than silently losing writes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...turso import TursoService
from .._plugin import Plugin, PluginContext, ResponseHook
from ..turso import TURSO_PLUGIN_NAME
from ._config import gateway_config
from ._gateway import Gateway
from ._routes import build_admin_app
from ._store import GatewayStore

GATEWAY_PLUGIN_NAME = "@buntime/plugin-gateway"


class GatewayCollector(Collector):
    """Exports the gateway's own counters on the runtime's ``/metrics``."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        counters = self._gateway.counters
        requests = CounterMetricFamily(
            "buntime_gateway_requests", "Requests seen by the gateway, by outcome.", labels=["outcome"]
        )
        requests.add_metric(["allowed"], counters.allowed)
        requests.add_metric(["blocked"], counters.blocked)
        yield requests
        yield GaugeMetricFamily(
            "buntime_gateway_shell_excludes",
            "Shell excludes in effect (environment and persisted).",
            value=len(self._gateway.excluded_basenames()),
        )


class GatewayPlugin(Plugin):
    """Request counters, metrics history and shell excludes (see ``_routes`` for the API)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self.gateway: Gateway | None = None
        self._snapshots: asyncio.Task[None] | None = None

    async def on_init(self, ctx: PluginContext) -> None:
        config = gateway_config(ctx.settings, self._options)
        service: TursoService | None = ctx.get_plugin(TURSO_PLUGIN_NAME)
        store: GatewayStore | None = None
        if service is None:
            ctx.logger.warning("Turso plugin not available: gateway persistence disabled")
        else:
            store = GatewayStore(service, retention=config.metrics_retention, logger=ctx.logger)
            await store.start()
        self.gateway = Gateway(config, store)
        await self.gateway.start()
        if store is not None and config.snapshot_interval > 0:
            self._snapshots = asyncio.create_task(self.gateway.run_snapshots(), name="gateway-snapshots")
        ctx.metrics.register(GatewayCollector(self.gateway))
        rate_limit = config.rate_limit
        ctx.logger.info(
            "gateway ready (persistence: %s, env excludes: %s, API key: %s, snapshots: %s, rate limit: %s, "
            "CORS rules: %d)",
            "on" if store is not None else "off",
            ",".join(config.env_excludes) or "none",
            "required" if config.api_key else "not required",
            f"every {config.snapshot_interval:g}s" if self._snapshots is not None else "off",
            f"{rate_limit.requests}/{rate_limit.window_text} per {rate_limit.key_by}"
            if rate_limit
            else "off",
            len(self.gateway.cors_rules),
        )

    def provides(self) -> Gateway | None:
        return self.gateway

    def routes(self) -> web.Application | None:
        return build_admin_app(self.gateway) if self.gateway is not None else None

    def middlewares(self) -> Sequence[Middleware]:
        return [self.gateway.middleware] if self.gateway is not None else []

    def response_hooks(self) -> Sequence[ResponseHook]:
        return [self.gateway.on_response_prepare] if self.gateway is not None else []

    async def on_shutdown(self) -> None:
        if self.gateway is None:
            return
        self.gateway.stopping.set()  # ends the snapshot loop and every /sse stream
        if self._snapshots is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshots
        if self.gateway.store is not None:
            await self.gateway.store.aclose()


def create(options: Mapping[str, Any]) -> GatewayPlugin:
    return GatewayPlugin(options)
