"""Statements prepared once per connection (``_engine.query_prepared``, ``run_prepared``).

A ``SELECT``, and a write whose result is a count, is prepared once per connection and re-run;
these tests hold it to what a fresh ``execute()`` answers: other connections' commits, the
enclosing transaction's own writes, changes and last rowids, a schema change made elsewhere,
errors (which drop the statement), several statements in one string, ``RETURNING``, the cache
bound, and a replica in sync mode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import Database, TursoQueryError, TursoService, resolve_config
from buntime.turso._engine import STATEMENT_CACHE_SIZE, open_local, query_prepared, run_prepared
from tests.support.tursodb import SyncServer

READ = "SELECT k, v FROM t WHERE k = ?"


async def _table(service: TursoService) -> Database:
    await service.transaction(
        lambda db: db.exec("CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v TEXT)"), type="exclusive"
    )
    return await service.connect()


async def test_a_reused_read_sees_every_commit(local_service: TursoService) -> None:
    db = await _table(local_service)
    assert await db.get(READ, [1]) is None
    for i in range(5):
        await db.run("INSERT OR REPLACE INTO t VALUES (1, ?)", [f"v{i}"])
        assert await db.get(READ, [1]) == {"k": 1, "v": f"v{i}"}

    async def inside(tx: Database) -> None:
        await tx.run("INSERT INTO t VALUES (2, 'mine')")
        assert await tx.get(READ, [2]) == {"k": 2, "v": "mine"}  # the transaction's own write
        assert await tx.all("SELECT k FROM t ORDER BY k") == [{"k": 1}, {"k": 2}]

    await local_service.transaction(inside)
    assert await db.all("SELECT k FROM t ORDER BY k") == [{"k": 1}, {"k": 2}]


async def test_get_each_is_get_once_per_parameter_set_in_one_engine_call(
    local_service: TursoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = await _table(local_service)
    await db.run("INSERT INTO t VALUES (1, 'one'), (3, 'three')")
    calls: list[object] = []  # one runner call is one engine call (one thread hop)
    real_runner = db._runner

    async def counted(fn: Callable[[Any], Any]) -> Any:
        calls.append(fn)
        return await real_runner(fn)

    monkeypatch.setattr(db, "_runner", counted)
    assert await db.get_each(READ, [[3], [2], [1], [3]]) == [
        {"k": 3, "v": "three"},
        None,
        {"k": 1, "v": "one"},
        {"k": 3, "v": "three"},
    ]
    assert len(calls) == 1
    assert await db.get_each(READ, []) == []

    async def inside(tx: Database) -> None:
        await tx.run("INSERT INTO t VALUES (2, 'mine')")
        assert await tx.get_each(READ, [[2], [1]]) == [{"k": 2, "v": "mine"}, {"k": 1, "v": "one"}]

    await local_service.transaction(inside)
    with pytest.raises(TursoQueryError):
        await db.get_each(READ, [[1], [1, 2]])  # the second has too many parameters


async def test_a_schema_change_elsewhere_is_seen(local_service: TursoService) -> None:
    db = await _table(local_service)
    await db.run("INSERT INTO t VALUES (1, 'one')")
    assert await db.all("SELECT * FROM t") == [{"k": 1, "v": "one"}]

    async def replace(tx: Database) -> None:
        await tx.exec("DROP TABLE t; CREATE TABLE t(k INTEGER PRIMARY KEY, w TEXT, extra INTEGER)")
        await tx.run("INSERT INTO t VALUES (1, 'uno', 9)")

    await local_service.transaction(replace, type="exclusive")
    assert await db.all("SELECT * FROM t") == [{"k": 1, "w": "uno", "extra": 9}]


async def test_errors_are_the_services_and_leave_no_broken_statement(local_service: TursoService) -> None:
    db = await _table(local_service)
    with pytest.raises(TursoQueryError):
        await db.all("SELECT nope FROM t")
    with pytest.raises(TursoQueryError):
        await db.all("SELECT * FROM t; SELECT 1")  # one statement at a time, as execute() says
    with pytest.raises(TursoQueryError):
        await db.get(READ, [1, 2])  # too many parameters
    await db.run("INSERT INTO t VALUES (1, 'one')")
    assert await db.get(READ, [1]) == {"k": 1, "v": "one"}


def test_the_cache_is_bounded_and_skips_what_it_cannot_reuse(tmp_path: Path) -> None:
    conn = open_local(str(tmp_path / "x.db"))
    try:
        conn.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t VALUES (1, 'one')")
        for i in range(STATEMENT_CACHE_SIZE * 2):
            assert query_prepared(conn, f"SELECT {i} AS n, v FROM t WHERE k = ?", [1]) == (
                ("n", "v"),
                [(i, "one")],
            )
        assert len(conn._buntime_statements) == STATEMENT_CACHE_SIZE
        assert query_prepared(conn, "INSERT INTO t VALUES (2, 'w')", []) is None  # writes: execute()
        assert query_prepared(conn, "SELECT v FROM t WHERE k = :k", {"k": 1}) is None  # named
        assert query_prepared(conn, "SELECT 1; SELECT 2", []) is None
        assert query_prepared(conn, "SELECT v FROM t WHERE k = ?;", (1,)) == (("v",), [("one",)])
    finally:
        conn.close()


def test_a_prepared_write_reports_what_execute_reports(tmp_path: Path) -> None:
    conn = open_local(str(tmp_path / "w.db"))
    try:
        conn.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
        fresh = conn.execute("INSERT INTO t(v) VALUES (?)", ("a",))
        assert run_prepared(conn, "INSERT INTO t(v) VALUES (?)", ["b"]) == (1, fresh.lastrowid + 1)
        assert run_prepared(conn, "INSERT INTO t(v) VALUES (?)", ("c",)) == (1, fresh.lastrowid + 2)
        assert run_prepared(conn, "UPDATE t SET v = 'x' WHERE k > ?", [0]) == (3, None)  # no rowid
        assert run_prepared(conn, "INSERT OR IGNORE INTO t VALUES (1, 'dup')", []) == (0, None)
        assert run_prepared(conn, "DELETE FROM t WHERE k = ?", [99]) == (0, None)
        assert run_prepared(conn, "INSERT INTO t(v) VALUES (?)", []) == (1, fresh.lastrowid + 3)  # NULL
        assert conn.execute("SELECT v FROM t ORDER BY k DESC LIMIT 1").fetchone() == (None,)  # not "c"
        assert len(conn._buntime_statements) == 4  # the INSERT once, whatever its parameters
        # What it leaves to execute(): RETURNING, named parameters, DDL, transaction control.
        assert run_prepared(conn, "INSERT INTO t(v) VALUES ('r') RETURNING k", []) is None
        assert run_prepared(conn, "INSERT INTO t(v) VALUES ('r') RETURNING k", []) is None
        assert len(conn._buntime_statements) == 5  # kept unstepped: the next call prepares nothing
        assert run_prepared(conn, "INSERT INTO t(v) VALUES (:v)", {"v": 1}) is None
        assert run_prepared(conn, "CREATE TABLE u(x)", []) is None
        assert run_prepared(conn, "BEGIN", []) is None
        assert run_prepared(conn, "INSERT INTO t(v) VALUES ('1'); INSERT INTO t(v) VALUES ('2')", []) is None
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (4,)  # none of those ran
    finally:
        conn.close()


async def test_prepared_writes_follow_schema_changes_and_errors(local_service: TursoService) -> None:
    db = await _table(local_service)
    insert = "INSERT INTO t VALUES (?, ?)"
    assert (await db.run(insert, [1, "one"])).changes == 1
    with pytest.raises(TursoQueryError):
        await db.run(insert, [1, "again"])  # UNIQUE: the statement is dropped, the next one works
    with pytest.raises(TursoQueryError):
        await db.run(insert, [2, "two", "three"])  # too many parameters
    assert (await db.run(insert, [2, "two"])).last_insert_rowid == 2

    async def replace(tx: Database) -> None:
        await tx.exec("DROP TABLE t; CREATE TABLE t(k INTEGER PRIMARY KEY, w TEXT NOT NULL)")

    await local_service.transaction(replace, type="exclusive")
    with pytest.raises(TursoQueryError):
        await db.run(insert, [3, None])  # the new table's NOT NULL, not the old plan
    assert (await db.execute(insert, [3, "tres"])).changes == 1
    assert await db.all("SELECT * FROM t") == [{"k": 3, "w": "tres"}]

    async def rolled_back(tx: Database) -> None:
        await tx.run(insert, [4, "four"])
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await local_service.transaction(rolled_back)
    assert await db.all("SELECT k FROM t") == [{"k": 3}]  # a prepared write rolls back with its transaction


async def test_a_replica_reads_through_prepared_statements(plain_tursodb: SyncServer, tmp_path: Path) -> None:
    env = {
        "TURSO_LOCAL_PATH": str(tmp_path / "replica" / "runtime.db"),
        "TURSO_SYNC_URL": plain_tursodb.url,
        "TURSO_SYNC_INTERVAL": "0",
        "TURSO_WRITE_MODE": "offline",  # a plain tursodb sync server has no write leases
    }
    service = TursoService(resolve_config(env=env))
    try:
        db = await _table(service)
        for i in range(3):
            await service.transaction(lambda tx, i=i: tx.run("INSERT INTO t VALUES (?, 'r')", [i]))
            assert await db.get(READ, [i]) == {"k": i, "v": "r"}
        assert [row["k"] for row in await db.all("SELECT k FROM t ORDER BY k")] == [0, 1, 2]
    finally:
        await service.aclose()
