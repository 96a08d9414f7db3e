"""Tenant isolation end to end: the SQL guard on a real server, and Landlock on a real tursodb.

A namespace-scoped ``rw`` token (and the global token) sends every statement class that reaches
past its own database; each is refused with 403 before anything is forwarded, and a snapshot of
every file the server's user could write in the test (the test's whole temporary tree, which holds
the data directory, the server's ``TMPDIR`` and the target paths, plus the target paths in
``/tmp``) shows that nothing changed outside the namespace's own files. Then the kernel side:
Landlock stops a confined process (and a confined tursodb, with the guard out of the way) from
writing outside its directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port
from tests.turso_server.support import DATA_TOKEN, TURSODB, ServerFactory, ServerProcess
from turso_server._confine import Confinement, landlock_abi

needs_landlock = pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock")
LIBM = "/lib/x86_64-linux-gnu/libm.so.6"


def _escapes(outside: Path, data_dir: Path) -> dict[str, str]:
    return {
        "vacuum into a tmp dir": f"VACUUM INTO '{outside / 'escape.db'}'",
        "vacuum into the data dir (flat)": f"VACUUM INTO '{data_dir / 'victim.db'}'",
        "vacuum into another namespace": f"VACUUM INTO '{data_dir / 'namespaces/victim/victim.db'}'",
        "vacuum into /tmp": f"VACUUM INTO '/tmp/escape-{uuid.uuid4().hex}.db'",
        "vacuum, schema-qualified": f"VACUUM main INTO '{outside / 'escape2.db'}'",
        "vacuum behind an empty statement": f";vacuum into '{outside / 'escape3.db'}'",
        "attach": f"ATTACH DATABASE '{outside / 'attached.db'}' AS other",
        "detach": "DETACH other",
        "load_extension": f"SELECT load_extension('{LIBM}')",
        "load_extension quoted": f"SELECT \"load_extension\"('{LIBM}')",
        "load_extension in a view": f"CREATE VIEW ext AS SELECT load_extension('{LIBM}')",
        "load_extension in a default": f"CREATE TABLE ext(x DEFAULT (load_extension('{LIBM}')))",
        # tursodb 0.7.0 reads ARRAY[']'] as a bracket around a string; SQLite's rule, a name.
        "load_extension behind an array bracket in a default": (
            "CREATE TABLE ext (a INTEGER, b DEFAULT (ARRAY[']']), "
            f"c DEFAULT (load_extension('{LIBM}')) /*'*/)"
        ),
        "load_extension behind a subscript in a trigger": (
            "CREATE TRIGGER ext AFTER INSERT ON secrets BEGIN SELECT x[']'] FROM secrets; "
            f"SELECT load_extension('{LIBM}') /*'*/; END"
        ),
        "virtual table": f"CREATE VIRTUAL TABLE c USING csv(filename='{outside / 'x.csv'}')",
        "wal checkpoint": "PRAGMA wal_checkpoint(TRUNCATE)",
        "vdbe trace": "PRAGMA vdbe_trace = 1",
        "journal mode": "PRAGMA journal_mode = mvcc",
        "unknown pragma": f"PRAGMA temp_store_directory = '{outside}'",
        "pragma table": "SELECT * FROM pragma_vdbe_trace",
    }


def _bodies(sql: str) -> dict[str, bytes]:
    """The statement in each place Hrana carries SQL."""
    stmt = {"sql": sql, "args": [], "want_rows": True}
    shapes: dict[str, Any] = {
        "execute": {"type": "execute", "stmt": stmt},
        "batch": {"type": "batch", "batch": {"steps": [{"stmt": {"sql": "SELECT 1"}}, {"stmt": stmt}]}},
        "store_sql": {"type": "store_sql", "sql_id": 1, "sql": sql},
        "sequence": {"type": "sequence", "sql": f"SELECT 1; {sql}"},
    }
    return {name: json.dumps({"baton": None, "requests": [shape]}).encode() for name, shape in shapes.items()}


def _snapshot(root: Path, *, skip: Path) -> dict[str, str]:
    """Every file under ``root`` (but ``skip``) -> size and content hash."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_relative_to(skip) or not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        files[str(path.relative_to(root))] = f"{path.stat().st_size}:{digest}"
    return files


def _mint(server: ServerProcess, namespace: str) -> str:
    response = server.admin("POST", f"/v1/namespaces/{namespace}/tokens", {"access": "rw"})
    assert response.status == 201, response.body
    token: str = response.json()["token"]
    return token


def test_scoped_token_escapes_are_refused_and_no_file_changes(
    start_server: ServerFactory, replicas: Callable[..., Any], tmp_path: Path
) -> None:
    outside = tmp_path / "server-tmp"
    outside.mkdir()
    # The server (and so each child before its own TMPDIR) gets a temporary directory we can watch.
    server = start_server(TMPDIR=str(outside))
    assert server.admin("POST", "/v1/namespaces/a/create").status == 201
    token = _mint(server, "a")
    writer = replicas(server.url("a"), token=token)
    writer.execute("CREATE TABLE secrets(v TEXT)")
    writer.execute("INSERT INTO secrets VALUES ('a-only')")
    writer.push()
    assert server.find_logs("children confined with Landlock") or landlock_abi() == 0

    own = server.data_dir / "namespaces" / "a"
    time.sleep(0.5)  # the push's last-access bump reaches _state/ (TURSO_ACCESS_FLUSH_INTERVAL=200ms)
    before = _snapshot(tmp_path, skip=own)
    tmp_before = set(os.listdir("/tmp"))
    refused = 0
    for label, sql in _escapes(outside, server.data_dir).items():
        for shape, body in _bodies(sql).items():
            for who, credential in (("scoped", token), ("global", DATA_TOKEN)):
                response = server.data("POST", "/a/v2/pipeline", token=credential, body=body)
                assert response.status == 403, (
                    f"{label} via {shape} ({who}): {response.status} {response.body!r}"
                )
                assert response.json()["code"] == "statement forbidden"
                refused += 1
    assert refused == 20 * 4 * 2

    # Nothing forwarded, nothing written: outside the namespace's own files, no file is new,
    # changed or gone, and no escape target appeared in /tmp.
    time.sleep(0.3)
    after = _snapshot(tmp_path, skip=own)
    assert after == before
    assert not {name for name in set(os.listdir("/tmp")) - tmp_before if name.startswith("escape-")}
    assert sorted(p.name for p in own.iterdir()) == ["a.db", "a.db-wal", "backups", "tmp"]

    # The victim an administrator creates afterwards is empty, and the tenant's own sync still works.
    assert server.admin("POST", "/v1/namespaces/victim/create").status == 201
    victim = replicas(server.url("victim"))
    assert victim.execute("SELECT name FROM sqlite_master WHERE name = 'secrets'").fetchall() == []
    writer.execute("INSERT INTO secrets VALUES ('still works')")
    writer.push()
    assert len(replicas(server.url("a"), token=token).execute("SELECT * FROM secrets").fetchall()) == 2


CONNECTION_SETTINGS = [
    "PRAGMA query_only = 1",
    "PRAGMA query_only(true)",
    "PRAGMA ignore_check_constraints = 1",
    "PRAGMA foreign_keys = ON",
    "PRAGMA require_where = 1",
    "PRAGMA full_column_names = 1",
    "PRAGMA main.max_page_count = 3",
    "PRAGMA cache_size = -1000000",
]


def test_one_client_cannot_change_the_connection_every_client_shares(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    # tursodb 0.7.0 serves every client of a namespace on one connection and keeps a connection
    # setting until it restarts: query_only would fail every later push and the admin backup,
    # ignore_check_constraints would let another client's bad rows in.
    server = start_server()
    assert server.admin("POST", "/v1/namespaces/a/create").status == 201
    token = _mint(server, "a")
    writer = replicas(server.url("a"), token=token)
    writer.execute("CREATE TABLE checked(x INTEGER CHECK (x > 0))")
    writer.execute("INSERT INTO checked VALUES (1)")
    writer.push()
    for sql in CONNECTION_SETTINGS:
        for shape, body in _bodies(sql).items():
            response = server.data("POST", "/a/v2/pipeline", token=token, body=body)
            assert (response.status, response.json()["code"]) == (403, "statement forbidden"), (
                f"{sql} via {shape}: {response.status} {response.body!r}"
            )
            assert "shares" in response.json()["detail"]
    # Reading a setting stays allowed.
    read = {"requests": [{"type": "execute", "stmt": {"sql": "PRAGMA query_only", "want_rows": True}}]}
    response = server.data("POST", "/a/v2/pipeline", token=token, body=json.dumps(read).encode())
    assert response.status == 200 and response.json()["results"][0]["type"] == "ok", response.body
    # Every other client still writes, under the same checks, and the backup still runs.
    other = replicas(server.url("a"), token=token)
    other.execute("INSERT INTO checked VALUES (2)")
    other.push()
    bad = {"requests": [{"type": "execute", "stmt": {"sql": "INSERT INTO checked VALUES (-1)"}}]}
    response = server.data("POST", "/a/v2/pipeline", token=token, body=json.dumps(bad).encode())
    assert response.status == 200 and response.json()["results"][0]["type"] == "error", response.body
    assert server.admin("GET", "/v1/namespaces/a/backup").status == 200
    check = replicas(server.url("a"), token=token)
    assert check.execute("SELECT x FROM checked ORDER BY x").fetchall() == [(1,), (2,)]


@needs_landlock
def test_landlock_stops_a_confined_process_writing_outside_its_directory(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    script = f"""
import json, sys
from pathlib import Path
from turso_server._confine import Confinement, confine_current_process
confine_current_process(Confinement.detect(Path(sys.executable)), writable=[Path({str(inside)!r})])
results = {{}}
for label, path in (("inside", {str(inside / "ok.txt")!r}), ("outside", {str(outside / "escape.txt")!r}),
                    ("tmp", "/tmp/landlock-escape-{uuid.uuid4().hex}.txt")):
    try:
        Path(path).write_text("x")
        results[label] = "written"
    except PermissionError:
        results[label] = "denied"
try:
    Path("/etc/hostname").read_text()
    results["read /etc"] = "read"
except PermissionError:
    results["read /etc"] = "denied"
print(json.dumps(results))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results == {"inside": "written", "outside": "denied", "tmp": "denied", "read /etc": "denied"}
    assert list(outside.iterdir()) == []


@needs_landlock
def test_a_confined_tursodb_cannot_write_outside_even_without_the_guard(tmp_path: Path) -> None:
    """The supervisor's confinement on a bare tursodb, sent the statements the guard would refuse."""
    directory, outside = tmp_path / "ns", tmp_path / "outside"
    (directory / "tmp").mkdir(parents=True)
    outside.mkdir()
    port = free_port()
    ruleset = Confinement.detect(TURSODB).ruleset(writable=[directory], port=port)
    try:
        child = subprocess.Popen(
            [str(TURSODB), str(directory / "a.db"), "--sync-server", f"127.0.0.1:{port}"],
            cwd=directory,
            env={**os.environ, "TMPDIR": str(directory / "tmp")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=ruleset.preexec,  # noqa: PLW1509 - exactly what the supervisor does
        )
    finally:
        ruleset.close()
    try:
        results = {
            "outside": _execute(port, f"VACUUM INTO '{outside / 'escape.db'}'"),
            "load": _execute(port, "SELECT load_extension('/etc/hostname')"),
            "inside": _execute(port, f"VACUUM INTO '{directory / 'snapshot.db'}'"),
        }
    finally:
        child.terminate()
        child.wait(timeout=10)
    assert "permission denied" in results["outside"].lower()
    assert "permission denied" in results["load"].lower()
    assert results["inside"] == "ok"
    assert list(outside.iterdir()) == []
    assert (directory / "snapshot.db").is_file()


def _execute(port: int, sql: str) -> str:
    body = json.dumps({"requests": [{"type": "execute", "stmt": {"sql": sql}}]}).encode()
    deadline = time.monotonic() + 10
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/pipeline", data=body)
            with urllib.request.urlopen(request, timeout=30) as response:
                result = json.loads(response.read())["results"][0]
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return "ok" if result["type"] == "ok" else str(result["error"]["message"])


def test_the_flat_layout_of_an_older_server_is_moved_into_namespace_directories(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    first = start_server()
    writer = replicas(first.url("legacy"))
    writer.execute("CREATE TABLE t(v TEXT)")
    writer.execute("INSERT INTO t VALUES ('kept')")
    writer.push()
    first.stop()
    directory = first.data_dir / "namespaces" / "legacy"
    for path in list(directory.glob("legacy.db*")):
        path.rename(first.data_dir / path.name)  # what an older turso-server left
    shutil.rmtree(directory)  # tmp/ (tursodb's own temporary directory) and backups/

    second = start_server(data_dir=first.data_dir)
    assert second.find_logs("namespace files moved into their directory", namespace="legacy")
    assert not list(first.data_dir.glob("legacy.db*"))
    assert (directory / "legacy.db").is_file()
    assert replicas(second.url("legacy")).execute("SELECT v FROM t").fetchall() == [("kept",)]
