"""The admin API against a real server: lifecycle, backups, limits, metrics and GC."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import turso
from tests.turso_server.support import ADMIN_TOKEN, ServerFactory, ServerProcess, raw_exchange
from turso_server._layout import DataLayout


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_namespace_lifecycle_api(server: ServerProcess, replicas: Callable[..., Any]) -> None:
    assert server.admin("GET", "/v1/namespaces").json() == {"namespaces": []}
    assert server.admin("GET", "/v1/namespaces/ghost").status == 404

    created = server.admin("POST", "/v1/namespaces/orders/create")
    assert created.status == 201
    view = created.json()
    assert view["origin"] == "explicit" and view["locked"] and view["running"] and view["port"]
    assert server.admin("POST", "/v1/namespaces/orders/create").status == 200  # idempotent

    # An auto namespace is promoted to explicit and locked by create.
    replicas(server.url("autoapp")).push()
    assert server.admin("GET", "/v1/namespaces/autoapp").json()["origin"] == "auto"
    promoted = server.admin("POST", "/v1/namespaces/autoapp/create")
    assert promoted.status == 200
    assert (promoted.json()["origin"], promoted.json()["locked"]) == ("explicit", True)

    assert server.admin("POST", "/v1/namespaces/orders/unlock").json()["locked"] is False
    assert server.admin("POST", "/v1/namespaces/orders/lock").json()["locked"] is True
    assert server.admin("POST", "/v1/namespaces/orders/ttl", {"ttl": "30d"}).json()["ttl"] == "30d"
    assert server.admin("POST", "/v1/namespaces/orders/ttl", {"ttl": "1h30m"}).json()["ttl"] == "1h30m"
    for bad in ("garbage", "5x", "-1h", "0s"):
        response = server.admin("POST", "/v1/namespaces/orders/ttl", {"ttl": bad})
        assert (response.status, response.json()["code"]) == (400, "invalid ttl"), bad
    assert server.admin("POST", "/v1/namespaces/orders/ttl", {"ttl": 5}).json()["code"] == "invalid body"
    assert server.admin("POST", "/v1/namespaces/orders/ttl", {"ttl": ""}).json()["ttl"] is None
    before = server.admin("GET", "/v1/namespaces/orders").json()["lastAccessAt"]
    assert server.admin("POST", "/v1/namespaces/orders/access").json()["lastAccessAt"] > before
    for action in ("lock", "unlock", "access", "ttl"):
        assert server.admin("POST", f"/v1/namespaces/ghost/{action}").status == 404, action

    stored = json.loads((server.data_dir / "_state" / "namespaces.json").read_text())
    assert stored["version"] == 1
    assert {n["name"] for n in stored["namespaces"]} == {"orders", "autoapp"}

    assert server.admin("DELETE", "/v1/namespaces/ghost").status == 404
    deleted = server.admin("DELETE", "/v1/namespaces/orders")
    assert deleted.status == 200
    archive = Path(deleted.json()["archivedTo"])
    assert archive.parent == server.data_dir / "archive" and archive.name.startswith("orders.")
    assert (archive / "orders.db").is_file() and not (server.data_dir / "namespaces" / "orders").exists()
    assert server.admin("GET", "/v1/namespaces/orders").status == 404
    assert "orders" not in server.child_pids()

    unknown = server.admin("POST", "/v1/namespaces/autoapp/explode")
    assert (unknown.status, unknown.json()["code"]) == (404, "unknown route")
    assert server.admin("PUT", "/v1/namespaces").json()["code"] == "method not allowed"


def test_backup_is_a_valid_sqlite_file_with_the_rows(
    server: ServerProcess, replicas: Callable[..., Any], tmp_path: Path
) -> None:
    writer = replicas(server.url("books"))
    writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, title TEXT)")
    for index in range(50):
        writer.execute("INSERT INTO t VALUES (?, ?)", (index, f"title {index}"))
    writer.push()

    response = server.admin("GET", "/v1/namespaces/books/backup")
    assert response.status == 200
    assert response.headers["content-type"] == "application/vnd.sqlite3"
    assert 'filename="books-' in response.headers["content-disposition"]
    assert int(response.headers["content-length"]) == len(response.body)
    snapshot = tmp_path / "books-backup.db"
    snapshot.write_bytes(response.body)
    with sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT count(*), max(title) FROM t").fetchone() == (50, "title 9")
    connection.close()
    assert list((server.data_dir / "namespaces" / "books" / "backups").iterdir()) == []

    missing = server.admin("GET", "/v1/namespaces/nobody/backup")
    assert (missing.status, missing.json()["code"]) == (404, "namespace not found")
    assert server.admin("GET", "/v1/namespaces/Bad.Name/backup").status == 400


def test_max_namespaces_limit(start_server: ServerFactory, replicas: Callable[..., Any]) -> None:
    server = start_server(TURSO_MAX_NAMESPACES="2")
    assert server.admin("POST", "/v1/namespaces/one/create").status == 201
    replicas(server.url("two")).push()  # auto-provisioned

    refused = server.admin("POST", "/v1/namespaces/three/create")
    assert (refused.status, refused.json()["code"]) == (429, "max namespaces reached")
    assert server.data("POST", "/three/pull-updates").status == 429
    with pytest.raises(turso.Error, match="429"):
        replicas(server.url("three"))
    assert not (server.data_dir / "namespaces" / "three").exists()
    assert server.admin("POST", "/v1/namespaces/one/create").status == 200  # existing names still work
    assert server.data("POST", "/two/pull-updates").status == 200

    assert server.admin("DELETE", "/v1/namespaces/one").status == 200
    assert server.admin("POST", "/v1/namespaces/three/create").status == 201
    assert set(server.child_pids()) == {"two", "three"}


def test_metrics_parse_with_prometheus_parser(server: ServerProcess, replicas: Callable[..., Any]) -> None:
    writer = replicas(server.url("observed"))
    writer.execute("CREATE TABLE t(v)")
    writer.execute("INSERT INTO t VALUES (1)")
    writer.push()
    assert server.data("POST", "/observed/pull-updates", token="wrong").status == 401
    assert server.data("POST", "/Bad/pull-updates").status == 400
    assert server.admin("GET", "/v1/namespaces/ghost").status == 404

    families = {family.name: family for family in text_string_to_metric_families(server.metrics_text())}
    requests = families["turso_server_data_requests"].samples
    labels = {
        (s.labels["namespace"], s.labels["route"], s.labels["status"])
        for s in requests
        if s.name.endswith("_total")
    }
    assert ("observed", "pull-updates", "200") in labels
    assert ("observed", "pipeline", "200") in labels
    assert ("_unknown", "other", "401") in labels
    assert ("_unknown", "other", "400") in labels
    states = {s.labels["state"]: s.value for s in families["turso_server_namespaces"].samples}
    assert states["running"] == 1
    histogram = families["turso_server_proxy_duration_seconds"]
    observed = sum(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert observed == sum(s.value for s in requests if s.name.endswith("_total")) >= 5
    assert "turso_server_child_restarts" in families
    admin = {(s.labels["route"], s.labels["status"]) for s in families["turso_server_admin_requests"].samples}
    assert ("/v1/namespaces/{name}", "404") in admin


def _disk_bytes(server: ServerProcess) -> dict[str, float]:
    families = {family.name: family for family in text_string_to_metric_families(server.metrics_text())}
    return {s.labels["namespace"]: s.value for s in families["turso_server_namespace_disk_bytes"].samples}


def test_disk_bytes_gauge_follows_the_wal_which_only_grows(
    start_server: ServerFactory, replicas: Callable[..., Any], tmp_path: Path
) -> None:
    """``turso_server_namespace_disk_bytes`` is each stored namespace's ``sizeBytes``, and grows
    with every commit: tursodb's sync server never checkpoints, not even across a restart
    (docs/turso-server.md, *Disk growth*), so a replaced row still costs a WAL frame."""
    data_dir = tmp_path / "disk"
    server = start_server(data_dir=data_dir)
    writer = replicas(server.url("grows"))
    writer.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    writer.execute("INSERT INTO t VALUES (1, 'a')")
    writer.push()
    assert server.admin("POST", "/v1/namespaces/idle/create").status == 201
    before = _disk_bytes(server)
    assert set(before) == {"grows", "idle"}
    for name, size in before.items():
        assert size == server.admin("GET", f"/v1/namespaces/{name}").json()["sizeBytes"]
    wal = data_dir / "namespaces" / "grows" / "grows.db-wal"
    wal_before = wal.stat().st_size

    for i in range(20):  # the same row, 20 commits: the data does not grow, the WAL does
        writer.execute("UPDATE t SET v = ? WHERE id = 1", (str(i),))
        writer.push()
    after = _disk_bytes(server)
    assert after["grows"] - before["grows"] >= 20 * 4096  # at least a page frame per commit
    assert after["idle"] == before["idle"]
    assert wal.stat().st_size - wal_before >= 20 * 4096

    grown = wal.stat().st_size
    server.stop()
    server = start_server(data_dir=data_dir)
    assert _disk_bytes(server)["grows"] >= after["grows"]
    assert wal.stat().st_size == grown  # a restart does not checkpoint either
    fresh = replicas(server.url("grows"))  # and a bootstrap still sees the data
    assert fresh.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("19",)


def test_gc_with_tiny_durations(start_server: ServerFactory, replicas: Callable[..., Any]) -> None:
    server = start_server(
        TURSO_GC_INTERVAL="200ms",
        TURSO_AUTO_IDLE_DURATION="1500ms",
        TURSO_ARCHIVE_RETENTION="1s",
    )
    notes = server.data_dir / "archive" / "notes"  # no parsable stamp: never purged
    notes.mkdir(parents=True)
    assert server.admin("POST", "/v1/namespaces/kept/create").status == 201
    assert server.admin("POST", "/v1/namespaces/kept/ttl", {"ttl": "1s"}).status == 200  # locked: survives
    assert server.admin("POST", "/v1/namespaces/shortlived/create").status == 201
    assert server.admin("POST", "/v1/namespaces/shortlived/unlock").status == 200
    assert server.admin("POST", "/v1/namespaces/shortlived/ttl", {"ttl": "1s"}).status == 200
    replicas(server.url("idle")).push()
    busy = replicas(server.url("busy"))
    busy.push()

    def archived() -> set[str]:
        return {r["namespace"] for r in server.find_logs("gc archive")}

    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline and archived() != {"shortlived", "idle"}:
        busy.pull()  # keeps "busy" accessed, so the idle rule never fires for it
        time.sleep(0.1)
    assert archived() == {"shortlived", "idle"}
    reasons = {r["namespace"]: r["reason"] for r in server.find_logs("gc archive")}
    assert reasons == {"shortlived": "ttl_expired", "idle": "auto_idle"}
    names = {n["name"] for n in server.admin("GET", "/v1/namespaces").json()["namespaces"]}
    assert names == {"kept", "busy"}
    assert set(server.child_pids()) == {"kept", "busy"}

    _wait_for(lambda: len(server.find_logs("archive purged")) == 2, 5.0, "archive purge")
    assert [p.name for p in (server.data_dir / "archive").iterdir()] == ["notes"]
    assert server.process is not None and server.process.poll() is None


def test_auto_provision_off_and_insecure_dev(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    server = start_server(
        TURSO_ALLOW_AUTO_PROVISION="false",
        TURSO_INSECURE_DEV="true",
        TURSO_AUTH_TOKEN="",
        TURSO_ADMIN_TOKEN="",
        TURSO_TOKEN_SIGNING_KEY="",
    )
    warnings = [r["msg"] for r in server.logs() if r.get("level") == "WARNING" and "INSECURE" in r["msg"]]
    assert len(warnings) == 2

    unknown = server.data("POST", "/nobody/pull-updates", token=None)
    assert (unknown.status, unknown.json()["code"]) == (404, "namespace not found")
    assert not (server.data_dir / "namespaces" / "nobody").exists()

    assert server.admin("POST", "/v1/namespaces/made/create", token=None).status == 201
    writer = replicas(server.url("made"), token=None)
    writer.execute("CREATE TABLE t(v)")
    writer.execute("INSERT INTO t VALUES (42)")
    writer.push()
    assert replicas(server.url("made"), token=None).execute("SELECT v FROM t").fetchall() == [(42,)]
    minting = server.admin("POST", "/v1/namespaces/made/tokens", token=None)
    assert (minting.status, minting.json()["code"]) == (409, "conflict")


def test_the_first_create_with_an_owner_keeps_the_database_for_that_owner_across_a_restart(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    server = start_server()
    created = server.admin("POST", "/v1/namespaces/orders/create", {"owner": "team-y"})
    assert (created.status, created.json()["owner"]) == (201, "team-y")
    again = server.admin("POST", "/v1/namespaces/orders/create", {"owner": "team-y"})
    assert (again.status, again.json()["createdAt"]) == (200, created.json()["createdAt"])

    for body in ({"owner": "team-x"}, {"owner": "team-x", "adopt": True}):
        refused = server.admin("POST", "/v1/namespaces/orders/create", body)
        assert (refused.status, refused.json()["code"]) == (409, "owner mismatch"), body
        assert "team-y" in refused.json()["detail"]
    assert server.admin("GET", "/v1/namespaces/orders").json()["owner"] == "team-y"
    # Without an owner, create returns any database as before (the admin's own use).
    assert server.admin("POST", "/v1/namespaces/orders/create").json()["owner"] == "team-y"

    stored = json.loads((server.data_dir / "_state" / "namespaces.json").read_text())
    assert [n.get("owner") for n in stored["namespaces"]] == ["team-y"]
    server.stop()
    server.start()
    refused = server.admin("POST", "/v1/namespaces/orders/create", {"owner": "team-x"})
    assert (refused.status, refused.json()["code"]) == (409, "owner mismatch"), "the owner survives a restart"

    # The explicit admin action hands it over (or clears it).
    handed = server.admin("POST", "/v1/namespaces/orders/owner", {"owner": "team-x"})
    assert handed.json()["owner"] == "team-x"
    assert server.admin("POST", "/v1/namespaces/orders/create", {"owner": "team-x"}).status == 200
    assert server.admin("POST", "/v1/namespaces/orders/owner").json()["owner"] is None
    assert server.admin("POST", "/v1/namespaces/ghost/owner", {"owner": "a"}).status == 404


def test_an_ownerless_database_is_claimed_only_with_adopt(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    replicas(server.url("autoapp")).push()  # auto-provisioned by a data token: no owner
    assert server.admin("POST", "/v1/namespaces/handmade/create").json()["owner"] is None
    for name in ("autoapp", "handmade"):
        refused = server.admin("POST", f"/v1/namespaces/{name}/create", {"owner": "team-x"})
        assert (refused.status, refused.json()["code"]) == (409, "not owned"), name
        view = server.admin("GET", f"/v1/namespaces/{name}").json()
        assert view["owner"] is None, "a refused create changes nothing"
    assert server.admin("GET", "/v1/namespaces/autoapp").json()["origin"] == "auto"
    adopted = server.admin("POST", "/v1/namespaces/autoapp/create", {"owner": "team-x", "adopt": True})
    assert adopted.status == 200
    assert (adopted.json()["owner"], adopted.json()["origin"], adopted.json()["locked"]) == (
        "team-x",
        "explicit",
        True,
    )
    refused = server.admin("POST", "/v1/namespaces/autoapp/create", {"owner": "team-z", "adopt": True})
    assert (refused.status, refused.json()["code"]) == (409, "owner mismatch")


@pytest.mark.parametrize(
    "body",
    [
        {"owner": 5},
        {"owner": "has space"},
        {"owner": "x" * 254},
        {"owner": "é"},
        {"adopt": True},
        {"owner": "a", "adopt": "yes"},
        {"owner": "a", "ownr": "b"},
    ],
)
def test_a_create_with_a_bad_owner_is_400_and_creates_nothing(server: ServerProcess, body: Any) -> None:
    refused = server.admin("POST", "/v1/namespaces/orders/create", body)
    assert (refused.status, refused.json()["code"]) == (400, "invalid body")
    assert server.admin("GET", "/v1/namespaces/orders").status == 404


def test_an_admin_body_over_64_kib_is_400_invalid_body_however_it_is_framed(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/capped/create").status == 201
    big = b'{"ttl": "' + b"1" * 70_000 + b'"}'
    head = f"POST /v1/namespaces/capped/ttl HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
    framings = {
        "content-length": f"{head}Content-Length: {len(big)}\r\nConnection: close\r\n\r\n".encode() + big,
        "chunked": f"{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big),
    }
    for framing, request in framings.items():
        response = raw_exchange(server.admin_port, request)
        assert (response.status, response.json()["code"]) == (400, "invalid body"), (framing, response.body)
    assert server.admin("GET", "/v1/namespaces/capped").json()["ttl"] is None


def _token(server: ServerProcess, name: str) -> str:
    response = server.admin("POST", f"/v1/namespaces/{name}/tokens", {"access": "rw"})
    assert response.status == 201, response.body
    token: str = response.json()["token"]
    return token


def test_a_delete_cut_short_after_its_files_moved_never_serves_an_empty_database(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    """A delete (or GC archive) moves the namespace's files, then forgets it. A server killed in
    between, shut down there, or failing its state write there, used to come back with the
    namespace still listed over a missing directory: tursodb made a new, empty database in its
    place, served it to the old tokens, and the real data aged out of the archive. The move is now
    one directory rename, the next start finishes such a delete, and a known namespace's child never
    makes its directory again."""
    server = start_server()
    for name in ("app", "lost"):
        assert server.admin("POST", f"/v1/namespaces/{name}/create").status == 201
        writer = replicas(server.url(name), token=_token(server, name))
        writer.execute("CREATE TABLE t(v INTEGER)")
        writer.execute("INSERT INTO t VALUES (42)")
        writer.push()
    old_token = _token(server, "app")
    server.kill9()
    # What a delete killed between its move and forgetting the namespace leaves: the directory
    # moved whole into the archive, the record still in the state file. For "lost", the directory
    # is gone with no archive of it (removed by hand).
    namespaces = server.data_dir / "namespaces"
    archive = server.data_dir / "archive" / f"app.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    (namespaces / "app").rename(archive)
    for leftover in ("tmp", "backups"):
        for path in sorted((archive / leftover).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (archive / leftover).rmdir()
    lost = server.data_dir / "lost-by-hand"
    (namespaces / "lost").rename(lost)
    server.start()

    assert server.admin("GET", "/v1/namespaces/app").status == 404  # the delete is finished
    assert server.find_logs("namespace archived by a delete that did not finish: forgotten now")
    assert server.data("POST", "/app/pull-updates", token=old_token).status == 401
    assert not (namespaces / "app").exists()
    copy = sqlite3.connect(archive / "app.db")
    try:
        assert copy.execute("SELECT v FROM t").fetchall() == [(42,)]  # whole in the archive
    finally:
        copy.close()
    # No archive to finish it with: the namespace is not served, and no empty database is made.
    response = server.data("POST", "/lost/pull-updates", token=_token(server, "lost"))
    assert response.status == 503, response.body
    assert not (namespaces / "lost").exists()
    assert server.find_logs("namespace directory missing and no archive of it: not served")


def test_an_archive_moves_the_namespace_directory_in_one_rename(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    layout.prepare()
    directory = layout.prepare_namespace("app")
    (directory / "app.db").write_bytes(b"db")
    (directory / "app.db-wal").write_bytes(b"wal")
    (layout.tmp_dir("app") / "spill").write_bytes(b"x")
    moved: list[tuple[str, str]] = []
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        moved.append((Path(src).name, Path(dst).parent.name))
        real_rename(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "rename", rename)
        patch.setattr(os, "replace", lambda *a: pytest.fail(f"a file moved alone: {a}"))
        target = layout.archive_namespace("app", "20261207T120000Z")
    assert moved == [("app", "archive")]
    assert sorted(p.name for p in target.iterdir()) == ["app.db", "app.db-wal"]
    assert not directory.exists()
    with pytest.raises(FileNotFoundError):
        layout.prepare_namespace("app", create=False)


def test_a_lifecycle_change_whose_state_write_fails_changes_nothing(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    """The state file could not be written (a full or failing disk): the change used to stay in
    memory only, so a delete answered 500 while the namespace was gone until the next start
    brought it back, and a create served a namespace the next start forgot."""
    server = start_server()
    assert server.admin("POST", "/v1/namespaces/app/create").status == 201
    token = _token(server, "app")
    writer = replicas(server.url("app"), token=token)
    writer.execute("CREATE TABLE t(v INTEGER)")
    writer.execute("INSERT INTO t VALUES (42)")
    writer.push()
    state = server.data_dir / "_state" / "namespaces.json"
    saved = state.read_bytes()
    state.unlink()
    state.mkdir()  # every write of the state file now fails
    try:
        deleted = server.admin("DELETE", "/v1/namespaces/app")
        assert deleted.status == 500 and deleted.json()["code"], deleted.body
        assert server.admin("GET", "/v1/namespaces/app").status == 200
        assert replicas(server.url("app"), token=token).execute("SELECT v FROM t").fetchall() == [(42,)]
        created = server.admin("POST", "/v1/namespaces/other/create")
        assert created.status == 500, created.body
        assert server.admin("GET", "/v1/namespaces/other").status == 404
        assert not (server.data_dir / "namespaces" / "other").exists()
    finally:
        state.rmdir()
        state.write_bytes(saved)


def test_every_acknowledged_admin_write_survives_a_sigkill_right_after_its_reply(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    """Each admin write is in the state file before its answer goes out, so a server killed (-9)
    right after the answer comes back with it: the owner, lock, TTL, a delete, and every token
    revocation (a revoked token must never verify again). ``/access`` used to bump lastAccessAt in
    memory only, written by the access flusher later: a server killed after its 200 came back with
    the older time, and the GC's first sweep idled out the auto namespace it had just been told was
    in use."""
    slow_flush = {"TURSO_ACCESS_FLUSH_INTERVAL": "1h", "TURSO_GC_INTERVAL": "0"}
    server = start_server(**slow_flush)
    for name in ("app", "gone"):
        assert server.admin("POST", f"/v1/namespaces/{name}/create", {"owner": "team-a"}).status == 201
    old = _token(server, "app")
    assert server.data("POST", "/app/pull-updates", token=old).status == 200
    assert server.admin("POST", "/v1/namespaces/app/unlock").status == 200
    assert server.admin("POST", "/v1/namespaces/app/ttl", {"ttl": "30d"}).status == 200
    assert server.admin("POST", "/v1/namespaces/app/owner", {"owner": "team-b"}).status == 200
    assert server.admin("DELETE", "/v1/namespaces/gone").status == 200
    minted = server.admin("POST", "/v1/namespaces/app/tokens", {"revokeOthers": True})
    assert minted.status == 201, minted.body
    middle = minted.json()["token"]
    assert server.admin("POST", "/v1/namespaces/app/tokens/revoke").status == 200
    server.kill9()

    server = start_server(data_dir=server.data_dir, **slow_flush)
    view = server.admin("GET", "/v1/namespaces/app").json()
    fields = (view["locked"], view["ttl"], view["owner"], view["tokenGeneration"])
    assert fields == (False, "30d", "team-b", 2)
    assert server.admin("GET", "/v1/namespaces/gone").status == 404
    for revoked in (old, middle):
        response = server.data("POST", "/app/pull-updates", token=revoked)
        assert response.status == 401 and "revoked" in response.json()["detail"], response.body
    assert server.data("POST", "/app/pull-updates", token=_token(server, "app")).status == 200

    # An auto namespace idle past TURSO_AUTO_IDLE_DURATION, then told it is in use.
    replicas(server.url("idle")).push()
    assert server.admin("GET", "/v1/namespaces/idle").json()["origin"] == "auto"
    time.sleep(6.5)
    bumped = {name: server.admin("POST", f"/v1/namespaces/{name}/access") for name in ("app", "idle")}
    assert all(response.status == 200 for response in bumped.values()), bumped
    server.kill9()

    server = start_server(data_dir=server.data_dir, TURSO_GC_INTERVAL="1s", TURSO_AUTO_IDLE_DURATION="6s")
    time.sleep(1.0)  # the first sweep runs as soon as the restore is done
    assert not server.find_logs("gc archive"), "the GC idled out a namespace just accessed"
    for name, response in bumped.items():
        after = server.admin("GET", f"/v1/namespaces/{name}")
        assert after.status == 200, after.body
        assert after.json()["lastAccessAt"] == response.json()["lastAccessAt"], name


HELD_STATE_SERVER = Path(__file__).with_name("held_state_server.py")
CREATE_TABLE = b'{"requests":[{"type":"execute","stmt":{"sql":"CREATE TABLE t(v INTEGER)"}}]}'


def _in_thread(results: dict[str, Any], key: str, send: Callable[[], Any]) -> threading.Thread:
    """``send()`` in a thread; its response (or the connection's error) lands in ``results[key]``."""

    def run() -> None:
        try:
            results[key] = send()
        except Exception as exc:  # the server was killed: no answer at all
            results[key] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _create_and_write_while_held(
    server: ServerProcess, name: str
) -> tuple[dict[str, Any], list[threading.Thread]]:
    """An admin create of ``name`` (its state write held), then a data write to it."""
    results: dict[str, Any] = {}
    create = _in_thread(results, "create", partial(server.admin, "POST", f"/v1/namespaces/{name}/create"))
    _wait_for(lambda: bool(server.find_logs("namespace running", namespace=name)), 10, "the new child")
    write = _in_thread(
        results, "write", partial(server.data, "POST", f"/{name}/v2/pipeline", body=CREATE_TABLE)
    )
    write.join(1.5)
    assert "write" not in results, f"answered {results['write'].status} before the namespace was stored"
    return results, [create, write]


def test_a_new_namespace_serves_no_request_before_its_record_is_in_the_state_file(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """A create registered the new child as running before its state write: a data request for the
    name (the data token reaches any name) was forwarded and answered 200 while the namespace was
    in memory only, and a server killed then came back without it, the acknowledged write gone with
    it. Such a request now waits for the write; killed meanwhile, it was never answered."""
    gate = tmp_path / "hold-state-writes"
    server = start_server(command=[sys.executable, str(HELD_STATE_SERVER)], HELD_STATE_GATE=str(gate))
    gate.touch()
    results, threads = _create_and_write_while_held(server, "kept")
    gate.unlink()
    for thread in threads:
        thread.join(10)
    assert (results["create"].status, results["write"].status) == (201, 200), results

    gate.touch()
    results, threads = _create_and_write_while_held(server, "lost")
    server.kill9()
    gate.unlink()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(result, Exception) for result in results.values()), results
    server = start_server(data_dir=server.data_dir)
    assert server.admin("GET", "/v1/namespaces/lost").status == 404
    assert server.admin("GET", "/v1/namespaces/kept").status == 200


def _revoke_and_mint_while_held(server: ServerProcess, generation: int) -> tuple[dict[str, Any], list[Any]]:
    """A revocation of ``app``'s tokens (its state write held), then a plain mint."""
    results: dict[str, Any] = {}
    revoke = _in_thread(results, "revoke", partial(server.admin, "POST", "/v1/namespaces/app/tokens/revoke"))
    _wait_for(
        lambda: server.admin("GET", "/v1/namespaces/app").json()["tokenGeneration"] == generation,
        10,
        "the revocation to be made",
    )
    mint = _in_thread(results, "mint", partial(server.admin, "POST", "/v1/namespaces/app/tokens", {}))
    mint.join(1.5)
    assert "mint" not in results, f"answered {results['mint'].status} before the revocation was stored"
    return results, [revoke, mint]


def test_a_token_is_minted_only_in_a_generation_that_is_in_the_state_file(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """A plain mint while a revocation's state write was pending answered 201 with a token of the
    new generation at once; a server killed before that write landed came back in the old one and
    refused the token it had handed out. The mint now waits for the write."""
    gate = tmp_path / "hold-state-writes"
    server = start_server(command=[sys.executable, str(HELD_STATE_SERVER)], HELD_STATE_GATE=str(gate))
    assert server.admin("POST", "/v1/namespaces/app/create").status == 201
    gate.touch()
    results, threads = _revoke_and_mint_while_held(server, 1)
    gate.unlink()
    for thread in threads:
        thread.join(10)
    assert (results["revoke"].status, results["mint"].status) == (200, 201), results
    assert results["mint"].json()["tokenGeneration"] == 1
    token = results["mint"].json()["token"]
    assert server.data("POST", "/app/pull-updates", token=token).status == 200

    gate.touch()
    results, threads = _revoke_and_mint_while_held(server, 2)
    server.kill9()
    gate.unlink()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(result, Exception) for result in results.values()), results
    server = start_server(data_dir=server.data_dir)
    assert server.admin("GET", "/v1/namespaces/app").json()["tokenGeneration"] == 1
    assert server.data("POST", "/app/pull-updates", token=token).status == 200, "no answer revoked it"


def test_a_create_answers_only_from_what_the_state_file_holds(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """A create of an existing namespace while a lock of it was being written found it explicit
    and locked in memory, wrote nothing, and answered 200 ("explicit + locked") at once; a server
    killed before the lock's write landed came back unlocked. It now waits for that write."""
    gate = tmp_path / "hold-state-writes"
    server = start_server(command=[sys.executable, str(HELD_STATE_SERVER)], HELD_STATE_GATE=str(gate))
    assert server.admin("POST", "/v1/namespaces/app/create").status == 201
    assert server.admin("POST", "/v1/namespaces/app/unlock").status == 200
    gate.touch()
    results: dict[str, Any] = {}
    lock = _in_thread(results, "lock", partial(server.admin, "POST", "/v1/namespaces/app/lock"))
    _wait_for(lambda: server.admin("GET", "/v1/namespaces/app").json()["locked"], 10, "the lock to be made")
    create = _in_thread(results, "create", partial(server.admin, "POST", "/v1/namespaces/app/create"))
    create.join(1.5)
    assert "create" not in results, f"answered {results['create'].status} before the lock was stored"
    server.kill9()
    gate.unlink()
    for thread in (lock, create):
        thread.join(10)
    assert all(isinstance(result, Exception) for result in results.values()), results
    server = start_server(data_dir=server.data_dir)
    assert server.admin("GET", "/v1/namespaces/app").json()["locked"] is False
