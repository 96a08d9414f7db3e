"""Backends: where a namespace's statements run — a local MVCC file or a sync replica.

* :class:`LocalBackend` — one file per process (tursodb locks it) shared by every namespace;
  a pool of connections so that every transaction gets a connection of its own and concurrent
  transactions never interleave on one connection (an upstream defect).
* :class:`ReplicaBackend` — one embedded replica (one connection, since CDC forbids MVCC).
  Transactions are serialised by an asyncio lock, each commit is pushed, and a background task
  pushes whatever is still pending (autocommit writes, failed pushes) and pulls on an interval.

Both run every engine call on their own :class:`~._engine.Engine` (a dedicated thread; a local
file may run inline on the event loop instead). Called by ``_service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from ._config import Executor
from ._database import BlockingDatabase, Database, TransactionType
from ._engine import Engine, EngineThread, engine_errors, make_engine, open_local, open_replica
from ._errors import TursoClosedError, TursoError, TursoUnavailableError

log = logging.getLogger("buntime.turso")
T = TypeVar("T")

_BEGIN: dict[str, str] = {
    "concurrent": "BEGIN CONCURRENT",
    "deferred": "BEGIN DEFERRED",
    "immediate": "BEGIN IMMEDIATE",
    "exclusive": "BEGIN EXCLUSIVE",
}

PullListener = Callable[[str], Awaitable[None]]
_NO_GATE: AbstractAsyncContextManager[None] = contextlib.nullcontext()


def ensure_parent_dir(path: str) -> None:
    """Create the directory holding ``path`` (no-op for in-memory or URL-style paths)."""
    if path == ":memory:" or path.startswith("file:") or "://" in path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


class _TxState:
    """The connection a transaction runs on, checked out lazily with its ``BEGIN``.

    ``BEGIN`` travels with the first statement, so a one-statement transaction costs two
    thread hops (statement, commit) instead of three.
    """

    __slots__ = ("begin", "conn")

    def __init__(self, begin: str) -> None:
        self.begin: str | None = begin
        self.conn: Any = None


@dataclass
class SyncStatus:
    """What a replica knows about its last push and pull."""

    last_push: float | None = None
    last_pull: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    revision: str | None = None
    pending_operations: int = 0


class Backend:
    """Shared transaction machinery; subclasses say how connections are checked out."""

    is_replica = False

    def __init__(self, path: str, engine: Engine, mode: str) -> None:
        self.path = path
        self.mode = mode
        self._engine = engine
        self._closed = False

    # -- connection policy (engine thread) -------------------------------------------------
    def _checkout(self) -> Any:
        raise NotImplementedError

    def _checkin(self, conn: Any) -> None:
        raise NotImplementedError

    def _gate(self) -> AbstractAsyncContextManager[None]:
        """Held for a whole transaction; replicas serialise, local files do not."""
        return _NO_GATE

    async def _after_commit(self) -> None:
        """Hook run after a successful COMMIT, still inside the gate."""

    # -- public ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TursoClosedError(f"the Turso database {self.path} is closed")

    def database(self, namespace: str) -> Database:
        """An autocommit handle: each statement takes a connection, runs, and gives it back."""
        return Database(
            self._autocommit, namespace=namespace, mode=self.mode, local_path=self.path, in_transaction=False
        )

    async def _autocommit(self, fn: Callable[[Any], T]) -> T:
        self._check_open()
        async with self._gate():
            return await self._engine.call(self._run_pooled, fn)

    def _run_pooled(self, fn: Callable[[Any], T]) -> T:
        conn = self._checkout()
        try:
            result = fn(conn)
        finally:
            dangling = conn.in_transaction
            if dangling:  # a BEGIN without COMMIT must not leak into the next caller
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            self._checkin(conn)
        if dangling:
            raise TursoError(
                "a transaction was left open on an autocommit handle and was rolled back: "
                "use service.transaction() for multi-statement transactions",
                code="TURSO_DANGLING_TRANSACTION",
            )
        return result

    async def transaction(
        self, type_: TransactionType, namespace: str, fn: Callable[[Database], Awaitable[T]]
    ) -> T:
        """``BEGIN`` … ``await fn(db)`` … ``COMMIT``; ``ROLLBACK`` when ``fn`` raises."""
        self._check_open()
        state = _TxState(_BEGIN[type_])

        async def runner(statement: Callable[[Any], Any]) -> Any:
            self._check_open()
            return await self._engine.call(self._in_tx, state, statement)

        db = Database(runner, namespace=namespace, mode=self.mode, local_path=self.path, in_transaction=True)
        async with self._gate():
            try:
                result = await fn(db)
            except BaseException:
                # Always queued: a statement whose await was cancelled may still be on its way to
                # the engine thread, and this ROLLBACK must run after it (jobs run in order).
                await asyncio.shield(self._engine.call(self._finish, state, "ROLLBACK"))
                raise
            if state.conn is not None:
                await self._engine.call(self._finish, state, "COMMIT")
                await self._after_commit()
        return result

    async def run_transaction(
        self, type_: TransactionType, namespace: str, fn: Callable[[BlockingDatabase], T]
    ) -> T:
        """The whole transaction — BEGIN, ``fn``, COMMIT — in one hop onto the engine thread."""
        self._check_open()
        async with self._gate():
            result: T = await self._engine.call(self._whole_transaction, _BEGIN[type_], namespace, fn)
            await self._after_commit()
        return result

    def _whole_transaction(self, begin: str, namespace: str, fn: Callable[[BlockingDatabase], T]) -> T:
        state = _TxState(begin)

        def body(conn: Any) -> T:
            return fn(BlockingDatabase(conn, namespace=namespace, mode=self.mode, local_path=self.path))

        try:
            result = self._in_tx(state, body)
        except BaseException:
            if state.conn is not None:
                self._finish(state, "ROLLBACK")
            raise
        self._finish(state, "COMMIT")
        return result

    def _in_tx(self, state: _TxState, fn: Callable[[Any], T]) -> T:
        if state.conn is None:
            conn = self._checkout()
            try:
                with engine_errors(state.begin):
                    conn.execute(state.begin)
            except BaseException:
                self._checkin(conn)
                raise
            state.conn, state.begin = conn, None
        return fn(state.conn)

    def _finish(self, state: _TxState, verb: str) -> None:
        conn, state.conn = state.conn, None
        if conn is None:  # nothing ever ran: no BEGIN was issued
            return
        try:
            if verb == "COMMIT":
                with engine_errors("COMMIT"):
                    conn.execute("COMMIT")
            elif conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except Exception as exc:  # the original error matters more than this one
                    log.warning("Turso rollback failed: %s", exc)
        finally:
            if conn.in_transaction:  # a failed COMMIT leaves the transaction open
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            self._checkin(conn)

    async def probe(self) -> None:
        """``SELECT 1`` through the normal path; raises when the database is unusable."""
        await self.database("runtime").get("SELECT 1 AS ok")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._engine.call(self._close_all)
        await self._engine.stop()

    def _close_all(self) -> None:
        raise NotImplementedError


class LocalBackend(Backend):
    """A local MVCC file, shared by every namespace of the process."""

    def __init__(self, path: str, engine: Engine) -> None:
        super().__init__(path, engine, "local")
        self._idle: list[Any] = []
        self._all: list[Any] = []

    @classmethod
    async def open(cls, path: str, executor: Executor = "thread") -> LocalBackend:
        ensure_parent_dir(path)
        backend = cls(path, make_engine(executor, os.path.basename(path)))
        try:
            await backend._engine.call(backend._checkin, await backend._engine.call(backend._checkout))
        except TursoError as exc:
            await backend._engine.stop()
            raise TursoUnavailableError(f"cannot open Turso database {path}: {exc}") from exc
        log.info("Turso database opened (mode: local, MVCC, executor: %s): %s", executor, path)
        return backend

    def _checkout(self) -> Any:
        if self._idle:
            return self._idle.pop()
        conn = open_local(self.path)
        self._all.append(conn)
        return conn

    def _checkin(self, conn: Any) -> None:
        self._idle.append(conn)

    def _close_all(self) -> None:
        for conn in self._all:
            with contextlib.suppress(Exception):
                conn.close()
        self._idle.clear()
        self._all.clear()


_holding: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "turso_holding", default=frozenset()
)


class ReplicaBackend(Backend):
    """An embedded replica synced with ``url``; see the module docstring for the sync policy."""

    is_replica = True

    def __init__(
        self,
        path: str,
        url: str,
        token: str | None,
        engine: Engine,
        conn: Any,
        *,
        listeners: list[PullListener],
    ) -> None:
        super().__init__(path, engine, "sync")
        self.url = url
        self._token = token
        self._conn = conn
        self._lock = asyncio.Lock()
        self.status = SyncStatus()
        self._listeners = listeners  # the service's list: listeners come and go in one place
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, path: str, url: str, token: str | None, listeners: list[PullListener]
    ) -> ReplicaBackend:
        """Open (bootstrapping if new); an unreachable server is fine when a replica file exists."""
        ensure_parent_dir(path)
        engine = EngineThread(os.path.basename(path))
        try:
            conn = await engine.call(open_replica, path, url, token)
        except TursoError as exc:
            await engine.stop()
            raise TursoUnavailableError(f"cannot open Turso replica {path} against {url}: {exc}") from exc
        backend = cls(path, url, token, engine, conn, listeners=listeners)
        log.info("Turso replica opened: %s <-> %s", path, url)
        return backend

    def _checkout(self) -> Any:
        return self._conn

    def _checkin(self, conn: Any) -> None:
        return None

    @contextlib.asynccontextmanager
    async def _gate(self) -> AsyncIterator[None]:
        held = _holding.get()
        if id(self) in held:
            raise TursoError(
                "this replica is already in a transaction in this task: use the Database passed to the "
                "transaction callback instead of service.connect() inside it",
                code="TURSO_NESTED_TRANSACTION",
            )
        async with self._lock:
            token = _holding.set(held | {id(self)})
            try:
                yield
            finally:
                _holding.reset(token)

    async def _after_commit(self) -> None:
        await self._engine.call(self._push_best_effort)

    # -- sync (engine thread) -------------------------------------------------------------
    def _push_best_effort(self) -> None:
        try:
            with engine_errors("push"):
                self._conn.push()
            self.status.last_push = time.time()
            self._clear_error()
        except TursoError as exc:
            self._record_error("push", exc)

    def _sync_once(self) -> bool:
        """Push pending local changes, then pull; return whether the pull brought changes."""
        with engine_errors("stats"):
            pending = self._conn.stats().cdc_operations
        if pending:
            with engine_errors("push"):
                self._conn.push()
            self.status.last_push = time.time()
        with engine_errors("pull"):
            changed = bool(self._conn.pull())
        self.status.last_pull = time.time()
        self._clear_error()
        return changed

    def _record_error(self, what: str, exc: Exception) -> None:
        first = self.status.last_error is None
        self.status.last_error = f"{what} failed: {exc}"
        self.status.last_error_at = time.time()
        if first:  # one warning per outage, not one per interval
            log.warning(
                "Turso %s failed for %s (changes stay local and are retried): %s", what, self.url, exc
            )

    def _clear_error(self) -> None:
        if self.status.last_error is not None:
            log.info("Turso sync with %s recovered", self.url)
        self.status.last_error = None

    def _read_stats(self) -> SyncStatus:
        with engine_errors("stats"):
            stats = self._conn.stats()
        self.status.revision = stats.revision
        self.status.pending_operations = int(stats.cdc_operations)
        return self.status

    # -- public ---------------------------------------------------------------------------
    async def sync(self) -> bool:
        """One push-then-pull round; errors are recorded on ``status`` and re-raised."""
        self._check_open()
        async with self._gate():
            try:
                changed = await self._engine.call(self._sync_once)
            except TursoError as exc:
                self._record_error("sync", exc)
                raise
        if changed:
            for listener in list(self._listeners):
                try:
                    await listener(self.path)
                except Exception:
                    log.exception("Turso pull listener failed")
        return changed

    async def stats(self) -> SyncStatus:
        self._check_open()
        return await self._engine.call(self._read_stats)

    def start_background_sync(self, interval: float) -> None:
        """Push pending changes and pull every ``interval`` seconds (``0`` disables)."""
        if interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(interval), name=f"turso-sync:{self.path}")

    async def _loop(self, interval: float) -> None:
        while not self._closed:
            with contextlib.suppress(TursoError):
                await self.sync()
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._gate():
            await self._engine.call(self._push_best_effort)  # the final push
        await super().close()

    def _close_all(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
