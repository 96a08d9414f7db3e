"""Push cursors (``_cursors``): the sync client's cursor read answered from memory, never wrongly.

Real server, real tursodb children, real pyturso replicas: each check is on rows a fresh replica
sees and on the hit/miss counters, and the reply from memory is compared with tursodb's own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.turso_server.support import ServerFactory, ServerProcess
from turso_server._cursors import (
    CREATE_SQL,
    READ_SQL,
    TOUCHES,
    UPSERT_SQL,
    CursorRead,
    CursorWrite,
    PushCursors,
    all_steps_ran,
    classify,
    read_reply,
    read_rows,
)

_COUNTER = re.compile(r'^turso_server_push_cursor_reads_total\{result="(\w+)"\} (\S+)$', re.MULTILINE)


def cursor_reads(server: ServerProcess) -> dict[str, int]:
    return {result: int(float(n)) for result, n in _COUNTER.findall(server.metrics_text())}


def _stmt(sql: str, *args: dict[str, str], want_rows: bool = False) -> dict[str, Any]:
    return {"sql": sql, "sql_id": None, "args": list(args), "named_args": [], "want_rows": want_rows}


def _text(value: str) -> dict[str, str]:
    return {"type": "text", "value": value}


def _int(value: int) -> dict[str, str]:
    return {"type": "integer", "value": str(value)}


def _batch(*stmts: dict[str, Any]) -> dict[str, Any]:
    steps = [
        {"condition": None if i == 0 else {"type": "not", "cond": {"type": "is_autocommit"}}, "stmt": stmt}
        for i, stmt in enumerate(stmts)
    ]
    return {"baton": None, "requests": [{"type": "batch", "batch": {"steps": steps}}]}


def read_body(client: str) -> dict[str, Any]:
    document = _batch(_stmt(READ_SQL, _text(client), want_rows=True))
    document["requests"][0]["batch"]["steps"][0]["condition"] = None
    return document


def push_body(client: str, change_id: int, *middle: dict[str, Any]) -> dict[str, Any]:
    return _batch(
        _stmt("BEGIN IMMEDIATE"),
        _stmt(CREATE_SQL),
        *middle,
        _stmt(UPSERT_SQL, _text(client), _int(0), _int(change_id)),
        _stmt("COMMIT"),
    )


def texts(document: dict[str, Any]) -> list[str]:
    return [step["stmt"]["sql"] for request in document["requests"] for step in request["batch"]["steps"]]


def pipeline(server: ServerProcess, namespace: str, document: dict[str, Any]) -> dict[str, Any]:
    response = server.data("POST", f"/{namespace}/v2/pipeline", body=json.dumps(document).encode())
    assert response.status == 200, response.body
    reply: dict[str, Any] = response.json()
    return reply


def cursor_of(reply: dict[str, Any]) -> list[Any]:
    rows: list[Any] = reply["results"][0]["response"]["result"]["step_results"][0]["rows"]
    return rows


# -- end to end -------------------------------------------------------------------------------------


def test_after_the_first_push_a_replica_pushes_in_one_request(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    writer = replicas(server.url("shop"))
    writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    for value in range(5):
        writer.execute("INSERT INTO t(v) VALUES (?)", (value,))
        writer.push()
    # The first read finds no cursor table yet (an error tursodb reports, never remembered); the
    # push that follows creates the row, and every later push's read is answered from memory.
    assert cursor_reads(server) == {"hit": 4, "miss": 1}
    reader = replicas(server.url("shop"))
    assert sorted(reader.execute("SELECT v FROM t").fetchall()) == [(v,) for v in range(5)]
    # A second replica is another client: its own first read goes to tursodb.
    reader.execute("INSERT INTO t(v) VALUES (5)")
    reader.push()
    writer.pull()
    assert sorted(writer.execute("SELECT v FROM t").fetchall()) == [(v,) for v in range(6)]
    assert cursor_reads(server) == {"hit": 4, "miss": 2}


def test_a_reply_from_memory_is_the_one_tursodb_gives(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    server = start_server()
    writer = replicas(server.url("shop"))
    writer.execute("CREATE TABLE t(v INTEGER)")
    for value in range(2):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        writer.push()
    # The client id is the one the replica sends; take it from tursodb's own table.
    listing = _batch(_stmt("SELECT client_id FROM turso_sync_last_change_id", want_rows=True))
    listed = pipeline(server, "shop", listing)
    (client,) = [row[0]["value"] for row in cursor_of(listed)]
    before = cursor_reads(server)
    remembered = pipeline(server, "shop", read_body(client))
    assert cursor_reads(server)["hit"] == before["hit"] + 1
    server.stop()
    plain = start_server(data_dir=server.data_dir, TURSO_PUSH_CURSORS="false")
    asked = pipeline(plain, "shop", read_body(client))
    assert cursor_reads(plain) == {}
    assert remembered == asked
    ((pull_gen, change_id),) = cursor_of(asked)
    assert pull_gen == _int(0) and int(change_id["value"]) > 0


def test_a_restarted_child_is_asked_again(server: ServerProcess, replicas: Callable[..., Any]) -> None:
    writer = replicas(server.url("crashy"))
    writer.execute("CREATE TABLE t(v INTEGER)")
    writer.execute("INSERT INTO t VALUES (0)")
    writer.push()
    writer.execute("INSERT INTO t VALUES (1)")
    writer.push()
    assert cursor_reads(server) == {"hit": 1, "miss": 1}
    pid = server.child_pids()["crashy"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.child_pids().get("crashy") in (pid, None) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.execute("INSERT INTO t VALUES (2)")
    writer.push()
    assert cursor_reads(server) == {"hit": 1, "miss": 2}
    reader = replicas(server.url("crashy"))
    assert sorted(reader.execute("SELECT v FROM t").fetchall()) == [(0,), (1,), (2,)]


def test_a_push_whose_step_failed_is_read_from_tursodb_again(server: ServerProcess) -> None:
    pipeline(server, "shop", push_body("c1", 3))
    assert cursor_of(pipeline(server, "shop", read_body("c1"))) == [[_int(0), _int(3)]]
    assert cursor_reads(server) == {"hit": 1}
    # A failing step does not stop tursodb's COMMIT: the new cursor may be in the database. The
    # entry is dropped, and the next read gets whatever tursodb holds.
    failed = pipeline(server, "shop", push_body("c1", 9, _stmt("INSERT INTO nosuch VALUES (1)")))
    assert failed["results"][0]["response"]["result"]["step_errors"][2] is not None
    assert cursor_of(pipeline(server, "shop", read_body("c1"))) == [[_int(0), _int(9)]]
    assert cursor_reads(server) == {"hit": 1, "miss": 1}


def test_a_push_that_undoes_its_upsert_is_read_from_tursodb_again(server: ServerProcess) -> None:
    pipeline(server, "shop", push_body("c1", 5))
    assert cursor_of(pipeline(server, "shop", read_body("c1"))) == [[_int(0), _int(5)]]
    # Every step runs without error, but the savepoint's rollback undoes the upsert: tursodb keeps 5.
    undone = _batch(
        _stmt("BEGIN IMMEDIATE"),
        _stmt("SAVEPOINT s"),
        _stmt(UPSERT_SQL, _text("c1"), _int(0), _int(999)),
        _stmt("ROLLBACK TO s"),
        _stmt("COMMIT"),
    )
    errors = pipeline(server, "shop", undone)["results"][0]["response"]["result"]["step_errors"]
    assert errors == [None] * 5
    assert cursor_of(pipeline(server, "shop", read_body("c1"))) == [[_int(0), _int(5)]]
    assert cursor_reads(server) == {"hit": 1, "miss": 1}


def test_writes_to_the_cursor_table_are_refused(server: ServerProcess) -> None:
    pipeline(server, "shop", push_body("c1", 3))
    for sql in (
        "UPDATE turso_sync_last_change_id SET change_id = 0",
        "DELETE FROM turso_sync_last_change_id",
        "CREATE TRIGGER tr AFTER INSERT ON x BEGIN DELETE FROM turso_sync_last_change_id; END",
    ):
        body = json.dumps(_batch(_stmt(sql))).encode()
        response = server.data("POST", "/shop/v2/pipeline", body=body)
        assert response.status == 403 and response.json()["code"] == "statement forbidden", sql
    assert cursor_of(pipeline(server, "shop", read_body("c1"))) == [[_int(0), _int(3)]]


# -- the pieces ---------------------------------------------------------------------------------------


def test_classify_knows_exactly_the_sync_clients_two_requests() -> None:
    read = read_body("c1")
    assert classify(read, texts(read)) == CursorRead("c1")
    push = push_body("c1", 7, _stmt('INSERT INTO "t"("v") VALUES (?)', _int(1)))
    assert classify(push, texts(push)) == CursorWrite("c1", [_int(0), _int(7)], 5)
    unrelated = _batch(_stmt("SELECT 1"))
    assert classify(unrelated, texts(unrelated)) is None
    # Reads in any other shape change nothing; writes in any other shape forget the namespace.
    odd_reads: list[dict[str, Any]] = [
        {**read, "baton": "b"},
        {"baton": None, "requests": read["requests"] * 2},
    ]
    named = read_body("c1")
    named["requests"][0]["batch"]["steps"][0]["stmt"]["named_args"] = [{"name": "x", "value": _text("y")}]
    odd_reads.append(named)
    odd_reads.append(_batch(_stmt("SELECT * FROM turso_sync_last_change_id", want_rows=True)))
    for document in odd_reads:
        assert classify(document, texts(document)) is None, document
    odd_writes = [
        push_body("c1", 7, _stmt(UPSERT_SQL, _text("c2"), _int(0), _int(1))),
        {**push, "baton": "b"},
    ]
    no_commit = push_body("c1", 7)
    no_commit["requests"][0]["batch"]["steps"].pop()
    odd_writes.append(no_commit)
    odd_writes.append(_batch(_stmt(UPSERT_SQL, _text("c1"), _int(0), _int(1))))
    # Transaction control between BEGIN IMMEDIATE and COMMIT could undo the upsert without an error.
    for control in ("SAVEPOINT s", "release s", "ROLLBACK TO s", "ROLLBACK", "BEGIN", "COMMIT", "END"):
        odd_writes.append(push_body("c1", 7, _stmt(f"/* x */ {control}")))
    for document in odd_writes:
        assert classify(document, texts(document)) is TOUCHES, document
    # A statement by stored id could be anything: the guard lists it as naming the table.
    assert classify(unrelated, ["turso_sync_last_change_id"]) is TOUCHES
    stored = push_body("c1", 7, {"sql_id": 1, "args": []})
    assert classify(stored, [*texts(push), "turso_sync_last_change_id"]) is TOUCHES


def test_replies_are_read_strictly() -> None:
    rows = [[_int(0), _int(4)]]
    assert read_rows(read_reply(rows)) == rows
    assert read_rows(read_reply([])) == []
    assert read_rows(b"not json") is None
    error = (
        b'{"baton":null,"base_url":null,"results":[{"type":"ok","response":{"type":"batch","result":'
        b'{"step_results":[null],"step_errors":[{"message":"no such table","code":"X"}]}}}]}'
    )
    assert read_rows(error) is None
    assert not all_steps_ran(error, 1)
    ran = json.loads(read_reply(rows))
    ran["results"][0]["response"]["result"]["step_results"] *= 3
    ran["results"][0]["response"]["result"]["step_errors"] *= 3
    assert all_steps_ran(json.dumps(ran).encode(), 3)
    assert not all_steps_ran(json.dumps(ran).encode(), 4)


def test_the_cache_is_never_ahead_or_behind() -> None:
    cursors, child, other_child = PushCursors(), object(), object()
    row = [_int(0), _int(1)]
    generation = cursors.generation("ns", child)
    cursors.learned("ns", child, "c1", [row], generation)
    assert cursors.lookup("ns", child, "c1") == [row]
    assert cursors.lookup("ns", other_child, "c1") is None  # a restarted child
    # A read answered while a push is in flight is not kept, and the push drops the entry.
    cursors.learned("ns", child, "c1", [row], cursors.generation("ns", child))
    stale = cursors.generation("ns", child)
    cursors.change_started("ns", child, "c1")
    assert cursors.lookup("ns", child, "c1") is None
    assert cursors.generation("ns", child) == -1
    cursors.learned("ns", child, "c1", [row], stale)
    assert cursors.lookup("ns", child, "c1") is None
    cursors.change_finished("ns", child, "c1", [_int(0), _int(2)])
    assert cursors.lookup("ns", child, "c1") == [[_int(0), _int(2)]]
    cursors.learned("ns", child, "c1", [row], stale)  # too old now
    assert cursors.lookup("ns", child, "c1") == [[_int(0), _int(2)]]
    # A failed push, or an unknown write, forgets; an unknown one forgets every client.
    cursors.change_started("ns", child, "c1")
    cursors.change_finished("ns", child, "c1", None)
    assert cursors.lookup("ns", child, "c1") is None
    cursors.learned("ns", child, "c2", [row], cursors.generation("ns", child))
    cursors.change_started("ns", child, None)
    cursors.change_finished("ns", child, None, None)
    assert cursors.lookup("ns", child, "c2") is None
    # Two batches of one client at once (a retry while the first still runs): the first's row is
    # not answered while the second is on its way, nor kept once the second failed (it may have
    # landed all the same).
    cursors.change_started("ns", child, "c1")
    cursors.change_started("ns", child, "c1")
    cursors.change_finished("ns", child, "c1", [_int(0), _int(3)])
    assert cursors.lookup("ns", child, "c1") is None
    cursors.change_finished("ns", child, "c1", None)
    assert cursors.lookup("ns", child, "c1") is None
    assert PushCursors(enabled=False).lookup("ns", child, "c1") is None


@pytest.mark.parametrize("clients", [1025])
def test_the_cache_is_bounded(clients: int) -> None:
    cursors, child = PushCursors(), object()
    for index in range(clients):
        cursors.learned("ns", child, f"c{index}", [], cursors.generation("ns", child))
    assert cursors.clients() == clients - 1
    assert cursors.lookup("ns", child, "c0") is None and cursors.lookup("ns", child, "c1") == []
