"""The engine adapter: where blocking pyturso calls run, and the mapping of pyturso errors.

pyturso connections are blocking and not thread-safe, so every database file (a local MVCC
file or a sync replica) gets one :class:`Engine` that owns its connections and runs its calls
in order. The default, :class:`EngineThread`, is a dedicated thread: the event loop never waits
on the disk, and keeping all of one file's work on one thread keeps N concurrent callers from
fighting over the GIL (raw pyturso with 4 threads runs at about a third of one thread).
:class:`InlineEngine` (``TURSO_EXECUTOR=inline``, local files only) runs the calls on the event
loop itself: no thread hop (~50-80 us, two context switches, next to ~150 us for a one-row
commit), at the price of blocking the loop for each statement, ``COMMIT``'s fsync included.
Called by ``_backends``; nothing above it imports pyturso.

:func:`query_prepared` runs a ``SELECT`` on a statement prepared once per connection: pyturso
parses and plans every ``execute()`` afresh, which was about 80% of a one-row read by key
(~40 of ~50 us here); a reset statement holds no transaction and turso re-prepares it itself
after a schema change. :func:`run_prepared` does the same for ``INSERT``/``UPDATE``/``DELETE``/
``REPLACE`` without ``RETURNING`` and for the savepoints every replica transaction runs in
(19.5 -> 2.8 us for a one-row insert, 11 -> 1.6 us for a ``SAVEPOINT``/``RELEASE`` pair).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import turso.lib
import turso.sync
from turso._turso import PyTursoStatusCode

import turso

from . import _transport
from ._config import Executor
from ._errors import (
    DDLInConcurrentTransactionError,
    TursoBusyError,
    TursoClosedError,
    TursoQueryError,
)
from ._tokens import TokenSource

log = logging.getLogger("buntime.turso")

T = TypeVar("T")

_transport.install()  # replicas' sync requests reuse one connection per engine thread

#: Prepared statements each connection keeps (least recently used evicted first): the plugins'
#: reads and writes are a few dozen fixed strings; filters and ``IN (?, ...)`` lists vary.
STATEMENT_CACHE_SIZE = 64
_STATEMENTS_ATTR = "_buntime_statements"

_RETRYABLE_MARKERS = ("busy", "conflict", "database is locked", "snapshot is stale")
_DDL_MARKER = "ddl statements require an exclusive transaction"


def is_retryable_message(message: str) -> bool:
    """Whether an engine error message means "run the transaction again"."""
    lowered = message.lower()
    return any(marker in lowered for marker in _RETRYABLE_MARKERS)


class engine_errors:
    """Translate pyturso exceptions into the service's error tree, chained to the original.

    A plain class rather than ``@contextmanager``: it wraps every statement, and a generator
    context manager costs several times more per use.
    """

    __slots__ = ("_statement",)

    def __init__(self, statement: str | None = None) -> None:
        self._statement = statement

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or not isinstance(exc, turso.Error):
            return
        message = str(exc)
        if _DDL_MARKER in message.lower():
            raise DDLInConcurrentTransactionError(
                "DDL is not allowed inside a concurrent (MVCC) transaction: "
                "run schema changes with transaction(..., type='exclusive')",
                statement=self._statement,
            ) from exc
        if is_retryable_message(message):
            raise TursoBusyError(message, statement=self._statement) from exc
        raise TursoQueryError(message, statement=self._statement) from exc


# (loop, future, fn, args); a submitted job has no loop and no future: nobody waits for it.
_Job = tuple[
    asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None", Callable[..., Any], tuple[Any, ...]
]


def _statement(conn: Any, sql: str) -> Any | None:
    """The connection's prepared statement for the single statement ``sql``, prepared on first
    use; ``None`` when ``sql`` holds more than one statement (the plain path reports that)."""
    cache: OrderedDict[str, Any] | None = getattr(conn, _STATEMENTS_ATTR, None)
    if cache is None:
        cache = OrderedDict()
        setattr(conn, _STATEMENTS_ATTR, cache)
    stmt = cache.get(sql)
    if stmt is not None:
        cache.move_to_end(sql)
        return stmt
    prepared = conn._conn.prepare_first(sql)
    if prepared is None:
        return None
    stmt, tail = prepared
    if sql[tail:].strip(" \t\r\n;"):
        stmt.finalize()
        return None
    cache[sql] = stmt
    if len(cache) > STATEMENT_CACHE_SIZE:
        cache.popitem(last=False)[1].finalize()
    return stmt


def query_prepared(
    conn: Any, sql: str, params: Sequence[Any] | Mapping[str, Any]
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]] | None:
    """``(columns, rows)`` of the ``SELECT`` ``sql`` on the connection's cached prepared
    statement (engine thread, inside :class:`engine_errors`); ``None`` for anything else
    (writes, named parameters, several statements), which takes pyturso's ``execute()``.

    The statement runs to its end and is reset right away, so it never keeps a read open
    between uses; a failed one is dropped from the cache. Errors are pyturso's DB-API errors, as from
    ``execute()``.
    """
    if isinstance(params, Mapping) or sql[:6].upper() != "SELECT":
        return None

    def rows(stmt: Any) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        extra_io = conn.extra_io
        found = []
        while turso.lib._step_once_with_io(stmt, extra_io) == PyTursoStatusCode.Row:
            found.append(tuple(stmt.row()))
        return tuple(stmt.columns()), found  # after the run: a re-prepare may have changed them

    return _on_statement(conn, sql, params, rows)


#: What :func:`run_prepared` takes (the first keyword, upper case): writes whose result is a
#: count, and the savepoints of a replica's transactions. Never DDL or what ends a transaction.
_PREPARED_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT", "RELEASE"})


#: pyturso's reading of a statement's first keyword, remembered per text: an app runs the same
#: few texts over and over, and the char-by-char scan (~1.3 us a text here, against ~0.14 us for
#: the lookup) ran three times per replica transaction (its savepoint, the write, the release).
_first_keyword = functools.lru_cache(maxsize=STATEMENT_CACHE_SIZE * 4)(turso.lib._first_keyword)


def run_prepared(
    conn: Any, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> tuple[int, int | None] | None:
    """``(changes, lastrowid)`` of the write ``sql`` run on the connection's cached prepared
    statement, as ``execute()`` reports them (``lastrowid`` only for an ``INSERT``/``REPLACE``
    that changed a row); ``None`` for anything else (named parameters, ``RETURNING``, several
    statements, other kinds), which takes pyturso's ``execute()``. Like :func:`query_prepared`:
    reset right after its run, dropped when it fails."""
    keyword = _first_keyword(sql)
    if isinstance(params, Mapping) or keyword not in _PREPARED_WRITES:
        return None

    def run(stmt: Any) -> tuple[int, int | None]:
        changes = int(turso.lib._run_execute_with_io(stmt, conn.extra_io).rows_changed)
        inserted = changes > 0 and keyword in ("INSERT", "REPLACE")  # execute()'s rule for lastrowid
        return changes, conn._conn.last_insert_rowid() if inserted else None

    return _on_statement(conn, sql, params, run, returns_rows=False)


def _on_statement(
    conn: Any,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    body: Callable[[Any], T],
    *,
    returns_rows: bool = True,
) -> T | None:
    """``body(stmt)`` on the cached statement of ``sql`` with ``params`` bound, then reset;
    ``None`` when ``sql`` cannot be cached, or (``returns_rows`` false) when it returns rows."""
    try:
        stmt = _statement(conn, sql)
        if stmt is None:
            return None
        try:
            if not returns_rows and stmt.columns():
                # RETURNING: pyturso's execute() drains and counts it. The statement stays cached
                # (never stepped, it holds nothing), so the next call finds out without preparing.
                return None
            if params:
                stmt.bind(params if isinstance(params, tuple) else tuple(params))
            result = body(stmt)
            stmt.reset()  # now, not before the next use: a finished statement must hold nothing
            return result
        except BaseException:
            _drop(conn, sql, stmt)
            raise
    except turso.Error:
        raise
    except Exception as exc:  # the native module's errors, mapped as pyturso's execute() does
        raise turso.lib._map_turso_exception(exc) from exc


def _drop(conn: Any, sql: str, stmt: Any) -> None:
    getattr(conn, _STATEMENTS_ATTR).pop(sql, None)
    with contextlib.suppress(Exception):
        stmt.finalize()


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Engine(Protocol):
    """Runs one database file's blocking calls, one at a time, in submission order."""

    async def call(self, fn: Callable[..., T], *args: Any) -> T: ...

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` without waiting for it; ``fn`` handles its own errors."""

    def idle(self) -> bool:
        """Whether every call submitted so far has finished (checked on the submitting thread)."""

    async def stop(self) -> None: ...


class InlineEngine:
    """Runs each call at once on the calling thread (the event loop): no hop, no parallelism."""

    def __init__(self) -> None:
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise TursoClosedError("the Turso engine is stopped", code="TURSO_CLOSED")
        return fn(*args)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        if self._closed:
            raise TursoClosedError("the Turso engine is stopped", code="TURSO_CLOSED")
        fn(*args)

    def idle(self) -> bool:
        return True

    async def stop(self) -> None:
        self._closed = True


def make_engine(executor: Executor, name: str) -> Engine:
    """The engine for one database file: a dedicated thread, or inline on the event loop."""
    return InlineEngine() if executor == "inline" else EngineThread(name)


class EngineThread:
    """A daemon thread that runs blocking engine calls in submission order.

    Usage::

        engine = EngineThread("runtime.db")
        rows = await engine.call(conn.execute, "SELECT 1")
        engine.stop()
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        # Two counters, each written by one thread only (no lock): jobs queued by the event
        # loop, jobs the engine thread has finished. Equal means nothing is queued or running.
        self._submitted = 0
        self._finished = 0
        self._thread = threading.Thread(target=self._run, name=f"turso:{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            loop, fut, fn, args = job
            if loop is None or fut is None:  # submitted: nobody waits for the result
                try:
                    fn(*args)
                except BaseException:  # a Rust panic too: it must not end this thread
                    name = getattr(fn, "__name__", fn)
                    log.exception("Turso engine call %s failed; nobody awaited it", name)
                self._finished += 1
                continue
            # A job runs even when its caller was cancelled: skipping a COMMIT or ROLLBACK would
            # strand a connection inside its transaction. Only the result is dropped.
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, never swallowed
                ok, value = False, exc
            else:
                ok, value = True, result
            self._finished += 1
            with contextlib.suppress(RuntimeError):  # the loop closed while we worked
                loop.call_soon_threadsafe(_settle, fut, ok, value)
        _transport.close_connections()  # this thread's kept-alive sync connections

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the engine thread and return its result."""
        if self._closed:
            raise TursoClosedError("the Turso engine thread is stopped", code="TURSO_CLOSED")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._submitted += 1
        self._queue.put((loop, fut, fn, args))
        return await fut

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` behind every earlier call, without a reply (``fn`` keeps its errors)."""
        if self._closed:
            raise TursoClosedError("the Turso engine thread is stopped", code="TURSO_CLOSED")
        self._submitted += 1
        self._queue.put((None, None, fn, args))

    def idle(self) -> bool:
        """Nothing queued or running. Only the thread that submits (the event loop) may ask: it
        queues nothing while it runs, so "idle" stays true until it submits again."""
        return self._finished == self._submitted

    async def stop(self) -> None:
        """Finish queued work, then end the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)


def open_local(path: str, *, mvcc: bool = True) -> turso.Connection:
    """Open a local database file in autocommit mode, with MVCC verified when asked."""
    with engine_errors():
        conn = turso.connect(path, isolation_level=None)
        try:
            conn.autocommit = True  # we issue BEGIN/COMMIT ourselves; executescript must not COMMIT
            if mvcc:
                # The pragma only takes effect once its row is fetched.
                row = conn.execute("PRAGMA journal_mode = mvcc").fetchone()
                if not row or str(row[0]).lower() != "mvcc":
                    raise TursoQueryError(f"could not enable MVCC on {path}: journal_mode is {row!r}")
        except BaseException:  # a busy pragma too: the caller may try again
            with contextlib.suppress(Exception):
                conn.close()
            raise
    return conn


METADATA_SUFFIX = "-info"  # pyturso 0.8.3's metadata file beside the replica


def open_replica(
    path: str,
    url: str,
    token: TokenSource,
    remote: Callable[[], str] | None = None,
    *,
    metadata_in_place: bool = False,
) -> turso.sync.ConnectionSync:
    """Open an embedded replica synced with ``url`` (no MVCC: CDC and MVCC exclude each other).

    A replica file that already holds data opens without the network (``bootstrap_if_empty``
    off), so a pod whose server is down still starts on its local copy. ``remote``, when given,
    is asked for the base URL of every later sync request (the fenced push URL of a write
    lease); pyturso evaluates a callable per request but only accepts a string when opening.
    ``metadata_in_place``: the sync engine's metadata file is rewritten in place (only for a
    file that is reset after an OS crash: ``_transport``).
    """
    _transport.write_in_place(path + METADATA_SUFFIX, metadata_in_place)
    bootstrap_if_empty = not (os.path.exists(path) and os.path.getsize(path) > 0)
    with engine_errors():
        conn = turso.sync.connect(
            path,
            url,
            auth_token=token,  # called per request: a re-read token file reaches the next one
            client_name="buntime",
            bootstrap_if_empty=bootstrap_if_empty,
            isolation_level=None,
        )
    conn.autocommit = True
    if remote is not None:
        conn._http_ctx.remote_url = remote  # pinned to pyturso 0.8.3; tests/turso/test_sync.py checks it
    return conn


BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
BOOT_MARK_SUFFIX = "-buntime-boot"  # beside the replica, so remove_replica_files takes it too
OFFLINE_MARK = "offline"  # the boot mark of a replica last opened in offline mode
RESET_MARK_SUFFIX = "-buntime-reset"  # present while a reset replaces the replica's files


def boot_id() -> str:
    """This boot of the machine ("" where the kernel does not say): a reboot changes it."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def read_boot_mark(path: str) -> str | None:
    """The boot in which ``path`` was last opened for writing, or ``None`` (no mark yet)."""
    try:
        with open(path + BOOT_MARK_SUFFIX, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def write_boot_mark(path: str, boot: str) -> None:
    """Record ``boot`` for ``path`` durably (the file and its directory are fsynced).

    ``boot`` is the boot id of a serializable replica's writer, or :data:`OFFLINE_MARK` for a
    replica opened in offline mode (whose local commits were acknowledged)."""
    _write_durably(path + BOOT_MARK_SUFFIX, boot + "\n")


def _write_durably(target: str, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file of this writer's own (two openers of
    one new replica in one process write its boot mark at once: a shared name made one fail)."""
    directory, base = os.path.split(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(prefix=f"{base}.", suffix=".tmp", dir=directory)
    try:
        with open(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_directory(target)


def _fsync_directory(path: str) -> None:
    directory = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def reset_interrupted(path: str) -> bool:
    """Whether a :func:`remove_replica_files` of ``path`` was not followed by :func:`finish_reset`."""
    return os.path.exists(path + RESET_MARK_SUFFIX)


def finish_reset(path: str) -> None:
    """The replica at ``path`` was bootstrapped again: drop the reset mark."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path + RESET_MARK_SUFFIX)
    _fsync_directory(path)


def remove_replica_files(path: str) -> None:
    """Delete a replica's database and the sync engine's files beside it (``<path>-*``).

    A reset mark is written first, durably, and kept: a process killed half-way leaves files
    pyturso refuses to open ("main DB file doesn't exists, but metadata is"), and the mark
    (:func:`reset_interrupted`) tells the next open to remove them all and bootstrap. The caller
    calls :func:`finish_reset` once the replica is bootstrapped again."""
    _write_durably(path + RESET_MARK_SUFFIX, "reset\n")
    directory, base = os.path.split(os.path.abspath(path))
    keep = base + RESET_MARK_SUFFIX
    for name in os.listdir(directory or "."):
        if name != keep and (name == base or name.startswith(base + "-")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
