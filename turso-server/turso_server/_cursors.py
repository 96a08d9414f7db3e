"""Push cursors: the server answers a sync client's "what did you last get from me?" itself.

pyturso pushes in two ``/v2/pipeline`` requests (measured, docs/consistency.md): first it reads its
cursor, ``SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?``, then it
sends one batch ``BEGIN IMMEDIATE`` … its changes … an upsert of that same row … ``COMMIT``. Every
push of every replica therefore paid a round trip to tursodb for a value the server had just seen
go by. :class:`PushCursors` remembers each client's row, per namespace, from what tursodb itself
said: the rows of a forwarded cursor read, or the upsert's values once tursodb answered that every
step of the batch ran (``COMMIT`` included). A cursor read it knows is answered from memory, in the
reply shape tursodb uses; everything else still goes to tursodb.

The cache must never be ahead of or behind the database (ahead: the client skips changes that never
landed; behind: it sends landed ones again), so an entry is dropped whenever that could happen:

* the namespace's child is not the one the entry was learned from (a restart, a delete and
  re-create, a restore): entries are kept per child (its :class:`WarmConnections` object);
* a push batch is on its way for that client (dropped before it is forwarded, set only from a
  reply whose every step ran without error; a failed step still lets tursodb ``COMMIT`` the rest,
  so the database may hold a new cursor: read it again);
* a batch that could undo its own upsert without an error: only ``BEGIN IMMEDIATE`` … ``COMMIT``
  with no transaction control in between counts as a cursor write. A step between them that
  contains the word ``SAVEPOINT``, ``RELEASE``, ``ROLLBACK``, ``BEGIN``, ``COMMIT`` or ``END``
  anywhere (``SAVEPOINT s`` … upsert … ``ROLLBACK TO s`` runs without error and keeps nothing) makes
  the batch one that touches the table instead. Matching the word anywhere, strings and comments
  included, can only forget more (a trigger's ``BEGIN … END`` or a ``CASE … END`` in a pushed
  change costs one read from tursodb), never less;
* a cursor read answered by tursodb while a push of the same namespace was in flight is not
  remembered (``generation`` moved);
* any other request carrying the client's write statements (or a statement by stored id, which
  could be anything) forgets the namespace's entries. Other statements that name the table can
  only be reads: the SQL guard refuses the rest (``_sqlguard.check_sql``).

Replies from memory still pass the lease checks of the request they answer (``_proxy``), so a
fenced read with a lost lease is refused as before.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

CURSOR_TABLE = "turso_sync_last_change_id"
READ_SQL = "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?"
CREATE_SQL = (
    "CREATE TABLE IF NOT EXISTS turso_sync_last_change_id "
    "(client_id TEXT PRIMARY KEY, pull_gen INTEGER, change_id INTEGER)"
)
UPSERT_SQL = (
    "INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id) VALUES (?, ?, ?) "
    "ON CONFLICT(client_id) DO UPDATE SET pull_gen=excluded.pull_gen, change_id=excluded.change_id"
)
_WRITES = frozenset({CREATE_SQL, UPSERT_SQL, CURSOR_TABLE})  # the last: a statement by stored id
# Transaction control a push batch's inner steps must not contain (as a word, anywhere in the text).
_TRANSACTION_CONTROL = re.compile(r"\b(?:savepoint|release|rollback|begin|commit|end)\b", re.IGNORECASE)
MAX_CLIENTS = 1024  # per namespace; an evicted client's next read simply goes to tursodb
_COLUMNS = [{"name": "pull_gen", "decltype": "INTEGER"}, {"name": "change_id", "decltype": "INTEGER"}]

Row = list[dict[str, Any]]  # one row of Hrana values, as tursodb sends them


@dataclass(frozen=True)
class CursorRead:
    client: str


@dataclass(frozen=True)
class CursorWrite:
    client: str
    row: Row
    steps: int


class Touches:
    """A request that names the cursor table in some other way: forget the namespace."""


TOUCHES = Touches()
Kind = CursorRead | CursorWrite | Touches | None


def _steps(document: Any) -> list[Any] | None:
    """The steps of a pipeline that is exactly one batch on a new stream, else ``None``."""
    if not isinstance(document, dict) or document.get("baton") is not None:
        return None
    requests = document.get("requests")
    if not isinstance(requests, list) or len(requests) != 1:
        return None
    request = requests[0]
    if not isinstance(request, dict) or request.get("type") != "batch":
        return None
    batch = request.get("batch")
    steps = batch.get("steps") if isinstance(batch, dict) else None
    return steps if isinstance(steps, list) and steps else None


def _stmt(step: Any) -> dict[str, Any]:
    stmt = step.get("stmt") if isinstance(step, dict) else None
    return stmt if isinstance(stmt, dict) else {}


def _plain(stmt: dict[str, Any]) -> bool:
    """Positional arguments only, nothing stored or named."""
    return stmt.get("sql_id") is None and not stmt.get("named_args") and isinstance(stmt.get("args"), list)


def _value(arg: Any, kind: str) -> bool:
    return isinstance(arg, dict) and arg.get("type") == kind and isinstance(arg.get("value"), str)


def _controls_transaction(sql: Any) -> bool:
    """Whether a push batch's inner step could be transaction control (no text: it could be anything)."""
    return not isinstance(sql, str) or _TRANSACTION_CONTROL.search(sql) is not None


def classify(document: Any, texts: list[str]) -> Kind:
    """What a checked pipeline does to the cursor table; ``texts`` are all its SQL texts.

    The guard lets a text that names the table through only if it is one of the sync client's own
    statements or a ``SELECT``, so only those two can change a row; anything else is a read.
    """
    if not any(CURSOR_TABLE in text.lower() for text in texts):
        return None
    writes = any(text in _WRITES for text in texts)
    steps = _steps(document)
    if steps is None:
        return TOUCHES if writes else None
    if len(steps) == 1 and not writes:
        step, stmt = steps[0], _stmt(steps[0])
        args = stmt.get("args")
        if (
            step.get("condition") is None
            and stmt.get("sql") == READ_SQL
            and _plain(stmt)
            and stmt.get("want_rows") is True
            and isinstance(args, list)
            and len(args) == 1
            and _value(args[0], "text")
        ):
            return CursorRead(args[0]["value"])
        return None
    if not writes:
        return None
    upserts = [s for s in steps if _stmt(s).get("sql") == UPSERT_SQL]
    others = [s for s in steps if _stmt(s).get("sql") not in (UPSERT_SQL, CREATE_SQL)]
    if (
        len(upserts) != 1
        or _stmt(steps[0]).get("sql") != "BEGIN IMMEDIATE"
        or _stmt(steps[-1]).get("sql") != "COMMIT"
        or any(CURSOR_TABLE in str(_stmt(s).get("sql", "")).lower() for s in others)
        or any(_controls_transaction(_stmt(s).get("sql")) for s in steps[1:-1])
    ):
        return TOUCHES
    stmt = _stmt(upserts[0])
    args = stmt.get("args")
    if not (
        _plain(stmt)
        and isinstance(args, list)
        and len(args) == 3
        and _value(args[0], "text")
        and _value(args[1], "integer")
        and _value(args[2], "integer")
    ):
        return TOUCHES
    return CursorWrite(args[0]["value"], [dict(args[1]), dict(args[2])], len(steps))


def _batch_result(reply: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(reply)
        result = document["results"][0]
        if result.get("type") != "ok":
            return None
        batch = result["response"]
        if batch.get("type") != "batch":
            return None
        outcome: dict[str, Any] = batch["result"]
        return outcome
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def all_steps_ran(reply: bytes, steps: int) -> bool:
    """Whether tursodb's reply says every one of ``steps`` steps ran, and none failed."""
    result = _batch_result(reply)
    if result is None:
        return False
    results, errors = result.get("step_results"), result.get("step_errors")
    return (
        isinstance(results, list)
        and isinstance(errors, list)
        and len(results) == len(errors) == steps
        and all(r is not None for r in results)
        and all(e is None for e in errors)
    )


def read_rows(reply: bytes) -> list[Row] | None:
    """The rows of a cursor read's reply (``[]``: the client has no row yet), or ``None``."""
    result = _batch_result(reply)
    if result is None or result.get("step_errors") != [None]:
        return None
    steps = result.get("step_results")
    if not isinstance(steps, list) or len(steps) != 1 or not isinstance(steps[0], dict):
        return None
    rows = steps[0].get("rows")
    if not isinstance(rows, list) or len(rows) > 1:
        return None
    if rows and not (isinstance(rows[0], list) and len(rows[0]) == 2):
        return None
    return rows


def read_reply(rows: list[Row]) -> bytes:
    """The reply tursodb 0.7.0 gives a cursor read, for ``rows``."""
    step = {
        "cols": _COLUMNS,
        "rows": rows,
        "affected_row_count": 0,
        "last_insert_rowid": None,
        "replication_index": None,
        "rows_read": 0,
        "rows_written": 0,
        "query_duration_ms": 0.0,
    }
    result = {"step_results": [step], "step_errors": [None], "replication_index": None}
    document = {
        "baton": None,
        "base_url": None,
        "results": [{"type": "ok", "response": {"type": "batch", "result": result}}],
    }
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass
class _Namespace:
    child: object  # the WarmConnections of the child the entries were learned from
    generation: int = 0
    in_flight: int = 0
    rows: OrderedDict[str, list[Row]] = field(default_factory=OrderedDict)


class PushCursors:
    """Per namespace and client, the cursor row tursodb last reported (see the module doc)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._namespaces: dict[str, _Namespace] = {}

    def _entry(self, name: str, child: object) -> _Namespace:
        entry = self._namespaces.get(name)
        if entry is None or entry.child is not child:
            entry = self._namespaces[name] = _Namespace(child)
        return entry

    def lookup(self, name: str, child: object, client: str) -> list[Row] | None:
        if not self.enabled:
            return None
        entry = self._namespaces.get(name)
        if entry is None or entry.child is not child or entry.in_flight:
            return None  # a change on its way may move any row: ask tursodb
        rows = entry.rows.get(client)
        if rows is not None:
            entry.rows.move_to_end(client)
        return rows

    def generation(self, name: str, child: object) -> int:
        entry = self._entry(name, child)
        return entry.generation if entry.in_flight == 0 else -1

    def learned(self, name: str, child: object, client: str, rows: list[Row], generation: int) -> None:
        """A cursor read tursodb answered; kept unless a push ran meanwhile."""
        entry = self._entry(name, child)
        if generation < 0 or entry.generation != generation or entry.in_flight or not self.enabled:
            return
        self._set(entry, client, rows)

    def change_started(self, name: str, child: object, client: str | None) -> None:
        """A request that may write ``client``'s row (``None``: any row) is about to be forwarded."""
        entry = self._entry(name, child)
        if client is None:
            entry.rows.clear()
        else:
            entry.rows.pop(client, None)
        entry.generation += 1
        entry.in_flight += 1

    def change_finished(self, name: str, child: object, client: str | None, row: Row | None) -> None:
        """Its outcome: the upsert's ``row`` when every step ran, else ``None`` (read it again)."""
        entry = self._namespaces.get(name)
        if entry is None or entry.child is not child:
            return
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.generation += 1
        if row is None:
            # Failed or unknown: it may still have moved the row, even past a row learned from a
            # batch of the same client that ended meanwhile. Forget it (every row, for ``None``).
            if client is None:
                entry.rows.clear()
            else:
                entry.rows.pop(client, None)
        elif client is not None and self.enabled:
            self._set(entry, client, [row])

    @staticmethod
    def _set(entry: _Namespace, client: str, rows: list[Row]) -> None:
        entry.rows[client] = rows
        entry.rows.move_to_end(client)
        while len(entry.rows) > MAX_CLIENTS:
            entry.rows.popitem(last=False)

    def clients(self) -> int:
        return sum(len(entry.rows) for entry in self._namespaces.values())
