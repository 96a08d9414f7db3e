"""``TURSO_WRITE_TIMEOUT`` bounds what a hung turso-server costs (docs/consistency.md, *The contract*).

A real turso-server is frozen (SIGSTOP, its tursodb children too): connections are accepted and
nothing is answered, as with a node that died before its endpoints were removed. Each test bounds
how long a write or a read then waits; the bounds are small multiples of the 2 s write timeout,
where without the deadline the sync requests waited 60 s each. The ``server`` fixture's teardown
resumes (SIGCONT) and stops every process, also when a test fails while the server is frozen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from buntime.turso import Database, TursoCommitUnknownError, TursoService, TursoUnavailableError
from tests.support.tursoserver import TursoServer
from tests.turso.test_consistency import NS, pod, schema

WRITE_TIMEOUT = 2.0
# A lease-less write: the acquire's wait plus its 1 s margin (3 s; it was 2 s + 5 s).
LEASE_BOUND = WRITE_TIMEOUT + 2.0
# A write whose push hangs: the push, a renewal and an acquire (1 s margin each), the reset's probe.
PUSH_BOUND = 3 * WRITE_TIMEOUT + 4.0
# A read behind a background pull that hangs: the pull, plus the scheduling of a loaded machine.
READ_BOUND = WRITE_TIMEOUT + 1.5


def hung_pod(server: TursoServer, root: Path, **extra: str) -> TursoService:
    return pod(server, root, "a", TURSO_WRITE_TIMEOUT=f"{WRITE_TIMEOUT:g}s", **extra)


async def insert(service: TursoService, who: str) -> None:
    await service.transaction(lambda db: db.run("INSERT INTO t(who) VALUES (?)", [who]), namespace=NS)


async def test_a_write_without_the_lease_fails_within_the_write_timeout(
    server: TursoServer, tmp_path: Path
) -> None:
    a = hung_pod(server, tmp_path)
    try:
        await schema(a)
        await insert(a, "before")
        await asyncio.sleep(0.2)  # the idle lease goes back: the next write asks for it
        server.freeze()
        started = time.monotonic()
        with pytest.raises(TursoUnavailableError):
            await asyncio.wait_for(insert(a, "lease-less"), LEASE_BOUND)
        assert time.monotonic() - started < LEASE_BOUND
    finally:
        server.thaw()
        await a.aclose()


async def test_a_write_whose_push_hangs_fails_within_a_few_write_timeouts(
    server: TursoServer, tmp_path: Path
) -> None:
    a = hung_pod(server, tmp_path)

    async def body(db: Database) -> None:
        await db.run("INSERT INTO t(who) VALUES ('pushed into a hung server')")
        server.freeze()  # under the lease, before the push

    try:
        await schema(a)
        await insert(a, "before")
        started = time.monotonic()
        # Unknown, never "not applied": the batch may be in the server's socket buffer.
        with pytest.raises(TursoCommitUnknownError):
            await asyncio.wait_for(a.transaction(body, namespace=NS), PUSH_BOUND)
        assert time.monotonic() - started < PUSH_BOUND
    finally:
        server.thaw()
        await a.aclose()


async def test_a_read_behind_a_hung_background_pull_waits_at_most_the_write_timeout(
    server: TursoServer, tmp_path: Path
) -> None:
    a = hung_pod(server, tmp_path, TURSO_SYNC_INTERVAL="0.5s")
    try:
        await schema(a)
        await insert(a, "before")
        db = await a.connect(NS)
        server.freeze()
        waits = []
        end = time.monotonic() + 3 * WRITE_TIMEOUT  # two pulls hang in this time at least
        while time.monotonic() < end:
            started = time.monotonic()
            rows = await asyncio.wait_for(db.all("SELECT who FROM t"), READ_BOUND)
            waits.append(time.monotonic() - started)
            assert rows == [{"who": "before"}]
            await asyncio.sleep(0.1)
        assert max(waits) < READ_BOUND
        assert max(waits) > WRITE_TIMEOUT / 4  # some read did wait behind a pull
    finally:
        server.thaw()
        await a.aclose()


async def test_a_connect_cancelled_during_its_first_sync_closes_the_replica(
    server: TursoServer, tmp_path: Path
) -> None:
    """The replica file exists, so the open needs no network and then syncs once: cancelled in
    that sync (the server hung), the open closes the replica and stops its engine thread."""
    a = hung_pod(server, tmp_path)
    await schema(a)
    await insert(a, "before")
    await a.aclose()
    before = set(threading.enumerate())
    b = hung_pod(server, tmp_path)
    try:
        server.freeze()
        opening = asyncio.create_task(b.connect(NS))
        await asyncio.sleep(0.5)  # the local open is done; its first sync waits for the server
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
    finally:
        server.thaw()
    left = [t for t in set(threading.enumerate()) - before if t.name == f"turso:{NS}.db"]
    for thread in left:  # it ends once its request returns (the server answers again)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, READ_BOUND)
    assert not any(t.is_alive() for t in left)
    db = await b.connect(NS)  # the file is not left open: the retry opens it
    assert await db.all("SELECT who FROM t") == [{"who": "before"}]
    await b.aclose()
