"""The consistency contract (docs/consistency.md) against a real turso-server and real replicas.

Each service here stands in for one pod: its own replica directory, no shared state but the
server. Background pulls are off (``TURSO_SYNC_INTERVAL=60s``) so nothing but the write path can
bring one pod another's rows; that is the case where rowids used to collide.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import (
    BlockingDatabase,
    Database,
    TursoBusyError,
    TursoCommitUnknownError,
    TursoError,
    TursoQueryError,
    TursoService,
    TursoUnavailableError,
    resolve_config,
)
from buntime.turso._backends import ReplicaBackend
from buntime.turso._engine import BOOT_MARK_SUFFIX, OFFLINE_MARK, boot_id
from buntime.turso._leases import Lease, LeaseClient
from tests.support.tursoserver import TursoServer

NS = "ledger"


def pod(server: TursoServer, root: Path, name: str, **extra: str) -> TursoService:
    env = {
        "TURSO_SERVER_URL": server.url,
        "TURSO_SERVER_TOKEN": server.data_token,
        "TURSO_LOCAL_PATH": str(root / name / "runtime.db"),
        "TURSO_SYNC_INTERVAL": "60s",
        **extra,
    }
    return TursoService(resolve_config(env=env))


async def schema(service: TursoService) -> None:
    await service.transaction(
        lambda db: db.exec(
            "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT);"
            "CREATE TABLE IF NOT EXISTS c(k TEXT PRIMARY KEY, v INTEGER NOT NULL)"
        ),
        namespace=NS,
        type="exclusive",
    )


async def server_rows(server: TursoServer, root: Path, sql: str) -> list[dict[str, object]]:
    """What the server holds, read through a brand-new replica."""
    fresh = pod(server, root, f"fresh-{len(list(root.iterdir()))}")
    try:
        return await (await fresh.connect(NS)).all(sql)
    finally:
        await fresh.aclose()


async def insert_rows(service: TursoService, name: str, count: int) -> None:
    """``count`` one-row transactions, one after the other, inserting ``<name>-<i>`` into ``t``."""
    for i in range(count):
        await service.transaction(
            lambda db, v=f"{name}-{i}": db.run("INSERT INTO t(who) VALUES (?)", [v]), namespace=NS
        )


async def commit_offline_while_the_server_is_down(server: TursoServer, root: Path, first: str) -> None:
    """Pod ``a`` pushes ``first`` in serializable mode; then, with the server down, acknowledges
    ``INSERT INTO t(who) VALUES ('offline')`` in offline mode (only in its file); the server is back."""
    a = pod(server, root, "a")
    try:
        await schema(a)
        await a.transaction(lambda db: db.run(first), namespace=NS)
    finally:
        await a.aclose()
    await asyncio.to_thread(server.stop)
    offline = pod(server, root, "a", TURSO_WRITE_MODE="offline")
    try:
        await offline.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('offline')"), namespace=NS)
    finally:
        await offline.aclose()  # its final push fails too: the commit is only in the file
    await asyncio.to_thread(server.start)


async def test_inserts_from_pods_that_never_pulled_are_all_kept(server: TursoServer, tmp_path: Path) -> None:
    a, b = pod(server, tmp_path, "a"), pod(server, tmp_path, "b")
    try:
        await schema(a)
        await b.connect(NS)  # b opened before a's rows existed and never pulls by itself
        for _ in range(3):
            await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('A')"), namespace=NS)
        for _ in range(3):
            await b.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('B')"), namespace=NS)
    finally:
        await a.aclose()
        await b.aclose()
    rows = await server_rows(server, tmp_path, "SELECT id, who FROM t ORDER BY id")
    assert [r["who"] for r in rows] == ["A", "A", "A", "B", "B", "B"]
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]


async def test_read_modify_write_from_two_pods_loses_no_increment(
    server: TursoServer, tmp_path: Path
) -> None:
    a, b = pod(server, tmp_path, "a"), pod(server, tmp_path, "b")
    rounds = 15

    async def bump(db: Database) -> None:
        row = await db.get("SELECT v FROM c WHERE k = 'n'")
        await asyncio.sleep(0.002)  # widen the window between the read and the write
        await db.run("UPDATE c SET v = ? WHERE k = 'n'", [int(row["v"]) + 1 if row else 1])

    async def loop(service: TursoService) -> None:
        for _ in range(rounds):
            await service.transaction(bump, namespace=NS)

    try:
        await schema(a)
        await a.transaction(lambda db: db.run("INSERT INTO c(k, v) VALUES ('n', 0)"), namespace=NS)
        await b.connect(NS)
        await asyncio.gather(loop(a), loop(b), loop(a), loop(b))
        assert await a.transaction(lambda db: db.get("SELECT v FROM c"), namespace=NS) == {"v": 4 * rounds}
    finally:
        await a.aclose()
        await b.aclose()
    assert await server_rows(server, tmp_path, "SELECT v FROM c") == [{"v": 4 * rounds}]


async def test_autocommit_writes_follow_the_same_contract(server: TursoServer, tmp_path: Path) -> None:
    a, b = pod(server, tmp_path, "a"), pod(server, tmp_path, "b")
    try:
        await schema(a)
        await a.transaction(lambda db: db.run("INSERT INTO c(k, v) VALUES ('n', 0)"), namespace=NS)
        da, db_ = await a.connect(NS), await b.connect(NS)
        await asyncio.gather(
            *(d.run("UPDATE c SET v = v + 1 WHERE k = 'n'") for _ in range(10) for d in (da, db_))
        )
        await asyncio.gather(
            da.run("INSERT INTO t(who) VALUES ('A')"), db_.run("INSERT INTO t(who) VALUES ('B')")
        )
        assert await da.get("SELECT count(*) AS n FROM t") is not None  # a read needs no lease
    finally:
        await a.aclose()
        await b.aclose()
    assert await server_rows(server, tmp_path, "SELECT v FROM c") == [{"v": 20}]
    assert len(await server_rows(server, tmp_path, "SELECT id FROM t")) == 2


def lease_call(server: TursoServer, method: str, path: str, body: object | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{server.url}/{NS}/-/lease{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {server.data_token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_a_dead_holders_lease_expires_and_a_busy_lease_is_turso_busy(
    server: TursoServer, tmp_path: Path
) -> None:
    a = pod(server, tmp_path, "a", TURSO_WRITE_TIMEOUT="0.5s")
    try:
        await schema(a)
        # A pod that took the lease and died: nobody renews it.
        status, grant = lease_call(server, "POST", "", {"holder": "dead-pod", "ttl": 1.5})
        assert status == 200 and grant["fresh"] is False
        with pytest.raises(TursoBusyError) as info:
            await a.transaction(
                lambda db: db.run("INSERT INTO t(who) VALUES ('x')"), namespace=NS, max_retries=0
            )
        assert info.value.code == "TURSO_LEASE_BUSY"
        await asyncio.sleep(1.2)  # the dead pod's TTL runs out
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('y')"), namespace=NS)
        # Its token is fenced off now: pushes and renewals under it are refused.
        assert lease_call(server, "PUT", f"/{grant['token']}")[0] == 409
    finally:
        await a.aclose()
    assert await server_rows(server, tmp_path, "SELECT who FROM t") == [{"who": "y"}]


async def test_a_transaction_whose_lease_was_taken_over_is_rerun_on_fresh_data(
    server: TursoServer, tmp_path: Path
) -> None:
    """Fencing: a pod paused past its TTL cannot push over the writes of the pod that took over."""
    a = pod(server, tmp_path, "a", TURSO_LEASE_TTL="0.3s")
    b = pod(server, tmp_path, "b")
    runs = 0

    async def slow_bump(db: Database) -> None:
        nonlocal runs
        runs += 1
        row = await db.get("SELECT v FROM c WHERE k = 'n'")
        if runs == 1:
            a_backend = a._backends[NS]
            keepalive = a_backend._keepalive  # pause the way a stalled pod would: no renewals
            assert keepalive is not None
            keepalive.cancel()
            await asyncio.sleep(0.6)
            await b.transaction(lambda d: d.run("UPDATE c SET v = v + 10 WHERE k = 'n'"), namespace=NS)
        await db.run("UPDATE c SET v = ? WHERE k = 'n'", [int(row["v"]) + 1])

    try:
        await schema(a)
        await a.transaction(lambda db: db.run("INSERT INTO c(k, v) VALUES ('n', 0)"), namespace=NS)
        await b.connect(NS)
        await a.transaction(slow_bump, namespace=NS)
        assert runs == 2, "the first run was refused at push and re-run"
    finally:
        await a.aclose()
        await b.aclose()
    assert await server_rows(server, tmp_path, "SELECT v FROM c") == [{"v": 11}]


async def test_many_writers_in_one_pod_share_pushes_and_every_commit_lands(
    server: TursoServer, tmp_path: Path
) -> None:
    a, b = pod(server, tmp_path, "a"), pod(server, tmp_path, "b")
    try:
        await schema(a)
        await b.connect(NS)

        await asyncio.gather(
            *(insert_rows(s, f"{s_name}{k}", 10) for k in range(8) for s_name, s in (("a", a), ("b", b)))
        )
        for service in (a, b):
            assert (await service.health()).namespaces[NS].pending_operations == 0
    finally:
        await a.aclose()
        await b.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    assert sorted(r["who"] for r in rows) == sorted(
        f"{p}{k}-{i}" for p in "ab" for k in range(8) for i in range(10)
    )


async def test_a_server_restart_while_a_pod_holds_the_lease_costs_one_rerun(
    server: TursoServer, tmp_path: Path
) -> None:
    a = pod(server, tmp_path, "a", TURSO_WRITE_TIMEOUT="10s")
    runs = 0

    async def insert_across_restart(db: Database) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:  # the lease is ours; the server forgets it while we are inside
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
        await db.run("INSERT INTO t(who) VALUES ('after')")

    try:
        await schema(a)
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('before')"), namespace=NS)
        await a.transaction(insert_across_restart, namespace=NS)
        assert runs == 2, "the push under the forgotten lease was refused, then the transaction re-ran"
    finally:
        await a.aclose()
    assert await server_rows(server, tmp_path, "SELECT who FROM t ORDER BY id") == [
        {"who": "before"},
        {"who": "after"},
    ]


async def test_a_callback_that_breaks_the_savepoint_costs_only_its_own_transaction(
    server: TursoServer, tmp_path: Path
) -> None:
    """Each transaction is a savepoint of the group waiting for the next push; its RELEASE runs
    after the caller moved on. A callback that releases it early makes that RELEASE fail: the group
    is rolled back, its push fails, every other transaction in it runs again and lands, and the
    hostile one never commits."""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)

        async def hostile(db: Database) -> None:
            await db.run("INSERT INTO t(who) VALUES ('hostile')")
            await db.run("RELEASE buntime_tx")

        outcomes = await asyncio.gather(
            a.transaction(hostile, namespace=NS, max_retries=2),
            *(insert_rows(a, f"w{k}", 5) for k in range(4)),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], TursoBusyError), outcomes[0]
        assert outcomes[0].code == "TURSO_GROUP_ROLLED_BACK"
        assert outcomes[1:] == [None] * 4
        local = await (await a.connect(NS)).all("SELECT who FROM t")
    finally:
        await a.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    expected = sorted(f"w{k}-{i}" for k in range(4) for i in range(5))
    assert sorted(r["who"] for r in rows) == expected
    assert sorted(r["who"] for r in local) == expected


@pytest.mark.parametrize("raises", [True, False], ids=["raises", "returns"])
@pytest.mark.parametrize("verb", ["RELEASE buntime_tx", "COMMIT", "ROLLBACK"])
async def test_a_callback_that_ends_its_transaction_itself_loses_no_other_commit(
    server: TursoServer, tmp_path: Path, verb: str, raises: bool
) -> None:
    """A callback that ends its own savepoint or the group's transaction (RELEASE, COMMIT,
    ROLLBACK), then raises or returns: it fails and none of it lands, and every other transaction
    of its group, which had already been released into the group and awaits the push, runs again
    and lands once. (The group's undo used to drop the others and still report them committed; a
    COMMIT made them land beside the hostile row.)"""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)

        async def hostile(db: Database) -> None:
            await asyncio.sleep(0.01)  # let writers into the group first
            await db.run("INSERT INTO t(who) VALUES ('hostile')")
            await db.run(verb)
            if raises:
                raise ValueError(f"after {verb}")

        outcomes = await asyncio.gather(
            *(a.transaction(hostile, namespace=NS, max_retries=2) for _ in range(3)),
            *(insert_rows(a, f"w{k}", 5) for k in range(4)),
            return_exceptions=True,
        )
        assert all(isinstance(o, ValueError | TursoError) for o in outcomes[:3]), outcomes
        assert outcomes[3:] == [None] * 4
    finally:
        await a.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    assert sorted(r["who"] for r in rows) == sorted(f"w{k}-{i}" for k in range(4) for i in range(5))


async def test_a_lone_failed_transaction_leaves_no_group_behind(server: TursoServer, tmp_path: Path) -> None:
    """A transaction alone in its group that fails closes the group: the lease goes back while
    idle, and the next write takes it again (an empty group left open used to fail every later
    write with TURSO_LEASE_LOST)."""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)

        async def failing(db: Database) -> None:
            await db.run("INSERT INTO t(who) VALUES ('no')")
            raise ValueError("no")

        with pytest.raises(ValueError):
            await a.transaction(failing, namespace=NS)
        await asyncio.sleep(0.2)  # well past the 2 ms an idle pod keeps the lease
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('yes')"), namespace=NS)
    finally:
        await a.aclose()
    assert [r["who"] for r in await server_rows(server, tmp_path, "SELECT who FROM t")] == ["yes"]


async def test_a_release_that_fails_while_queued_never_reports_its_transaction_committed(
    server: TursoServer, tmp_path: Path
) -> None:
    """A transaction's savepoint RELEASE is queued on the engine thread when that thread is busy,
    and the caller goes on to decide whether it waits for a push. Should that RELEASE fail, the
    engine thread rolls the group back (``_abandon_group``) while the caller may be reading the
    group's state. Caught in the middle of it (the group already closed, its failure not yet set),
    the caller used to find nothing pending and return: a write reported committed that was
    rolled back. The interleaving is forced here; the transaction must fail its first run and land
    on its second, once."""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)
        backend = await a._backend(NS)
        assert isinstance(backend, ReplicaBackend)
        go, reached, resume = threading.Event(), threading.Event(), threading.Event()
        armed = {"release": True, "after": True}
        finish, abandon, after_commit = backend._finish, backend._abandon_group, backend._after_commit

        def failing_finish(state: object, verb: str) -> None:
            if verb == "COMMIT" and armed["release"]:
                armed["release"] = False
                raise TursoError("RELEASE failed (injected)", code="TURSO_INJECTED")
            finish(state, verb)  # type: ignore[arg-type]

        def paused_abandon(conn: object, *, members: bool, cause: Exception | None = None) -> None:
            backend._group_open = False  # the first thing the real one does...
            reached.set()
            resume.wait(2.0)  # ...then the caller looks, before the group's failure is recorded
            abandon(conn, members=members, cause=cause)

        async def looking_after_commit() -> object:
            if not armed["after"]:
                return await after_commit()
            armed["after"] = False
            go.set()  # the engine thread runs the queued RELEASE now
            assert await asyncio.to_thread(reached.wait, 5.0)
            try:
                return await after_commit()
            finally:
                resume.set()

        backend._finish = failing_finish  # type: ignore[method-assign]
        backend._abandon_group = paused_abandon  # type: ignore[method-assign]
        backend._after_commit = looking_after_commit  # type: ignore[method-assign]
        runs = 0

        async def insert(db: Database) -> None:
            nonlocal runs
            runs += 1
            await db.run("INSERT INTO t(who) VALUES ('once')")
            if runs == 1:  # the engine thread is busy when the callback returns: RELEASE is queued
                backend._engine.submit(lambda: go.wait(5.0))

        await a.transaction(insert, namespace=NS, max_retries=2)
        assert runs == 2
    finally:
        await a.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    assert [r["who"] for r in rows] == ["once"]


async def test_a_write_cancelled_during_its_pull_keeps_no_lease(server: TursoServer, tmp_path: Path) -> None:
    """Cancelled while the pull before its first statement runs (on the engine thread, which may
    finish it, or fail, unseen), a transaction leaves no lease behind: the next write pulls again
    instead of taking the lease it still held for "this copy is up to date" and writing on a stale
    copy (here: b read 0, pushed 1 over a's 5)."""
    a, b = pod(server, tmp_path, "a"), pod(server, tmp_path, "b")

    async def bump(db: Database) -> None:
        row = await db.get("SELECT v FROM c WHERE k = 'n'")
        await db.run("UPDATE c SET v = ? WHERE k = 'n'", [int(row["v"]) + 1])

    try:
        await schema(a)
        await a.transaction(lambda db: db.run("INSERT INTO c(k, v) VALUES ('n', 0)"), namespace=NS)
        await b.connect(NS)  # b's copy: n = 0
        for _ in range(5):
            await a.transaction(bump, namespace=NS)
        replica = b._backends[NS]
        assert isinstance(replica, ReplicaBackend)
        entered, go_on = threading.Event(), threading.Event()

        def failing_pull() -> bool:
            entered.set()
            go_on.wait(10)
            raise TursoUnavailableError("the pull failed after its caller went away")

        replica._pull_clean = failing_pull  # type: ignore[method-assign]
        cancelled = asyncio.create_task(b.transaction(bump, namespace=NS))
        assert await asyncio.to_thread(entered.wait, 10)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        del replica._pull_clean  # the real pull again
        go_on.set()
        await b.transaction(bump, namespace=NS)
    finally:
        await a.aclose()
        await b.aclose()
    assert await server_rows(server, tmp_path, "SELECT v FROM c") == [{"v": 6}]


async def cancel_a_blocking_insert(service: TursoService) -> None:
    """A ``run_transaction()`` inserting 'cancelled', cancelled while its callback blocks on the
    engine thread; returns once the callback finished and the idle lease went back."""
    entered, go_on = threading.Event(), threading.Event()

    def blocking(db: BlockingDatabase) -> None:
        db.run("INSERT INTO t(who) VALUES ('cancelled')")
        entered.set()
        go_on.wait(10)

    cancelled = asyncio.create_task(service.run_transaction(blocking, namespace=NS))
    assert await asyncio.to_thread(entered.wait, 10)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    go_on.set()
    await asyncio.sleep(0.2)  # the callback finishes; the idle lease goes back


async def test_a_cancelled_blocking_transaction_leaves_no_group_behind(
    server: TursoServer, tmp_path: Path
) -> None:
    """Cancelled while its blocking callback runs on the engine thread, a ``run_transaction()``
    still releases its savepoint into the group there, but never joins a batch: nobody awaits
    that group's push. The next write rolls it back instead of failing with TURSO_LEASE_LOST
    forever once the idle lease went back; and the cancelled write, never acknowledged, is gone."""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)
        await cancel_a_blocking_insert(a)
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('next')"), namespace=NS)
        assert await a.sync() is not None  # and the replica pulls again
    finally:
        await a.aclose()
    assert [r["who"] for r in await server_rows(server, tmp_path, "SELECT who FROM t")] == ["next"]


async def _written_then_rolled_back(server: TursoServer, root: Path) -> Path:
    """A pod writes a, b; its files are copied; it writes c, d, e; the copy is put back, as
    an OS crash that took the tail of the file (or a volume restored from a snapshot) leaves it."""
    a = pod(server, root, "a")
    try:
        await schema(a)
        for v in "ab":
            await a.transaction(lambda db, v=v: db.run("INSERT INTO t(who) VALUES (?)", [v]), namespace=NS)
    finally:
        await a.aclose()
    replica_dir = root / "a"
    shutil.copytree(replica_dir, root / "copy")
    a = pod(server, root, "a")
    try:
        for v in "cde":
            await a.transaction(lambda db, v=v: db.run("INSERT INTO t(who) VALUES (?)", [v]), namespace=NS)
    finally:
        await a.aclose()
    shutil.rmtree(replica_dir)
    shutil.copytree(root / "copy", replica_dir)
    shutil.rmtree(root / "copy")
    return replica_dir


@pytest.mark.parametrize("boot", ["same", "another"])
async def test_a_replica_older_than_its_own_pushes_resets_and_loses_nothing(
    server: TursoServer, tmp_path: Path, boot: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Left as it is, such a replica either cannot pull again (pyturso: remote_pull_gen >
    local_pull_gen) or reuses change ids the server has seen, which it then skips. It is reset
    instead: from the boot mark when the machine rebooted, from pyturso's error otherwise."""
    replica_dir = await _written_then_rolled_back(server, tmp_path)
    if boot == "another":
        marks = list(replica_dir.rglob(f"*{BOOT_MARK_SUFFIX}"))
        assert len(marks) == 1 and marks[0].read_text().strip() == boot_id()
        marks[0].write_text("a-boot-before-a-crash\n")
    a = pod(server, tmp_path, "a")
    try:
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('after')"), namespace=NS)
        local = await (await a.connect(NS)).all("SELECT who FROM t")
    finally:
        await a.aclose()
    expected = ["a", "after", "b", "c", "d", "e"]
    assert sorted(r["who"] for r in local) == expected
    # Which guard caught it: the boot mark before any pull, or pyturso's error on the pull.
    assert ("last written in another boot" in caplog.text) == (boot == "another")
    assert ("older than its own pushes" in caplog.text) == (boot == "same")
    assert sorted(r["who"] for r in await server_rows(server, tmp_path, "SELECT who FROM t")) == expected


async def test_serializable_replicas_skip_the_local_fsync_offline_ones_do_not(
    server: TursoServer, tmp_path: Path
) -> None:
    """A serializable commit counts once pushed, so the replica runs at synchronous=NORMAL (1)
    with its boot recorded; offline mode acknowledges local commits, so it keeps FULL (2)."""
    for name, mode, level in (("s", "serializable", 1), ("o", "offline", 2)):
        service = pod(server, tmp_path, name, TURSO_WRITE_MODE=mode)
        try:
            row = await (await service.connect(NS)).get("PRAGMA synchronous")
        finally:
            await service.aclose()
        assert row is not None and next(iter(row.values())) == level, (mode, row)
        marks = list((tmp_path / name).rglob(f"*{BOOT_MARK_SUFFIX}"))
        expected = boot_id() if mode == "serializable" else OFFLINE_MARK
        assert [m.read_text().strip() for m in marks] == [expected]


async def test_commits_acknowledged_in_offline_mode_survive_a_switch_to_serializable(
    server: TursoServer, tmp_path: Path
) -> None:
    """A pod that acknowledged commits in offline mode while the server was down, restarted in
    serializable mode: they are pushed under the lease (offline mode's rule, the last push wins)
    and the replica then pulls what other pods wrote, instead of being dropped as a crash's
    leftovers."""
    await commit_offline_while_the_server_is_down(server, tmp_path, "INSERT INTO t(who) VALUES ('pushed')")
    b = pod(server, tmp_path, "b")
    try:
        await b.transaction(lambda db: db.run("INSERT INTO c(k, v) VALUES ('b', 1)"), namespace=NS)
    finally:
        await b.aclose()
    a = pod(server, tmp_path, "a")
    try:
        local = await (await a.connect(NS)).all("SELECT who FROM t")
        assert sorted(r["who"] for r in local) == ["offline", "pushed"]
        assert await (await a.connect(NS)).all("SELECT k FROM c") == [{"k": "b"}]
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('after')"), namespace=NS)
    finally:
        await a.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    assert sorted(r["who"] for r in rows) == ["after", "offline", "pushed"]
    marks = list((tmp_path / "a").rglob(f"*{BOOT_MARK_SUFFIX}"))
    assert [m.read_text().strip() for m in marks] == [boot_id()]  # serializable again from here on


async def test_a_pull_that_fails_after_the_offline_commits_are_pushed_is_made_before_the_next_write(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushing offline mode's commits makes this pod the namespace's last writer on the server, from
    a copy that has not pulled the other pods' commits yet. When the pull after that push failed,
    the next lease was granted "fresh" and the write skipped its pull: it read a stale counter and
    its push replaced 5 acknowledged increments of another pod."""
    await commit_offline_while_the_server_is_down(server, tmp_path, "INSERT INTO c(k, v) VALUES ('n', 0)")

    async def bump(db: Database) -> None:
        row = await db.get("SELECT v FROM c WHERE k = 'n'")
        assert row is not None
        await db.run("UPDATE c SET v = ? WHERE k = 'n'", [int(str(row["v"])) + 1])

    b = pod(server, tmp_path, "b")
    try:
        for _ in range(5):
            await b.transaction(bump, namespace=NS)
    finally:
        await b.aclose()
    pulls = {"n": 0}
    real_pull = ReplicaBackend._pull_clean

    def first_pull_fails(self: ReplicaBackend) -> bool:
        pulls["n"] += 1
        if pulls["n"] == 1:
            raise TursoUnavailableError("the pull failed (a network blip)")
        return real_pull(self)

    monkeypatch.setattr(ReplicaBackend, "_pull_clean", first_pull_fails)
    a = pod(server, tmp_path, "a")
    try:
        await a.connect(NS)  # the first sync pushes the offline commit under a lease; its pull fails
        assert pulls["n"] == 1
        await a.transaction(bump, namespace=NS)
        assert pulls["n"] == 2
    finally:
        await a.aclose()
    assert await server_rows(server, tmp_path, "SELECT v FROM c") == [{"v": 6}]
    assert await server_rows(server, tmp_path, "SELECT who FROM t") == [{"who": "offline"}]


async def test_a_lease_taken_while_the_last_ones_keep_alive_sleeps_is_renewed(
    server: TursoServer, tmp_path: Path
) -> None:
    """A pod gives an idle lease back after 2 ms, while the keep-alive task of that lease sleeps a
    third of its TTL. A lease taken meanwhile used to get no keep-alive at all (the old task saw
    another lease and ended), so a callback longer than the TTL lost it and ran twice."""
    a = pod(server, tmp_path, "a", TURSO_LEASE_TTL="600ms")
    try:
        await schema(a)
        await a.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('quick')"), namespace=NS)
        await asyncio.sleep(0.05)  # the lease went back; its keep-alive still sleeps (200 ms)
        runs = 0

        async def long(db: Database) -> None:
            nonlocal runs
            runs += 1
            await db.run("INSERT INTO t(who) VALUES ('long')")
            await asyncio.sleep(1.0)  # longer than the TTL: only renewals keep the lease

        await a.transaction(long, namespace=NS)
        assert runs == 1
    finally:
        await a.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t ORDER BY id")
    assert [r["who"] for r in rows] == ["quick", "long"]


async def test_a_write_queued_during_a_slow_lease_hand_over_waits_for_it(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After holding the lease LEASE_MAX_HOLD with commits waiting, a pod hands it back before it
    writes again. A write already queued on the replica's lock used to slip in while the hand-over's
    DELETE was still out: it took a new lease and started a second flusher, both resolved the same
    hand-over (InvalidStateError in the flusher) and one could clear a later hand-over nobody then
    ended, leaving writers at the gate for good."""
    loop_errors: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx.get("exception")))
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)
        await asyncio.sleep(0.1)  # the idle lease went back
        backend = a._backends[NS]
        real_release = LeaseClient.release

        async def slow_hand_over(self: LeaseClient, lease: Lease) -> None:
            if backend._yielding is not None:
                await asyncio.sleep(0.3)  # the hand-over's DELETE is slow to be answered
            await real_release(self, lease)

        monkeypatch.setattr(LeaseClient, "release", slow_hand_over)
        first_may_end = asyncio.Event()

        def insert(who: str, pause: float = 0.0, until: asyncio.Event | None = None) -> Any:
            async def body(db: Database) -> None:
                await db.run("INSERT INTO t(who) VALUES (?)", [who])
                if until is not None:
                    await until.wait()
                await asyncio.sleep(pause)

            return body

        first = asyncio.create_task(a.transaction(insert("A", until=first_may_end), namespace=NS))
        await asyncio.sleep(0.05)
        long = asyncio.create_task(a.transaction(insert("T1", pause=0.15), namespace=NS))  # past the hold
        queued = asyncio.create_task(a.transaction(insert("T2"), namespace=NS))
        await asyncio.sleep(0.01)
        first_may_end.set()
        await asyncio.sleep(0.05)
        late = asyncio.create_task(a.transaction(insert("TX"), namespace=NS))
        results = await asyncio.wait_for(
            asyncio.gather(first, long, queued, late, return_exceptions=True), 20
        )
        assert results == [None, None, None, None]
        await asyncio.sleep(0.5)
        assert backend._yielding is None
        await asyncio.wait_for(a.transaction(insert("after"), namespace=NS), 10)
    finally:
        await a.aclose()
    assert [e for e in loop_errors if e is not None] == []
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    assert sorted(r["who"] for r in rows) == ["A", "T1", "T2", "TX", "after"]


async def test_a_reset_cut_short_is_finished_by_the_next_open(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that dies while a reset deletes the replica's files (here: after the database,
    before the engine's metadata) used to leave files pyturso refuses to open ("main DB file
    doesn't exists, but metadata is") on every later start. The reset is marked first, and the
    next open finishes it."""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)
        await insert_rows(a, "a", 2)
        replica = a._backends[NS]
        assert isinstance(replica, ReplicaBackend)

        real_remove = os.remove

        def killed_half_way(target: str) -> None:
            if os.path.exists(replica.path):  # the database goes; the process dies before the rest
                real_remove(replica.path)
            raise OSError("killed")

        monkeypatch.setattr(os, "remove", killed_half_way)
        with pytest.raises(TursoUnavailableError):
            await replica._reset()
    finally:
        await a.aclose()
    monkeypatch.undo()
    a = pod(server, tmp_path, "a")
    try:
        rows = await (await a.connect(NS)).all("SELECT who FROM t")
        await insert_rows(a, "again", 1)
    finally:
        await a.aclose()
    assert sorted(r["who"] for r in rows) == ["a-0", "a-1"]
    assert not list((tmp_path / "a").rglob("*-buntime-reset"))


async def test_a_read_after_a_cancelled_blocking_transaction_serves_the_replica(
    server: TursoServer, tmp_path: Path
) -> None:
    """A ``connect()`` statement after a cancelled ``run_transaction()`` (whose savepoint the
    engine thread still released into the group) first rolls that orphan group back. It used to
    run inside it: with the lease held it pushed the cancelled write; with the lease gone it reset
    the replica first, so with the server down the read failed instead of serving the replica."""
    a = pod(server, tmp_path, "a")
    try:
        await schema(a)
        await insert_rows(a, "kept", 1)
        await cancel_a_blocking_insert(a)
        await asyncio.to_thread(server.stop)
        try:
            rows = await (await a.connect(NS)).all("SELECT who FROM t")
        finally:
            await asyncio.to_thread(server.start)
    finally:
        await a.aclose()
    assert [r["who"] for r in rows] == ["kept-0"]
    assert [r["who"] for r in await server_rows(server, tmp_path, "SELECT who FROM t")] == ["kept-0"]


def lose_the_next_push(server: TursoServer, monkeypatch: pytest.MonkeyPatch, reply: str) -> None:
    """The replica's next push finds the server gone: it stops, and the push fails with ``reply``
    (a lost reply: the outcome is unknown; a 409: refused, nothing applied). Later pushes are real."""
    real = ReplicaBackend._push_reporting

    def once(self: ReplicaBackend, url: str) -> object:
        monkeypatch.setattr(ReplicaBackend, "_push_reporting", real)
        server.stop()
        return TursoQueryError(reply)

    monkeypatch.setattr(ReplicaBackend, "_push_reporting", once)


async def test_after_an_unknown_outcome_no_read_shows_the_write_before_the_replica_reset(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push whose reply is lost as the server goes away: the outcome is unknown and the reset
    after it cannot run. Reads then fail rather than answer from the copy that holds the write (a
    client told to "read before writing again" saw it as landed, and it vanished at the next
    write); once the server is back, a read resets first and shows the server's truth."""
    a = pod(server, tmp_path, "a", TURSO_WRITE_TIMEOUT="1s")
    try:
        await schema(a)
        await insert_rows(a, "before", 1)
        lose_the_next_push(server, monkeypatch, "network error: timed out")
        with pytest.raises(TursoCommitUnknownError, match="could not be reset yet"):
            await insert_rows(a, "unknown", 1)
        db = await a.connect(NS)
        with pytest.raises(TursoUnavailableError):
            await db.all("SELECT who FROM t")
        server.start()
        assert [r["who"] for r in await db.all("SELECT who FROM t")] == ["before-0"]
    finally:
        await a.aclose()
    assert [r["who"] for r in await server_rows(server, tmp_path, "SELECT who FROM t")] == ["before-0"]


async def test_health_says_down_while_reads_wait_for_a_reset_the_server_cannot_serve(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a commit whose outcome is unknown and whose reset could not run, every read and
    write of the namespace fails until the server is back: health used to call it ``degraded``
    (usable, "serves reads"). It is ``down`` now; once the server answers health's probe it is
    ``degraded`` (usable: the next read resets first and works), and ``ok`` after that read.
    The probe's answer comes from turso-server itself, so it never makes the namespace ``ok``
    while the exchange that failed has not worked since."""
    from buntime.turso import _backends

    monkeypatch.setattr(_backends, "REACH_AGE", 0.3)
    a = pod(server, tmp_path, "a", TURSO_WRITE_TIMEOUT="1s", TURSO_SYNC_INTERVAL="0")
    try:
        await schema(a)
        await insert_rows(a, "before", 1)
        lose_the_next_push(server, monkeypatch, "network error: timed out")
        with pytest.raises(TursoCommitUnknownError, match="could not be reset yet"):
            await insert_rows(a, "unknown", 1)
        db = await a.connect(NS)
        with pytest.raises(TursoUnavailableError):
            await db.all("SELECT who FROM t")
        health = await a.health()
        assert health.namespaces[NS].status == "down", health
        assert not health.usable and "outcome is unknown" in (health.namespaces[NS].error or "")
        server.start()
        await asyncio.sleep(0.4)
        health = await a.health()
        assert health.namespaces[NS].status == "degraded" and health.usable, health
        assert [r["who"] for r in await db.all("SELECT who FROM t")] == ["before-0"]
        assert (await a.health()).status == "ok"
    finally:
        await a.aclose()


async def test_an_offline_open_never_pushes_what_a_serializable_run_reported_failed(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serializable write refused as the server went away (reported not applied) stays in the
    replica when its reset cannot run. Reopened in offline mode, whose first sync pushes what is
    pending, that write used to land. Now the offline open resets such a file first, and with the
    server still down it refuses to open."""
    a = pod(server, tmp_path, "a", TURSO_WRITE_TIMEOUT="1s")
    try:
        await schema(a)
        await insert_rows(a, "before", 1)
        lose_the_next_push(server, monkeypatch, "remote returned status=409 lease lost")
        with pytest.raises(TursoUnavailableError) as refused:
            await insert_rows(a, "refused", 1)
        assert not isinstance(refused.value, TursoCommitUnknownError)
    finally:
        await a.aclose()
    down = pod(server, tmp_path, "a", TURSO_WRITE_MODE="offline")
    try:
        with pytest.raises(TursoUnavailableError, match="offline writes"):
            await down.connect(NS)
    finally:
        await down.aclose()
    server.start()
    offline = pod(server, tmp_path, "a", TURSO_WRITE_MODE="offline")
    try:
        db = await offline.connect(NS)
        assert [r["who"] for r in await db.all("SELECT who FROM t")] == ["before-0"]
        await offline.transaction(lambda db: db.run("INSERT INTO t(who) VALUES ('offline')"), namespace=NS)
        await offline.sync(NS)
    finally:
        await offline.aclose()
    rows = await server_rows(server, tmp_path, "SELECT who FROM t")
    assert sorted(r["who"] for r in rows) == ["before-0", "offline"]
