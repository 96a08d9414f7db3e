"""The runtime's aiohttp application: plugins mounted under their bases, probes and metrics.

Called by ``_run`` (``buntime serve``) and by tests through ``aiohttp_client``. The plugin host
is started *before* the app is assembled, because aiohttp cannot add sub-apps once startup has
begun; the app then owns the host's shutdown through ``cleanup_ctx`` (reverse plugin order, the
turso plugin last, which does the final push in sync mode). A plugin that failed to start gets a
:class:`~._deferred.DeferredMount` under its base, and the same ``cleanup_ctx`` runs the host's
:meth:`~buntime.plugins.PluginHost.recover` task, which attaches it once it starts; the root's
``on_shutdown`` runs an attached mount's sub-app ``on_shutdown`` (as ``add_subapp`` does for the
others), so a late plugin's streams end before the drain, not after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..plugins import LoadedPlugin, PluginHost, route_samples
from ..plugins.turso import TURSO_PLUGIN_NAME
from ..turso import TursoService
from ._deferred import DeferredMount, PluginChain
from ._metrics import ServerMetrics

log = logging.getLogger("buntime.server")

LIVE_PATH = "/api/health/live"
READY_PATH = "/api/health/ready"
METRICS_PATH = "/metrics"
#: The server's own endpoints: plugin middlewares never see them, so probes cannot be hijacked.
RUNTIME_PATHS = frozenset({LIVE_PATH, READY_PATH, METRICS_PATH})
RUNTIME_OWNER = "runtime"

#: The bound on the Turso part of a readiness answer (``health()`` bounds itself at 1 s; this
#: only guards that promise): well under the chart's probe timeout of 3 s.
READY_TURSO_TIMEOUT = 2.0
STATUS_READY = "ready"
STATUS_NOT_READY = "not ready"
SKIPPED_DISABLED = "disabled"


@dataclass
class ServerState:
    """Mutable server flags; ``stopping`` turns readiness off as soon as shutdown begins."""

    stopping: bool = False


HOST_KEY = web.AppKey("plugin_host", PluginHost)
STATE_KEY = web.AppKey("server_state", ServerState)
METRICS_KEY = web.AppKey("server_metrics", ServerMetrics)
CHAIN_KEY = web.AppKey("plugin_chain", PluginChain)
#: ``{plugin name: its mount}`` for plugins that had not started when the app was assembled.
DEFERRED_KEY = web.AppKey("deferred_mounts", dict[str, DeferredMount])


def _plugin_summary(loaded: LoadedPlugin) -> dict[str, Any]:
    return {"name": loaded.manifest.name, "version": loaded.manifest.version, "base": loaded.manifest.base}


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 when every required plugin started and Turso is usable (``health.usable``), else 503.

    An optional plugin (``optional: true`` in its manifest) that failed or was skipped is listed
    in the body but does not make the pod unready. The body is unauthenticated, so it names
    plugins and states only (a manifest that did not parse by the name the plugin host gives it,
    its directory's, made unique): why a plugin failed, paths, URLs and Turso's error text go to the
    log (when they happen) and to ``buntime turso health``, never here. It answers within
    :data:`READY_TURSO_TIMEOUT` even when a replica is busy (that namespace is ``degraded``).
    """
    host, state = request.app[HOST_KEY], request.app[STATE_KEY]
    reasons: list[str] = []
    if state.stopping:
        reasons.append("shutting down")
    for name, why in host.blocking().items():
        reasons.append(f"plugin {name} {why.split(':', 1)[0]}")  # "failed" or "skipped", not why
    turso: dict[str, Any] | None = None
    service: TursoService | None = host.get_plugin(TURSO_PLUGIN_NAME)
    if service is not None:
        try:
            health = await asyncio.wait_for(asyncio.shield(service.health()), READY_TURSO_TIMEOUT)
        except TimeoutError:
            turso = {"status": "degraded", "namespaces": {}}  # busy: still serving, as far as we know
        else:
            turso = health.public()
            if not health.usable:
                reasons.append(f"turso {health.status}")
    body = {
        "status": STATUS_NOT_READY if reasons else STATUS_READY,
        "reasons": reasons,
        "plugins": [_plugin_summary(loaded) for loaded in host.loaded],
        "failed": sorted(host.failed),
        "skipped": sorted(name for name, why in host.skipped.items() if why != SKIPPED_DISABLED),
        "retrying": sorted(host.retrying),
        "turso": turso,
    }
    return web.json_response(body, status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: every plugin's metrics (the host registry), then the server's own."""
    body = generate_latest(request.app[HOST_KEY].metrics) + generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _add_to_chain(chain: PluginChain, loaded: LoadedPlugin) -> None:
    chain.add(list(loaded.plugin.middlewares()), list(loaded.plugin.response_hooks()))


async def _plugins_ctx(app: web.Application) -> AsyncIterator[None]:
    host, deferred = app[HOST_KEY], app[DEFERRED_KEY]

    async def started_late(loaded: LoadedPlugin) -> None:
        _add_to_chain(app[CHAIN_KEY], loaded)
        mount = deferred.get(loaded.manifest.name)
        if mount is None:
            return
        subapp = loaded.plugin.routes()
        await mount.attach(subapp)
        if subapp is not None:
            canonicals = [resource.canonical for resource in subapp.router.resources()]
            host.reserved.add(
                mount.canonical, owner=mount.plugin, samples=route_samples(mount.canonical, canonicals)
            )
            log.info("plugin %s mounted at %s", mount.plugin, mount.canonical)

    recovering = asyncio.create_task(host.recover(started_late), name="buntime-plugin-recover")
    yield
    app[STATE_KEY].stopping = True
    recovering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await recovering
    if not recovering.cancelled() and recovering.exception() is not None:
        log.error("plugin recovery stopped: %s", recovering.exception())
    for mount in deferred.values():
        await mount.aclose()
    await host.stop()
    log.info("plugins stopped")


async def _shutdown_deferred(app: web.Application) -> None:
    """The root's ``on_shutdown``: late-started plugins' sub-apps get theirs too, before the drain."""
    for mount in app[DEFERRED_KEY].values():
        try:
            await mount.shutdown()
        except Exception:
            log.exception("plugin %s: on_shutdown of its routes failed", mount.plugin)


def _mount(app: web.Application, host: PluginHost) -> None:
    mounted: dict[str, str] = {}
    for loaded in host.loaded:
        name, base = loaded.manifest.name, loaded.manifest.base
        subapp = loaded.plugin.routes()
        if subapp is None:
            continue
        if base is None or base == "/":
            log.error("plugin %s has routes but base %r: not mounted (use base: /<name>)", name, base)
            continue
        if base in mounted:
            log.error("plugin %s: base %s is already mounted by %s; not mounted", name, base, mounted[base])
            continue
        app.add_subapp(base, subapp)
        mounted[base] = name
        canonicals = [resource.canonical for resource in subapp.router.resources()]
        host.reserved.add(base, owner=name, samples=route_samples(base, canonicals))
        log.info("plugin %s mounted at %s", name, base)
    for name, manifest in host.retrying.items():
        base = manifest.base
        if base is None or base == "/" or base in mounted:
            continue  # hook-only (the turso plugin), or a base a running plugin already took
        mount = DeferredMount(base.rstrip("/"), plugin=name)
        app.router.register_resource(mount)
        app[DEFERRED_KEY][name] = mount
        mounted[base] = name
        host.reserved.add(base, owner=name, samples=route_samples(base, []))
        log.info("plugin %s not started yet: %s answers 503 until it is", name, base)


def assemble_app(host: PluginHost) -> web.Application:
    """The app around a *started* ``host``: plugin middlewares and routes, probes, metrics."""
    server_metrics = ServerMetrics()
    chain = PluginChain(bypass=RUNTIME_PATHS)
    for loaded in host.loaded:
        _add_to_chain(chain, loaded)
    app = web.Application(middlewares=[server_metrics.middleware, chain.middleware])
    app.on_response_prepare.append(chain.on_response_prepare)
    app[HOST_KEY] = host
    app[CHAIN_KEY] = chain
    app[DEFERRED_KEY] = {}
    app[STATE_KEY] = ServerState()
    app[METRICS_KEY] = server_metrics
    app.router.add_get(LIVE_PATH, live)
    app.router.add_get(READY_PATH, ready)
    app.router.add_get(METRICS_PATH, metrics)
    for path in sorted(RUNTIME_PATHS):
        host.reserved.add(path, owner=RUNTIME_OWNER, exact=True)
    _mount(app, host)
    app.on_shutdown.append(_shutdown_deferred)
    app.cleanup_ctx.append(_plugins_ctx)
    return app


async def build_app(
    env: Mapping[str, str] | None = None, *, host: PluginHost | None = None
) -> web.Application:
    """Start the plugins and return the runtime app. Usage::

        app = await build_app({"TURSO_LOCAL_PATH": "/tmp/rt.db"})
        client = await aiohttp_client(app)      # or web.AppRunner(app)

    Parameters:

    * **env** *(optional)* — what the plugins see, default ``os.environ``.
    * **host** *(optional)* — an unstarted :class:`PluginHost`; default one from ``env`` (the
      built-in plugins plus ``BUNTIME_PLUGIN_DIRS``).

    Running the app's cleanup (``runner.cleanup()``) stops the plugins; if assembling fails,
    they are stopped here.
    """
    env = os.environ if env is None else env
    host = PluginHost.from_env(env) if host is None else host
    await host.start()
    try:
        return assemble_app(host)
    except BaseException:
        await host.stop()
        raise
