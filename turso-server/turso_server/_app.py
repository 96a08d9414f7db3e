"""Wires the server together: two aiohttp apps, their lifecycles, and the serve loop.

:func:`build_apps` creates the shared objects (no I/O) and puts them under typed app keys on both
apps. The data app owns the long-lived resources through ``cleanup_ctx`` (state file, supervisor,
restore + GC task); the admin app owns the backup directory. :func:`serve` sets up both,
opens the listeners *while* the stored namespaces are restored in parallel (``/readyz`` turns true
when both are done; upstream restored first and kept the probes down meanwhile), and on stop tears
down in reverse: listeners, GC, children (SIGTERM, then SIGKILL), final state flush.
Called by ``cli``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from . import _admin, _proxy
from ._auth import AdminAuth, DataAuth, ScopedTokens
from ._backup import Backups
from ._config import ServerConfig
from ._cursors import PushCursors
from ._gc import GarbageCollector, GcPolicy
from ._http import (
    ADMIN_AUTH,
    BACKUPS,
    CONFIG,
    CURSORS,
    DATA_AUTH,
    GC,
    LEASES,
    METRICS,
    READINESS,
    SCOPED_TOKENS,
    SPOOL,
    STORE,
    SUPERVISOR,
    AppRunner,
    Readiness,
    error_middleware,
    head_middleware,
)
from ._leases import LeaseTable
from ._logging import get_logger
from ._metrics import Metrics
from ._spool import SpoolBudget
from ._state import StateStore
from ._supervisor import Supervisor

LISTENER_SHUTDOWN_TIMEOUT = 10.0

log = get_logger("app")


def build_apps(config: ServerConfig) -> tuple[web.Application, web.Application]:
    """The data app and the admin app, sharing one store, supervisor and metrics registry."""
    metrics = Metrics()
    store = StateStore(config.data_dir, flush_interval=config.access_flush_interval)
    leases = LeaseTable()
    supervisor = Supervisor(config, store, metrics, leases)
    metrics.watch_namespaces(supervisor.state_counts)
    scoped = ScopedTokens(config.token_signing_key) if config.token_signing_key else None
    gc = GarbageCollector(
        store,
        supervisor,
        metrics,
        policy=GcPolicy(auto_idle=config.auto_idle_duration, archive_retention=config.archive_retention),
        interval=config.gc_interval,
    )
    readiness = Readiness()

    data_app = web.Application(
        middlewares=[error_middleware, head_middleware], client_max_size=config.max_request_bytes
    )
    admin_app = web.Application(
        middlewares=[_admin.metrics_middleware, error_middleware, head_middleware, _admin.auth_middleware],
        client_max_size=_admin.MAX_ADMIN_BODY,
    )
    for app in (data_app, admin_app):
        app[CONFIG] = config
        app[STORE] = store
        app[SUPERVISOR] = supervisor
        app[METRICS] = metrics
        app[READINESS] = readiness
        app[SCOPED_TOKENS] = scoped
        app[LEASES] = leases
    data_app[DATA_AUTH] = DataAuth(config.auth_token, scoped, binding=store.token_binding)
    data_app[GC] = gc
    data_app[CURSORS] = PushCursors(enabled=config.push_cursors)
    data_app[SPOOL] = SpoolBudget(
        supervisor.layout.spool_dir, memory=config.spool_memory, disk=config.spool_disk
    )
    admin_app[ADMIN_AUTH] = AdminAuth(config.admin_token, metrics_token=config.metrics_token)
    admin_app[BACKUPS] = Backups(supervisor, timeout=config.upstream_timeout)

    data_app.cleanup_ctx.extend([_state_ctx, _supervisor_ctx, _restore_and_gc_ctx])
    admin_app.cleanup_ctx.append(_backup_ctx)
    _proxy.add_routes(data_app)
    _admin.add_routes(admin_app)
    return data_app, admin_app


# --- lifecycles (data app) -----------------------------------------------------------------------


async def _state_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await asyncio.to_thread(store.load)
    flusher = asyncio.create_task(store.run_flusher(), name="state-flusher")
    yield
    flusher.cancel()
    await asyncio.gather(flusher, return_exceptions=True)
    await store.close()


async def _supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[SUPERVISOR]
    await supervisor.start()
    yield
    await supervisor.stop()


async def _restore_and_gc_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor, readiness, gc = app[SUPERVISOR], app[READINESS], app[GC]
    names = supervisor.prepare_restore()

    async def restore_then_collect() -> None:
        await supervisor.restore(names)
        readiness.restored = True
        await gc.run()

    task = asyncio.create_task(restore_then_collect(), name="restore-and-gc")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --- lifecycles (admin app) ----------------------------------------------------------------------


async def _backup_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[BACKUPS].start()  # removes snapshots a crash left behind
    yield


# --- serving ---------------------------------------------------------------------------------------


def _log_startup(config: ServerConfig) -> None:
    log.info(
        "turso-server starting",
        extra={
            "dataAddr": str(config.data_addr),
            "adminAddr": str(config.admin_addr),
            "dataDir": str(config.data_dir),
            "tursodbBin": str(config.tursodb_bin),
            "backendPorts": f"{config.backend_port_start}-{config.backend_port_end}",
            "authData": bool(config.auth_token),
            "scopedTokens": bool(config.token_signing_key),
            "authAdmin": config.admin_auth_enabled,
            "metricsToken": bool(config.metrics_token),
            "allowAutoProvision": config.allow_auto_provision,
            "maxNamespaces": config.max_namespaces,
        },
    )
    if not config.data_auth_enabled:
        log.warning(
            "!!! INSECURE: data port has NO authentication (--insecure-dev); never use this in production"
        )
    if not config.admin_auth_enabled:
        log.warning(
            "!!! INSECURE: admin port has NO authentication (--insecure-dev); never use this in production"
        )


async def serve(config: ServerConfig, stop: asyncio.Event) -> None:
    """Run both listeners until ``stop`` is set, then shut down gracefully."""
    _log_startup(config)
    data_app, admin_app = build_apps(config)
    readiness = data_app[READINESS]
    data_runner = AppRunner(data_app, access_log=None, shutdown_timeout=LISTENER_SHUTDOWN_TIMEOUT)
    admin_runner = AppRunner(admin_app, access_log=None, shutdown_timeout=LISTENER_SHUTDOWN_TIMEOUT)
    await data_runner.setup()
    try:
        await admin_runner.setup()
        try:
            await web.TCPSite(
                data_runner, config.data_addr.host, config.data_addr.port, reuse_address=True
            ).start()
            await web.TCPSite(
                admin_runner, config.admin_addr.host, config.admin_addr.port, reuse_address=True
            ).start()
            readiness.listening = True
            log.info(
                "listening",
                extra={
                    "dataPort": _bound_port(data_runner),
                    "adminPort": _bound_port(admin_runner),
                },
            )
            await stop.wait()
            readiness.stopping = True
            log.info("shutting down")
        finally:
            await admin_runner.cleanup()
    finally:
        await data_runner.cleanup()
        log.info("stopped")


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
