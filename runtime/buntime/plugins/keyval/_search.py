"""Search indexes: plain ``kv_fts_<16 hex>`` tables kept in step with ``kv_entries``.

Turso's MVCC mode rejects virtual tables, so there is no FTS5: each index is a regular table
``(doc_key TEXT PRIMARY KEY, document TEXT NOT NULL)`` holding, for every key under the index
prefix, the upper-case hex of the key and the case-folded text of the indexed fields. A query
is an OR of AND-groups of terms, each term a case-insensitive substring test (``instr``).

:class:`KvSearch` sits on the storage core and registers as its entry hooks: the core calls
them *inside* the transaction of every entry write (set, delete, prefix delete, atomic,
transaction, TTL sweep, dead-lettering), so an index never disagrees with its entries; like
every transaction body they are blocking and run on the engine thread. The index tables' DDL
(create, drop, rebuild) lives here too. The in-memory index list only decides which tables a
write touches; it is loaded at start-up, updated under the write lock, reloaded after a sync
pull, and checked against ``kv_meta``'s index generation at the start of every replica write
transaction (:meth:`KvSearch.on_generation`; a write never misses an index another pod created:
the check and the write commit together). ``search`` reads the metadata rows from the table
every time (in the same statement as the matches, see :func:`search_sql`), so it works right
after a restart (an upstream defect).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...turso import BlockingDatabase, Database, TursoQueryError
from ._errors import InvalidRequestError, KeyValNotFoundError, KeyValStorageError
from ._keys import Key, decode_key, encode_key, hex_key, key_to_json, prefix_range
from ._storage import DEFAULT_LIMIT, LIVE, WRITE_RETRIES, KvEntry, KvStorage, check_limit, row_entry
from ._values import decode_value
from ._where import compile_where

INDEX_TABLE_PREFIX = "kv_fts_"
INDEX_TABLE_PATTERN = re.compile(r"kv_fts_[0-9a-f]{16}")  # fullmatch: $ would let a newline through
DEFAULT_TOKENIZE = "unicode61"
MAX_QUERY_TERMS = 32
MAX_INDEX_FIELDS = 32
OPERATOR_AND = "AND"
OPERATOR_OR = "OR"
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_FIELD_TERM = re.compile(r"^([A-Za-z_][\w.]*):(.+)$")
_INSERT_CHUNK = 200
_SELECT_INDEXES = (
    "SELECT prefix, fields, tokenize, table_name, created_at FROM kv_indexes ORDER BY hex(prefix)"
)
_BUMP_INDEXES = "UPDATE kv_meta SET value = ? WHERE name = 'indexes'"


def index_table_name(encoded_prefix: bytes) -> str:
    """``kv_fts_`` + the first 16 hex digits of sha256(encoded prefix), as upstream."""
    return INDEX_TABLE_PREFIX + hashlib.sha256(encoded_prefix).hexdigest()[:16]


@dataclass(frozen=True)
class IndexInfo:
    """One search index: its prefix, indexed fields (dot paths) and table."""

    prefix: Key
    encoded: bytes
    fields: tuple[str, ...]
    tokenize: str
    table: str
    created_at: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> IndexInfo:
        table = str(row["table_name"])
        if not INDEX_TABLE_PATTERN.fullmatch(table):  # never interpolate a tampered name into SQL
            raise KeyValStorageError(f"kv_indexes holds an invalid table name {table!r}")
        encoded = bytes(row["prefix"])
        return cls(
            prefix=decode_key(encoded),
            encoded=encoded,
            fields=tuple(json.loads(row["fields"])),
            tokenize=str(row["tokenize"]),
            table=table,
            created_at=int(row["created_at"]),
        )

    def agrees_with(self, other: IndexInfo | None) -> bool:
        """Whether ``other`` is this index on the same table with the same fields (same documents)."""
        if other is None:
            return False
        return (self.encoded, self.fields, self.table) == (other.encoded, other.fields, other.table)

    def covers(self, encoded_key: bytes) -> bool:
        lo, hi = prefix_range(self.encoded)
        return lo <= encoded_key < hi

    def covers_prefix(self, encoded_prefix: bytes) -> bool:
        """Whether searching under ``encoded_prefix`` can use this index (same or deeper prefix)."""
        return encoded_prefix == self.encoded or self.covers(encoded_prefix)

    def overlaps(self, lo: bytes, hi: bytes) -> bool:
        ilo, ihi = prefix_range(self.encoded)
        return lo < ihi and ilo < hi

    def as_json(self) -> dict[str, Any]:
        return {
            "prefix": key_to_json(self.prefix),
            "fields": list(self.fields),
            "tokenize": self.tokenize,
            "table": self.table,
            "createdAt": self.created_at,
        }


def _field_text(value: Any, path: str) -> list[str]:
    current = value
    for step in path.split("."):
        if isinstance(current, dict) and step in current:
            current = current[step]
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return []
    if current is None or isinstance(current, dict):
        return []
    if isinstance(current, list):
        return [str(v) for v in current if v is not None and not isinstance(v, dict | list)]
    return [str(current)]


def build_document(value: Any, fields: Iterable[str]) -> str:
    """The searchable text of a value: its fields' values joined by spaces, case-folded."""
    return " ".join(text for field in fields for text in _field_text(value, field)).casefold()


def parse_query(query: str, fields: Iterable[str] = ()) -> list[list[str]]:
    """``'a b OR "c d"'`` -> ``[["a", "b"], ["c d"]]``: OR of AND-groups, terms case-folded.

    Adjacent terms and ``AND`` combine; ``OR`` starts a new group (so AND binds tighter).
    ``field:term`` drops the field name when it is one of the index's fields; matching is
    against the whole document either way.
    """
    known = set(fields)
    groups: list[list[str]] = [[]]
    count = 0
    for match in _TOKEN.finditer(query):
        quoted, bare = match.group(1), match.group(2)
        if bare == OPERATOR_OR:
            groups.append([])
            continue
        if bare == OPERATOR_AND:
            continue
        term = quoted if quoted is not None else bare
        if bare is not None and (field := _FIELD_TERM.match(bare)) and field.group(1) in known:
            term = field.group(2)
        term = term.strip().casefold()
        if term:
            groups[-1].append(term)
            count += 1
    groups = [g for g in groups if g]
    if not groups:
        raise InvalidRequestError("the search query has no terms", code="INVALID_QUERY")
    if count > MAX_QUERY_TERMS:
        raise InvalidRequestError(f"at most {MAX_QUERY_TERMS} search terms", code="INVALID_QUERY")
    return groups


def match_sql(groups: list[list[str]], column: str = "f.document") -> tuple[str, list[str]]:
    """The WHERE fragment and parameters for :func:`parse_query`'s groups."""
    clauses = ["(" + " AND ".join(f"instr({column}, ?) > 0" for _ in group) + ")" for group in groups]
    return "(" + " OR ".join(clauses) + ")", [term for group in groups for term in group]


class SearchIndexes:
    """The known indexes and the statements that keep their tables in step with entries."""

    def __init__(self) -> None:
        self._by_prefix: dict[bytes, IndexInfo] = {}
        self.loaded = False

    @property
    def all(self) -> list[IndexInfo]:
        return list(self._by_prefix.values())

    def replace_all(self, indexes: Iterable[IndexInfo]) -> None:
        self._by_prefix = {i.encoded: i for i in indexes}
        self.loaded = True

    def put(self, info: IndexInfo) -> None:
        self._by_prefix[info.encoded] = info

    def drop(self, encoded_prefix: bytes) -> None:
        self._by_prefix.pop(encoded_prefix, None)

    def get(self, encoded_prefix: bytes) -> IndexInfo | None:
        return self._by_prefix.get(encoded_prefix)

    def deepest(self, encoded_prefix: bytes) -> IndexInfo | None:
        """The known index :meth:`search <buntime.plugins.keyval.Kv.search>` would use, if any."""
        return deepest_covering(self._by_prefix.values(), encoded_prefix)

    @staticmethod
    async def read_all(db: Database) -> list[IndexInfo]:
        return [IndexInfo.from_row(r) for r in await db.all(_SELECT_INDEXES)]

    # -- maintenance, inside the caller's write transaction (on the engine thread) ----------
    def index(self, db: BlockingDatabase, items: Iterable[tuple[bytes, Any]]) -> None:
        """Upsert (or remove, when the value has no indexed text) the documents of ``items``."""
        if not self._by_prefix:
            return
        for encoded, value in items:
            for info in self._by_prefix.values():
                if info.covers(encoded):
                    write_document(db, info, encoded, value)

    def unindex_keys(self, db: BlockingDatabase, keys: Iterable[bytes]) -> None:
        if not self._by_prefix:
            return
        for encoded in keys:
            for info in self._by_prefix.values():
                if info.covers(encoded):
                    db.run(f"DELETE FROM {info.table} WHERE doc_key = ?", [hex_key(encoded)])

    def unindex_range(self, db: BlockingDatabase, lo: bytes, hi: bytes) -> None:
        """Remove the documents of every key in ``[lo, hi)`` (hex order is byte order)."""
        for info in self._by_prefix.values():
            if info.overlaps(lo, hi):
                db.run(
                    f"DELETE FROM {info.table} WHERE doc_key >= ? AND doc_key < ?", [hex_key(lo), hex_key(hi)]
                )


def read_indexes(db: BlockingDatabase) -> list[IndexInfo]:
    """Every stored index, inside the caller's transaction (engine thread)."""
    return [IndexInfo.from_row(r) for r in db.all(_SELECT_INDEXES)]


def deepest_covering(indexes: Iterable[IndexInfo], encoded_prefix: bytes) -> IndexInfo | None:
    """The index with the longest prefix among those that cover ``encoded_prefix``."""
    candidates = [i for i in indexes if i.covers_prefix(encoded_prefix)]
    return max(candidates, key=lambda i: len(i.encoded)) if candidates else None


def search_sql(info: IndexInfo, where: str) -> str:
    """One statement for a search on ``info``: every ``kv_indexes`` row (``kind`` 0, columns
    renamed), then the live entries in ``[?, ?)`` alive at ``?`` matching ``where``, ``LIMIT ?``.

    Returning the stored indexes with the matches lets the caller check, in the same snapshot
    and the same engine call, that ``info`` is still the index the stored metadata picks.
    """
    return (
        "SELECT 0 AS kind, prefix AS key, fields AS value, table_name AS versionstamp, "
        "created_at AS expires_at, tokenize FROM kv_indexes UNION ALL SELECT * FROM ("
        "SELECT 1, e.key, e.value, e.versionstamp, e.expires_at, NULL FROM kv_entries e "
        f"JOIN {info.table} f ON f.doc_key = hex(e.key) "
        f"WHERE e.key >= ? AND e.key < ? AND (e.expires_at IS NULL OR e.expires_at > ?) AND {where} "
        "ORDER BY hex(e.key) LIMIT ?)"
    )


def split_search_rows(rows: list[dict[str, Any]]) -> tuple[list[IndexInfo], list[dict[str, Any]]]:
    """The stored indexes and the entry rows (in key order) of a :func:`search_sql` result."""
    indexes = [
        IndexInfo.from_row(
            {
                "prefix": r["key"],
                "fields": r["value"],
                "tokenize": r["tokenize"],
                "table_name": r["versionstamp"],
                "created_at": r["expires_at"],
            }
        )
        for r in rows
        if r["kind"] == 0
    ]
    entries = sorted((r for r in rows if r["kind"] != 0), key=lambda r: bytes(r["key"]))
    return indexes, entries


def write_document(db: BlockingDatabase, info: IndexInfo, encoded: bytes, value: Any) -> None:
    document = build_document(value, info.fields)
    if document:
        db.run(
            f"INSERT OR REPLACE INTO {info.table}(doc_key, document) VALUES (?, ?)",
            [hex_key(encoded), document],
        )
    else:
        db.run(f"DELETE FROM {info.table} WHERE doc_key = ?", [hex_key(encoded)])


def rebuild(db: BlockingDatabase, info: IndexInfo, rows: Iterable[tuple[bytes, Any]]) -> int:
    """Refill an index table from scratch (index creation, or catching up after a pull)."""
    db.run(f"DELETE FROM {info.table}")
    batch: list[str] = []
    written = 0
    for encoded, value in rows:
        document = build_document(value, info.fields)
        if document:
            batch.extend((hex_key(encoded), document))
            written += 1
        if len(batch) >= 2 * _INSERT_CHUNK:
            _insert_many(db, info.table, batch)
            batch = []
    if batch:
        _insert_many(db, info.table, batch)
    return written


def _insert_many(db: BlockingDatabase, table: str, flat: list[str]) -> None:
    placeholders = ", ".join("(?, ?)" for _ in range(len(flat) // 2))
    db.run(f"INSERT OR REPLACE INTO {table}(doc_key, document) VALUES {placeholders}", flat)


def create_table_sql(table: str) -> str:
    """The DDL of an index table (``table`` matches :data:`INDEX_TABLE_PATTERN`)."""
    return f"CREATE TABLE IF NOT EXISTS {table} (doc_key TEXT PRIMARY KEY, document TEXT NOT NULL)"


class KvSearch:
    """Search on one store: index management, queries, and the entry hooks of the storage core.

    Usage (through :class:`~buntime.plugins.keyval.Kv`, which delegates)::

        info = await kv.create_index(["posts"], ["title", "body"])
        hits = await kv.search(["posts"], "python OR rust", limit=10, where={"draft": False})

    Parameters:

    * **storage** — the storage core it sits on (and hooks into).
    """

    def __init__(self, storage: KvStorage) -> None:
        self._storage = storage
        self.indexes = SearchIndexes()
        self.generation: str | None = None  # kv_meta's generation of the list in ``indexes``
        storage.hooks = self

    async def load(self) -> None:
        """Read the stored index list (at open)."""
        self.indexes.replace_all(await SearchIndexes.read_all(await self._storage.db()))

    # -- entry hooks (engine thread, inside the write's transaction) -------------------------
    def on_generation(self, db: BlockingDatabase, generation: str | None) -> None:
        if generation is None or generation != self.generation:
            self.indexes.replace_all(read_indexes(db))
            self.generation = generation

    def on_put(self, db: BlockingDatabase, encoded: bytes, value: Any) -> None:
        self.indexes.index(db, [(encoded, value)])

    def on_delete_keys(self, db: BlockingDatabase, keys: Iterable[bytes]) -> None:
        self.indexes.unindex_keys(db, keys)

    def on_delete_range(self, db: BlockingDatabase, lo: bytes, hi: bytes) -> None:
        self.indexes.unindex_range(db, lo, hi)

    # -- index management -------------------------------------------------------------------
    async def create_index(
        self, prefix: Sequence[Any], fields: Sequence[str], *, tokenize: str = DEFAULT_TOKENIZE
    ) -> IndexInfo:
        """Index the ``fields`` (dot paths into values) of keys under ``prefix``; existing keys too.

        Re-creating an index replaces its fields and rebuilds it. ``tokenize`` is recorded for
        upstream compatibility; matching is always a case-insensitive substring test.
        """
        storage = self._storage
        with storage.op("index_create"):
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
                now = storage.now_ms()
                info = IndexInfo(
                    tuple(prefix), encoded, tuple(f.strip() for f in fields), tokenize, table, now
                )
                db.exec(create_table_sql(table))
                db.run(
                    "INSERT OR REPLACE INTO kv_indexes(prefix, fields, tokenize, table_name, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [encoded, json.dumps(list(info.fields)), tokenize, table, now],
                )
                self.rebuild_in_tx(db, info, now)
                return info, _bump_generation(db)

            def on_commit(done: tuple[IndexInfo, str | None]) -> None:
                self.indexes.put(done[0])
                self.generation = done[1]

            info, _ = await storage.write(fn, type="exclusive", on_commit=on_commit)
            return info

    def rebuild_in_tx(self, db: BlockingDatabase, info: IndexInfo, now: int) -> int:
        lo, hi = prefix_range(info.encoded)
        rows = db.all(
            f"SELECT key, value FROM kv_entries WHERE key >= ? AND key < ? AND {LIVE}", [lo, hi, now]
        )
        return rebuild(db, info, ((bytes(r["key"]), decode_value(r["value"])) for r in rows))

    async def remove_index(self, prefix: Sequence[Any]) -> bool:
        """Drop the index on exactly ``prefix``; ``False`` when there is none."""
        storage = self._storage
        with storage.op("index_remove"):
            encoded = encode_key(prefix)

            def fn(db: BlockingDatabase) -> tuple[bool, str | None]:
                row = db.get("SELECT table_name FROM kv_indexes WHERE prefix = ?", [encoded])
                if row is None:
                    return False, self.generation
                table = str(row["table_name"])
                if INDEX_TABLE_PATTERN.fullmatch(table):
                    db.exec(f"DROP TABLE IF EXISTS {table}")
                db.run("DELETE FROM kv_indexes WHERE prefix = ?", [encoded])
                return True, _bump_generation(db)

            def on_commit(done: tuple[bool, str | None]) -> None:
                self.indexes.drop(encoded)
                self.generation = done[1]

            removed, _ = await storage.write(fn, type="exclusive", on_commit=on_commit)
            return removed

    async def list_indexes(self) -> list[IndexInfo]:
        """Every index, read from ``kv_indexes`` (not from memory)."""
        with self._storage.op("index_list"):
            return await SearchIndexes.read_all(await self._storage.db())

    # -- queries ----------------------------------------------------------------------------
    async def search(
        self, prefix: Sequence[Any], query: str, *, limit: int = DEFAULT_LIMIT, where: Any = None
    ) -> list[KvEntry]:
        """Live entries under ``prefix`` whose indexed text matches ``query`` (see :func:`parse_query`).

        Uses the deepest index on ``prefix`` or one of its ancestors, found in ``kv_indexes`` on
        every call, so it works straight after a restart. One statement normally: it searches the
        index the in-memory list picks and returns the stored index rows with the matches, so
        the pick is checked in the same snapshot; when the list is stale (another pod's index,
        not yet refreshed) a second statement searches the index those stored rows pick.
        """
        storage = self._storage
        with storage.op("search"):
            limit = check_limit(limit)
            if not isinstance(query, str):
                raise InvalidRequestError("query must be a string", code="INVALID_QUERY")
            encoded = encode_key(prefix)
            bounds = prefix_range(encoded)
            filtered = compile_where(where, column="e.value", now_ms=storage.now_ms())
            db = await storage.db()
            stored: list[IndexInfo] | None = None
            guess = self.indexes.deepest(encoded)
            if guess is not None:
                # A bad query or a vanished table is reported (or not) by the checked path below.
                with contextlib.suppress(InvalidRequestError, TursoQueryError):
                    stored, rows = await self._search_on(db, guess, query, bounds, limit, filtered=filtered)
                    if guess.agrees_with(deepest_covering(stored, encoded)):
                        return [row_entry(r) for r in rows]
            if stored is None:
                stored = await SearchIndexes.read_all(db)
            info = deepest_covering(stored, encoded)
            if info is None:
                raise KeyValNotFoundError(
                    f"no search index covers prefix {key_to_json(tuple(prefix))!r}", code="INDEX_NOT_FOUND"
                )
            _, rows = await self._search_on(db, info, query, bounds, limit, filtered=filtered)
            return [row_entry(r) for r in rows]

    async def _search_on(
        self,
        db: Database,
        info: IndexInfo,
        query: str,
        bounds: tuple[bytes, bytes],
        limit: int,
        *,
        filtered: tuple[str, list[Any]],
    ) -> tuple[list[IndexInfo], list[dict[str, Any]]]:
        """The stored indexes and the matching entry rows of one search statement on ``info``."""
        where, terms = match_sql(parse_query(query, info.fields))
        filter_sql, filter_params = filtered
        rows = await db.all(
            search_sql(info, f"{where} AND {filter_sql}"),
            [*bounds, self._storage.now_ms(), *terms, *filter_params, limit],
        )
        return split_search_rows(rows)

    # -- other pods -------------------------------------------------------------------------
    async def refresh(self, *, catch_up: bool) -> int:
        """Reload the index list after a pull; with ``catch_up`` (offline write mode) also
        rebuild the indexes that are new here. Return how many were rebuilt.

        Offline writes do not serialise with other pods, so this pod may have written entries
        before it learned of an index another pod created (their documents were never written):
        the rebuild catches them up. Serializable and local writes check the index generation
        inside their own transaction (:meth:`on_generation`) and never miss an index, so there
        the reload only keeps searches' first guess current.
        """
        storage = self._storage
        with storage.op("refresh"):
            rebuilt = 0
            async with storage.write_lock:
                storage.check_open()
                db = await storage.db()
                fresh = await SearchIndexes.read_all(db)
                stale = [i for i in fresh if catch_up and not i.agrees_with(self.indexes.get(i.encoded))]
                self.indexes.replace_all(fresh)
                for info in stale:

                    def fn(tx: BlockingDatabase, info: IndexInfo = info) -> int:
                        return self.rebuild_in_tx(tx, info, storage.now_ms())

                    await storage.service.run_transaction(
                        fn, namespace=storage.namespace, max_retries=WRITE_RETRIES
                    )
                    rebuilt += 1
            return rebuilt


def _bump_generation(db: BlockingDatabase) -> str:
    """Tell every pod's next write that ``kv_indexes`` changed; the new generation.

    A random token, not a counter: a change that was rolled back after this pod saw it
    (a failed group push) must never look like another pod's later change."""
    generation = secrets.token_hex(8)
    db.run(_BUMP_INDEXES, [generation])
    return generation
