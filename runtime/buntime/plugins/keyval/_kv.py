"""The Kv store: Deno-KV-style keys, values, versionstamps, TTLs, atomics, transactions and search.

Called by the plugin (which provides a :class:`Kv` to other plugins) and the HTTP routes. ``Kv``
is the front door; what it holds sits on the storage core (:mod:`._storage`: the write path,
the versionstamp clock, the TTL filter), one module per concern, none of them importing ``Kv``
(the layers are a contract in ``.importlinter``)::

    Kv (reads, set, delete, lifecycle, metrics flush)
     ├── transaction (_transaction) ── atomic (_atomic)
     ├── queue (_queue) · search (_search) · watch (_watch) · triggers (_triggers)
     └──► KvStorage (_storage) ──► schema · where · metrics ──► keys · values ──► errors

* **Reads** are one autocommit statement, so one engine-thread hop, each (a search too, unless
  the in-memory index list turns out stale; see :meth:`~._search.KvSearch.search`); single-key
  gets that queue up behind a running one share the next engine hop (see :class:`_Gets`).
* **Sets** that queue up behind a running write share its next transaction and commit
  (:meth:`~._storage.KvStorage.write_grouped`), each with its own versionstamp.
* **Writes** are one write transaction of the storage core each (one hop), pushed in sync mode
  and decided on the database inside the transaction (see :mod:`._storage`).
* **Order**: lists and pages ``ORDER BY key``, the byte order of the encoded keys (which is
  the key order, see :mod:`._keys`), walking the primary-key index with no sort; cursors are
  ``key > ?`` / ``key < ?`` on the last key's BLOB, so a page never skips or repeats a key,
  whichever way it runs and whatever was deleted in between. Upstream ordered by ``hex(key)``
  because ordering the BLOBs gave an unstable reverse order after deletes in its Turso; this
  engine does not (``test_order_and_pages_survive_deletes_reinserts_and_a_restart``), and
  ``hex()`` cost a sort of the whole range per page (``USE SORTER`` in the query plan).
* **Persisted metrics** (``metrics_flush_interval``): every interval, and at close, the
  operation counts since the last flush are added to ``kv_metrics`` (see :mod:`._metrics`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ...turso import BlockingDatabase, TursoService
from ._atomic import UUIDV7, AtomicOperation, CommitResult, Uuidv7, commit_atomic, validate_expire_in
from ._errors import InvalidRequestError, KeyValError, outcome_unknown, storage_errors
from ._keys import decode_cursor, encode_cursor, encode_key, prefix_range
from ._metrics import PERSIST_SQL, READ_PERSISTED_SQL, KvMetrics
from ._queue import KvQueue
from ._search import DEFAULT_TOKENIZE, IndexInfo, KvSearch
from ._storage import (
    DEFAULT_LIMIT,
    LIVE,
    SELECT_ENTRY,
    KvEntry,
    KvStorage,
    RawEntry,
    State,
    check_limit,
    raw_value,
    row_entry,
    row_raw_entry,
)
from ._transaction import DEFAULT_RETRY_DELAY, KvTransaction, TransactionResult, run
from ._triggers import TriggerHandler, Triggers
from ._values import decode_value, encode_value, resolve_now
from ._watch import WatchHub
from ._where import compile_where

log = logging.getLogger("buntime.plugin.keyval")
T = TypeVar("T")

DEFAULT_NAMESPACE = "keyval"
MAX_BATCH_KEYS = 1000
_GET = f"SELECT value, versionstamp, expires_at FROM kv_entries WHERE key = ? AND {LIVE}"
#: The most keys one grouped read asks for (the rest wait for the next statement).
MAX_GROUPED_GETS = 256
#: The value column as ``where`` filters name it (qualified: their subqueries read it too).
_VALUE = "kv_entries.value"

__all__ = ["DEFAULT_LIMIT", "DEFAULT_NAMESPACE", "Kv", "KvEntry", "Page", "RawEntry"]


class _Gets:
    """Single-key reads, grouped while one is on the engine thread.

    A read that finds none running goes at once, as one ``key = ?`` statement. Reads that
    arrive while one runs wait for it and then go together, one ``key = ?`` per distinct key
    in one engine call (:meth:`~buntime.turso.Database.get_each`): one engine hop (and one
    wake-up of the event loop) for all of them, instead of a hop each, which is most of a GET's
    cost with the thread executor. Not one ``key IN (...)`` statement: turso writes an ``IN``
    list to a temporary file on every run (~1.5 ms; a prepared ``key = ?`` is ~10 us). Each
    read still runs after it was asked for, so it sees every write committed before it. On the
    inline executor no read waits on another, so every read goes at once."""

    def __init__(self, store: KvStorage) -> None:
        self._store = store
        self._busy = False
        self._waiting: dict[bytes, asyncio.Future[dict[str, Any] | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, encoded: bytes) -> dict[str, Any] | None:
        """The live row of ``encoded`` (``value``, ``versionstamp``, ``expires_at``), or ``None``."""
        if self._busy:
            future = self._waiting.get(encoded)
            if future is None:
                future = self._waiting[encoded] = asyncio.get_running_loop().create_future()
            # Shielded: a cancelled caller must not cancel the read other callers share.
            return await asyncio.shield(future)
        self._busy = True
        try:
            db = await self._store.db()
            return await db.get(_GET, [encoded, self._store.now_ms()])
        finally:
            self._next()

    def _next(self) -> None:
        self._busy = False
        if self._waiting:
            self._busy = True
            keys = builtins.list(itertools.islice(self._waiting, MAX_GROUPED_GETS))
            batch = {key: self._waiting.pop(key) for key in keys}
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[bytes, asyncio.Future[dict[str, Any] | None]]) -> None:
        try:
            db = await self._store.db()
            now = self._store.now_ms()
            rows = await db.get_each(_GET, [(key, now) for key in batch])
            for future, row in zip(batch.values(), rows, strict=True):
                if not future.done():
                    future.set_result(row)
        except asyncio.CancelledError:
            for future in batch.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._next()


@dataclass(frozen=True)
class Page:
    """A page of entries and the cursor of the next one (``None`` on the last page)."""

    entries: list[KvEntry]
    cursor: str | None
    has_more: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": [e.as_json() for e in self.entries],
            "cursor": self.cursor,
            "hasMore": self.has_more,
        }


class Kv:
    """The KeyVal store on one Turso namespace. Usage::

        kv = Kv(service)
        await kv.open()                                  # migrations, index list, versionstamp seed
        await kv.set(["users", 1], {"name": "Ada"}, expire_in=60_000)
        entry = await kv.get(["users", 1])
        page = await kv.paginate(["users"], limit=50)
        await kv.atomic().set(["posts", kv.uuidv7()], {"t": "hi"}).commit()
        result = await kv.transaction(fn, max_retries=3)  # reads become checks
        remove = kv.add_trigger(["users"], ["set"], handler)
        await kv.aclose()

    Parameters:

    * **service** — the :class:`~buntime.turso.TursoService` (from ``@buntime/plugin-turso``).
    * **namespace** *(optional)* — Turso namespace, default ``"keyval"``.
    * **metrics** *(optional)* — a :class:`KvMetrics`; default one with a private registry.
    * **queue_lock_duration** *(optional)* — queue lease in seconds, default 30.
    * **clock** *(optional)* — ``time.time``-like clock (seconds), for TTLs and versionstamps.
    """

    def __init__(
        self,
        service: TursoService,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        metrics: KvMetrics | None = None,
        queue_lock_duration: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.metrics = metrics or KvMetrics()
        self._store = KvStorage(service, namespace=namespace, metrics=self.metrics, clock=clock)
        self._search = KvSearch(self._store)
        self._gets = _Gets(self._store)
        self._triggers = Triggers(self.metrics)
        self._store.sink = self._triggers
        self.queue = KvQueue(self._store, lock_duration=queue_lock_duration)
        self.watch = WatchHub(self.get_many, lambda prefix, limit: self.list(prefix, limit=limit))
        self._store.add_commit_listener(self.watch.poke)
        self._tasks: list[asyncio.Task[None]] = []
        self._persist_metrics = False

    async def __aenter__(self) -> Kv:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @property
    def state(self) -> State:
        return self._store.state

    @property
    def clock(self) -> Callable[[], float]:
        """The ``time.time``-like clock TTLs, queue times and versionstamps read."""
        return self._store.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._store.clock = clock

    def now_ms(self) -> int:
        return self._store.now_ms()

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Run migrations, load the index list and seed versionstamps; then the store is usable."""
        with self.metrics.track("open"):
            await self._store.open()
            await self._search.load()
        self.service.add_pull_listener(self._on_pull)
        self._store.activate()

    def start_background(
        self, *, sweep_interval: float, queue_cleanup_interval: float, metrics_flush_interval: float = 0
    ) -> None:
        """Start the TTL sweep, the stale-lease sweep and the metrics flush (seconds; ``0``
        disables one; a metrics flush interval also flushes at close)."""
        jobs: list[tuple[float, Callable[[], Awaitable[int]], str]] = [
            (sweep_interval, self.sweep_expired, "ttl-sweep"),
            (queue_cleanup_interval, self.queue.requeue_stale, "queue-lease-sweep"),
            (metrics_flush_interval, self.flush_metrics, "metrics-flush"),
        ]
        self._persist_metrics = metrics_flush_interval > 0
        for interval, job, name in jobs:
            if interval > 0:
                self._tasks.append(self._store.every(interval, job, name))

    async def aclose(self) -> None:
        """Stop the background jobs (a last metrics flush first) and refuse further calls;
        in-flight writes finish first."""
        if self._store.state == "closed":
            return
        self.service.remove_pull_listener(self._on_pull)
        await self.watch.aclose()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._persist_metrics and self._store.state == "opened":
            try:
                await self.flush_metrics()
            except KeyValError as exc:
                log.warning("KeyVal final metrics flush failed: %s", exc)
        await self._store.aclose()
        self.metrics.unregister()

    @staticmethod
    def _bounds(
        prefix: Sequence[Any], start: Sequence[Any] | None, end: Sequence[Any] | None
    ) -> tuple[bytes, bytes]:
        lo, hi = prefix_range(encode_key(prefix))
        if start is not None:
            lo = max(lo, encode_key(start, allow_empty=False))
        if end is not None:
            hi = min(hi, encode_key(end, allow_empty=False))
        return lo, hi

    # -- reads ------------------------------------------------------------------------------
    async def get(self, key: Sequence[Any]) -> KvEntry:
        """The entry at ``key``; ``value`` and ``versionstamp`` are ``None`` when it is absent or expired."""
        with self._store.op("get"):
            encoded = encode_key(key, allow_empty=False)
            row = await self._gets.get(encoded)
            if row is None:
                return KvEntry(tuple(key), None, None)
            return KvEntry(tuple(key), decode_value(row["value"]), row["versionstamp"], row["expires_at"])

    async def get_raw(self, key: Sequence[Any]) -> RawEntry | None:
        """:meth:`get` with the value left as its stored JSON text; ``None`` when the key is
        absent or expired (what the HTTP layer copies into responses unparsed)."""
        with self._store.op("get"):
            encoded = encode_key(key, allow_empty=False)
            row = await self._gets.get(encoded)
            if row is None:
                return None
            return RawEntry(tuple(key), raw_value(row["value"]), row["versionstamp"], row["expires_at"])

    async def get_many(self, keys: Sequence[Sequence[Any]]) -> builtins.list[KvEntry]:
        """Entries for ``keys`` in request order (at most 1000 keys)."""
        with self._store.op("get_many"):
            if len(keys) > MAX_BATCH_KEYS:
                raise InvalidRequestError(f"at most {MAX_BATCH_KEYS} keys per batch", code="TOO_MANY_KEYS")
            encoded = [encode_key(k, allow_empty=False) for k in keys]
            found: dict[bytes, dict[str, Any] | None] = {}
            if encoded:
                # One engine call, so no commit of this process lands between two of its reads;
                # a key = ? each, not key IN (...) (see _Gets).
                db = await self._store.db()
                unique = builtins.list(dict.fromkeys(encoded))
                now = self._store.now_ms()
                found = dict(zip(unique, await db.get_each(_GET, [(k, now) for k in unique]), strict=True))
            out: builtins.list[KvEntry] = []
            for key, enc in zip(keys, encoded, strict=True):
                row = found.get(enc)
                out.append(
                    KvEntry(tuple(key), decode_value(row["value"]), row["versionstamp"], row["expires_at"])
                    if row
                    else KvEntry(tuple(key), None, None)
                )
            return out

    async def list(
        self,
        prefix: Sequence[Any] = (),
        *,
        start: Sequence[Any] | None = None,
        end: Sequence[Any] | None = None,
        limit: int = DEFAULT_LIMIT,
        reverse: bool = False,
        where: Any = None,
    ) -> builtins.list[KvEntry]:
        """Entries strictly under ``prefix``, from ``start`` (inclusive) to ``end`` (exclusive),
        whose values match ``where`` (see :mod:`._where`)."""
        with self._store.op("list"):
            rows = await self._list_rows(
                prefix, start=start, end=end, limit=limit, reverse=reverse, where=where
            )
            return [row_entry(r) for r in rows]

    async def list_raw(
        self,
        prefix: Sequence[Any] = (),
        *,
        start: Sequence[Any] | None = None,
        end: Sequence[Any] | None = None,
        limit: int = DEFAULT_LIMIT,
        reverse: bool = False,
        where: Any = None,
    ) -> builtins.list[RawEntry]:
        """:meth:`list` with the values left as their stored JSON text."""
        with self._store.op("list"):
            rows = await self._list_rows(
                prefix, start=start, end=end, limit=limit, reverse=reverse, where=where
            )
            return [row_raw_entry(r) for r in rows]

    async def _list_rows(
        self,
        prefix: Sequence[Any],
        *,
        start: Sequence[Any] | None,
        end: Sequence[Any] | None,
        limit: int,
        reverse: bool,
        where: Any,
    ) -> builtins.list[dict[str, Any]]:
        limit = check_limit(limit)
        now = self._store.now_ms()
        filter_sql, filter_params = compile_where(where, column=_VALUE, now_ms=now)
        lo, hi = self._bounds(prefix, start, end)
        if lo >= hi:
            return []
        db = await self._store.db()
        return await db.all(
            f"{SELECT_ENTRY} WHERE key >= ? AND key < ? AND {LIVE} AND {filter_sql} "
            f"ORDER BY key {'DESC' if reverse else 'ASC'} LIMIT ?",
            [lo, hi, now, *filter_params, limit],
        )

    async def count(self, prefix: Sequence[Any] = (), *, where: Any = None) -> int:
        """How many live keys strictly under ``prefix`` have values matching ``where``."""
        with self._store.op("count"):
            now = self._store.now_ms()
            filter_sql, filter_params = compile_where(where, column=_VALUE, now_ms=now)
            lo, hi = prefix_range(encode_key(prefix))
            db = await self._store.db()
            row = await db.get(
                "SELECT count(*) AS n FROM kv_entries "
                f"WHERE key >= ? AND key < ? AND {LIVE} AND {filter_sql}",
                [lo, hi, now, *filter_params],
            )
            return int(row["n"]) if row else 0

    async def paginate(
        self,
        prefix: Sequence[Any] = (),
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        reverse: bool = False,
        where: Any = None,
    ) -> Page:
        """One page under ``prefix`` after ``cursor`` (an opaque string from the previous page)
        of the entries whose values match ``where``."""
        with self._store.op("paginate"):
            limit = check_limit(limit)
            now = self._store.now_ms()
            filter_sql, filter_params = compile_where(where, column=_VALUE, now_ms=now)
            lo, hi = prefix_range(encode_key(prefix))
            sql = f"{SELECT_ENTRY} WHERE key >= ? AND key < ? AND {LIVE} AND {filter_sql}"
            params: builtins.list[Any] = [lo, hi, now, *filter_params]
            if cursor:
                sql += " AND key < ?" if reverse else " AND key > ?"
                params.append(decode_cursor(cursor))
            sql += f" ORDER BY key {'DESC' if reverse else 'ASC'} LIMIT ?"
            params.append(limit + 1)
            db = await self._store.db()
            rows = await db.all(sql, params)
            has_more = len(rows) > limit
            entries = [row_entry(r) for r in rows[:limit]]
            next_cursor = encode_cursor(bytes(rows[limit - 1]["key"])) if has_more else None
            return Page(entries, next_cursor, has_more)

    # -- writes -----------------------------------------------------------------------------
    async def set(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> CommitResult:
        """Store ``value`` at ``key``; ``expire_in`` is a TTL in milliseconds."""
        with self._store.op("set"):
            encoded = encode_key(key, allow_empty=False)
            value = resolve_now(value, self._store.now_ms())
            raw = encode_value(value)
            ttl = validate_expire_in(expire_in)

            def fn(db: BlockingDatabase) -> CommitResult:
                versionstamp = self._store.next_versionstamp(db)
                self._store.put_in_tx(
                    db,
                    encoded,
                    raw,
                    value,
                    versionstamp=versionstamp,
                    expires_at=self._store.expiry(self._store.now_ms(), ttl),
                )
                return CommitResult(True, versionstamp)

            # Concurrent sets share a transaction (one commit), each with its own versionstamp.
            return await self._store.write_grouped(fn)

    async def delete(self, key: Sequence[Any], *, exact: bool = False, where: Any = None) -> int:
        """Delete ``key`` and the keys under it (only ``key`` if ``exact``) whose values match
        ``where``; return the live keys deleted."""
        return await self.delete_many([key], exact=exact, where=where)

    async def delete_many(
        self, keys: Sequence[Sequence[Any]], *, exact: bool = False, where: Any = None
    ) -> int:
        """:meth:`delete` for several keys in one transaction."""
        with self._store.op("delete"):
            if len(keys) > MAX_BATCH_KEYS:
                raise InvalidRequestError(f"at most {MAX_BATCH_KEYS} keys per batch", code="TOO_MANY_KEYS")
            encoded = [encode_key(k, allow_empty=False) for k in keys]
            compile_where(where, column=_VALUE, now_ms=0)  # reject a bad filter before the transaction

            def fn(db: BlockingDatabase) -> int:
                now = self._store.now_ms()
                if where is not None:
                    filtered = compile_where(where, column=_VALUE, now_ms=now)
                    return sum(
                        self._store.delete_where_in_tx(db, enc, exact, now, filtered) for enc in encoded
                    )
                return sum(self._store.delete_in_tx(db, enc, exact, now) for enc in encoded)

            return await self._store.write(fn) if encoded else 0

    def atomic(self) -> AtomicOperation:
        """Start an atomic operation (checks + mutations, committed together or not at all)."""
        return AtomicOperation(self._commit)

    async def _commit(self, checks: Sequence[Any], mutations: Sequence[Any]) -> CommitResult:
        return await commit_atomic(self._store, checks, mutations)

    @staticmethod
    def uuidv7() -> Uuidv7:
        """A key-part placeholder for atomics and transactions: at commit it becomes the
        commit's versionstamp, the same in every key of the commit (see :mod:`._atomic`)."""
        return UUIDV7

    async def transaction(
        self,
        fn: Callable[[KvTransaction], Awaitable[T]],
        *,
        max_retries: int = 0,
        retry_delay: float = DEFAULT_RETRY_DELAY,
    ) -> TransactionResult[T]:
        """Run ``await fn(tx)`` as an optimistic transaction: its reads become the checks of one
        atomic commit of its buffered writes, re-run up to ``max_retries`` times on conflict
        (back-off from ``retry_delay`` ms). See :mod:`._transaction`."""
        with self._store.op("transaction"):
            return await run(
                fn,
                read_many=self.get_many,
                committer=self._commit,
                max_retries=max_retries,
                retry_delay=retry_delay,
            )

    def add_trigger(
        self, prefix: Sequence[Any], events: Sequence[str], handler: TriggerHandler
    ) -> Callable[[], None]:
        """Call ``handler(event)`` after each commit that ``set``s or ``delete``s a key under
        ``prefix`` (in this process); returns the function that removes it. See :mod:`._triggers`."""
        return self._triggers.add(prefix, events, handler)

    async def sweep_expired(self) -> int:
        """Delete expired entries (and their search documents) in batches; return how many."""
        return await self._store.sweep_expired()

    # -- search -----------------------------------------------------------------------------
    async def create_index(
        self, prefix: Sequence[Any], fields: Sequence[str], *, tokenize: str = DEFAULT_TOKENIZE
    ) -> IndexInfo:
        """Index the ``fields`` (dot paths into values) of keys under ``prefix``; existing keys too."""
        return await self._search.create_index(prefix, fields, tokenize=tokenize)

    async def remove_index(self, prefix: Sequence[Any]) -> bool:
        """Drop the index on exactly ``prefix``; ``False`` when there is none."""
        return await self._search.remove_index(prefix)

    async def list_indexes(self) -> builtins.list[IndexInfo]:
        """Every index, read from ``kv_indexes`` (not from memory)."""
        return await self._search.list_indexes()

    async def search(
        self, prefix: Sequence[Any], query: str, *, limit: int = DEFAULT_LIMIT, where: Any = None
    ) -> builtins.list[KvEntry]:
        """Live entries under ``prefix`` whose indexed text matches ``query``."""
        return await self._search.search(prefix, query, limit=limit, where=where)

    # -- other pods -------------------------------------------------------------------------
    async def _on_pull(self, replica_path: str) -> None:
        if self.state != "opened" or replica_path != self.service.replica_path(self.namespace):
            return
        self.watch.poke()  # another pod's writes arrived: watchers and queue listeners re-read
        try:
            await self.refresh()
        except KeyValError as exc:
            log.warning("KeyVal refresh after sync pull failed: %s", exc)

    async def refresh(self) -> int:
        """Reload the index list after a pull; in offline write mode also rebuild the indexes
        that are new here. Return how many were rebuilt. Called by the pull listener."""
        return await self._search.refresh(catch_up=self.service.config.write_mode == "offline")

    # -- metrics ----------------------------------------------------------------------------
    async def storage_stats(self) -> dict[str, int]:
        """``{"entries", "sizeBytes"}``: live entries and the bytes of their keys and values."""
        return await self._store.storage_stats()

    async def flush_metrics(self) -> int:
        """Add the operation counts since the last flush to ``kv_metrics`` (one write
        transaction; nothing when nothing was counted); return how many operations it wrote.
        Not tracked itself, so an idle store writes nothing."""
        deltas = self.metrics.pending()
        if not deltas:
            return 0
        now = self.now_ms()

        def fn(db: BlockingDatabase) -> int:
            for op, count, errors, latency in deltas:
                db.run(PERSIST_SQL, [op, op, count, errors, latency, now])
            return len(deltas)

        with storage_errors():
            try:
                return await self._store.write(
                    fn, entries=False, on_commit=lambda _: self.metrics.mark_flushed(deltas)
                )
            except Exception as exc:
                if outcome_unknown(exc):  # it may have landed: never add the same increments twice
                    self.metrics.mark_flushed(deltas)
                raise

    async def persisted_metrics(self) -> dict[str, dict[str, Any]]:
        """``kv_metrics``: ``{operation: {count, errors, avgLatencyMs, latencySumMs, latencyAvgMs,
        updatedAt}}``,
        the totals every pod flushed (empty when persistence is off). Not tracked itself."""
        self._store.check_open()
        with storage_errors():
            rows = await (await self._store.db()).all(READ_PERSISTED_SQL)
            out: dict[str, dict[str, Any]] = {}
            for r in rows:
                count, latency = int(r["count"]), float(r["latency_sum"])
                out[str(r["operation"])] = {
                    "count": count,
                    "errors": int(r["errors"]),
                    "latencySumMs": round(latency, 3),
                    "latencyAvgMs": round(latency / count, 3) if count else 0.0,
                    "avgLatencyMs": round(latency / count, 3) if count else 0.0,
                    "updatedAt": int(r["updated_at"]),
                }
            return out
