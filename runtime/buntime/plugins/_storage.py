"""Storage for consumer plugins: migrations, writes that push, and caches that follow pulls.

Built-in plugins that keep state in the Turso service (gateway, proxy) share the same policy,
so it lives here once: schema changes run in one *exclusive* transaction (``BEGIN CONCURRENT``
rejects DDL); every write goes through ``service.transaction()`` (in sync mode the commit is
pushed at once, so it survives a pod restart); and the plugin's in-memory cache is rebuilt
from the database after each write *and* after every background pull that brought changes
from another replica (upstream only loaded caches at start, so pods never saw each other).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..turso import Database, TursoService

T = TypeVar("T")
Loader = Callable[[Database], Awaitable[None]]


class PluginStore:
    """One plugin's namespace on the Turso service, with a cache kept fresh. Usage::

        store = PluginStore(service, "proxy", load=self._load_rules, logger=ctx.logger)
        await store.start(SCHEMA)                   # migrate, load the cache, follow pulls
        await store.write(lambda db: db.run(...))   # commit (+ push), then reload the cache

    Parameters:

    * **service** — the :class:`~buntime.turso.TursoService` the turso plugin provides.
    * **namespace** — the plugin's namespace (a file of its own in multi-tenant mode).
    * **load** — ``async load(db)`` that rebuilds the cache from ``db``; runs under a lock, so a
      reload never interleaves with another and the last one reads the newest state.
    * **logger** *(optional)* — where reload failures after a pull are reported.
    """

    def __init__(
        self,
        service: TursoService,
        namespace: str,
        *,
        load: Loader,
        logger: logging.Logger | None = None,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self._load = load
        self._log = logger or logging.getLogger("buntime.plugins")
        self._reload_lock = asyncio.Lock()
        self._closed = False

    async def start(self, schema: str) -> None:
        """What ``on_init`` does: :meth:`migrate`, load the cache, then :meth:`watch`."""
        await self.migrate(schema)
        await self.reload()
        self.watch()

    async def migrate(self, script: str) -> None:
        """Run ``;``-separated DDL once per start; it must be idempotent (``IF NOT EXISTS``)."""
        await self.service.transaction(lambda db: db.exec(script), namespace=self.namespace, type="exclusive")

    async def read(self) -> Database:
        """An autocommit handle for reads that bypass the cache."""
        return await self.service.connect(self.namespace)

    async def write(self, fn: Callable[[Database], Awaitable[T]], *, reload: bool = True) -> T:
        """Run ``fn(db)`` in a transaction (re-run on conflicts), then reload the cache.

        ``reload=False`` is for writes to tables the cache does not hold.
        """
        result = await self.service.transaction(fn, namespace=self.namespace)
        if reload:
            await self.reload()
        return result

    async def reload(self) -> None:
        """Rebuild the cache from the database."""
        async with self._reload_lock:
            await self._load(await self.read())

    def watch(self) -> None:
        """Reload the cache whenever a pull of this namespace's replica brought changes."""
        self.service.add_pull_listener(self._on_pull)

    async def _on_pull(self, replica_path: str) -> None:
        # Single-tenant replicas are shared by every namespace; multi-tenant ones are per namespace.
        if self._closed or replica_path != self.service.replica_path(self.namespace):
            return
        try:
            await self.reload()
        except Exception:
            self._log.exception("reloading %s state after a pull failed (kept the old cache)", self.namespace)

    async def aclose(self) -> None:
        """Stop reacting to pulls (async like every resource the plugins close; nothing to await yet)."""
        self._closed = True
        self.service.remove_pull_listener(self._on_pull)
