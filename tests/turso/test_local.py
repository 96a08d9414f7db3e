"""Local mode: one MVCC file, a connection per transaction, retries, DDL rules, errors."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from buntime.turso import (
    BlockingDatabase,
    Database,
    DDLInConcurrentTransactionError,
    TursoBusyError,
    TursoClosedError,
    TursoConfigError,
    TursoError,
    TursoQueryError,
    TursoService,
    TursoUnavailableError,
    resolve_config,
)
from buntime.turso._retry import DEFAULT_RETRY_DELAY, MAX_RETRY_DELAY, backoff_delay

COUNTER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO counter VALUES (1, 0)"
)


async def _schema(service: TursoService) -> None:
    await service.transaction(lambda db: db.exec(COUNTER_SCHEMA), type="exclusive")


async def test_mvcc_is_enabled_and_verified(local_service: TursoService) -> None:
    db = await local_service.connect()
    row = await db.get("PRAGMA journal_mode")
    assert row is not None and next(iter(row.values())) == "mvcc"


async def test_concurrent_increments_end_exactly_at_n(local_service: TursoService) -> None:
    await _schema(local_service)
    attempts = 0

    async def increment(db: Database) -> None:
        nonlocal attempts
        attempts += 1
        row = await db.get("SELECT n FROM counter WHERE id = 1")
        assert row is not None
        await asyncio.sleep(0)  # let other transactions interleave between read and write
        await db.run("UPDATE counter SET n = ? WHERE id = 1", [row["n"] + 1])

    n = 40
    await asyncio.gather(*(local_service.transaction(increment, max_retries=200) for _ in range(n)))
    row = await (await local_service.connect()).get("SELECT n FROM counter WHERE id = 1")
    assert row == {"n": n}
    assert attempts > n, "interleaved read-modify-write must have produced conflicts that were retried"


async def test_transactions_never_share_a_connection(local_service: TursoService) -> None:
    """Two open transactions at once: each commits on its own connection, no nesting error."""
    await local_service.transaction(
        lambda db: db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)"), type="exclusive"
    )
    both_open = asyncio.Barrier(2)

    async def writer(db: Database, who: str, rowid: int) -> None:
        await db.run("INSERT INTO t VALUES (?, ?)", [rowid, who])
        await both_open.wait()
        await db.run("UPDATE t SET who = who || '!' WHERE id = ?", [rowid])

    await asyncio.gather(
        local_service.transaction(lambda db: writer(db, "a", 1)),
        local_service.transaction(lambda db: writer(db, "b", 2)),
    )
    rows = await (await local_service.connect()).all("SELECT * FROM t ORDER BY id")
    assert rows == [{"id": 1, "who": "a!"}, {"id": 2, "who": "b!"}]


async def test_ddl_in_concurrent_transaction_says_use_exclusive(local_service: TursoService) -> None:
    with pytest.raises(DDLInConcurrentTransactionError, match="type='exclusive'"):
        await local_service.transaction(lambda db: db.run("CREATE TABLE nope(x)"))
    await local_service.transaction(lambda db: db.run("CREATE TABLE yes(x)"), type="exclusive")
    tables = await (await local_service.connect()).all("SELECT name FROM sqlite_master WHERE type='table'")
    assert {"name": "yes"} in tables and {"name": "nope"} not in tables


async def test_non_retryable_error_rolls_back_and_propagates_at_once(local_service: TursoService) -> None:
    await _schema(local_service)
    calls = 0

    async def bad(db: Database) -> None:
        nonlocal calls
        calls += 1
        await db.run("UPDATE counter SET n = 99 WHERE id = 1")
        await db.run("INSERT INTO missing_table VALUES (1)")

    with pytest.raises(TursoQueryError, match="missing_table") as info:
        await local_service.transaction(bad)
    assert not isinstance(info.value, TursoBusyError)
    assert calls == 1
    row = await (await local_service.connect()).get("SELECT n FROM counter")
    assert row == {"n": 0}, "the update before the failure must have been rolled back"


async def test_application_errors_roll_back_too(local_service: TursoService) -> None:
    await _schema(local_service)

    async def boom(db: Database) -> None:
        await db.run("UPDATE counter SET n = 5")
        raise KeyError("app bug")

    with pytest.raises(KeyError):
        await local_service.transaction(boom)
    assert await (await local_service.connect()).get("SELECT n FROM counter") == {"n": 0}


async def test_busy_errors_are_retried_then_given_up(local_service: TursoService) -> None:
    """A writer that always conflicts with a held transaction exhausts max_retries."""
    await _schema(local_service)
    holder_wrote = asyncio.Event()
    release = asyncio.Event()

    async def holder(db: Database) -> None:
        await db.run("UPDATE counter SET n = n + 1 WHERE id = 1")
        holder_wrote.set()
        await release.wait()

    calls = 0

    async def loser(db: Database) -> None:
        nonlocal calls
        calls += 1
        await db.run("UPDATE counter SET n = n + 100 WHERE id = 1")

    held = asyncio.create_task(local_service.transaction(holder))
    await holder_wrote.wait()
    with pytest.raises(TursoBusyError):
        await local_service.transaction(loser, max_retries=3, retry_delay=0.001)
    assert calls == 4  # the first attempt and three retries
    release.set()
    await held
    # Once the holder committed, the same writer succeeds.
    await local_service.transaction(loser)
    assert await (await local_service.connect()).get("SELECT n FROM counter") == {"n": 101}


async def test_retry_options_are_validated(local_service: TursoService) -> None:
    async def noop(db: Database) -> None:
        return None

    for kwargs in ({"max_retries": -1}, {"max_retries": 1.5}, {"retry_delay": -1}, {"type": "weird"}):
        with pytest.raises(TursoConfigError):
            await local_service.transaction(noop, **kwargs)  # type: ignore[arg-type]


async def test_run_reports_changes_and_rowid_and_exec_runs_scripts(local_service: TursoService) -> None:
    db = await local_service.connect()
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b')")
    result = await db.run("INSERT INTO t(v) VALUES (?)", ["c"])
    assert (result.changes, result.last_insert_rowid) == (1, 3)
    assert (await db.run("UPDATE t SET v = 'z'")).changes == 3
    res = await db.execute("SELECT id, v FROM t WHERE id = :id", {"id": 2})
    assert res.columns == ("id", "v") and res.rows == [{"id": 2, "v": "z"}]
    assert await db.get("SELECT * FROM t WHERE id = 99") is None


async def test_a_transaction_left_open_on_an_autocommit_handle_is_refused(
    local_service: TursoService,
) -> None:
    db = await local_service.connect()
    await db.exec("CREATE TABLE t(v)")
    with pytest.raises(TursoError) as info:
        await db.exec("BEGIN; INSERT INTO t VALUES (1)")
    assert info.value.code == "TURSO_DANGLING_TRANSACTION"
    assert await db.all("SELECT * FROM t") == []


async def test_namespaces_are_metadata_on_one_file(local_service: TursoService, tmp_path: Path) -> None:
    await (await local_service.connect("alpha")).exec("CREATE TABLE shared(v)")
    await (await local_service.connect("beta")).run("INSERT INTO shared VALUES (1)")
    assert sorted(p.name for p in (tmp_path / "local").glob("*.db")) == ["runtime.db"]
    health = await local_service.health()
    assert health.ok and health.status == "ok" and health.mode == "local"
    # the namespaces this process opened, not the file's name: they all share runtime.db
    assert sorted(health.namespaces) == ["alpha", "beta"]
    assert {e.replica_path for e in health.namespaces.values()} == {str(tmp_path / "local" / "runtime.db")}


async def test_data_persists_across_services(tmp_path: Path) -> None:
    env = {"TURSO_LOCAL_PATH": str(tmp_path / "p" / "runtime.db")}
    async with TursoService(resolve_config(env=env)) as first:
        await first.transaction(
            lambda db: db.exec("CREATE TABLE t(v); INSERT INTO t VALUES (42)"), type="exclusive"
        )
    async with TursoService(resolve_config(env=env)) as second:
        assert await (await second.connect()).get("SELECT v FROM t") == {"v": 42}


async def test_health_before_anything_opened_is_down(local_service: TursoService) -> None:
    health = await local_service.health()
    assert not health.ok and health.status == "down" and health.error


async def test_closed_service_refuses_work(tmp_path: Path) -> None:
    service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(tmp_path / "c.db")}))
    db = await service.connect()
    await service.aclose()
    await service.aclose()  # idempotent
    with pytest.raises(TursoClosedError):
        await service.connect()
    with pytest.raises(TursoClosedError):
        await db.get("SELECT 1")


async def test_a_file_locked_by_another_process_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, turso; c = turso.connect(sys.argv[1]); c.execute('CREATE TABLE t(x)');"
            "print('ready', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)}))
        with pytest.raises(TursoUnavailableError):
            await service.connect()
        await service.aclose()
    finally:
        holder.kill()
        holder.wait()


async def test_run_transaction_runs_a_blocking_callback_in_one_hop(local_service: TursoService) -> None:
    await _schema(local_service)

    def bump(db: BlockingDatabase) -> int:
        row = db.get("SELECT n FROM counter WHERE id = 1")
        assert row is not None and db.in_transaction
        db.run("UPDATE counter SET n = ? WHERE id = 1", [row["n"] + 1])
        return int(row["n"]) + 1

    results = await asyncio.gather(*(local_service.run_transaction(bump, max_retries=200) for _ in range(30)))
    assert sorted(results) == list(range(1, 31)), "each retry re-read the counter"
    assert await (await local_service.connect()).get("SELECT n FROM counter") == {"n": 30}

    def fails(db: BlockingDatabase) -> None:
        db.run("UPDATE counter SET n = 0")
        raise ValueError("rolled back")

    with pytest.raises(ValueError):
        await local_service.run_transaction(fails)
    assert await (await local_service.connect()).get("SELECT n FROM counter") == {"n": 30}
    with pytest.raises(DDLInConcurrentTransactionError):
        await local_service.run_transaction(lambda db: db.exec("CREATE TABLE z(x)"))


async def test_cancelled_transactions_leave_no_connection_behind(threaded_service: TursoService) -> None:
    await _schema(threaded_service)
    started = asyncio.Event()

    async def slow(db: Database) -> None:
        await db.run("UPDATE counter SET n = n + 1 WHERE id = 1")
        started.set()
        await asyncio.sleep(10)

    async def cancel_soon(db: Database) -> None:
        await db.run("UPDATE counter SET n = n + 100 WHERE id = 1")

    for _ in range(5):
        started.clear()
        task = asyncio.create_task(threaded_service.transaction(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        racer = asyncio.create_task(threaded_service.transaction(cancel_soon))
        await asyncio.sleep(0)  # cancelled while its statement is queued for the engine thread
        racer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await racer
    # Every cancelled transaction rolled back, and every connection is back, outside a transaction.
    assert await (await threaded_service.connect()).get("SELECT n FROM counter") == {"n": 0}
    await threaded_service.transaction(lambda db: db.exec("CREATE TABLE after_cancel(x)"), type="exclusive")
    backend = await threaded_service._backend("runtime")
    assert len(backend._idle) == len(backend._all)  # type: ignore[attr-defined]
    assert not any(conn.in_transaction for conn in backend._all)  # type: ignore[attr-defined]


async def test_a_commit_whose_caller_was_cancelled_still_runs(threaded_service: TursoService) -> None:
    """The COMMIT job is queued behind a busy engine thread when its caller is cancelled."""
    import time

    await _schema(threaded_service)
    backend = await threaded_service._backend("runtime")
    engine = backend._engine  # type: ignore[attr-defined]
    committing = asyncio.Event()
    busy: list[asyncio.Task[None]] = []

    async def writer(db: Database) -> None:
        await db.run("UPDATE counter SET n = 7 WHERE id = 1")
        busy.append(asyncio.create_task(engine.call(time.sleep, 0.3)))  # ahead of our COMMIT
        await asyncio.sleep(0)
        committing.set()

    task = asyncio.create_task(threaded_service.transaction(writer))
    await committing.wait()
    await asyncio.sleep(0.05)  # the COMMIT job now waits behind the sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await busy[0]
    await asyncio.sleep(0.05)
    assert await (await threaded_service.connect()).get("SELECT n FROM counter") == {"n": 7}
    assert len(backend._idle) == len(backend._all)  # type: ignore[attr-defined]
    assert not any(conn.in_transaction for conn in backend._all)  # type: ignore[attr-defined]


async def test_the_executor_decides_which_thread_runs_statements(local_service: TursoService) -> None:
    loop_thread = threading.get_ident()
    engine_thread = await local_service.run_transaction(lambda db: threading.get_ident())
    if local_service.config.executor == "inline":
        assert engine_thread == loop_thread
    else:
        assert engine_thread != loop_thread
    health = await local_service.health()
    assert health.ok and health.mode == "local"
    assert health.executor == local_service.config.executor


def _engine_threads(path: Path) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == f"turso:{path.name}"]


async def test_a_cancelled_connect_leaves_a_concurrent_one_its_database(tmp_path: Path) -> None:
    """Concurrent connects share one open: cancelling one caller does not cancel the others,
    the next connect does not find the file locked, and aclose() leaves no engine thread."""
    path = tmp_path / "shared.db"
    service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)}))
    first = asyncio.create_task(service.connect("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(service.connect("second"))
    await asyncio.sleep(0)
    first.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], Database), results[1]
    db = await service.connect("first")  # at once: the shared open is the one it reuses
    assert await db.get("SELECT 1 AS ok") == {"ok": 1}
    await service.aclose()
    assert _engine_threads(path) == []


async def test_a_connect_cancelled_alone_closes_what_it_opened(tmp_path: Path) -> None:
    """Its only caller gone, the open is cancelled: it closes its connection and stops its engine
    thread, so a retry right away opens the file (no "database is locked") and nothing leaks."""
    path = tmp_path / "alone.db"
    service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)}))
    for _ in range(3):
        opening = asyncio.create_task(service.connect())
        while not _engine_threads(path):  # cancelled while its engine thread opens the file
            await asyncio.sleep(0)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        db = await service.connect()  # waits for the cancelled open to close the file first
        assert await db.get("SELECT 1 AS ok") == {"ok": 1}
        await service.aclose()
        assert _engine_threads(path) == []
        service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)}))
    await service.aclose()


async def test_two_services_creating_one_new_file_both_open_it(tmp_path: Path) -> None:
    """The second opener of a file the first is still creating is told "busy" by tursodb (the
    header, the switch to MVCC): it waits and retries instead of failing."""
    for trial in range(3):
        path = tmp_path / f"new{trial}.db"
        services = [TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)})) for _ in range(2)]
        try:
            dbs = await asyncio.gather(*(service.connect() for service in services))
            await dbs[0].exec("CREATE TABLE t(v)")
            await dbs[0].run("INSERT INTO t VALUES (1)")
            assert await dbs[1].all("SELECT v FROM t") == [{"v": 1}]
        finally:
            for service in services:
                await service.aclose()


async def test_a_busy_begin_is_retried_like_any_busy_statement(local_service: TursoService) -> None:
    """Upstream issued BEGIN outside its retry loop, so a busy BEGIN failed at once: here a
    second exclusive transaction, refused at its BEGIN while the first holds the lock, is re-run
    until the holder commits, and then lands."""
    await _schema(local_service)
    holder_wrote = asyncio.Event()
    release = asyncio.Event()

    async def holder(db: Database) -> None:
        await db.run("UPDATE counter SET n = n + 1 WHERE id = 1")
        holder_wrote.set()
        await release.wait()

    attempts = 0

    async def second(db: Database) -> None:
        nonlocal attempts
        attempts += 1
        await db.run("UPDATE counter SET n = n + 10 WHERE id = 1")

    held = asyncio.create_task(local_service.transaction(holder, type="exclusive"))
    await holder_wrote.wait()
    waiting = asyncio.create_task(
        local_service.transaction(second, type="exclusive", max_retries=1000, retry_delay=0.001)
    )
    while attempts < 2:  # refused at least once while the holder keeps its lock
        await asyncio.sleep(0.005)
    assert not waiting.done()
    release.set()
    await held
    await waiting
    assert await (await local_service.connect()).get("SELECT n FROM counter") == {"n": 11}


def test_retry_delays_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    """Upstream waited a fixed 5 ms between attempts, so writers that collided once collided
    again in step: each retry here waits a random time below a bound that doubles, capped."""
    base = DEFAULT_RETRY_DELAY
    for attempt in range(1, 12):
        bound = min(MAX_RETRY_DELAY, base * 2**attempt)
        delays = [backoff_delay(attempt, base) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert len(set(delays)) > 100, "jittered, not a fixed delay"
        assert max(delays) > bound / 2
    assert max(backoff_delay(40, base) for _ in range(200)) <= MAX_RETRY_DELAY


async def test_aclose_waits_for_an_open_in_flight_and_closes_what_it_opened(tmp_path: Path) -> None:
    """Upstream's close() did not wait for opens in flight, so one finishing later leaked its
    connection past the close: here aclose() waits for it, the caller gets the closed service's
    refusal, and no engine thread (no open file) is left behind."""
    path = tmp_path / "closing.db"
    for _ in range(3):
        service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)}))
        opening = asyncio.create_task(service.connect())
        while not _engine_threads(path):  # closed while its engine thread opens the file
            await asyncio.sleep(0)
        await service.aclose()
        assert _engine_threads(path) == []
        try:
            db = await opening
        except TursoClosedError:
            pass
        else:
            with pytest.raises(TursoClosedError):
                await db.get("SELECT 1")
        with pytest.raises(TursoClosedError):
            await service.connect()
    reopened = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(path)}))
    try:  # the file is free again at once
        assert await (await reopened.connect()).get("SELECT 1 AS ok") == {"ok": 1}
    finally:
        await reopened.aclose()
