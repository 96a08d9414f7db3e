"""Sync modes against real ``tursodb --sync-server`` processes and real pyturso replicas.

No test calls ``pull()`` to see another replica's write: the background sync task must deliver it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from buntime.turso import Database, TursoError, TursoService, TursoUnavailableError, resolve_config
from tests.support.tursodb import SyncServer
from tests.support.tursoserver import SyncEndpoint, TursoServer

FD_SETSIZE = 1024  # glibc's: select() refuses descriptors from here on

INTERVAL = "0.2s"


def single(url: str, path: Path, token: str | None = None, **extra: str) -> TursoService:
    env = {"TURSO_SYNC_URL": url, "TURSO_LOCAL_PATH": str(path), "TURSO_SYNC_INTERVAL": INTERVAL, **extra}
    if token:
        env["TURSO_SYNC_AUTH_TOKEN"] = token
    return TursoService(resolve_config(env=env))


def multi(url: str, path: Path) -> TursoService:
    env = {"TURSO_SERVER_URL": url, "TURSO_LOCAL_PATH": str(path), "TURSO_SYNC_INTERVAL": INTERVAL}
    return TursoService(resolve_config(env=env))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Poll ``check`` until true; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if await check():
                return time.monotonic() - start
        except TursoError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


async def count(service: TursoService, namespace: str = "runtime", table: str = "t") -> int:
    row = await (await service.connect(namespace)).get(f"SELECT count(*) AS n FROM {table}")
    return int(row["n"]) if row else 0


async def create_table(service: TursoService, namespace: str = "runtime") -> None:
    await service.transaction(
        lambda db: db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"),
        namespace=namespace,
        type="exclusive",
    )


async def insert(service: TursoService, value: str, namespace: str = "runtime") -> None:
    await service.transaction(lambda db: db.run("INSERT INTO t(v) VALUES (?)", [value]), namespace=namespace)


async def ten_pushes_on_one_connection(service: TursoService) -> None:
    from buntime.turso import _transport

    try:
        await create_table(service)
        opened, sent = _transport.stats.opened, _transport.stats.requests
        for i in range(10):
            await insert(service, f"v{i}")
        assert _transport.stats.requests - sent >= 10, "each push is at least one request"
        assert _transport.stats.opened - opened <= 1
    finally:
        await service.aclose()


async def test_single_tenant_write_reaches_other_replica_without_explicit_pull(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db")
    b = single(sync_server.url, tmp_path / "b" / "r.db")
    try:
        await b.connect()  # b opens first, so only its background pulls can bring the data
        await create_table(a)
        await insert(a, "from-a")

        async def b_sees() -> bool:
            return await count(b) == 1

        await eventually(b_sees)
        assert await (await b.connect()).get("SELECT v FROM t") == {"v": "from-a"}
    finally:
        await a.aclose()
        await b.aclose()


async def test_concurrent_downgrades_to_deferred_and_commits_are_pushed(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db")
    try:
        await create_table(a)
        await asyncio.gather(*(insert(a, f"v{i}") for i in range(5)))  # default type=concurrent
        await asyncio.gather(
            *(
                a.run_transaction(lambda db, i=i: db.run("INSERT INTO t(v) VALUES (?)", [f"b{i}"]))
                for i in range(5)
            )
        )
        health = await a.health()
        entry = health.namespaces["runtime"]
        assert entry.pending_operations == 0, "every commit must have been pushed"
        assert entry.last_push is not None and entry.sync_url == sync_server.url
    finally:
        await a.aclose()
    # What the server holds, read by a brand-new replica.
    fresh = single(sync_server.url, tmp_path / "fresh" / "r.db")
    try:
        assert await count(fresh) == 10
    finally:
        await fresh.aclose()


async def test_autocommit_writes_are_pushed_by_the_background_task(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db")
    b = single(sync_server.url, tmp_path / "b" / "r.db")
    try:
        await create_table(a)
        await (await a.connect()).run("INSERT INTO t(v) VALUES ('autocommit')")  # no transaction()

        async def b_sees() -> bool:
            return await count(b) == 1

        await eventually(b_sees)
    finally:
        await a.aclose()
        await b.aclose()


async def test_server_down_refuses_writes_serves_reads_and_recovers(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db", TURSO_WRITE_TIMEOUT="1s")
    try:
        await create_table(a)
        await insert(a, "before")
        sync_server.kill()
        for i in range(3):
            started = time.monotonic()
            with pytest.raises(TursoUnavailableError):
                await insert(a, f"offline-{i}")  # never acknowledged, so never kept
            assert time.monotonic() - started < 10, "the bounded retry ends with an error"
        # Reads still serve the local replica; it may show the pod's own refused commit (a push
        # that failed under a lease held when the server died) until the next write resets it.
        assert await count(a) in (1, 2)
        health = await a.health()
        assert health.status == "degraded" and health.namespaces["runtime"].last_sync_error
        sync_server.start()  # same ports, same data
        await insert(a, "after")
        assert (await a.health()).status == "ok"
        rows = await (await a.connect()).all("SELECT v FROM t ORDER BY id")
        assert [row["v"] for row in rows] == ["before", "after"], "refused commits were dropped"
    finally:
        await a.aclose()
    reader = single(sync_server.url, tmp_path / "reader" / "r.db")
    try:
        rows = await (await reader.connect()).all("SELECT v FROM t ORDER BY id")
        assert [row["v"] for row in rows] == ["before", "after"]
    finally:
        await reader.aclose()


async def test_health_without_background_sync_asks_the_server_itself_at_a_bounded_rate(
    sync_server: SyncEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TURSO_SYNC_INTERVAL=0`` (what workers run): nothing talks to the server between writes,
    so health used to say ``ok`` with the server gone until a write failed, and ``degraded`` after
    it was back until a write succeeded. Now a replica nothing told about the server for
    ``REACH_AGE`` asks it, at most once per ``REACH_AGE`` whatever the rate of health calls."""
    from buntime.turso import _backends
    from buntime.turso._leases import LeaseClient

    monkeypatch.setattr(_backends, "REACH_AGE", 0.5)
    asked: list[float] = []
    reach = LeaseClient.reach

    async def counted(self: LeaseClient, *, timeout: float) -> int:
        asked.append(time.monotonic())
        return await reach(self, timeout=timeout)

    monkeypatch.setattr(LeaseClient, "reach", counted)
    a = single(sync_server.url, tmp_path / "a" / "r.db", TURSO_SYNC_INTERVAL="0", TURSO_WRITE_TIMEOUT="1s")
    try:
        await create_table(a)
        await insert(a, "before")
        assert (await a.health()).status == "ok"
        assert (await a.health()).status == "ok"
        assert len(asked) == 1, "a serializable replica's first health asks once; then a write just heard"
        sync_server.kill()
        await asyncio.sleep(0.6)
        started = time.monotonic()
        health = await a.health()
        assert time.monotonic() - started < 1.5
        assert health.status == "degraded" and health.usable, health
        assert "unreachable" in (health.namespaces["runtime"].last_sync_error or "")
        for _ in range(20):
            assert (await a.health()).status == "degraded"
        assert len(asked) <= 2 + (time.monotonic() - started) / 0.5, "one probe per REACH_AGE at most"
        sync_server.start()  # same ports, same data; no write, no pull from this pod
        await asyncio.sleep(0.6)
        probes = len(asked)
        back = await a.health()
        assert back.status == "ok", back
        assert len(asked) == probes + 1
        await insert(a, "after")
        assert await count(a) == 2
    finally:
        await a.aclose()


async def test_health_of_a_serializable_replica_on_a_server_without_write_leases_is_degraded(
    plain_tursodb: SyncServer, tmp_path: Path
) -> None:
    """A bare ``tursodb --sync-server`` under the default serializable writes: pulls work, every
    write fails (``TURSO_LEASE_UNSUPPORTED``). ``buntime turso health`` right after the open used to
    say ``ok``; the first health of a serializable replica now asks for the lease API once."""
    a = single(plain_tursodb.url, tmp_path / "a" / "r.db", TURSO_SYNC_INTERVAL="0")
    try:
        await a.connect()
        health = await a.health()
        assert health.status == "degraded" and health.usable, health
        assert "no write leases" in (health.namespaces["runtime"].last_sync_error or "")
        with pytest.raises(TursoError) as refused:
            await create_table(a)
        assert refused.value.code == "TURSO_LEASE_UNSUPPORTED"
    finally:
        await a.aclose()
    offline = single(plain_tursodb.url, tmp_path / "b" / "r.db", TURSO_WRITE_MODE="offline")
    try:
        await offline.connect()
        assert (await offline.health()).status == "ok"
    finally:
        await offline.aclose()


async def test_offline_mode_keeps_writes_locally_and_the_later_push_wins(
    plain_tursodb: SyncServer, tmp_path: Path
) -> None:
    """The opt-in merge rule, exactly: local commits are acknowledged and pushed later; on a
    bare tursodb two replicas that insert without pulling each other collide on rowids and the
    later push replaces the earlier one's rows (what serializable mode exists to prevent)."""
    a = single(
        plain_tursodb.url, tmp_path / "a" / "r.db", TURSO_WRITE_MODE="offline", TURSO_SYNC_INTERVAL="0"
    )
    b = single(
        plain_tursodb.url, tmp_path / "b" / "r.db", TURSO_WRITE_MODE="offline", TURSO_SYNC_INTERVAL="0"
    )
    try:
        await create_table(a)
        await b.sync()
        for i in range(3):
            await insert(a, f"a{i}")
        for i in range(3):
            await insert(b, f"b{i}")  # b never pulled a's rows
        plain_tursodb.kill()
        await insert(a, "while-down")  # acknowledged locally: the push fails and is retried later
        assert (await a.health()).namespaces["runtime"].pending_operations > 0
        plain_tursodb.start()
        await a.sync()
    finally:
        await a.aclose()
        await b.aclose()
    fresh = single(plain_tursodb.url, tmp_path / "fresh" / "r.db", TURSO_WRITE_MODE="offline")
    try:
        rows = await (await fresh.connect()).all("SELECT id, v FROM t ORDER BY id")
        assert [row["v"] for row in rows] == ["b0", "b1", "b2", "while-down"], rows
    finally:
        await fresh.aclose()


async def test_a_replica_opens_offline_from_its_file(sync_server: SyncEndpoint, tmp_path: Path) -> None:
    path = tmp_path / "a" / "r.db"
    a = single(sync_server.url, path)
    await create_table(a)
    await insert(a, "kept")
    await a.aclose()
    sync_server.kill()
    again = single(sync_server.url, path)
    try:
        assert await count(again) == 1
        health = await again.health()
        assert not health.ok and health.usable and health.status == "degraded"
        assert health.namespaces["runtime"].last_sync_error
    finally:
        await again.aclose()


async def test_health_never_reveals_the_token(sync_server: SyncEndpoint, tmp_path: Path) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db", token="super-secret-token")
    try:
        await a.connect()
        health = await a.health()
        assert "super-secret-token" not in repr(health.as_dict())
        assert health.mode == "sync" and health.topology == "single-tenant"
        entry = health.namespaces["runtime"]
        assert entry.replica_path == str(tmp_path / "a" / "r.db")
        assert entry.last_pull is not None and entry.revision is not None
    finally:
        await a.aclose()


async def test_nested_use_of_a_replica_inside_its_transaction_is_refused(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db")
    try:
        await create_table(a)

        async def nested(db: Database) -> None:
            await (await a.connect()).get("SELECT 1")

        with pytest.raises(TursoError) as info:
            await asyncio.wait_for(a.transaction(nested), 5)
        assert info.value.code == "TURSO_NESTED_TRANSACTION"
    finally:
        await a.aclose()


# -- multi-tenant -----------------------------------------------------------------------------


async def test_multi_tenant_opens_one_replica_per_namespace(router: SyncEndpoint, tmp_path: Path) -> None:
    a = multi(router.url, tmp_path / "a" / "runtime.db")
    b = multi(router.url, tmp_path / "b" / "runtime.db")
    try:
        for ns in ("orders", "users"):
            await create_table(a, ns)
            await insert(a, f"{ns}-row", ns)
        assert sorted(p.name for p in (tmp_path / "a").glob("*.db")) == ["orders.db", "users.db"]
        assert sorted(router.children) == ["orders", "users"]

        async def b_sees_orders() -> bool:
            return await count(b, "orders") == 1

        await eventually(b_sees_orders)
        row = await (await b.connect("users")).get("SELECT v FROM t")
        assert row == {"v": "users-row"}, "namespaces are isolated: each has only its own row"
        health = await a.health()
        assert health.topology == "multi-tenant"
        assert health.namespaces["orders"].sync_url == f"{router.url}/orders"
        assert health.namespaces["orders"].replica_path == str(tmp_path / "a" / "orders.db")
    finally:
        await a.aclose()
        await b.aclose()


async def test_concurrent_connects_share_one_open(router: SyncEndpoint, tmp_path: Path) -> None:
    a = multi(router.url, tmp_path / "a" / "runtime.db")
    try:
        dbs = await asyncio.gather(*(a.connect("shared") for _ in range(20)))
        assert len({db.local_path for db in dbs}) == 1
        assert a.namespaces == ["shared"]
    finally:
        await a.aclose()


async def test_a_failed_open_is_not_cached_and_the_next_connect_retries(tmp_path: Path) -> None:
    router = SyncEndpoint(tmp_path / "router", namespace=None)
    service = multi(router.url, tmp_path / "a" / "runtime.db")
    try:
        with pytest.raises(TursoUnavailableError):
            await service.connect("late")
        assert service.namespaces == []
        router.start()  # the server appears: the next connect must retry, not replay the error
        await create_table(service, "late")
        await insert(service, "x", "late")
        assert await count(service, "late") == 1
    finally:
        await service.aclose()
        router.kill()


async def test_multi_tenant_through_turso_server_with_its_data_token(tmp_path: Path) -> None:
    with TursoServer(tmp_path / "turso") as server:
        env = {
            "TURSO_SERVER_URL": server.url,
            "TURSO_SERVER_TOKEN": server.data_token,
            "TURSO_SYNC_INTERVAL": INTERVAL,
        }
        a = TursoService(resolve_config(env={**env, "TURSO_LOCAL_PATH": str(tmp_path / "a" / "runtime.db")}))
        b = TursoService(resolve_config(env={**env, "TURSO_LOCAL_PATH": str(tmp_path / "b" / "runtime.db")}))
        try:
            await b.connect("ledger")
            await create_table(a, "ledger")
            await insert(a, "through turso-server", "ledger")

            async def b_sees() -> bool:
                return await count(b, "ledger") == 1

            await eventually(b_sees)
            assert server.data_token not in repr((await a.health()).as_dict())
        finally:
            await a.aclose()
            await b.aclose()
    unauthorised = TursoService(
        resolve_config(env={"TURSO_SERVER_URL": server.url, "TURSO_LOCAL_PATH": str(tmp_path / "c" / "r.db")})
    )
    with server:  # the same server started again
        try:
            with pytest.raises(TursoUnavailableError):
                await unauthorised.connect("ledger")
        finally:
            await unauthorised.aclose()


async def test_pull_listeners_hear_other_replicas_until_removed(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    a = single(sync_server.url, tmp_path / "a" / "r.db")
    b = single(sync_server.url, tmp_path / "b" / "r.db")
    heard: list[str] = []

    async def listener(replica_path: str) -> None:
        heard.append(replica_path)

    try:
        b.add_pull_listener(listener)  # before b opens: replicas opened later use it too
        await b.connect()
        await create_table(a)
        await insert(a, "one")

        async def b_heard() -> bool:
            return str(tmp_path / "b" / "r.db") in heard

        await eventually(b_heard)
        b.remove_pull_listener(listener)
        b.remove_pull_listener(listener)  # a no-op the second time
        heard.clear()
        await insert(a, "two")

        async def b_has_two() -> bool:
            return await count(b) == 2

        await eventually(b_has_two)
        assert heard == []
    finally:
        await a.aclose()
        await b.aclose()


async def test_sync_requests_reuse_one_connection(sync_server: SyncEndpoint, tmp_path: Path) -> None:
    """pyturso's sync traffic goes through our kept-alive transport (pinned to pyturso 0.8.3's
    ``turso.lib_sync.urllib``): pushes after the first open no new connection."""
    from buntime.turso import _transport

    assert _transport.installed()
    await ten_pushes_on_one_connection(single(sync_server.url, tmp_path / "a" / "r.db"))


async def test_connections_past_fd_setsize_are_reused(sync_server: SyncEndpoint, tmp_path: Path) -> None:
    """A process with many files open (a multi-tenant pod, a busy server) gets socket numbers
    past ``FD_SETSIZE``, where ``select()`` fails: the transport's idle check must still work, or
    every sync request opens a new connection."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_SETSIZE + 512  # the spare descriptors, and room for the test's own files
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the open-files limit ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(FD_SETSIZE + 16)]
    try:
        await ten_pushes_on_one_connection(single(sync_server.url, tmp_path / "a" / "r.db"))
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_closing_right_after_writes_leaves_no_http_session_open(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    """The lease is given back by a task a moment after the last commit; a service closed in that
    moment must still close every HTTP session it opened (none is opened after close)."""
    import gc

    import aiohttp

    service = single(sync_server.url, tmp_path / "a.db")
    await create_table(service)
    await asyncio.gather(*(insert(service, f"v{i}") for i in range(16)))
    await service.aclose()
    await asyncio.sleep(0.05)  # anything still scheduled runs now
    gc.collect()
    assert [s for s in gc.get_objects() if isinstance(s, aiohttp.ClientSession) and not s.closed] == []
