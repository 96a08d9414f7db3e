"""The SQL guard on its own: what it refuses, what it lets through, and the real sync client's SQL.

Pure functions, no server: the end-to-end escape suite (real server, real tursodb, file-system
snapshots) is ``test_turso_server_isolation.py``.
"""

from __future__ import annotations

import json

import pytest

from turso_server._errors import InvalidPipelineError, StatementForbiddenError
from turso_server._sqlguard import check_pipeline, check_request, check_sql, split_statements, tokenize

# Every statement text pyturso 0.8.3's push sent through /v2/pipeline in a captured session
# (create, insert with awkward values, index, update, delete, alter, trigger effects, quoted names).
SYNC_CLIENT_SQL = [
    "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?",
    "BEGIN IMMEDIATE",
    "CREATE TABLE IF NOT EXISTS turso_sync_last_change_id "
    "(client_id TEXT PRIMARY KEY, pull_gen INTEGER, change_id INTEGER)",
    "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who TEXT, b BLOB, f REAL);",
    'INSERT INTO "t"("id", "who", "b", "f") VALUES (?,?,?,?) ON CONFLICT("id") DO UPDATE SET '
    '"id" = excluded."id","who" = excluded."who","b" = excluded."b","f" = excluded."f"',
    "CREATE INDEX IF NOT EXISTS ti ON t (who);",
    'UPDATE "t" SET "who" = ? WHERE "id" IS ?',
    'DELETE FROM "t" WHERE "id" IS ?',
    "ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'd'",
    'CREATE TABLE IF NOT EXISTS "weird" ("a b" TEXT, [c] INT);',
    "INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id) VALUES (?, ?, ?) "
    "ON CONFLICT(client_id) DO UPDATE SET pull_gen=excluded.pull_gen, change_id=excluded.change_id",
    "COMMIT",
]

ALLOWED_SQL = [
    *SYNC_CLIENT_SQL,
    "SELECT 1",
    "select * from t where who = 'VACUUM INTO ''/tmp/x'''",  # a string is data
    'SELECT "load_extension" FROM t',  # a column name, no call
    "SELECT 1 -- VACUUM INTO '/tmp/x'",
    "/* ATTACH '/x' AS y */ SELECT 1",
    "WITH r AS (SELECT 1) SELECT * FROM r",
    "VALUES (1), (2)",
    "REPLACE INTO t VALUES (1)",
    "CREATE TEMP TABLE tt(x)",
    "CREATE UNIQUE INDEX u ON t(x)",
    "CREATE VIEW v AS SELECT * FROM t",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; SELECT CASE WHEN 1 THEN 2 END; END",
    "DROP TABLE IF EXISTS t",
    "SAVEPOINT s; RELEASE s; ROLLBACK TO s",
    "ANALYZE; REINDEX",
    "EXPLAIN QUERY PLAN SELECT * FROM t",
    "PRAGMA table_info(t)",
    "PRAGMA main.table_info('t')",
    "PRAGMA user_version = 7",
    "PRAGMA 'user_version'",
    "PRAGMA journal_mode",
    "PRAGMA foreign_keys",
    "PRAGMA query_only",
    "SELECT * FROM pragma_foreign_keys",
    "PRAGMA integrity_check",
    "SELECT * FROM pragma_table_info('t')",
    "SELECT name FROM pragma_function_list",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT * FROM sqlite_schema",
    "SELEC 1",  # no keyword: tursodb reports the syntax error itself
    "",
    ";;",
    "-- only a comment",
    "SELECT 'unterminated",
    "SELECT * FROM turso_sync_last_change_id",  # the sync cursors may be read, never written
    # Plain bracket-quoted names: read alike as a name or as 0.7.0's array/subscript brackets.
    "CREATE TABLE w ([c] INT, [my col] TEXT, [Größe] REAL)",
    "SELECT [c], [my col], w.[c], [w].[my col] FROM [w] WHERE [c] = 1 AND [my col] IS NOT NULL",
    "SELECT [a-b], [a.b], [x, y], [100%], [a/b], [*/], [a)] FROM t",
    "SELECT [load_extension] FROM t",  # a column, no call
    "SELECT 1 ]",
]

FORBIDDEN_SQL = {
    "vacuum into": "VACUUM INTO '/tmp/escape.db'",
    "vacuum schema into": "VACUUM main INTO '/tmp/escape.db'",
    "vacuum lower case": "vacuum into '/tmp/escape.db'",
    "vacuum in place": "VACUUM",
    "vacuum after a comment": "/* hi */ VACUUM INTO '/tmp/escape.db'",
    "vacuum after an empty statement": ";VACUUM INTO '/tmp/escape.db'",
    "vacuum as a second statement": "SELECT 1; VACUUM INTO '/tmp/escape.db'",
    "explain vacuum": "EXPLAIN VACUUM INTO '/tmp/escape.db'",
    "attach": "ATTACH DATABASE '/tmp/other.db' AS o",
    "attach memory": "ATTACH ':memory:' AS m",
    "detach": "DETACH o",
    "load_extension": "SELECT load_extension('/tmp/x.so')",
    "load_extension upper case": "SELECT LOAD_EXTENSION('/tmp/x.so')",
    "load_extension quoted": "SELECT \"load_extension\"('/tmp/x.so')",
    "load_extension backquoted": "SELECT `load_extension`('/tmp/x.so')",
    "load_extension with a comment": "SELECT load_extension/**/('/tmp/x.so')",
    "load_extension in a default": "CREATE TABLE d(x DEFAULT (load_extension('/tmp/x.so')))",
    "load_extension in a view": "CREATE VIEW v AS SELECT load_extension('/tmp/x.so')",
    "load_extension in a trigger": "CREATE TRIGGER r INSERT ON t BEGIN SELECT load_extension('/x'); END",
    "load_extension in returning": "INSERT INTO t VALUES (1) RETURNING load_extension('/x')",
    "readfile": "SELECT readfile('/etc/passwd')",
    "writefile": "SELECT writefile('/tmp/x', 'y')",
    "virtual table": "CREATE VIRTUAL TABLE c USING csv(filename='/etc/passwd')",
    "unknown create": "CREATE EXTENSION x",
    "other keyword": "OPTIMIZE INDEX i",
    "wal checkpoint": "PRAGMA wal_checkpoint(TRUNCATE)",
    "journal mode change": "PRAGMA journal_mode = mvcc",
    "locking mode change": "PRAGMA locking_mode = normal",
    "vdbe trace": "PRAGMA vdbe_trace = 1",
    "encryption key": "PRAGMA hexkey = 'abcd'",
    "cdc switch": "PRAGMA capture_data_changes_conn('full')",
    "unknown pragma": "PRAGMA temp_store_directory = '/tmp'",
    # Settings of the one connection every client of the namespace shares.
    "query only": "PRAGMA query_only = 1",
    "query only call form": "PRAGMA query_only(true)",
    "check constraints off": "PRAGMA ignore_check_constraints = 1",
    "foreign keys": "PRAGMA foreign_keys = ON",
    "require where": "PRAGMA require_where = 1",
    "column names": "PRAGMA full_column_names = 1",
    "short column names": "PRAGMA short_column_names = 0",
    "page count cap": "PRAGMA main.max_page_count = 10",
    "cache size": "PRAGMA cache_size = -1000000",
    "busy timeout": "PRAGMA busy_timeout = 100000",
    "quoted unknown pragma": 'PRAGMA "data_store_directory"',
    "pragma table": "SELECT * FROM pragma_vdbe_trace",
    "pragma table as a string": "SELECT * FROM 'pragma_wal_checkpoint'",
    # The sync client's cursor table: only its own exact statements write it (``_cursors``).
    "cursor update": "UPDATE turso_sync_last_change_id SET change_id = 0",
    "cursor delete": "DELETE FROM turso_sync_last_change_id",
    "cursor other upsert": "INSERT OR REPLACE INTO turso_sync_last_change_id VALUES ('c', 0, 99)",
    "cursor quoted": 'DROP TABLE "turso_sync_last_change_id"',
    "cursor bracketed with schema": "INSERT INTO main.[turso_sync_last_change_id] VALUES ('c', 0, 1)",
    "cursor upper case": "DELETE FROM TURSO_SYNC_LAST_CHANGE_ID",
    "cursor in a trigger": (
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE turso_sync_last_change_id SET change_id = 0; END"
    ),
    "cursor in a view": "CREATE VIEW v AS SELECT * FROM turso_sync_last_change_id",
    "cursor renamed": "ALTER TABLE turso_sync_last_change_id RENAME TO x",
    # tursodb 0.7.0 reads ``[`` after ARRAY or an operand as array/subscript syntax, its inside as
    # tokens; SQLite's rule (a name up to the first ``]``) would take the rest for a string.
    "array bracket hides a call in a default": (
        "CREATE TABLE d3 (a INTEGER, b DEFAULT (ARRAY[']']), "
        "c DEFAULT (load_extension('/usr/lib/x86_64-linux-gnu/libz.so.1')) /*'*/)"
    ),
    "array bracket hides a call": "SELECT ARRAY[']'], load_extension('/tmp/x.so') --'",
    # A name to tursodb here, refused all the same: the guard does not follow its parser's context.
    "bracket holding a quote": "SELECT [']'], load_extension('/tmp/x.so') --'",
    "subscript hides a call": "SELECT x[']'], load_extension('/tmp/x.so') --'",
    "subscript after a parenthesis": "SELECT (ARRAY[1])[']'], load_extension('/tmp/x.so') --'",
    "subscript after a string": "SELECT 'a'[']'], load_extension('/tmp/x.so') --'",
    "subscript after a number": "SELECT 1 [']'], load_extension('/tmp/x.so') --'",
    "nested array brackets": "SELECT ARRAY[ARRAY[']']], load_extension('/tmp/x.so') --'",
    "array bracket hides a block comment": "SELECT ARRAY['] /*'], load_extension('/tmp/x.so') --*/",
    "array bracket hides a cursor delete in WITH": (
        "WITH a AS (SELECT ARRAY[']']) DELETE FROM turso_sync_last_change_id --'"
    ),
    "array bracket hides a pragma table": "SELECT ARRAY[']'], * FROM pragma_vdbe_trace --'",
    "array bracket hides a call in a view": (
        "CREATE VIEW v AS SELECT ARRAY[']'], load_extension('/tmp/x.so') AS x --'"
    ),
    "array bracket hides a call in a trigger": (
        "CREATE TRIGGER tr AFTER INSERT ON t WHEN 0 BEGIN SELECT ARRAY[']']; "
        "SELECT load_extension('/tmp/x.so') /*'*/; END"
    ),
    "array bracket hides a statement": "SELECT ARRAY[']']; VACUUM INTO '/tmp/escape.db' --'",
    "unterminated bracket": "SELECT [abc",
}


@pytest.mark.parametrize("sql", ALLOWED_SQL)
def test_ordinary_sql_is_allowed(sql: str) -> None:
    check_sql(sql)


@pytest.mark.parametrize("sql", FORBIDDEN_SQL.values(), ids=FORBIDDEN_SQL.keys())
def test_escaping_sql_is_refused(sql: str) -> None:
    with pytest.raises(StatementForbiddenError) as caught:
        check_sql(sql, "requests[0].stmt.sql")
    assert caught.value.status == 403 and caught.value.code == "statement forbidden"
    assert caught.value.detail.startswith("requests[0].stmt.sql: ")
    assert "/tmp/" not in caught.value.detail  # the reason names the class, it never echoes the SQL


def test_the_tokenizer_keeps_quotes_comments_and_statements_apart() -> None:
    tokens = tokenize("SELECT 'a;b', \"c\"\"d\", [e f], x'00' -- g;\n; /* h; */ PRAGMA i")
    statements = list(split_statements(tokens))
    assert [len(s) for s in statements] == [8, 2]
    assert statements[0][1] == ("string", "'a;b'") and statements[0][5] == ("quoted", "[e f]")
    # A bracket whose inside could start anything tursodb reads differently is no name to the guard.
    for text in ("[e;f]", "[']", "[a(b)]", "[a--b]", "[a/*b]", "[a[b]", '[a"b]', "[a`b]", "[ab"):
        assert tokenize(text)[0] == ("punct", "["), text


def _pipeline(*requests: object) -> bytes:
    return json.dumps({"baton": None, "requests": list(requests)}).encode()


def _execute(sql: str) -> dict[str, object]:
    return {"type": "execute", "stmt": {"sql": sql, "args": [], "want_rows": True}}


def test_every_place_sql_travels_is_checked() -> None:
    escape = "VACUUM INTO '/tmp/escape.db'"
    batch = {"steps": [{"stmt": {"sql": "SELECT 1"}}, {"stmt": {"sql": escape}}]}
    bodies = [
        _pipeline(_execute(escape)),
        _pipeline({"type": "batch", "batch": batch}),
        _pipeline({"type": "store_sql", "sql_id": 1, "sql": escape}),
        _pipeline({"type": "sequence", "sql": f"SELECT 1; {escape}"}),
        _pipeline({"type": "describe", "sql": escape}),
    ]
    for body in bodies:
        with pytest.raises(StatementForbiddenError):
            check_pipeline(body)


def test_the_sync_clients_pipeline_shape_passes() -> None:
    steps = [
        {
            "condition": None if i == 0 else {"type": "not", "cond": {"type": "is_autocommit"}},
            "stmt": {
                "sql": sql,
                "sql_id": None,
                "args": [],
                "named_args": [],
                "want_rows": False,
                "replication_index": None,
            },
        }
        for i, sql in enumerate(SYNC_CLIENT_SQL)
    ]
    check_pipeline(_pipeline({"type": "batch", "batch": {"steps": steps, "replication_index": None}}))
    check_pipeline(_pipeline({"type": "execute", "stmt": {"sql_id": 3}}, {"type": "close"}))


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe",
        b"\xef\xbb\xbf{}",
        b"[]",
        b"{}",
        b'{"requests": {}}',
        b'{"requests": [1]}',
        b'{"requests": [{"type": "execute", "stmt": {"sql": 1}}]}',
        b'{"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1", "sql": "VACUUM INTO \'/x\'"}}]}',
        b'{"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}, "x": NaN}]}',
        b'{"requests": [{"type": "open_stream"}]}',
        b'{"requests": [{"type": "batch", "batch": {"steps": {}}}]}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=lambda body: body[:40].decode("latin-1"),
)
def test_bodies_that_are_not_strict_hrana_are_400(body: bytes) -> None:
    with pytest.raises(InvalidPipelineError) as caught:
        check_pipeline(body)
    assert caught.value.status == 400 and caught.value.code == "invalid pipeline"


def test_only_the_pipeline_route_is_checked() -> None:
    check_request("/pull-updates", b"\x08\x01")
    with pytest.raises(InvalidPipelineError):
        check_request("/v2/pipeline", b"\x08\x01")
