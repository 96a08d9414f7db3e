"""The Kv store: Deno-KV-style keys, values, versionstamps, TTLs, atomics and search on Turso.

Called by the plugin (which provides a :class:`Kv` to other plugins) and the HTTP routes.

* **Writes** all go through :meth:`Kv._write`: ``service.run_transaction()`` (so in sync mode
  the commit is pushed at once — upstream's autocommit writes were never pushed) under one
  in-process write lock. Every decision a write makes is taken inside its transaction, on the
  database: an atomic's checks, sum/min/max, the queue's lease, the next versionstamp and the
  list of search indexes to update. In sync mode that transaction runs under the namespace's
  write lease (fresh data, serialised with every other pod), so these decisions are exact
  across pods; the in-process lock only spares this pod MVCC conflict retries in local mode.
  Search tables are updated in the same transaction as the entries they mirror. Transaction
  bodies are blocking functions that run whole on the engine thread (BEGIN, statements and
  COMMIT in one thread hop); they touch only plain state that changes under the write lock
  (the versionstamp floor, the index list), never the event loop.
* **Reads** are one autocommit statement, so one engine-thread hop, each (a search too, unless
  the in-memory index list turns out stale; see :meth:`Kv.search`).
* **Versionstamps** are 20 hex digits: ``(epoch ms << 32) + counter``. The last one handed out
  is stored in ``kv_meta`` and, on replicas, read and bumped inside each write transaction, so
  they strictly increase in commit order across pods, whatever their clocks say (a pod whose
  clock is behind continues from the stored one); a local file has one writer process, which
  keeps the counter in memory, seeded at open. A new millisecond starts the counter at a random offset, which
  keeps collisions unlikely even in the opt-in offline write mode, where pods do not serialise.
  Equal strings mean "same write"; string order is commit order.
* **Search indexes**: the in-memory list serves searches (checked against storage there) and
  names the tables a write updates; each write first compares the list's generation with
  ``kv_meta`` in its own transaction and reloads the list when another pod changed it.
* **TTL**: ``expires_at`` is epoch milliseconds; every read filters expired rows and a
  background sweep deletes them (and their search documents).
* **Order**: lists and pages ``ORDER BY hex(key)`` (stable in Turso, unlike ordering the raw
  BLOB after deletes); ranges use the key index; cursors compare ``hex(key)`` so a page never
  skips or repeats a key, whichever way it runs and whatever was deleted in between.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ...turso import BlockingDatabase, Database, TransactionType, TursoQueryError, TursoService
from ._atomic import AtomicOperation, Check, CommitResult, Mutation, apply_mutation, validate_expire_in
from ._errors import InvalidRequestError, KeyValError, KeyValNotFoundError, KeyValUnavailableError
from ._keys import (
    Key,
    decode_cursor,
    decode_key,
    encode_cursor,
    encode_key,
    hex_key,
    key_to_json,
    prefix_range,
)
from ._metrics import KvMetrics, Tracked
from ._queue import KvQueue
from ._schema import migrate
from ._search import (
    DEFAULT_TOKENIZE,
    INDEX_TABLE_PATTERN,
    IndexInfo,
    SearchIndexes,
    deepest_covering,
    index_table_name,
    match_sql,
    parse_query,
    read_indexes,
    rebuild,
    search_sql,
    split_search_rows,
)
from ._values import decode_value, encode_value, resolve_now
from ._watch import WatchHub
from ._where import compile_where

log = logging.getLogger("buntime.plugin.keyval")
T = TypeVar("T")

DEFAULT_NAMESPACE = "keyval"
DEFAULT_LIMIT = 100
MAX_BATCH_KEYS = 1000
MAX_INDEX_FIELDS = 32
#: Busy retries per write; the write lock already removes in-process conflicts.
WRITE_RETRIES = 10
SWEEP_BATCH = 500
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_SELECT_ENTRY = "SELECT key, value, versionstamp, expires_at FROM kv_entries"
#: The value column as ``where`` filters name it (qualified: their subqueries read it too).
_VALUE = "kv_entries.value"
_COUNTER_BITS = 32
_COUNTER_START_BITS = 24
_READ_META = (
    "SELECT (SELECT value FROM kv_meta WHERE name = 'versionstamp') AS versionstamp, "
    "(SELECT value FROM kv_meta WHERE name = 'indexes') AS indexes"
)
_BUMP_INDEXES = "UPDATE kv_meta SET value = ? WHERE name = 'indexes'"

State = Literal["unopened", "opened", "closed"]


@dataclass(frozen=True)
class KvEntry:
    """One key's value and versionstamp (both ``None`` when the key does not exist)."""

    key: Key
    value: Any
    versionstamp: str | None
    expires_at: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": key_to_json(self.key),
            "value": self.value,
            "versionstamp": self.versionstamp,
            "expiresAt": self.expires_at,
        }


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


def _row_entry(row: dict[str, Any]) -> KvEntry:
    return KvEntry(
        decode_key(bytes(row["key"])), decode_value(row["value"]), row["versionstamp"], row["expires_at"]
    )


def _check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidRequestError("limit must be a positive integer", code="INVALID_LIMIT")
    return limit


class Kv:
    """The KeyVal store on one Turso namespace. Usage::

        kv = Kv(service)
        await kv.open()                                  # migrations, index list, versionstamp seed
        await kv.set(["users", 1], {"name": "Ada"}, expire_in=60_000)
        entry = await kv.get(["users", 1])
        page = await kv.paginate(["users"], limit=50)
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
        self._clock = clock
        self._state: State = "unopened"
        self._write_lock = asyncio.Lock()
        self._last_versionstamp = 0  # the highest one this process saw (a floor, not the source)
        self._search = SearchIndexes()
        self._index_generation: str | None = None  # kv_meta's generation of the list in _search
        # Replicas share the database with other pods: their writes read and bump kv_meta. A local
        # file belongs to this process alone (tursodb locks it), so memory is the truth there.
        self._shared = service.config.mode == "sync"
        self._handle: Database | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.queue = KvQueue(self, lock_duration=queue_lock_duration)
        self.watch = WatchHub(self)

    async def __aenter__(self) -> Kv:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    @property
    def state(self) -> State:
        return self._state

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Run migrations, load the index list and seed versionstamps; then the store is usable."""
        if self._state != "unopened":
            raise KeyValUnavailableError(f"the Kv store is {self._state}; open() runs once")
        with self.metrics.track("open"):
            await migrate(self.service, self.namespace)
            db = await self._db()
            self._search.replace_all(await SearchIndexes.read_all(db))
            if not self._shared:
                row = await db.get(
                    "SELECT max(COALESCE((SELECT max(versionstamp) FROM kv_entries), ''), "
                    "COALESCE((SELECT value FROM kv_meta WHERE name = 'versionstamp'), '')) AS vs"
                )
                with contextlib.suppress(TypeError, ValueError):  # '' or NULL: an empty store
                    self._last_versionstamp = int((row or {})["vs"], 16)
        self.service.add_pull_listener(self._on_pull)
        self._state = "opened"

    def start_background(self, *, sweep_interval: float, queue_cleanup_interval: float) -> None:
        """Start the TTL sweep and the stale-lease sweep (seconds; ``0`` disables one)."""
        jobs: list[tuple[float, Callable[[], Awaitable[int]], str]] = [
            (sweep_interval, self.sweep_expired, "ttl-sweep"),
            (queue_cleanup_interval, self.queue.requeue_stale, "queue-lease-sweep"),
        ]
        for interval, job, name in jobs:
            if interval > 0:
                self._tasks.append(
                    asyncio.create_task(self._every(interval, job, name), name=f"keyval:{name}")
                )

    async def _every(self, interval: float, job: Callable[[], Awaitable[int]], name: str) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                done = await job()
                if done:
                    log.debug("KeyVal %s: %d rows", name, done)
            except KeyValError as exc:
                log.warning("KeyVal %s failed (retried next interval): %s", name, exc)
            except Exception:
                log.exception("KeyVal %s failed", name)

    async def aclose(self) -> None:
        """Stop the background sweeps and refuse further calls; in-flight writes finish first."""
        if self._state == "closed":
            return
        self.service.remove_pull_listener(self._on_pull)
        await self.watch.aclose()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._write_lock:
            self._state = "closed"
        self.metrics.unregister()

    # -- plumbing ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state != "opened":
            raise KeyValUnavailableError(f"the KeyVal store is {self._state}")

    def _op(self, name: str) -> Tracked:
        """Track an operation: metrics, Turso error translation, and "is the store open?"."""
        return self.metrics.track(name, self._check_open)

    async def _db(self) -> Database:
        """The autocommit handle; cached, since its backend lives as long as the service (a
        closed service still raises TursoClosedError through it)."""
        if self._handle is None:
            self._handle = await self.service.connect(self.namespace)
        return self._handle

    async def _write(
        self,
        fn: Callable[[BlockingDatabase], T],
        *,
        type: TransactionType = "concurrent",
        on_commit: Callable[[T], None] | None = None,
        entries: bool = True,
    ) -> T:
        """Run the blocking ``fn`` in a pushed transaction on the engine thread, under the write
        lock (re-run on busy/conflict errors); ``on_commit`` runs on the event loop, still locked.

        With ``entries`` (any write that may touch ``kv_entries``) on a replica the transaction
        first reads ``kv_meta``: the versionstamp to continue from and the index generation,
        reloading the index list when another pod changed it, so the write updates exactly the
        stored indexes. A local file has one writer process, so there memory is exact and the
        extra statements (which halved local set throughput) are skipped.
        Bodies run one at a time and in submission order on the store's single engine thread,
        so the plain state they share stays consistent even after a cancelled caller released
        the lock while its body was still running there."""

        def body(db: BlockingDatabase) -> T:
            if entries and self._shared:
                self._read_meta(db)
            return fn(db)

        async with self._write_lock:
            self._check_open()
            txn = self.service.run_transaction(
                body, namespace=self.namespace, type=type, max_retries=WRITE_RETRIES
            )
            if on_commit is None:
                result = await txn
                self.watch.poke()
                return result
            # The engine thread cannot be interrupted: a cancelled caller must not skip on_commit
            # (the index list) for a transaction that commits anyway, e.g. a long index rebuild.
            task = asyncio.ensure_future(txn)
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                await asyncio.wait([task])
                if not task.cancelled() and task.exception() is None:
                    on_commit(task.result())
                    self.watch.poke()
                raise
            on_commit(result)
            self.watch.poke()
            return result

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _expiry(self, now: int, expire_in: float | None) -> int | None:
        return None if expire_in is None else now + math.ceil(expire_in)

    def _read_meta(self, db: BlockingDatabase) -> None:
        """Start of a write transaction (engine thread): learn the stored versionstamp and make
        the index list the stored one. Both come from committed state, so a rollback of this
        transaction leaves them true."""
        row = db.get(_READ_META) or {}
        with contextlib.suppress(TypeError, ValueError):  # '' or NULL: nothing handed out yet
            self._last_versionstamp = max(self._last_versionstamp, int(row["versionstamp"], 16))
        generation = row.get("indexes")
        if generation is None or generation != self._index_generation:
            self._search.replace_all(read_indexes(db))
            self._index_generation = generation

    def next_versionstamp(self, db: BlockingDatabase) -> str:
        """The next versionstamp, recorded in ``kv_meta`` (engine thread, inside a write's
        transaction, after :meth:`_read_meta`): greater than every one committed before."""
        base = self.now_ms() << _COUNTER_BITS
        if self._last_versionstamp >= base:
            self._last_versionstamp += 1
        else:
            self._last_versionstamp = base + random.getrandbits(_COUNTER_START_BITS)
        versionstamp = f"{self._last_versionstamp:020x}"
        if self._shared:  # local mode: seeded at open from the entries, one writer process
            db.run("UPDATE kv_meta SET value = ? WHERE name = 'versionstamp'", [versionstamp])
        return versionstamp

    def put_in_tx(
        self,
        db: BlockingDatabase,
        encoded: bytes,
        raw: bytes,
        value: Any,
        *,
        versionstamp: str,
        expires_at: int | None,
    ) -> None:
        """Write one entry and its search documents inside the caller's transaction (engine thread)."""
        db.run(
            "INSERT OR REPLACE INTO kv_entries(key, value, versionstamp, expires_at) VALUES (?, ?, ?, ?)",
            [encoded, raw, versionstamp, expires_at],
        )
        self._search.index(db, [(encoded, value)])

    def _delete_in_tx(self, db: BlockingDatabase, encoded: bytes, exact: bool, now: int) -> int:
        if exact:
            rows = db.all("DELETE FROM kv_entries WHERE key = ? RETURNING expires_at", [encoded])
            self._search.unindex_keys(db, [encoded])
        else:
            hi = encoded + b"\xff"
            rows = db.all(
                "DELETE FROM kv_entries WHERE key >= ? AND key < ? RETURNING expires_at", [encoded, hi]
            )
            self._search.unindex_range(db, encoded, hi)
        return sum(1 for r in rows if r["expires_at"] is None or r["expires_at"] > now)

    def _delete_where_in_tx(
        self,
        db: BlockingDatabase,
        encoded: bytes,
        exact: bool,
        now: int,
        filtered: tuple[str, builtins.list[Any]],
    ) -> int:
        """:meth:`_delete_in_tx` of the entries whose values match a compiled filter."""
        filter_sql, filter_params = filtered
        span = "key = ?" if exact else "key >= ? AND key < ?"
        bounds = [encoded] if exact else [encoded, encoded + b"\xff"]
        rows = db.all(
            f"DELETE FROM kv_entries WHERE {span} AND {filter_sql} RETURNING key, expires_at",
            [*bounds, *filter_params],
        )
        self._search.unindex_keys(db, [bytes(r["key"]) for r in rows])
        return sum(1 for r in rows if r["expires_at"] is None or r["expires_at"] > now)

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
        with self._op("get"):
            encoded = encode_key(key, allow_empty=False)
            db = await self._db()
            row = await db.get(
                f"SELECT value, versionstamp, expires_at FROM kv_entries WHERE key = ? AND {_LIVE}",
                [encoded, self.now_ms()],
            )
            if row is None:
                return KvEntry(tuple(key), None, None)
            return KvEntry(tuple(key), decode_value(row["value"]), row["versionstamp"], row["expires_at"])

    async def get_many(self, keys: Sequence[Sequence[Any]]) -> builtins.list[KvEntry]:
        """Entries for ``keys`` in request order (at most 1000 keys)."""
        with self._op("get_many"):
            if len(keys) > MAX_BATCH_KEYS:
                raise InvalidRequestError(f"at most {MAX_BATCH_KEYS} keys per batch", code="TOO_MANY_KEYS")
            encoded = [encode_key(k, allow_empty=False) for k in keys]
            found: dict[bytes, dict[str, Any]] = {}
            if encoded:
                db = await self._db()
                unique = builtins.list(dict.fromkeys(encoded))
                placeholders = ", ".join("?" for _ in unique)
                rows = await db.all(
                    f"SELECT key, value, versionstamp, expires_at FROM kv_entries "
                    f"WHERE key IN ({placeholders}) AND {_LIVE}",
                    [*unique, self.now_ms()],
                )
                found = {bytes(r["key"]): r for r in rows}
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
        with self._op("list"):
            limit = _check_limit(limit)
            now = self.now_ms()
            filter_sql, filter_params = compile_where(where, column=_VALUE, now_ms=now)
            lo, hi = self._bounds(prefix, start, end)
            if lo >= hi:
                return []
            db = await self._db()
            rows = await db.all(
                f"{_SELECT_ENTRY} WHERE key >= ? AND key < ? AND {_LIVE} AND {filter_sql} "
                f"ORDER BY hex(key) {'DESC' if reverse else 'ASC'} LIMIT ?",
                [lo, hi, now, *filter_params, limit],
            )
            return [_row_entry(r) for r in rows]

    async def count(self, prefix: Sequence[Any] = (), *, where: Any = None) -> int:
        """How many live keys strictly under ``prefix`` have values matching ``where``."""
        with self._op("count"):
            now = self.now_ms()
            filter_sql, filter_params = compile_where(where, column=_VALUE, now_ms=now)
            lo, hi = prefix_range(encode_key(prefix))
            db = await self._db()
            row = await db.get(
                "SELECT count(*) AS n FROM kv_entries "
                f"WHERE key >= ? AND key < ? AND {_LIVE} AND {filter_sql}",
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
        with self._op("paginate"):
            limit = _check_limit(limit)
            now = self.now_ms()
            filter_sql, filter_params = compile_where(where, column=_VALUE, now_ms=now)
            lo, hi = prefix_range(encode_key(prefix))
            sql = f"{_SELECT_ENTRY} WHERE key >= ? AND key < ? AND {_LIVE} AND {filter_sql}"
            params: builtins.list[Any] = [lo, hi, now, *filter_params]
            if cursor:
                sql += " AND hex(key) < ?" if reverse else " AND hex(key) > ?"
                params.append(hex_key(decode_cursor(cursor)))
            sql += f" ORDER BY hex(key) {'DESC' if reverse else 'ASC'} LIMIT ?"
            params.append(limit + 1)
            db = await self._db()
            rows = await db.all(sql, params)
            has_more = len(rows) > limit
            entries = [_row_entry(r) for r in rows[:limit]]
            next_cursor = encode_cursor(bytes(rows[limit - 1]["key"])) if has_more else None
            return Page(entries, next_cursor, has_more)

    # -- writes -----------------------------------------------------------------------------
    async def set(self, key: Sequence[Any], value: Any, *, expire_in: float | None = None) -> CommitResult:
        """Store ``value`` at ``key``; ``expire_in`` is a TTL in milliseconds."""
        with self._op("set"):
            encoded = encode_key(key, allow_empty=False)
            value = resolve_now(value, self.now_ms())
            raw = encode_value(value)
            ttl = validate_expire_in(expire_in)

            def fn(db: BlockingDatabase) -> CommitResult:
                versionstamp = self.next_versionstamp(db)
                self.put_in_tx(
                    db,
                    encoded,
                    raw,
                    value,
                    versionstamp=versionstamp,
                    expires_at=self._expiry(self.now_ms(), ttl),
                )
                return CommitResult(True, versionstamp)

            return await self._write(fn)

    async def delete(self, key: Sequence[Any], *, exact: bool = False, where: Any = None) -> int:
        """Delete ``key`` and the keys under it (only ``key`` if ``exact``) whose values match
        ``where``; return the live keys deleted."""
        return await self.delete_many([key], exact=exact, where=where)

    async def delete_many(
        self, keys: Sequence[Sequence[Any]], *, exact: bool = False, where: Any = None
    ) -> int:
        """:meth:`delete` for several keys in one transaction."""
        with self._op("delete"):
            if len(keys) > MAX_BATCH_KEYS:
                raise InvalidRequestError(f"at most {MAX_BATCH_KEYS} keys per batch", code="TOO_MANY_KEYS")
            encoded = [encode_key(k, allow_empty=False) for k in keys]
            compile_where(where, column=_VALUE, now_ms=0)  # reject a bad filter before the transaction

            def fn(db: BlockingDatabase) -> int:
                now = self.now_ms()
                if where is not None:
                    filtered = compile_where(where, column=_VALUE, now_ms=now)
                    return sum(self._delete_where_in_tx(db, enc, exact, now, filtered) for enc in encoded)
                return sum(self._delete_in_tx(db, enc, exact, now) for enc in encoded)

            return await self._write(fn) if encoded else 0

    def atomic(self) -> AtomicOperation:
        """Start an atomic operation (checks + mutations, committed together or not at all)."""
        return AtomicOperation(self._commit_atomic)

    async def _commit_atomic(self, checks: Sequence[Check], mutations: Sequence[Mutation]) -> CommitResult:
        with self._op("atomic"):
            if not checks and not mutations:  # nothing to read or write: no transaction at all
                return CommitResult(True)

            def fn(db: BlockingDatabase) -> CommitResult:
                now = self.now_ms()
                for check in checks:
                    row = db.get(
                        f"SELECT versionstamp FROM kv_entries WHERE key = ? AND {_LIVE}", [check.encoded, now]
                    )
                    if (row["versionstamp"] if row else None) != check.versionstamp:
                        return CommitResult(False)
                if not mutations:
                    return CommitResult(True)
                versionstamp = self.next_versionstamp(db)
                for m in mutations:
                    if m.type == "delete":
                        self._delete_in_tx(db, m.encoded, True, now)
                    elif m.type == "set":
                        value = resolve_now(m.value, now)
                        expires_at = self._expiry(now, m.expire_in)
                        self.put_in_tx(
                            db,
                            m.encoded,
                            encode_value(value),
                            value,
                            versionstamp=versionstamp,
                            expires_at=expires_at,
                        )
                    else:
                        row = db.get(
                            f"SELECT value FROM kv_entries WHERE key = ? AND {_LIVE}", [m.encoded, now]
                        )
                        current = decode_value(row["value"]) if row else None
                        new = apply_mutation(m.type, current, m.value, m.key)
                        self.put_in_tx(
                            db, m.encoded, encode_value(new), new, versionstamp=versionstamp, expires_at=None
                        )
                return CommitResult(True, versionstamp)

            result = await self._write(fn)
            if not result.ok:
                self.metrics.check_failures.inc()
            return result

    async def sweep_expired(self) -> int:
        """Delete expired entries (and their search documents) in batches; return how many."""
        total = 0
        with self._op("ttl_sweep"):
            while True:

                def fn(db: BlockingDatabase) -> int:
                    rows = db.all(
                        "DELETE FROM kv_entries WHERE key IN (SELECT key FROM kv_entries "
                        "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?) RETURNING key",
                        [self.now_ms(), SWEEP_BATCH],
                    )
                    self._search.unindex_keys(db, [bytes(r["key"]) for r in rows])
                    return len(rows)

                done = await self._write(fn)
                total += done
                if done < SWEEP_BATCH:
                    return total

    # -- search -----------------------------------------------------------------------------
    async def create_index(
        self, prefix: Sequence[Any], fields: Sequence[str], *, tokenize: str = DEFAULT_TOKENIZE
    ) -> IndexInfo:
        """Index the ``fields`` (dot paths into values) of keys under ``prefix``; existing keys too.

        Re-creating an index replaces its fields and rebuilds it. ``tokenize`` is recorded for
        upstream compatibility; matching is always a case-insensitive substring test.
        """
        with self._op("index_create"):
            encoded = encode_key(prefix)
            if (
                isinstance(fields, str)
                or not fields
                or len(fields) > MAX_INDEX_FIELDS
                or not all(isinstance(f, str) and f.strip() for f in fields)
            ):
                raise InvalidRequestError(
                    f"fields must be a list of 1-{MAX_INDEX_FIELDS} non-empty dot paths", code="INVALID_INDEX"
                )
            if not isinstance(tokenize, str) or not tokenize:
                raise InvalidRequestError("tokenize must be a non-empty string", code="INVALID_INDEX")
            table = index_table_name(encoded)

            def fn(db: BlockingDatabase) -> tuple[IndexInfo, str | None]:
                now = self.now_ms()
                info = IndexInfo(
                    tuple(prefix), encoded, tuple(f.strip() for f in fields), tokenize, table, now
                )
                db.exec(
                    f"CREATE TABLE IF NOT EXISTS {table} (doc_key TEXT PRIMARY KEY, document TEXT NOT NULL)"
                )
                db.run(
                    "INSERT OR REPLACE INTO kv_indexes(prefix, fields, tokenize, table_name, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [encoded, json.dumps(builtins.list(info.fields)), tokenize, table, now],
                )
                self._rebuild_in_tx(db, info, now)
                return info, self._bump_index_generation(db)

            def on_commit(done: tuple[IndexInfo, str | None]) -> None:
                self._search.put(done[0])
                self._index_generation = done[1]

            info, _ = await self._write(fn, type="exclusive", on_commit=on_commit)
            return info

    @staticmethod
    def _bump_index_generation(db: BlockingDatabase) -> str:
        """Tell every pod's next write that ``kv_indexes`` changed; the new generation.

        A random token, not a counter: a change that was rolled back after this pod saw it
        (a failed group push) must never look like another pod's later change."""
        generation = secrets.token_hex(8)
        db.run(_BUMP_INDEXES, [generation])
        return generation

    def _rebuild_in_tx(self, db: BlockingDatabase, info: IndexInfo, now: int) -> int:
        lo, hi = prefix_range(info.encoded)
        rows = db.all(
            f"SELECT key, value FROM kv_entries WHERE key >= ? AND key < ? AND {_LIVE}", [lo, hi, now]
        )
        return rebuild(db, info, ((bytes(r["key"]), decode_value(r["value"])) for r in rows))

    async def remove_index(self, prefix: Sequence[Any]) -> bool:
        """Drop the index on exactly ``prefix``; ``False`` when there is none."""
        with self._op("index_remove"):
            encoded = encode_key(prefix)

            def fn(db: BlockingDatabase) -> tuple[bool, str | None]:
                row = db.get("SELECT table_name FROM kv_indexes WHERE prefix = ?", [encoded])
                if row is None:
                    return False, self._index_generation
                table = str(row["table_name"])
                if INDEX_TABLE_PATTERN.match(table):
                    db.exec(f"DROP TABLE IF EXISTS {table}")
                db.run("DELETE FROM kv_indexes WHERE prefix = ?", [encoded])
                return True, self._bump_index_generation(db)

            def on_commit(done: tuple[bool, str | None]) -> None:
                self._search.drop(encoded)
                self._index_generation = done[1]

            removed, _ = await self._write(fn, type="exclusive", on_commit=on_commit)
            return removed

    async def list_indexes(self) -> builtins.list[IndexInfo]:
        """Every index, read from ``kv_indexes`` (not from memory)."""
        with self._op("index_list"):
            return await SearchIndexes.read_all(await self._db())

    async def search(
        self, prefix: Sequence[Any], query: str, *, limit: int = DEFAULT_LIMIT, where: Any = None
    ) -> builtins.list[KvEntry]:
        """Live entries under ``prefix`` whose indexed text matches ``query`` (see :func:`parse_query`).

        Uses the deepest index on ``prefix`` or one of its ancestors, found in ``kv_indexes`` on
        every call, so it works straight after a restart. One statement normally: it searches the
        index the in-memory list picks and returns the stored index rows with the matches, so
        the pick is checked in the same snapshot; when the list is stale (another pod's index,
        not yet refreshed) a second statement searches the index those stored rows pick.
        """
        with self._op("search"):
            limit = _check_limit(limit)
            if not isinstance(query, str):
                raise InvalidRequestError("query must be a string", code="INVALID_QUERY")
            encoded = encode_key(prefix)
            bounds = prefix_range(encoded)
            filtered = compile_where(where, column="e.value", now_ms=self.now_ms())
            db = await self._db()
            stored: builtins.list[IndexInfo] | None = None
            guess = self._search.deepest(encoded)
            if guess is not None:
                # A bad query or a vanished table is reported (or not) by the checked path below.
                with contextlib.suppress(InvalidRequestError, TursoQueryError):
                    stored, rows = await self._search_on(db, guess, query, bounds, limit, filtered=filtered)
                    if guess.agrees_with(deepest_covering(stored, encoded)):
                        return [_row_entry(r) for r in rows]
            if stored is None:
                stored = await SearchIndexes.read_all(db)
            info = deepest_covering(stored, encoded)
            if info is None:
                raise KeyValNotFoundError(
                    f"no search index covers prefix {key_to_json(tuple(prefix))!r}", code="INDEX_NOT_FOUND"
                )
            _, rows = await self._search_on(db, info, query, bounds, limit, filtered=filtered)
            return [_row_entry(r) for r in rows]

    async def _search_on(
        self,
        db: Database,
        info: IndexInfo,
        query: str,
        bounds: tuple[bytes, bytes],
        limit: int,
        *,
        filtered: tuple[str, builtins.list[Any]],
    ) -> tuple[builtins.list[IndexInfo], builtins.list[dict[str, Any]]]:
        """The stored indexes and the matching entry rows of one search statement on ``info``."""
        where, terms = match_sql(parse_query(query, info.fields))
        filter_sql, filter_params = filtered
        rows = await db.all(
            search_sql(info, f"{where} AND {filter_sql}"),
            [*bounds, self.now_ms(), *terms, *filter_params, limit],
        )
        return split_search_rows(rows)

    # -- other pods -------------------------------------------------------------------------
    async def _on_pull(self, replica_path: str) -> None:
        if self._state != "opened" or replica_path != self.service.replica_path(self.namespace):
            return
        self.watch.poke()  # another pod's writes arrived: watchers and queue listeners re-read
        try:
            await self.refresh()
        except KeyValError as exc:
            log.warning("KeyVal refresh after sync pull failed: %s", exc)

    async def refresh(self) -> int:
        """Reload the index list after a pull; in offline write mode also rebuild the indexes that
        are new here. Return how many were rebuilt.

        Offline writes do not serialise with other pods, so this pod may have written entries
        before it learned of an index another pod created (their documents were never written):
        the rebuild catches them up. Serializable and local writes check the index generation
        inside their own transaction (:meth:`_read_meta`) and never miss an index, so there the
        reload only keeps searches' first guess current. Called by the pull listener.
        """
        with self._op("refresh"):
            rebuilt = 0
            catch_up = self.service.config.write_mode == "offline"
            async with self._write_lock:
                self._check_open()
                db = await self._db()
                fresh = await SearchIndexes.read_all(db)
                stale = [i for i in fresh if catch_up and not i.agrees_with(self._search.get(i.encoded))]
                self._search.replace_all(fresh)
                for info in stale:

                    def fn(tx: BlockingDatabase, info: IndexInfo = info) -> int:
                        return self._rebuild_in_tx(tx, info, self.now_ms())

                    await self.service.run_transaction(
                        fn, namespace=self.namespace, max_retries=WRITE_RETRIES
                    )
                    rebuilt += 1
            return rebuilt

    async def storage_stats(self) -> dict[str, int]:
        """``{"entries", "sizeBytes"}``: live entries and the bytes of their keys and values, for
        the metrics endpoint (one statement)."""
        with self._op("storage_stats"):
            row = await (await self._db()).get(
                "SELECT count(*) AS n, COALESCE(sum(length(key) + length(value)), 0) AS size "
                f"FROM kv_entries WHERE {_LIVE}",
                [self.now_ms()],
            )
            row = row or {}
            return {"entries": int(row.get("n") or 0), "sizeBytes": int(row.get("size") or 0)}
