"""The KeyVal storage core: the write path, the versionstamp clock and the TTL filter.

Everything of keyval that touches ``kv_entries`` sits on one :class:`KvStorage`: the Kv store's
reads and writes, atomics and transactions, the queue (leases, dead letters and their
``keysIfUndelivered`` writes) and search (whose index tables follow every entry write). It
imports nothing above it; what the layers above need to hear about comes back through three
narrow hooks they register: :class:`EntryHooks` (search: keep the index tables in step inside
each write transaction), :class:`ChangeSink` (triggers: the entries a commit changed, after it)
and commit listeners (watchers and queue listeners: "something was committed").

* **Writes** all go through :meth:`KvStorage.write`: ``service.run_transaction()`` (so in sync
  mode the commit is pushed at once — upstream's autocommit writes were never pushed) under one
  in-process write lock. Every decision a write makes is taken inside its transaction, on the
  database: an atomic's checks, sum/min/max, the queue's lease and its ``attempts`` fence, the
  next versionstamp and the list of search indexes to update. In sync mode that transaction
  runs under the namespace's write lease (fresh data, serialised with every other pod), so these
  decisions are exact across pods; the in-process lock only spares this pod MVCC conflict
  retries in local mode. Transaction bodies are blocking functions that run whole on the engine
  thread (BEGIN, statements and COMMIT in one thread hop); they touch only plain state that
  changes under the write lock (the versionstamp floor, the index list), never the event loop.
* **Versionstamps** are 20 hex digits: ``(epoch ms << 32) + counter``. The last one handed out
  is stored in ``kv_meta`` and, on replicas, read and bumped inside each write transaction, so
  they strictly increase in commit order across pods, whatever their clocks say (a pod whose
  clock is behind continues from the stored one); a local file has one writer process, which
  keeps the counter in memory, seeded at open. A new millisecond starts the counter at a random
  offset, which keeps collisions unlikely even in the opt-in offline write mode, where pods do
  not serialise. Equal strings mean "same write"; string order is commit order.
* **Index generation**: on replicas each entry write also reads ``kv_meta``'s generation of
  ``kv_indexes`` in the same statement as the versionstamp and hands it to the
  :class:`EntryHooks` (search), which reloads its index list when another pod changed it, so the
  write updates exactly the stored indexes.
* **TTL**: ``expires_at`` is epoch milliseconds; every read filters with :data:`LIVE` and
  :meth:`KvStorage.sweep_expired` deletes expired rows (and, through the hooks, their search
  documents).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from ...turso import BlockingDatabase, Database, TransactionType, TursoService
from ._errors import InvalidRequestError, KeyValError, KeyValUnavailableError, outcome_unknown
from ._keys import Key, decode_key, key_json_text, key_to_json
from ._metrics import KvMetrics, Tracked
from ._schema import migrate
from ._values import decode_value

log = logging.getLogger("buntime.plugin.keyval")
T = TypeVar("T")

#: Busy retries per write; the write lock already removes in-process conflicts.
WRITE_RETRIES = 10
SWEEP_BATCH = 500
DEFAULT_LIMIT = 100
#: The TTL filter every read of ``kv_entries`` adds (one parameter: now, epoch ms).
LIVE = "(expires_at IS NULL OR expires_at > ?)"
SELECT_ENTRY = "SELECT key, value, versionstamp, expires_at FROM kv_entries"
_COUNTER_BITS = 32
_COUNTER_START_BITS = 24
_READ_META = (
    "SELECT (SELECT value FROM kv_meta WHERE name = 'versionstamp') AS versionstamp, "
    "(SELECT value FROM kv_meta WHERE name = 'indexes') AS indexes"
)
_BUMP_VERSIONSTAMP = "UPDATE kv_meta SET value = ? WHERE name = 'versionstamp'"
_PUT = "INSERT OR REPLACE INTO kv_entries(key, value, versionstamp, expires_at) VALUES (?, ?, ?, ?)"

State = Literal["unopened", "opened", "closed"]
ChangeType = Literal["set", "delete"]


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
class RawEntry:
    """A live entry whose value is still the stored JSON text (see :func:`entries_json`).

    Every value is stored as the compact JSON that ``encode_value`` made of it (``json.loads``
    of it gives the value back, re-encoding it gives the same text), so the HTTP layer can copy
    it into a response unparsed: decoding and re-encoding the values halved list throughput."""

    key: Key
    value_json: bytes
    versionstamp: str
    expires_at: int | None = None

    def as_json_bytes(self) -> bytes:
        """:meth:`KvEntry.as_json` as JSON bytes, the value copied in as stored."""
        return b"".join(
            (
                b'{"key":',
                key_json_text(self.key).encode("ascii"),
                b',"value":',
                self.value_json,
                b',"versionstamp":"',
                # 20 hex digits: nothing to escape.
                self.versionstamp.encode("ascii"),
                b'","expiresAt":',
                b"null" if self.expires_at is None else str(int(self.expires_at)).encode("ascii"),
                b"}",
            )
        )


def entries_json(entries: Iterable[RawEntry]) -> bytes:
    """A JSON array of :meth:`RawEntry.as_json_bytes`, what the list routes answer."""
    return b"[" + b",".join([e.as_json_bytes() for e in entries]) + b"]"


def raw_value(stored: bytes | str) -> bytes:
    """The stored JSON text of a value as bytes (the column is a BLOB; TEXT is taken too)."""
    return stored.encode("utf-8") if isinstance(stored, str) else bytes(stored)


def row_raw_entry(row: dict[str, Any]) -> RawEntry:
    """The :class:`RawEntry` of a :data:`SELECT_ENTRY` row."""
    return RawEntry(
        decode_key(bytes(row["key"])), raw_value(row["value"]), row["versionstamp"], row["expires_at"]
    )


def row_entry(row: dict[str, Any]) -> KvEntry:
    """The entry of a :data:`SELECT_ENTRY` row."""
    return KvEntry(
        decode_key(bytes(row["key"])), decode_value(row["value"]), row["versionstamp"], row["expires_at"]
    )


def check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidRequestError("limit must be a positive integer", code="INVALID_LIMIT")
    return limit


@dataclass(frozen=True)
class Change:
    """One entry a commit wrote (``set``, with its new value) or deleted (``value`` ``None``).

    ``versionstamp`` is the commit's (``""`` for a plain delete, which takes none)."""

    type: ChangeType
    encoded: bytes
    value: Any
    versionstamp: str


class EntryHooks(Protocol):
    """What search hears of entry writes, inside the write's transaction (engine thread)."""

    def on_generation(self, db: BlockingDatabase, generation: str | None) -> None:
        """The stored ``kv_indexes`` generation, read at the start of a replica's entry write."""

    def on_put(self, db: BlockingDatabase, encoded: bytes, value: Any) -> None:
        """An entry was written."""

    def on_delete_keys(self, db: BlockingDatabase, keys: Iterable[bytes]) -> None:
        """These entries were deleted."""

    def on_delete_range(self, db: BlockingDatabase, lo: bytes, hi: bytes) -> None:
        """Every entry in ``[lo, hi)`` was deleted."""


class ChangeSink(Protocol):
    """What triggers hear: the changes of each commit, on the event loop, after the write lock."""

    @property
    def active(self) -> bool:
        """Whether to record changes at all (no trigger: no bookkeeping)."""

    async def deliver(self, changes: list[Change]) -> None:
        """Handle one commit's changes; must not raise."""


class _Grouped(Generic[T]):
    """One body of :meth:`KvStorage.write_grouped`, its caller's future and the changes it made."""

    __slots__ = ("changes", "fn", "future")

    def __init__(self, fn: Callable[[BlockingDatabase], T], future: asyncio.Future[T]) -> None:
        self.fn = fn
        self.future = future
        self.changes: list[Change] | None = None

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class KvStorage:
    """The storage core of one KeyVal namespace (see the module docstring). Usage (by the layers
    above it)::

        storage = KvStorage(service, namespace="keyval", metrics=KvMetrics())
        await storage.open()                       # migrations, versionstamp seed
        storage.activate()
        with storage.op("set"):
            await storage.write(lambda db: storage.put_in_tx(db, enc, raw, value,
                                versionstamp=storage.next_versionstamp(db), expires_at=None))

    Parameters:

    * **service** — the :class:`~buntime.turso.TursoService`.
    * **namespace** — the Turso namespace.
    * **metrics** — the :class:`KvMetrics` that :meth:`op` tracks operations in.
    * **clock** — ``time.time``-like clock (seconds), for TTLs and versionstamps.
    """

    def __init__(
        self, service: TursoService, *, namespace: str, metrics: KvMetrics, clock: Callable[[], float]
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.metrics = metrics
        self.clock = clock  # replaceable (tests skew it)
        self.state: State = "unopened"
        self._write_lock = asyncio.Lock()
        self._last_versionstamp = 0  # the highest one this process saw (a floor, not the source)
        # Replicas share the database with other pods: their writes read and bump kv_meta. A local
        # file belongs to this process alone (tursodb locks it), so memory is the truth there.
        self.shared = service.config.mode == "sync"
        self._handle: Database | None = None
        self.hooks: EntryHooks | None = None
        self.sink: ChangeSink | None = None
        self._listeners: list[Callable[[], None]] = []
        self._changes: list[Change] | None = None  # the running body's, when recording
        self._group: list[_Grouped[Any]] = []  # grouped writes waiting for the write lock

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Run the migrations and seed the local versionstamp clock (the store stays unusable
        until :meth:`activate`, so the layers above can load their own state first)."""
        if self.state != "unopened":
            raise KeyValUnavailableError(f"the Kv store is {self.state}; open() runs once")
        await migrate(self.service, self.namespace)
        if not self.shared:
            row = await (await self.db()).get(
                "SELECT max(COALESCE((SELECT max(versionstamp) FROM kv_entries), ''), "
                "COALESCE((SELECT value FROM kv_meta WHERE name = 'versionstamp'), '')) AS vs"
            )
            with contextlib.suppress(TypeError, ValueError):  # '' or NULL: an empty store
                self._last_versionstamp = int((row or {})["vs"], 16)

    def activate(self) -> None:
        self.state = "opened"

    async def aclose(self) -> None:
        """Refuse further calls; in-flight writes finish first."""
        async with self._write_lock:
            self.state = "closed"

    @property
    def write_lock(self) -> asyncio.Lock:
        """The lock every write holds (for a caller that runs its own transactions under it)."""
        return self._write_lock

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the event loop after every commit."""
        self._listeners.append(listener)

    # -- plumbing ---------------------------------------------------------------------------
    def check_open(self) -> None:
        if self.state != "opened":
            raise KeyValUnavailableError(f"the KeyVal store is {self.state}")

    def op(self, name: str) -> Tracked:
        """Track an operation: metrics, Turso error translation, and "is the store open?"."""
        return self.metrics.track(name, self.check_open)

    async def db(self) -> Database:
        """The autocommit handle; cached, since its backend lives as long as the service (a
        closed service still raises TursoClosedError through it)."""
        if self._handle is None:
            self._handle = await self.service.connect(self.namespace)
        return self._handle

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @staticmethod
    def expiry(now: int, expire_in: float | None) -> int | None:
        return None if expire_in is None else now + math.ceil(expire_in)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    async def write(
        self,
        fn: Callable[[BlockingDatabase], T],
        *,
        type: TransactionType = "concurrent",
        on_commit: Callable[[T], None] | None = None,
        entries: bool = True,
    ) -> T:
        """Run the blocking ``fn`` in a pushed transaction on the engine thread, under the write
        lock (re-run on busy/conflict errors); ``on_commit`` runs on the event loop, still locked.
        Then the commit listeners run and, outside the lock (a trigger may write again), the
        change sink gets the entries the commit changed.

        With ``entries`` (any write that may touch ``kv_entries``) on a replica the transaction
        first reads ``kv_meta``: the versionstamp to continue from and the index generation
        (for the hooks), so the write updates exactly the stored indexes. A local file has one
        writer process, so there memory is exact and the extra statement (which halved local
        set throughput) is skipped. Bodies run one at a time and in submission order on the
        store's single engine thread, so the plain state they share stays consistent even after
        a cancelled caller released the lock while its body was still running there."""
        sink = self.sink
        changes: list[Change] | None = [] if sink is not None and sink.active else None

        def body(db: BlockingDatabase) -> T:
            if changes is not None:
                changes.clear()  # a retried body starts over
            self._changes = changes
            if entries and self.shared:
                self._read_meta(db)
            return fn(db)

        async with self._write_lock:
            self.check_open()
            txn = self.service.run_transaction(
                body, namespace=self.namespace, type=type, max_retries=WRITE_RETRIES
            )
            if on_commit is None:
                result = await txn
                self._notify()
            else:
                # The engine thread cannot be interrupted: a cancelled caller must not skip
                # on_commit (the index list) for a transaction that commits anyway.
                task = asyncio.ensure_future(txn)
                try:
                    result = await asyncio.shield(task)
                except asyncio.CancelledError:
                    await asyncio.wait([task])
                    if not task.cancelled() and task.exception() is None:
                        on_commit(task.result())
                        self._notify()
                    raise
                on_commit(result)
                self._notify()
        if changes and sink is not None:
            await sink.deliver(list(changes))
        return result

    async def write_grouped(self, fn: Callable[[BlockingDatabase], T]) -> T:
        """:meth:`write` for a small body that many callers send at once (a single-key set):
        the bodies that queued up while the write lock was held run together, in arrival
        order, in one transaction (one engine hop and one commit for all of them).

        Each body still takes its own decisions inside the shared transaction, in order (its
        versionstamp from the clock and, on replicas, ``kv_meta``), its caller still gets its
        own result, and the change sink gets each caller's changes from that caller, after the
        lock, as with :meth:`write`. Should any body fail, the shared transaction rolls back
        and every body of the group runs again in a transaction of its own, so one bad write
        fails only its own caller. A caller cancelled before its group started writes nothing;
        once started, its write commits with the group (as a cancelled :meth:`write` does)."""
        item = _Grouped(fn, asyncio.get_running_loop().create_future())
        self._group.append(item)
        try:
            async with self._write_lock:
                if item in self._group:  # not taken by an earlier group: lead the next one
                    group, self._group = self._group, []
                    task = asyncio.ensure_future(self._run_group(group))
                    try:
                        await asyncio.shield(task)
                    except asyncio.CancelledError:
                        # The followers' results come from this task: let it finish, locked.
                        await asyncio.wait([task])
                        raise
        except asyncio.CancelledError:
            if item in self._group:
                self._group.remove(item)
            item.future.cancel()
            raise
        result: T = item.future.result()
        if item.changes and self.sink is not None:
            await self.sink.deliver(list(item.changes))
        return result

    async def _run_group(self, group: list[_Grouped[Any]]) -> None:
        """Run ``group`` under the write lock and settle every item's future (never raises)."""
        try:
            self.check_open()
            try:
                await self._transact_group(group)
            except Exception as exc:
                if len(group) == 1 or outcome_unknown(exc):
                    raise  # an outcome nobody knows is never re-run: every body fails with it
                log.debug("KeyVal grouped write failed; writing its %d bodies one by one", len(group))
                for item in group:
                    try:
                        await self._transact_group([item])
                    except Exception as exc:
                        item.fail(exc)
        except Exception as exc:
            for item in group:
                item.fail(exc)

    async def _transact_group(self, group: list[_Grouped[Any]]) -> None:
        """One pushed transaction of the bodies of ``group``, in order; settles their futures
        once it committed (raises, settling none, when it did not)."""
        sink = self.sink
        record = sink is not None and sink.active

        def body(db: BlockingDatabase) -> list[Any]:
            if self.shared:
                self._read_meta(db)
            results = []
            for item in group:
                item.changes = [] if record else None  # a retried body starts over
                self._changes = item.changes
                results.append(item.fn(db))
            self._changes = None
            return results

        results = await self.service.run_transaction(
            body, namespace=self.namespace, type="concurrent", max_retries=WRITE_RETRIES
        )
        self._notify()
        for item, result in zip(group, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    def _read_meta(self, db: BlockingDatabase) -> None:
        """Start of a replica's entry write (engine thread): learn the stored versionstamp and
        the index generation. Both come from committed state, so a rollback of this transaction
        leaves them true."""
        row = db.get(_READ_META) or {}
        with contextlib.suppress(TypeError, ValueError):  # '' or NULL: nothing handed out yet
            self._last_versionstamp = max(self._last_versionstamp, int(row["versionstamp"], 16))
        if self.hooks is not None:
            self.hooks.on_generation(db, row.get("indexes"))

    # -- inside a write's transaction (engine thread) ---------------------------------------
    def next_versionstamp(self, db: BlockingDatabase) -> str:
        """The next versionstamp, recorded in ``kv_meta`` on replicas: greater than every one
        committed before (see the module docstring)."""
        base = self.now_ms() << _COUNTER_BITS
        if self._last_versionstamp >= base:
            self._last_versionstamp += 1
        else:
            self._last_versionstamp = base + random.getrandbits(_COUNTER_START_BITS)
        versionstamp = f"{self._last_versionstamp:020x}"
        if self.shared:  # local mode: seeded at open from the entries, one writer process
            db.run(_BUMP_VERSIONSTAMP, [versionstamp])
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
        """Write one entry (and, through the hooks, its search documents)."""
        db.run(_PUT, [encoded, raw, versionstamp, expires_at])
        if self.hooks is not None:
            self.hooks.on_put(db, encoded, value)
        if self._changes is not None:
            self._changes.append(Change("set", encoded, value, versionstamp))

    def delete_in_tx(
        self, db: BlockingDatabase, encoded: bytes, exact: bool, now: int, *, versionstamp: str = ""
    ) -> int:
        """Delete ``encoded`` (and its children unless ``exact``); return the live keys deleted."""
        if exact:
            rows = db.all("DELETE FROM kv_entries WHERE key = ? RETURNING key, expires_at", [encoded])
            if self.hooks is not None:
                self.hooks.on_delete_keys(db, [encoded])
        else:
            hi = encoded + b"\xff"
            rows = db.all(
                "DELETE FROM kv_entries WHERE key >= ? AND key < ? RETURNING key, expires_at", [encoded, hi]
            )
            if self.hooks is not None:
                self.hooks.on_delete_range(db, encoded, hi)
        return self._deleted(rows, now, versionstamp)

    def delete_where_in_tx(
        self,
        db: BlockingDatabase,
        encoded: bytes,
        exact: bool,
        now: int,
        filtered: tuple[str, list[Any]],
    ) -> int:
        """:meth:`delete_in_tx` of the entries whose values match a compiled ``where`` filter."""
        filter_sql, filter_params = filtered
        span = "key = ?" if exact else "key >= ? AND key < ?"
        bounds = [encoded] if exact else [encoded, encoded + b"\xff"]
        rows = db.all(
            f"DELETE FROM kv_entries WHERE {span} AND {filter_sql} RETURNING key, expires_at",
            [*bounds, *filter_params],
        )
        if self.hooks is not None:
            self.hooks.on_delete_keys(db, [bytes(r["key"]) for r in rows])
        return self._deleted(rows, now, "")

    def _deleted(self, rows: list[dict[str, Any]], now: int, versionstamp: str) -> int:
        live = [r for r in rows if r["expires_at"] is None or r["expires_at"] > now]
        if self._changes is not None:
            self._changes.extend(Change("delete", bytes(r["key"]), None, versionstamp) for r in live)
        return len(live)

    # -- TTL --------------------------------------------------------------------------------
    async def sweep_expired(self) -> int:
        """Delete expired entries (and their search documents) in batches; return how many.
        Expiry is no write: it fires no trigger."""
        total = 0
        with self.op("ttl_sweep"):
            while True:

                def fn(db: BlockingDatabase) -> int:
                    rows = db.all(
                        "DELETE FROM kv_entries WHERE key IN (SELECT key FROM kv_entries "
                        "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?) RETURNING key",
                        [self.now_ms(), SWEEP_BATCH],
                    )
                    if self.hooks is not None:
                        self.hooks.on_delete_keys(db, [bytes(r["key"]) for r in rows])
                    return len(rows)

                done = await self.write(fn)
                total += done
                if done < SWEEP_BATCH:
                    return total

    async def storage_stats(self) -> dict[str, int]:
        """``{"entries", "sizeBytes"}``: live entries and the bytes of their keys and values
        (one statement)."""
        with self.op("storage_stats"):
            row = await (await self.db()).get(
                "SELECT count(*) AS n, COALESCE(sum(length(key) + length(value)), 0) AS size "
                f"FROM kv_entries WHERE {LIVE}",
                [self.now_ms()],
            )
            row = row or {}
            stats = {"entries": int(row.get("n") or 0), "sizeBytes": int(row.get("size") or 0)}
            self.metrics.set_storage(stats["entries"], stats["sizeBytes"])
            return stats

    # -- background -------------------------------------------------------------------------
    def every(self, interval: float, job: Callable[[], Awaitable[int]], name: str) -> asyncio.Task[None]:
        """A task running ``job`` every ``interval`` seconds, logging (not raising) failures."""
        return asyncio.create_task(_every(interval, job, name), name=f"keyval:{name}")


async def _every(interval: float, job: Callable[[], Awaitable[int]], name: str) -> None:
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
