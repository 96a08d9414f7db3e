"""Backends: where a namespace's statements run — a local MVCC file or a sync replica.

* :class:`LocalBackend` — one file per process (tursodb locks it) shared by every namespace;
  a pool of connections so that every transaction gets a connection of its own and concurrent
  transactions never interleave on one connection (an upstream defect).
* :class:`ReplicaBackend` — one embedded replica (one connection, since CDC forbids MVCC).
  Serializable writes run under turso-server's write lease and return once their push landed
  (docs/consistency.md); a background task pulls on an interval (and, in offline mode, pushes
  whatever is still pending first).

Both run every engine call on their own :class:`~._engine.Engine` (a dedicated thread; a local
file may run inline on the event loop instead). Called by ``_service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ._config import Executor, WritePolicy
from ._database import BlockingDatabase, Database, TransactionType
from ._engine import (
    OFFLINE_MARK,
    Engine,
    EngineThread,
    boot_id,
    engine_errors,
    finish_reset,
    make_engine,
    open_local,
    open_replica,
    query_prepared,
    read_boot_mark,
    remove_replica_files,
    reset_interrupted,
    run_prepared,
    write_boot_mark,
)
from ._errors import (
    TursoBusyError,
    TursoClosedError,
    TursoCommitUnknownError,
    TursoError,
    TursoUnavailableError,
)
from ._leases import Lease, LeaseClient, LeaseLost, new_holder
from ._retry import backoff_delay, with_retries
from ._tokens import TokenSource
from ._transport import deadline as sync_deadline
from ._transport import forget_cursors

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


def _make_parent_dir(path: str) -> None:
    """:func:`ensure_parent_dir` for an open: a directory that cannot be made is unavailable."""
    try:
        ensure_parent_dir(path)
    except OSError as exc:  # a file where a directory should be, permissions, a full disk
        raise TursoUnavailableError(
            f"cannot open Turso database {path}: cannot create its directory: {exc}"
        ) from exc


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

    async def _before_transaction(self) -> None:
        """Hook run inside the gate before ``BEGIN`` (replicas take the write lease here)."""

    async def _after_commit(self) -> Awaitable[None] | None:
        """Hook run after the transaction, still inside the gate.

        It may return an awaitable that the caller awaits *after* leaving the gate, before the
        transaction counts as committed (a replica's push, shared by every commit meanwhile).
        """
        return None

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
            return await self._on_conn(self._in_tx, state, statement)

        db = Database(runner, namespace=namespace, mode=self.mode, local_path=self.path, in_transaction=True)
        async with self._gate():
            await self._before_transaction()
            try:
                result = await fn(db)
            except BaseException:
                # Never skipped: a statement whose await was cancelled may still be on its way to
                # the engine thread, and this ROLLBACK must run after it (_on_conn keeps the order).
                await asyncio.shield(self._on_conn(self._finish, state, "ROLLBACK"))
                raise
            if state.conn is not None:
                await self._commit(state)
            durable = await self._after_commit()
        if durable is not None:
            await durable
        return result

    async def run_transaction(
        self, type_: TransactionType, namespace: str, fn: Callable[[BlockingDatabase], T]
    ) -> T:
        """The whole transaction — BEGIN, ``fn``, COMMIT — in one hop onto the engine thread."""
        self._check_open()
        async with self._gate():
            await self._before_transaction()
            result: T = await self._engine.call(self._whole_transaction, _BEGIN[type_], namespace, fn)
            durable = await self._after_commit()
        if durable is not None:
            await durable
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
            begin = state.begin
            assert begin is not None  # set until the first statement ran
            try:
                with engine_errors(begin):
                    self._open_tx(conn, begin)
            except BaseException:
                self._checkin(conn)
                raise
            state.conn, state.begin = conn, None
        return fn(state.conn)

    async def _commit(self, state: _TxState) -> None:
        """COMMIT a transaction of :meth:`transaction` (replicas: see ReplicaBackend)."""
        await self._engine.call(self._finish, state, "COMMIT")

    async def _on_conn(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a transaction's call on its connection (replicas may run it here: ReplicaBackend)."""
        return await self._engine.call(fn, *args)

    def _open_tx(self, conn: Any, begin: str) -> None:
        conn.execute(begin)

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

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._engine.call(self._close_all)
        await self._engine.stop()

    async def _discard(self) -> None:
        """Undo a failed or cancelled open: close what it opened and stop the engine thread.

        The close is queued behind the engine call a cancelled open may have left running (it
        finishes, then its connection is closed), so no connection and no thread outlive it.
        """
        self._closed = True
        with contextlib.suppress(TursoClosedError):
            self._engine.submit(self._close_all)
        await self._engine.stop()

    def _close_all(self) -> None:
        raise NotImplementedError


#: How long a local open retries while another opener in this process creates the same new file.
OPEN_BUSY_TIMEOUT = 5.0
_INITIALISING = ("database is locked", "busy", "not initialized", "bootstrap missing")


def _initialising(exc: TursoError) -> bool:
    """tursodb's words while another connection of this process creates the file (never the lock
    of another process, which waiting does not lift)."""
    message = str(exc).lower()
    return "another process" not in message and any(word in message for word in _INITIALISING)


class LocalBackend(Backend):
    """A local MVCC file, shared by every namespace of the process."""

    def __init__(self, path: str, engine: Engine) -> None:
        super().__init__(path, engine, "local")
        self._idle: list[Any] = []
        self._all: list[Any] = []

    @classmethod
    async def open(cls, path: str, executor: Executor = "thread") -> LocalBackend:
        _make_parent_dir(path)
        backend = cls(path, make_engine(executor, os.path.basename(path)))
        try:
            await backend._first_connection()
        except BaseException as exc:  # cancelled too: nothing may stay open
            await backend._discard()
            if isinstance(exc, TursoError):
                raise TursoUnavailableError(f"cannot open Turso database {path}: {exc}") from exc
            raise
        log.info("Turso database opened (mode: local, MVCC, executor: %s): %s", executor, path)
        return backend

    async def _first_connection(self) -> None:
        """Open the first connection; while another opener in this process is creating the file
        (a new file's header, its switch to MVCC) tursodb says busy: wait and try again."""
        deadline = time.monotonic() + OPEN_BUSY_TIMEOUT
        attempt = 0
        while True:
            try:
                await self._engine.call(self._checkin, await self._engine.call(self._checkout))
                return
            except TursoError as exc:
                if not _initialising(exc) or time.monotonic() >= deadline:
                    raise
                attempt += 1
                log.debug(
                    "Turso database %s is being created by another opener, retrying: %s", self.path, exc
                )
                await asyncio.sleep(backoff_delay(attempt, LEASE_RETRY_DELAY))

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

_CHANGE_PROBE = "SELECT total_changes(), (SELECT schema_version FROM pragma_schema_version())"
_TX_SAVEPOINT = "buntime_tx"
_PROBE_SAVEPOINT = "buntime_probe"
LEASE_LINGER = 0.002  # keep an idle lease this long: the next commit of a busy pod skips a round trip
LEASE_MAX_HOLD = 0.1  # then give it back and queue again, so other pods get their turn
LEASE_RETRY_DELAY = 0.02  # base of the backoff between lease and push attempts (_retry's curve)
# A replica call on the event loop that took longer than INLINE_LIMIT seconds (wall clock: a big
# scan, a cold disk) keeps that replica's calls on its engine thread for INLINE_PAUSE seconds.
# Not lower: at 2 ms, the scheduler's own pauses on a busy 2-core machine tripped it.
INLINE_LIMIT = 0.01
INLINE_PAUSE = 5.0
#: Health asks the server itself (:meth:`ReplicaBackend.reach`) when no pull, push, lease or earlier
#: probe told this replica whether it is reachable for this long (seconds): a pod without
#: background sync (``TURSO_SYNC_INTERVAL=0``, workers) or with a long interval.
REACH_AGE = 5.0
#: How long that probe waits for an answer: well inside health's own bound (``HEALTH_TIMEOUT``).
REACH_TIMEOUT = 0.5
PROBE = "probe"  # what health's own look at the server is called in a recorded error


def _total_changes(conn: Any) -> int:
    return int(_one_row(conn, "SELECT total_changes()")[0])


def _one_row(conn: Any, sql: str) -> tuple[Any, ...]:
    """The first row of the fixed query ``sql``, on its prepared statement (_engine)."""
    prepared = query_prepared(conn, sql, ())
    if prepared is None:  # pragma: no cover - a fixed single SELECT is always prepared
        return tuple(conn.execute(sql).fetchone())
    return prepared[1][0]


def _exec(conn: Any, sql: str) -> None:
    """The savepoint statement ``sql`` (one of every replica transaction), on its prepared statement."""
    if run_prepared(conn, sql) is None:  # pragma: no cover - savepoints are always prepared
        conn.execute(sql)


def _behind_own_pushes(exc: Exception) -> bool:
    """pyturso's word for a replica older than what it pushed (restored from an old copy, or an
    OS crash took its tail): only a fresh copy of the server's database can go on from there."""
    return "remote_pull_gen > local_pull_gen" in str(exc)


def _refused(exc: Exception) -> bool:
    """Whether a failed push certainly applied nothing: turso-server refused the lease (409), or
    the connection was refused (nothing was sent). Anything else may have landed."""
    message = str(exc)
    return "status=409" in message or "Connection refused" in message


_open_locks: dict[str, threading.Lock] = {}
_open_locks_guard = threading.Lock()


@contextlib.contextmanager
def _opening(path: str) -> Iterator[None]:
    """Held by the engine thread that opens the replica file ``path``: one opener of a file at a
    time in this process (engine threads of several services, e.g. two ``open_turso()`` clients)."""
    key = os.path.realpath(path)
    with _open_locks_guard:
        lock = _open_locks.setdefault(key, threading.Lock())
    with lock:
        yield


class _Dirty(Exception):
    """The replica holds local changes that no lease covers (left by a crash or a failed push)."""


class _Speculation(Exception):
    """An autocommit statement changed something: it was rolled back and runs again as a write."""


@dataclass
class _Batch:
    """Commits waiting for one push; ``done`` settles when the push lands or fails."""

    done: asyncio.Future[None]


class ReplicaBackend(Backend):
    """An embedded replica synced with ``url``.

    ``serializable`` (the default) writes only under the namespace's write lease on turso-server:
    take the lease, pull unless the last write was ours, commit, push through the lease's fenced
    URL, and only then return. Commits made while a push is in flight share the next push (group
    commit). ``offline`` is the opt-in of docs/consistency.md: commits are acknowledged locally
    and pushed later, and the sync engine's merge (last push wins per row) decides what survives.
    """

    is_replica = True

    def __init__(
        self,
        path: str,
        url: str,
        token: TokenSource,
        engine: Engine,
        *,
        listeners: list[PullListener],
        policy: WritePolicy,
    ) -> None:
        super().__init__(path, engine, "sync")
        self.url = url
        self._token = token
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.status = SyncStatus()
        self._listeners = listeners  # the service's list: listeners come and go in one place
        self._task: asyncio.Task[None] | None = None
        self.policy = policy
        self._leases = LeaseClient(url, token, new_holder())
        self._lease: Lease | None = None
        self._push_url: str | None = None  # set on the engine thread around a fenced push
        self._batch: _Batch | None = None  # commits not yet pushed
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = False  # a flusher will still look at _batch (False once it hands over)
        self._release: asyncio.TimerHandle | None = None
        self._idle_since = 0.0  # monotonic: when a transaction last left the gate
        self._keepalive: asyncio.Task[None] | None = None
        self._yielding: asyncio.Future[None] | None = None  # set while handing the lease over
        # Connection state, touched only where the connection is used (see _on_conn):
        self._group_open = False  # the outer BEGIN of the commits not yet pushed
        self._group_changes = 0  # total_changes() when the group opened
        self._group_failed: Exception | None = None  # a RELEASE failed, the group was undone
        self._group_members = 0  # transactions released into the open group (they await its push)
        self._inline_paused_until = 0.0  # monotonic: calls stay on the engine thread until then
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty = False
        # A push's outcome is unknown and the reset after it failed: reads wait for a reset.
        self._outcome_unknown = False
        self._offline_pending = False  # commits offline mode acknowledged, pushed under the next lease
        # A push went out from a copy not known to hold every earlier write (offline mode's
        # commits): the server then counts us as its last writer, and a later grant says "fresh"
        # whatever we missed. Set until a pull or a reset brings the copy up to date.
        self._must_pull = False
        self._release_queued = False  # the last transaction's RELEASE went to the engine thread
        self._boot = ""  # serializable replicas that know the boot commit at synchronous=NORMAL
        self._heard_at = 0.0  # monotonic: when an exchange last told whether the server answers
        # The recorded error came from health's own probe, which only an answer to it clears; and
        # whether the server answered a probe since the last failed exchange.
        self._probe_error = False
        self._answered = True
        self._reached = False  # health asked the server once (a pull says nothing of its leases)

    @classmethod
    async def open(
        cls,
        path: str,
        url: str,
        token: TokenSource,
        listeners: list[PullListener],
        policy: WritePolicy | None = None,
    ) -> ReplicaBackend:
        """Open (bootstrapping if new); an unreachable server is fine when a replica file exists."""
        _make_parent_dir(path)
        engine = EngineThread(os.path.basename(path))
        backend = cls(path, url, token, engine, listeners=listeners, policy=policy or WritePolicy())
        rebooted = offline = False
        if backend.serializable:
            # A serializable replica's commits count only once pushed, so it skips the local
            # fsync (synchronous=NORMAL): a process crash loses nothing, an OS crash may take the
            # tail of the file. A replica last written in another boot is therefore reset before
            # its first write: reusing the change ids of a lost tail would make the server skip
            # new changes. Where the boot is unknown, commits stay at synchronous=FULL.
            backend._boot = boot_id()
            mark = read_boot_mark(path)
            # A file last opened in offline mode was written at synchronous=FULL, and its unpushed
            # commits were acknowledged: they are pushed (under the lease), not dropped.
            offline = mark == OFFLINE_MARK
            rebooted = bool(backend._boot) and mark is not None and not offline and mark != backend._boot
        try:  # cancelled too: a failed open leaves no connection and no thread behind
            try:
                await engine.call(backend._open_files, rebooted)
            except TursoError as exc:
                raise TursoUnavailableError(f"cannot open Turso replica {path} against {url}: {exc}") from exc
            if backend.serializable:
                # Changes left by a process that died between its commit and its push were never
                # acknowledged, and pulling would replay them over other pods' rows: drop them.
                pending = await engine.call(backend._pending) > 0
                backend._offline_pending = offline and pending
                backend._dirty = rebooted or (pending and not offline)
                if rebooted:
                    log.warning(
                        "Turso replica %s was last written in another boot: reset before its first write",
                        path,
                    )
                elif backend._offline_pending:
                    log.warning(
                        "Turso replica %s holds commits acknowledged in offline mode: they are pushed "
                        "under the write lease (last push wins) before its first serializable write",
                        path,
                    )
                elif backend._boot or offline:
                    await engine.call(write_boot_mark, path, backend._boot)
            else:
                await backend._leave_serializable(read_boot_mark(path))
                # Before any commit: its commits are acknowledged, a serializable open must keep them.
                await engine.call(write_boot_mark, path, OFFLINE_MARK)
        except BaseException:
            await backend._discard()
            raise
        log.info("Turso replica opened (%s writes): %s <-> %s", backend.policy.mode, path, url)
        return backend

    def _open_files(self, rebooted: bool) -> None:
        """Open (or bootstrap) the replica's files, on the engine thread, while no other opener of
        this process touches the same file: a second replica of one new file would find it half
        bootstrapped (tursodb: "File is not a database", or a file gone between two looks) and
        fail. The second opener waits here and then opens the complete file."""
        path = self.path
        with _opening(path):
            if removed := reset_interrupted(path):
                # A reset cut short (the process died between deleting the files and the new
                # bootstrap): nothing in them was acknowledged, so finish it.
                log.warning("Turso replica %s: finishing a reset that was cut short", path)
                remove_replica_files(path)
            try:
                self._connect()
            except TursoError:
                if not rebooted:
                    raise
                log.warning("Turso replica %s from another boot does not open: bootstrapping it again", path)
                remove_replica_files(path)
                removed = True
                self._connect()
            if removed:
                finish_reset(path)

    async def _leave_serializable(self, mark: str | None) -> None:
        """An offline open of a file last opened for serializable writes (``mark`` a boot id, or
        ``""``): its unpushed changes were never acknowledged, and one written in another boot may
        have lost its tail (``synchronous=NORMAL``, the metadata written in place). Offline mode
        would push the former over other pods' rows and could reuse the latter's change ids, so
        either is reset first; with the server unreachable, the open fails until it can."""
        if mark is None or mark == OFFLINE_MARK:
            return
        boot = boot_id()
        rebooted = bool(boot) and bool(mark) and mark != boot
        if not rebooted and await self._engine.call(self._pending) == 0:
            return
        why = "last written in another boot" if rebooted else "holding changes never acknowledged"
        try:
            await self._reset(f"{why}, before offline writes")
        except TursoUnavailableError as exc:  # open() closes the replica
            raise TursoUnavailableError(
                f"cannot open {self.path} for offline writes: it is {why}, and resetting it needs "
                f"the server ({exc})"
            ) from exc

    @property
    def reads_wait_for_reset(self) -> bool:
        """A commit's outcome is unknown and the reset after it has not run: every read resets
        first (and fails while the server cannot be reached), so this replica serves nothing."""
        return self._outcome_unknown

    @property
    def serializable(self) -> bool:
        return self.policy.mode == "serializable"

    def _connect(self) -> None:
        # A replica that records the boot is reset after an OS crash: its metadata may be
        # written in place (one pwrite, no temporary file and rename per push).
        self._conn = open_replica(
            self.path, self.url, self._token, self._remote, metadata_in_place=bool(self._boot)
        )
        if self._boot:
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def _remote(self) -> str:
        return self._push_url or self.url

    def _checkout(self) -> Any:
        if self._conn is None:
            raise TursoUnavailableError(f"the Turso replica {self.path} is being reset and cannot open")
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
        while True:
            while self._yielding is not None:  # our turn with the lease is over: wait for the hand-over
                await asyncio.shield(self._yielding)
            await self._lock.acquire()
            if self._yielding is None:
                break
            # Queued on the lock before the hand-over began: still behind it (else this write
            # would take a new lease and start a flusher while the old one hands over).
            self._lock.release()
        try:
            token = _holding.set(held | {id(self)})
            try:
                yield
            finally:
                _holding.reset(token)
                self._schedule_release()
        finally:
            self._lock.release()

    # -- serializable writes: lease, fresh state, group push ------------------------------------
    async def _before_transaction(self) -> None:
        if not self.serializable:
            return
        await self._drop_orphan_group()
        now = time.monotonic()
        lease = self._lease
        if lease is not None and now - lease.acquired_at > LEASE_MAX_HOLD:
            if self._batch is None:
                self._lease = None  # our turn is over: let a waiting pod in, then queue again
                await self._leases.release(lease)
                lease = None
            elif self._yielding is None:
                # Commits are waiting for their push: this transaction still joins them, later ones
                # wait at the gate until the flusher has pushed and handed the lease back.
                self._yielding = asyncio.get_running_loop().create_future()
        if lease is not None and not lease.usable(now):
            try:
                await self._leases.renew(lease, deadline=now + self.policy.write_timeout)
            except LeaseLost:
                lease = self._lease = None
        if lease is None:
            if self._group_open or self._batch is not None:
                # Commits wait for a push under the lease we just lost: it will be refused and
                # they re-run; this transaction must not pull under them. Re-run it after them.
                raise TursoBusyError("the write lease was lost with commits pending", code="TURSO_LEASE_LOST")
            await self._take_lease()
        elif self._dirty:
            # Local changes no push may carry (a reset that failed, commits a callback made on its
            # own): holding the lease says nothing about this copy. Reset it before writing on it.
            if self._group_open or self._batch is not None:
                raise TursoBusyError("the replica resets after the commits ahead", code="TURSO_LEASE_LOST")
            try:
                await self._reset()
            except TursoError:
                self._lease = None
                await self._leases.release(lease)
                raise
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.create_task(self._keep_lease(), name=f"turso-lease:{self.path}")

    async def _drop_orphan_group(self) -> None:
        """Roll back an open group no batch waits for: its transactions' callers went away
        (cancelled between their RELEASE and joining the batch), so none was acknowledged, and
        left open it would keep the replica from pulling and from writing once the lease is gone."""
        if self._group_open and self._batch is None and self._group_failed is None:
            await self._on_conn(lambda: self._rollback_group(self._checkout()))

    def _rollback_group(self, conn: Any) -> None:
        """Roll the open group back and close it (nobody awaits its push)."""
        if conn.in_transaction:
            with engine_errors("ROLLBACK"):
                conn.execute("ROLLBACK")
        self._group_open = False
        self._group_members = 0

    async def _keep_lease(self) -> None:
        """Renew the lease while a transaction or a push still needs it (long callbacks)."""
        while (lease := self._lease) is not None:
            await asyncio.sleep(lease.ttl / 3)
            if not (self._lock.locked() or self._batch is not None):
                return
            if self._lease is not lease:
                # A newer lease, taken while this task slept (the one before went back idle):
                # this task serves it, from a third of its TTL on (no second task is started).
                continue
            try:
                await self._leases.renew(lease)
            except LeaseLost:
                return  # the push will be refused and the transaction re-run
            except TursoUnavailableError:
                continue

    async def _take_lease(self) -> None:
        deadline = time.monotonic() + self.policy.write_timeout
        attempt = 0
        while True:
            wait = max(0.0, min(self.policy.lease_ttl * 2, deadline - time.monotonic()))
            try:
                lease, fresh = await self._leases.acquire(ttl=self.policy.lease_ttl, wait=wait)
                break
            except TursoUnavailableError as exc:
                self._record_error("lease", exc)
                if time.monotonic() >= deadline:
                    raise TursoUnavailableError(
                        f"cannot write to {self.url}: turso-server unreachable for "
                        f"{self.policy.write_timeout:g}s (reads still serve the local replica)"
                    ) from exc
            except TursoBusyError:
                if time.monotonic() >= deadline:
                    raise
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, LEASE_RETRY_DELAY))
        try:
            try:
                if self._offline_pending:
                    self._must_pull = True  # pushed from a copy that may be behind: pull after it
                    await self._push_offline_commits(lease)
                if self._dirty:
                    await self._reset()
                elif not fresh or self._must_pull:
                    changed = await self._engine.call(self._pull_clean)
                    self._must_pull = False
                    self.status.last_pull = time.time()
                    if changed:
                        # A context of its own: a copy of ours would carry the gate we hold, and
                        # every listener's read through connect() would fail as a nested transaction.
                        self._spawn(self._notify(), context=contextvars.Context())
            except _Dirty:
                await self._reset()
            except TursoError as exc:
                if not _behind_own_pushes(exc):
                    raise
                await self._reset("older than its own pushes")
        except TursoError as exc:  # no pull, or no reset: we cannot write on a stale copy
            await self._leases.release(lease)
            self._record_error("pull", exc)
            raise TursoUnavailableError(f"cannot bring {self.path} up to date before a write: {exc}") from exc
        except BaseException:
            # Cancelled while the pull ran (it may still be running, or fail unseen): this copy is
            # not known to be up to date, so the lease is not ours to write under. Given back
            # from a task of its own, which a second cancellation cannot cut short.
            self._spawn(self._leases.release(lease))
            raise
        # Only now: a lease in self._lease means "this copy is up to date, write on it".
        self._lease = lease
        self._clear_error()

    async def _push_offline_commits(self, lease: Lease) -> None:
        """Push the commits offline mode acknowledged (its merge rule: last push wins), fenced
        by ``lease``; a failure raises, and they stay for the next lease."""
        outcome = await self._engine.call(self._push_reporting, self._leases.fenced_url(lease))
        if outcome is not True:
            raise outcome
        self.status.last_push = time.time()
        self._offline_pending = False
        await self._engine.call(write_boot_mark, self.path, self._boot)
        log.info("Turso replica %s: the commits acknowledged in offline mode are pushed", self.path)

    def _spawn(self, work: Coroutine[Any, Any, None], context: contextvars.Context | None = None) -> None:
        """Run ``work`` as a task of its own, referenced until it is done."""
        task = asyncio.get_running_loop().create_task(work, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_commit(self) -> Awaitable[None] | None:
        if not self.serializable:
            await self._engine.call(self._push_best_effort)
            return None
        if self._release_queued:
            # Its RELEASE is still queued on the engine thread, which may be changing the group's
            # state right now: the flusher, queued behind it, tells whether it landed in the group.
            self._release_queued = False
            return self._join_batch()
        if self._offline_pending:
            return None  # a read beside offline mode's commits: the next lease pushes them
        if self._dirty and self._lease is None:
            return None  # a read beside leftovers the next write resets (docs/consistency.md)
        if self._batch is not None or self._group_failed is not None:
            return self._join_batch()  # a failed group fails in the flusher, for every caller in it
        if self._dirty:
            return None  # the same under a held lease: never a push of leftovers (_commit_then_push)
        if self._group_open:
            return self._join_batch()
        if await self._on_conn(self._pending) == 0:
            return None  # nothing this transaction could have seen is unpushed
        return self._join_batch()

    def _join_batch(self) -> asyncio.Future[None]:
        if self._batch is None:
            self._batch = _Batch(asyncio.get_running_loop().create_future())
        if not self._flushing:  # not "done()": a flusher handing the lease over is not done yet
            self._flushing = True
            self._flusher = asyncio.create_task(self._flush(), name=f"turso-push:{self.path}")
        return asyncio.shield(self._batch.done)

    async def _flush(self) -> None:
        """Push batch after batch until none is left; each caller waits for the push of its batch."""
        try:
            while self._batch is not None:
                async with self._lock:
                    batch, self._batch = self._batch, None
                    if batch is None:
                        break
                    try:
                        await self._push_under_lease(commit=True)
                    except Exception as exc:
                        batch.done.set_exception(exc)
                        batch.done.exception()  # retrieved here; every waiter gets it via its await
                    except BaseException:
                        batch.done.cancel()
                        raise
                    else:
                        batch.done.set_result(None)
                    finally:
                        self._schedule_release()
        finally:
            self._flushing = False  # from here on, a batch needs a flusher of its own
            # Hand the lease over. The gate stays shut until it is given back: a transaction let
            # in meanwhile could join a batch while this task, still awaiting, looks alive to
            # _join_batch, and wait for a push nobody makes.
            if (yielding := self._yielding) is not None and not yielding.done():
                try:
                    lease, self._lease = self._lease, None
                    if lease is not None:
                        await self._leases.release(lease)
                finally:
                    if self._yielding is yielding:  # never another hand-over's, begun meanwhile
                        self._yielding = None
                    if not yielding.done():
                        yielding.set_result(None)

    async def _push_under_lease(self, *, commit: bool = False) -> None:
        """Push through the lease's fenced URL; resolve every failure to a known outcome or say so.

        ``commit``: COMMIT the group first, in the same engine call as the first push (one hop,
        not two); a failed COMMIT raises as it is, and a group with nothing to push sends nothing.
        """
        deadline = time.monotonic() + self.policy.write_timeout
        maybe_applied = False
        attempt = 0
        while True:
            lease = self._lease
            if lease is None:  # the lease was dropped while the batch waited (or the service closes)
                if maybe_applied:  # an earlier attempt may have landed: never "not applied"
                    raise TursoCommitUnknownError(
                        f"a push to {self.url} may or may not have been applied and the write lease is gone"
                    )
                await self._reset()
                raise TursoBusyError("the write lease was lost before the push", code="TURSO_LEASE_LOST")
            asked = time.monotonic()
            url = self._leases.fenced_url(lease)
            if commit:
                commit = False
                outcome = await self._engine.call(self._commit_then_push, url)
            else:
                outcome = await self._engine.call(self._push_reporting, url)
            if outcome is None:
                return  # the group changed nothing: no push was sent
            if outcome is True:
                lease.valid_until = asked + lease.ttl  # each push extends the lease on the server
                self.status.last_push = time.time()
                self._clear_error()
                return
            refused = _refused(outcome)
            maybe_applied = maybe_applied or not refused
            self._record_error("push", outcome)
            if not refused:
                try:  # still ours? then pushing again is safe: the sync client skips what landed
                    await self._leases.renew(lease, deadline=deadline)
                    if time.monotonic() < deadline:
                        attempt += 1
                        await asyncio.sleep(backoff_delay(attempt, LEASE_RETRY_DELAY))
                        continue
                except LeaseLost:
                    pass
                except TursoUnavailableError:
                    if time.monotonic() < deadline:
                        attempt += 1
                        await asyncio.sleep(backoff_delay(attempt, LEASE_RETRY_DELAY))
                        continue
            self._lease = None
            if not maybe_applied:
                await self._reset()
                raise TursoBusyError(
                    "the write lease expired before the push; the transaction is re-run on fresh data",
                    code="TURSO_LEASE_LOST",
                )
            if await self._retry_if_still_last_writer(deadline):
                return
            try:
                await self._reset()
                after = "the replica was reset to the server's state: a read shows which way it went"
            except TursoUnavailableError:  # the server that lost the reply: reads wait for the reset
                self._outcome_unknown = True
                after = "the replica could not be reset yet: its reads fail until it can (then they show it)"
            raise TursoCommitUnknownError(
                f"a push to {self.url} may or may not have been applied and the write lease is gone; {after}"
            )

    async def _retry_if_still_last_writer(self, deadline: float) -> bool:
        """With a new lease, push again if no one else wrote since us (then the outcome is exact)."""
        try:
            lease, fresh = await self._leases.acquire(
                ttl=self.policy.lease_ttl, wait=max(0.0, deadline - time.monotonic())
            )
        except TursoError:
            return False
        if not fresh:
            await self._leases.release(lease)  # the replica resets next: it writes under no lease
            return False
        self._lease = lease
        if await self._engine.call(self._push_reporting, self._leases.fenced_url(lease)) is not True:
            return False
        self.status.last_push = time.time()
        return True

    async def _reset(self, why: str = "discarding unacknowledged local changes") -> None:
        """Drop every local change: reopen the replica from the server's current state."""
        log.warning("Turso replica %s: %s (re-bootstrap)", self.path, why)
        self._dirty = True
        try:
            await self._engine.call(self._rebootstrap)
        except (TursoError, OSError) as exc:  # OSError: the replica's directory (space, permissions)
            self._record_error("reset", exc)
            raise TursoUnavailableError(f"cannot reset {self.path} from {self.url}: {exc}") from exc
        self._dirty = self._outcome_unknown = self._must_pull = False
        self._clear_error()  # a bootstrap from the server: an exchange that worked

    def _schedule_release(self) -> None:
        """Give the lease back ``LEASE_LINGER`` after the pod goes idle. One timer serves every
        transaction: each marks when it left the gate, and the timer, when it fires while the pod
        is busy or was busy since, sets itself again for the rest of the linger."""
        self._idle_since = time.monotonic()
        if self._lease is None or self._release is not None:
            return
        self._release = asyncio.get_running_loop().call_later(LEASE_LINGER, self._release_now)

    def _release_now(self) -> None:
        self._release = None
        lease = self._lease
        if lease is None:
            return
        if self._batch is not None or self._lock.locked():
            self._schedule_release()
            return
        if (left := self._idle_since + LEASE_LINGER - time.monotonic()) > 0:
            self._release = asyncio.get_running_loop().call_later(left, self._release_now)
            return
        self._lease = None
        self._spawn(self._leases.release(lease))

    # -- autocommit: reads run locally; a statement that writes runs again under the lease ----------
    async def _autocommit(self, fn: Callable[[Any], T]) -> T:
        self._check_open()
        if not self.serializable:
            return await super()._autocommit(fn)
        # A busy error means the statement was not applied: it runs again like a transaction.
        return await with_retries(lambda: self._autocommit_once(fn))

    async def _autocommit_once(self, fn: Callable[[Any], T]) -> T:
        async with self._gate():
            await self._drop_orphan_group()  # else this statement would run inside it, and push it
            if self._outcome_unknown and not self._group_open and self._batch is None:
                # The copy holds a commit whose push may or may not have landed, and its caller
                # was told a read shows which way it went: reset first; while the server cannot
                # be reached, this read fails instead of showing the commit as landed.
                await self._reset("a read after a commit whose outcome is unknown")
            try:
                result: T = await self._on_conn(self._speculate, fn)
                durable = await self._after_commit()
            except _Speculation:
                await self._before_transaction()
                result = await self._on_conn(self._in_savepoint, fn)
                durable = await self._after_commit()
        if durable is not None:
            await durable
        return result

    def _speculate(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` where it can be taken back; raise :class:`_Speculation` if it wrote."""
        conn = self._checkout()
        nested = self._group_open  # inside the commits waiting for their push: a savepoint
        with engine_errors("BEGIN"):
            if nested:
                _exec(conn, f"SAVEPOINT {_PROBE_SAVEPOINT}")
            else:
                conn.execute("BEGIN DEFERRED")
        try:
            before = _one_row(conn, _CHANGE_PROBE)
            result = fn(conn)
            if not conn.in_transaction:
                self._abandon_group(conn, members=self._group_members > 0)
                raise TursoError(
                    "an autocommit statement ended the transaction it ran in: use service.transaction() "
                    "for COMMIT/ROLLBACK",
                    code="TURSO_DANGLING_TRANSACTION",
                )
            after = _one_row(conn, _CHANGE_PROBE)
        except BaseException:
            self._undo_probe(conn, nested)
            raise
        if before != after:
            self._undo_probe(conn, nested)
            raise _Speculation
        with engine_errors("COMMIT"):
            if nested:
                _exec(conn, f"RELEASE {_PROBE_SAVEPOINT}")
            else:
                conn.execute("COMMIT")
        return result

    @staticmethod
    def _undo_probe(conn: Any, nested: bool) -> None:
        if not conn.in_transaction:
            return
        with contextlib.suppress(Exception):
            if nested:
                conn.execute(f"ROLLBACK TO {_PROBE_SAVEPOINT}")
                conn.execute(f"RELEASE {_PROBE_SAVEPOINT}")
            else:
                conn.execute("ROLLBACK")

    def _in_savepoint(self, fn: Callable[[Any], T]) -> T:
        """An autocommit statement that writes, as a transaction of its own in the group."""
        state = _TxState("BEGIN DEFERRED")
        try:
            result = self._in_tx(state, fn)
        except BaseException:
            self._finish(state, "ROLLBACK")
            raise
        self._finish(state, "COMMIT")
        return result

    # -- statements on the event loop while the engine thread is idle --------------------------
    # A replica's statements are local (its pushes and pulls are what reach the network) and
    # short, and under the gate one caller at a time uses the connection: a hop to the engine
    # thread and back (two wake-ups, ~0.1-0.2 ms on 2 cores) cost more than most statements. So a
    # call runs right here when the engine thread has nothing queued or running; the loop queues
    # nothing while it runs it, so the two threads never touch the connection at once, and calls
    # keep their order. A call that ran longer than INLINE_LIMIT (a big scan) sends this
    # replica's calls back to the engine thread for INLINE_PAUSE, so the loop is not held again.
    def _inline_now(self) -> bool:
        return self._engine.idle() and time.monotonic() >= self._inline_paused_until

    def _run_inline(self, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if (elapsed := time.perf_counter() - started) > INLINE_LIMIT:
                self._inline_paused_until = time.monotonic() + INLINE_PAUSE
                log.debug(
                    "Turso replica %s: a call held the event loop %.0f ms; its calls run on the "
                    "engine thread for %gs",
                    self.path,
                    elapsed * 1000,
                    INLINE_PAUSE,
                )

    async def _on_conn(self, fn: Callable[..., T], *args: Any) -> T:
        if self._inline_now():
            return self._run_inline(fn, *args)
        return await self._engine.call(fn, *args)

    # -- local group commit -----------------------------------------------------------------
    async def _commit(self, state: _TxState) -> None:
        if not self.serializable:
            await super()._commit(state)
            return
        # A savepoint's RELEASE: nobody needs its reply, since the caller waits for the push
        # anyway and the calls run in order (the next statement, the flusher's COMMIT come after
        # it). Should it fail, the group is rolled back and its push fails (_release_savepoint).
        if self._inline_now():
            self._run_inline(self._release_savepoint, state)
        else:
            self._release_queued = True
            self._engine.submit(self._release_savepoint, state)

    def _release_savepoint(self, state: _TxState) -> None:
        conn = state.conn
        try:
            self._finish(state, "COMMIT")
        except Exception as exc:
            # Its caller already moved on to wait for the push: the group must fail, for it too.
            log.warning("Turso savepoint release failed, rolling back the group: %s", exc)
            if conn is not None:
                self._abandon_group(conn, members=True, cause=exc)

    # Serializable writes on a replica run under the lease, one at a time on one connection, and
    # each waits for a push anyway. So they share one local transaction: the first opens it, each
    # runs in a savepoint of its own (RELEASE on success, ROLLBACK TO on error), and the flusher
    # COMMITs them all at once — one fsync — right before the push that carries them.
    def _open_tx(self, conn: Any, begin: str) -> None:
        if not self.serializable:
            conn.execute(begin)
            return
        if self._group_failed is not None:
            raise TursoBusyError(
                "the commits waiting for a push were rolled back; this transaction runs again after them",
                code="TURSO_GROUP_ROLLED_BACK",
            )
        if not self._group_open:
            conn.execute("BEGIN DEFERRED")
            self._group_open = True
            self._group_members = 0
            self._group_changes = _total_changes(conn)
        _exec(conn, f"SAVEPOINT {_TX_SAVEPOINT}")

    def _finish(self, state: _TxState, verb: str) -> None:
        if not self.serializable:
            super()._finish(state, verb)
            return
        conn, state.conn = state.conn, None
        if conn is None:
            return
        if verb == "COMMIT":
            try:
                with engine_errors("COMMIT"):
                    _exec(conn, f"RELEASE {_TX_SAVEPOINT}")
            except BaseException:
                self._rollback_savepoint(conn)
                raise
            if not conn.in_transaction:  # the callback ended the group's transaction itself
                self._rollback_savepoint(conn)
            self._group_members += 1
            return
        self._rollback_savepoint(conn)

    def _rollback_savepoint(self, conn: Any) -> None:
        """Undo one transaction of the group; if nothing else is in it, close the group too (no
        empty BEGIN outlives the lease). A callback that ended the group's transaction or our
        savepoint itself (COMMIT, ROLLBACK, RELEASE) leaves nothing to undo alone: the group goes."""
        try:
            if not conn.in_transaction:
                raise TursoError("the callback ended the transaction", code="TURSO_DANGLING_TRANSACTION")
            conn.execute(f"ROLLBACK TO {_TX_SAVEPOINT}")
            conn.execute(f"RELEASE {_TX_SAVEPOINT}")
        except Exception as exc:  # the group cannot be trusted: drop all of it
            log.warning("Turso rollback to savepoint failed, rolling back the group: %s", exc)
            self._abandon_group(conn, members=self._group_members > 0, cause=exc)
            raise TursoError(
                "a transaction callback ended the transaction it ran in (COMMIT, ROLLBACK or RELEASE): "
                "nothing of it was applied; the other transactions of its group run again",
                code="TURSO_DANGLING_TRANSACTION",
            ) from exc
        if self._group_members == 0:
            self._rollback_group(conn)

    def _abandon_group(self, conn: Any, *, members: bool, cause: Exception | None = None) -> None:
        """Drop the open group: roll back what is still open and, when a callback committed it
        locally on its own, mark the replica for a reset (no push may carry those commits). With
        ``members`` every transaction released into it fails with its push and runs again."""
        if conn.in_transaction:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
        self._group_open = False
        self._group_members = 0
        with contextlib.suppress(TursoError):
            if self._pending() > 0:
                self._dirty = True
        if members:
            self._group_failed = cause or TursoError(
                "the group's transaction was ended by a statement", code="TURSO_DANGLING_TRANSACTION"
            )

    def _commit_group(self) -> bool:
        """COMMIT the group (if open); return whether anything is left to push.

        Rows changed since the group opened certainly left changes to push (a cheap counter);
        otherwise (reads only, or DDL, which the counter does not see) the engine's stats decide.
        A group a failed RELEASE rolled back fails its push: every caller in it runs again.
        """
        failed, self._group_failed = self._group_failed, None
        if failed is not None:
            raise TursoBusyError(
                "a transaction of this group could not be released; the group was rolled back",
                code="TURSO_GROUP_ROLLED_BACK",
            ) from failed
        if self._group_open:
            conn = self._checkout()
            self._group_open = False
            self._group_members = 0
            try:
                with engine_errors("COMMIT"):
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                raise
            if _total_changes(conn) != self._group_changes:
                return True
        return self._pending() > 0

    # -- sync (engine thread) -------------------------------------------------------------
    def _pending(self) -> int:
        conn = self._checkout()
        with engine_errors("stats"):
            return int(conn.stats().cdc_operations)

    def _bounded(self) -> AbstractContextManager[None]:
        """Around one push, pull or bootstrap on the engine thread: its requests wait for the
        server at most ``TURSO_WRITE_TIMEOUT`` (see docs/consistency.md)."""
        return sync_deadline(time.monotonic() + self.policy.write_timeout)

    def _pull_clean(self) -> bool:
        if self._pending():
            raise _Dirty
        with engine_errors("pull"), self._bounded():
            return bool(self._conn.pull())

    def _push_fenced(self, url: str) -> None:
        conn = self._checkout()
        self._push_url = url
        try:
            with engine_errors("push"), self._bounded():
                conn.push()
        finally:
            self._push_url = None

    def _push_reporting(self, url: str) -> Literal[True] | TursoError:
        """:meth:`_push_fenced`: ``True`` when it landed, else its failure (returned, not raised)."""
        try:
            self._push_fenced(url)
        except TursoError as exc:
            return exc
        return True

    def _commit_then_push(self, url: str) -> Literal[True] | TursoError | None:
        """The flusher's first call: COMMIT the group (its failure raises), then push it;
        ``None`` when the group left nothing to push (no request sent)."""
        if not self._commit_group():
            return None
        if self._dirty:  # local commits no push may carry (a callback's own COMMIT): never sent
            raise TursoBusyError(
                "the replica holds local commits no push may carry; it is reset and the group runs again",
                code="TURSO_GROUP_ROLLED_BACK",
            )
        return self._push_reporting(url)

    def _rebootstrap(self) -> None:
        """Replace the replica with a fresh copy of the server's database.

        A throw-away bootstrap beside it comes first, so an unreachable server leaves the current
        replica in place (still serving reads) instead of deleting it.
        """
        probe = tempfile.mkdtemp(prefix=".reset-", dir=os.path.dirname(os.path.abspath(self.path)))
        try:
            with self._bounded():
                open_replica(os.path.join(probe, "probe.db"), self.url, self._token).close()
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = None
        self._offline_pending = False  # a fresh copy: nothing of this file is left to push
        self._group_open = False
        self._group_members = 0
        self._group_failed = None  # its batch failed with the reset: a fresh copy has no group
        forget_cursors()  # what this thread knew of the server's cursor rows, under any lease
        with _opening(self.path):  # no other opener of this process finds the file half made
            remove_replica_files(self.path)  # until finish_reset, an open finishes the reset itself
            self._connect()  # the probe just answered; a timeout here would leave no replica: 60 s
            if self._boot:
                write_boot_mark(self.path, self._boot)
            finish_reset(self.path)

    def _push_best_effort(self) -> None:
        try:
            with engine_errors("push"), self._bounded():
                self._conn.push()
            self.status.last_push = time.time()
            self._clear_error()
        except TursoError as exc:
            self._record_error("push", exc)

    def _sync_once(self) -> bool:
        """Offline mode: push pending local changes, then pull. Serializable: pull when clean."""
        pending = self._pending()
        if pending and not self.serializable:
            with engine_errors("push"), self._bounded():
                self._conn.push()
            self.status.last_push = time.time()
        elif pending:
            return False  # unpushed commits (a push is on its way) or leftovers (reset on next write)
        with engine_errors("pull"), self._bounded():
            changed = bool(self._conn.pull())
        self.status.last_pull = time.time()
        self._clear_error()
        return changed

    def _record_error(self, what: str, exc: Exception) -> None:
        """Record a failed exchange (health ``degraded``)."""
        first = self.status.last_error is None
        self.status.last_error = f"{what} failed: {exc}"
        self.status.last_error_at = time.time()
        self._heard_at = time.monotonic()
        # A probe failing after a pull, push or reset failed does not make that error its own.
        self._probe_error = what == PROBE and (first or self._probe_error)
        self._answered = False
        if first:  # one warning per outage, not one per interval
            log.warning("Turso %s failed for %s: %s", what, self.url, exc)

    def _clear_error(self) -> None:
        self._heard_at = time.monotonic()
        if self.status.last_error is not None:
            log.info("Turso sync with %s recovered", self.url)
        self.status.last_error = None
        self._probe_error = False
        self._answered = True

    @property
    def unanswered(self) -> bool:
        """The last exchange with the server failed and no probe of health's got an answer since."""
        return not self._answered

    async def reach(self) -> None:
        """Health's look at the server, when nothing told this replica for :data:`REACH_AGE`
        whether it answers: one bounded request (:meth:`LeaseClient.reach`), on the event loop,
        never behind the write gate or the engine thread. No answer, a refused token (401, 403), a
        server error (5xx, 429), or in serializable mode no lease API (404) is recorded like a
        failed sync (health ``degraded``). An answer comes from turso-server itself, never from the
        namespace's tursodb, so it proves what a failed probe doubted (the server is up, the token
        is good) and clears only an error a probe recorded: a failed pull, push or reset (a hung
        child, this pod's full disk) stays until a pull, push or reset of its own succeeds.
        At most one request per :data:`REACH_AGE` whatever the rate of health calls, plus the
        first health call of a serializable replica, which always asks (a lease API to write with)."""
        self._check_open()
        # The first look of a serializable replica goes out at once: its open pulled, which a
        # plain tursodb answers too, yet without a lease API every write fails.
        first = self.serializable and not self._reached
        if time.monotonic() - self._heard_at < REACH_AGE and not first:
            return
        self._reached = True
        self._heard_at = time.monotonic()  # a probe that never answers is not sent again at once
        try:
            status = await self._leases.reach(timeout=REACH_TIMEOUT)
        except TursoUnavailableError as exc:
            self._record_error(PROBE, exc)
            return
        if status in (401, 403):
            problem = f"turso-server at {self.url} refused the token (HTTP {status})"
        elif status >= 500 or status == 429:
            problem = f"turso-server at {self.url} answered HTTP {status}"
        elif status == 404 and self.serializable:
            problem = f"{self.url} offers no write leases (HTTP 404): serializable writes need turso-server"
        else:
            problem = None
        if problem is not None:
            self._record_error(PROBE, TursoUnavailableError(problem))
        elif self._probe_error:
            self._clear_error()
        else:
            self._answered = True

    def _read_stats(self) -> SyncStatus:
        conn = self._checkout()
        with engine_errors("stats"):
            stats = conn.stats()
        self.status.revision = stats.revision
        self.status.pending_operations = int(stats.cdc_operations)
        return self.status

    # -- public ---------------------------------------------------------------------------
    async def sync(self) -> bool:
        """One sync round (see :meth:`_sync_once`); errors are recorded on ``status`` and re-raised."""
        self._check_open()
        async with self._gate():
            if self.serializable:
                await self._drop_orphan_group()
            if self.serializable and (self._group_open or self._batch is not None):
                return False  # commits are on their way to the server: pull after them
            try:
                if self._offline_pending and self.serializable:
                    await self._take_lease()  # pushes offline mode's commits, then pulls
                elif self._dirty and self.serializable:
                    await self._reset()
                try:
                    changed = await self._engine.call(self._sync_once)
                except TursoError as exc:
                    if not (self.serializable and _behind_own_pushes(exc)):
                        raise
                    # Nothing unpushed is acknowledged: a fresh copy loses nothing.
                    await self._reset("older than its own pushes")
                    changed = True
            except TursoError as exc:
                self._record_error("sync", exc)
                raise
        if changed:
            await self._notify()
        return changed

    async def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                await listener(self.path)
            except Exception:
                log.exception("Turso pull listener failed")

    async def stats(self) -> SyncStatus:
        self._check_open()
        return await self._engine.call(self._read_stats)

    def start_background_sync(self, interval: float) -> None:
        """Pull (and in offline mode push) every ``interval`` seconds (``0`` disables)."""
        if interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(interval), name=f"turso-sync:{self.path}")

    async def _loop(self, interval: float) -> None:
        while not self._closed:
            with contextlib.suppress(TursoError):
                await self.sync()
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self._keepalive is not None:
            self._keepalive.cancel()
        if not self.serializable:
            async with self._gate():
                await self._engine.call(self._push_best_effort)  # the final push
        if self._tasks:  # releases and listener calls already on their way
            await asyncio.gather(*self._tasks, return_exceptions=True)
        lease, self._lease = self._lease, None
        if lease is not None:
            await self._leases.release(lease)
        await self._leases.aclose()
        await super().aclose()

    async def _discard(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._leases.aclose()
        await super()._discard()

    def _close_all(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
