"""``open_turso()``: how worker apps get a database of their own namespace.

Workers have no plugin context. The runtime forwards its turso-server connection to them as
``RUNTIME_TURSO_SERVER_URL`` / ``RUNTIME_TURSO_SERVER_TOKEN`` / ``RUNTIME_TURSO_DIR`` (the
operator's webhook injects the same variables into opted-in pods, the token as
``RUNTIME_TURSO_SERVER_TOKEN_FILE``: a Secret volume's file, read again whenever it changes, so a
re-minted token reaches a running worker without a restart; a token and its ``_FILE`` together
are refused, ``TURSO_TOKEN_CONFLICT``). With a server URL the worker opens an embedded replica
``<dir>/<ns>.db`` synced with ``<url>/<ns>``; without one it opens a standalone local MVCC file.

The client is a blocking face on the same :class:`~buntime.turso.TursoService` the runtime uses
(run on an event loop of its own, in a background thread), so a worker gets the same contract
(docs/consistency.md): in sync mode every write runs under turso-server's write lease and is on
the server when the call returns; ``transaction(fn)`` runs a read-modify-write serializably.

**One opener per process.** tursodb locks a database file to the process that opened it, so a
second process opening the same ``<dir>/<ns>.db`` gets :class:`TursoUnavailableError` saying so
(give each worker process a directory of its own, ``dir=`` or ``RUNTIME_TURSO_DIR``). A client
belongs to the process that opened it: after ``fork()`` (gunicorn ``--preload``, multiprocessing's
``fork`` start method, a prefork pool) the child's copy raises :class:`TursoClosedError` at once
(its event-loop thread did not survive the fork); call ``open_turso()`` in the child instead.
Every call waits at most ``timeout`` seconds, then raises :class:`TursoUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

from .turso import (
    BlockingDatabase,
    TursoClosedError,
    TursoConfigError,
    TursoError,
    TursoService,
    TursoUnavailableError,
    normalize_url,
    resolve_config,
    validate_namespace,
)

DEFAULT_WORKER_DIR = "./.cache/turso"
#: Seconds one call of a :class:`TursoClient` may take before it raises (``open_turso(timeout=)``):
#: above a sync request's own 60 s and the default 10 s lease wait, so only a stall reaches it.
DEFAULT_CALL_TIMEOUT = 120.0
#: What tursodb says when another process holds the database file.
_LOCKED = "locked by another process"
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
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._service = service
        self.namespace = namespace
        self.path = path
        self.mode = mode
        self.url = url
        self.timeout = timeout
        self._pid = os.getpid()  # the loop thread below exists in this process only
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"turso-worker:{namespace}", daemon=True
        )
        self._thread.start()
        try:
            self._call(service.connect(namespace))  # open now: fail here, not at the first query
        except TursoError as exc:
            self._abandon()
            if _LOCKED not in str(exc):
                raise
            raise TursoUnavailableError(
                f"cannot open {path}: another process has it open (tursodb locks a database file "
                "to one process); open each namespace from one process, or give each worker "
                "process its own directory (dir= or RUNTIME_TURSO_DIR)"
            ) from exc
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """:meth:`close` after a failed open, keeping the open's error (a stalled close says nothing new)."""
        with contextlib.suppress(TursoError):
            self.close()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise TursoClosedError(
                f"this Turso client for {self.namespace!r} was opened in process {self._pid}, not in "
                f"this one ({os.getpid()}): a client does not survive fork(); call open_turso() in "
                "the child process, after the fork"
            )

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            self._check_process()
            if self._loop.is_closed():
                raise TursoClosedError(f"this Turso client for {self.namespace!r} is closed")
        except TursoClosedError:
            coro.close()  # never scheduled: no "coroutine was never awaited" warning
            raise
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise TursoUnavailableError(
                f"Turso call on {self.namespace!r} did not finish within {self.timeout:g}s "
                "(turso-server stalled?); it was cancelled, and a write may or may not have happened"
            ) from None

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
        """Close the database (the final push in sync mode); each step is bounded by ``timeout``.

        In a forked child it only forgets the client: the engine belongs to the parent.
        """
        if os.getpid() != self._pid or self._loop.is_closed():
            return
        try:
            if self._thread.is_alive():
                try:
                    self._call(self._service.aclose())
                finally:
                    # What a stalled close left (an open still closing its replica): cancelled, so
                    # no task is destroyed pending; the engine thread ends once its call returns.
                    with contextlib.suppress(Exception):
                        asyncio.run_coroutine_threadsafe(_cancel_remaining(), self._loop).result(self.timeout)
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    self._thread.join(timeout=self.timeout)
        finally:  # a close that timed out closes the loop too
            if not self._loop.is_running():
                self._loop.close()


async def _cancel_remaining() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def open_turso(
    namespace: str,
    *,
    server_url: str | None = None,
    token: str | None = None,
    dir: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_CALL_TIMEOUT,
) -> TursoClient:
    """Open ``namespace`` for a worker; explicit arguments win over the ``RUNTIME_TURSO_*`` env.

    ``timeout`` bounds every call of the client, the open included (seconds, default 120).
    Open in the process that uses the client (after any fork), one process per database file.
    """
    env = os.environ if env is None else env
    namespace = validate_namespace(namespace)
    base_dir = dir if dir is not None else (env.get("RUNTIME_TURSO_DIR", "").strip() or DEFAULT_WORKER_DIR)
    path = os.path.join(base_dir, f"{namespace}.db")
    url = _server_url(server_url, env)
    settings = {"TURSO_LOCAL_PATH": path}
    if not url:
        service = TursoService(resolve_config(env={**settings, "TURSO_MODE": "local"}))
        return TursoClient(service, namespace=namespace, path=path, mode="local", url=None, timeout=timeout)
    remote = f"{url}/{namespace}"
    service = TursoService(
        resolve_config(
            env={**settings, "TURSO_SYNC_URL": remote, "TURSO_SYNC_INTERVAL": "0", **_token_env(token, env)}
        )
    )
    return TursoClient(service, namespace=namespace, path=path, mode="sync", url=remote, timeout=timeout)


def _server_url(server_url: str | None, env: Mapping[str, str]) -> str:
    """The server URL normalised (``""`` for local mode); a bad one names where it came from:
    ``RUNTIME_TURSO_SERVER_URL`` or ``open_turso(server_url=)`` (code
    ``INVALID_RUNTIME_TURSO_SERVER_URL`` either way), not the ``TURSO_SYNC_URL`` derived from it."""
    raw = (server_url if server_url is not None else env.get("RUNTIME_TURSO_SERVER_URL", "")).strip()
    if not raw:
        return ""
    label = None if server_url is None else "open_turso(server_url=)"
    return normalize_url(raw, "RUNTIME_TURSO_SERVER_URL", label=label)


def _token_env(token: str | None, env: Mapping[str, str]) -> dict[str, str]:
    """The sync token settings for ``resolve_config``: an explicit ``token`` wins; else
    ``RUNTIME_TURSO_SERVER_TOKEN`` or the file ``RUNTIME_TURSO_SERVER_TOKEN_FILE`` names (read
    through the service's ``TokenSource``, ``turso._tokens``: again whenever the file changes).
    Both set is refused like ``TURSO_SERVER_TOKEN`` beside its ``_FILE`` (``TURSO_TOKEN_CONFLICT``)."""
    if token is not None:
        return {"TURSO_SYNC_AUTH_TOKEN": token.strip()}
    value = env.get("RUNTIME_TURSO_SERVER_TOKEN", "").strip()
    path = env.get("RUNTIME_TURSO_SERVER_TOKEN_FILE", "").strip()
    if value and path:
        raise TursoConfigError(
            "RUNTIME_TURSO_SERVER_TOKEN and RUNTIME_TURSO_SERVER_TOKEN_FILE are both set: give the token "
            "or the file that holds it, not both (unset one of them)",
            code="TURSO_TOKEN_CONFLICT",
        )
    return {"TURSO_SYNC_AUTH_TOKEN_FILE": path} if path else {"TURSO_SYNC_AUTH_TOKEN": value}
