"""``open_turso()``: how worker apps get a database of their own namespace.

Workers have no plugin context. The runtime forwards its turso-server connection to them as
``RUNTIME_TURSO_SERVER_URL`` / ``RUNTIME_TURSO_SERVER_TOKEN`` / ``RUNTIME_TURSO_DIR`` (the
operator's webhook injects the same variables into opted-in pods). With a server URL the worker
opens an embedded replica ``<dir>/<ns>.db`` synced with ``<url>/<ns>``; without one it opens a
standalone local MVCC file.

The client is a blocking face on the same :class:`~buntime.turso.TursoService` the runtime uses
(run on an event loop of its own, in a background thread), so a worker gets the same contract
(docs/consistency.md): in sync mode every write runs under turso-server's write lease and is on
the server when the call returns; ``transaction(fn)`` runs a read-modify-write serializably.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

from .turso import BlockingDatabase, TursoService, resolve_config, validate_namespace

DEFAULT_WORKER_DIR = "./.cache/turso"
T = TypeVar("T")


class TursoClient:
    """A blocking connection for worker code. Usage::

    with open_turso("tenants") as db:
        db.execute("CREATE TABLE IF NOT EXISTS t(v TEXT)")
        db.execute("INSERT INTO t VALUES (?)", ["x"])   # on the server when this returns
        db.transaction(lambda tx: tx.run("UPDATE c SET n = n + 1"))
    """

    def __init__(
        self,
        service: TursoService,
        *,
        namespace: str,
        path: str,
        mode: Literal["local", "sync"],
        url: str | None,
    ) -> None:
        self._service = service
        self.namespace = namespace
        self.path = path
        self.mode = mode
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"turso-worker:{namespace}", daemon=True
        )
        self._thread.start()
        try:
            self._call(service.connect(namespace))  # open now: fail here, not at the first query
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> TursoClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        """Run one statement; rows come back as dicts (empty for writes)."""

        async def run() -> list[dict[str, Any]]:
            return await (await self._service.connect(self.namespace)).all(sql, params)

        return self._call(run())

    def exec(self, script: str) -> None:
        """Run a script of ``;``-separated statements (DDL welcome)."""

        async def run() -> None:
            await (await self._service.connect(self.namespace)).exec(script)

        self._call(run())

    def transaction(self, fn: Callable[[BlockingDatabase], T], *, max_retries: int = 5) -> T:
        """Run ``fn(db)`` in one serializable transaction (re-run on conflicts, so keep it pure SQL)."""
        return self._call(
            self._service.run_transaction(fn, namespace=self.namespace, max_retries=max_retries)
        )

    def pull(self) -> bool:
        """Fetch other replicas' changes now; ``False`` in local mode or when nothing was new."""
        return self._call(self._service.sync(self.namespace))

    def push(self) -> None:
        """Kept for compatibility: writes are already on the server when they return."""

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            self._call(self._service.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop.close()


def open_turso(
    namespace: str,
    *,
    server_url: str | None = None,
    token: str | None = None,
    dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> TursoClient:
    """Open ``namespace`` for a worker; explicit arguments win over the ``RUNTIME_TURSO_*`` env."""
    env = os.environ if env is None else env
    namespace = validate_namespace(namespace)
    base_dir = dir if dir is not None else (env.get("RUNTIME_TURSO_DIR", "").strip() or DEFAULT_WORKER_DIR)
    path = os.path.join(base_dir, f"{namespace}.db")
    url = (
        (server_url if server_url is not None else env.get("RUNTIME_TURSO_SERVER_URL", ""))
        .strip()
        .rstrip("/")
    )
    settings = {"TURSO_LOCAL_PATH": path, "TURSO_SYNC_INTERVAL": "0"}
    if not url:
        service = TursoService(resolve_config(env={**settings, "TURSO_MODE": "local"}))
        return TursoClient(service, namespace=namespace, path=path, mode="local", url=None)
    auth = (token if token is not None else env.get("RUNTIME_TURSO_SERVER_TOKEN", "")).strip()
    remote = f"{url}/{namespace}"
    service = TursoService(
        resolve_config(env={**settings, "TURSO_SYNC_URL": remote, "TURSO_SYNC_AUTH_TOKEN": auth})
    )
    return TursoClient(service, namespace=namespace, path=path, mode="sync", url=remote)
