"""Replica statements on the event loop (``ReplicaBackend._on_conn``) against a real turso-server.

While a replica's engine thread has nothing queued or running, a transaction's statements run on
the event loop itself and only the push hops to the engine thread; otherwise they queue behind
that work, in order. A statement that held the loop too long sends the replica's statements back
to the engine thread for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import TursoService
from buntime.turso import _backends as backends
from buntime.turso._backends import ReplicaBackend
from buntime.turso._engine import EngineThread
from tests.support.tursoserver import TursoServer
from tests.turso.test_consistency import NS, pod, schema, server_rows


class Recorder:
    """Which functions went to the engine thread, and on which thread statements ran."""

    def __init__(self, backend: ReplicaBackend) -> None:
        self.engine_calls: list[str] = []
        self.threads: set[int] = set()
        real = backend._engine.call

        async def call(fn: Callable[..., Any], *args: Any) -> Any:
            self.engine_calls.append(fn.__name__)
            return await real(fn, *args)

        backend._engine.call = call  # type: ignore[method-assign]

    def statement(self, sql: str) -> Callable[[Any], Any]:
        def run(conn: Any) -> Any:
            self.threads.add(threading.get_ident())
            return conn.execute(sql)

        return run


@contextlib.asynccontextmanager
async def one_pod(server: TursoServer, root: Path) -> AsyncIterator[tuple[TursoService, ReplicaBackend]]:
    """A pod with the schema, and its serializable replica backend; closed on the way out."""
    service = pod(server, root, "a")
    try:
        await schema(service)
        backend = await service._backend(NS)
        assert isinstance(backend, ReplicaBackend) and backend.serializable
        yield service, backend
    finally:
        await service.aclose()


async def landed(server: TursoServer, root: Path) -> list[object]:
    """The ``who`` of every row on the server, in id order."""
    return [r["who"] for r in await server_rows(server, root, "SELECT who FROM t ORDER BY id")]


async def insert(service: TursoService, recorder: Recorder, who: str) -> None:
    async def body(db: Any) -> None:
        await db._runner(recorder.statement(f"INSERT INTO t(who) VALUES ('{who}')"))

    await service.transaction(body, namespace=NS)


async def test_an_idle_replica_runs_statements_on_the_loop_and_hops_once_for_the_push(
    server: TursoServer, tmp_path: Path
) -> None:
    async with one_pod(server, tmp_path) as (a, backend):
        recorder = Recorder(backend)
        for i in range(3):
            await insert(a, recorder, f"a{i}")
        assert recorder.threads == {threading.get_ident()}  # the loop's own thread
        # One call per transaction reaches the engine thread: COMMIT of the group + its push (a
        # background pull, should one fall in the window, is no part of the transactions).
        assert [c for c in recorder.engine_calls if c != "_sync_once"] == ["_commit_then_push"] * 3
    assert await landed(server, tmp_path) == ["a0", "a1", "a2"]


async def test_statements_queue_behind_work_the_engine_thread_still_has(
    server: TursoServer, tmp_path: Path
) -> None:
    async with one_pod(server, tmp_path) as (a, backend):
        recorder = Recorder(backend)
        order: list[str] = []
        backend._engine.submit(lambda: (time.sleep(0.3), order.append("engine job")))
        assert not backend._engine.idle()
        await insert(a, recorder, "queued")
        order.append("transaction")
        assert order == ["engine job", "transaction"]
        assert recorder.threads and threading.get_ident() not in recorder.threads
        assert recorder.engine_calls[0] == "_in_tx"
        assert backend._engine.idle()
    assert await landed(server, tmp_path) == ["queued"]


async def test_a_statement_that_held_the_loop_too_long_sends_the_next_ones_to_the_engine_thread(
    server: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_pod(server, tmp_path) as (a, backend):
        recorder = Recorder(backend)
        monkeypatch.setattr(backends, "INLINE_LIMIT", 0.0)  # every statement counts as too long
        await insert(a, recorder, "first")
        assert recorder.threads == {threading.get_ident()}
        monkeypatch.setattr(backends, "INLINE_LIMIT", 10.0)
        recorder.threads.clear()
        await insert(a, recorder, "second")  # within INLINE_PAUSE: back on the engine thread
        assert recorder.threads and threading.get_ident() not in recorder.threads
        backend._inline_paused_until = 0.0  # the pause is over
        recorder.threads.clear()
        await insert(a, recorder, "third")
        assert recorder.threads == {threading.get_ident()}
    assert await landed(server, tmp_path) == ["first", "second", "third"]


async def test_concurrent_writers_with_statements_on_the_loop_all_land(
    server: TursoServer, tmp_path: Path
) -> None:
    """16 writers, statements inline between pushes, stats() read meanwhile: every row lands once."""
    async with one_pod(server, tmp_path) as (a, backend):

        async def writer(k: int) -> None:
            for i in range(10):
                await a.transaction(
                    lambda db, v=f"w{k}-{i}": db.run("INSERT INTO t(who) VALUES (?)", [v]), namespace=NS
                )

        async def reader() -> None:
            for _ in range(20):
                await backend.stats()
                await asyncio.sleep(0)

        await asyncio.gather(*(writer(k) for k in range(16)), reader())
    assert sorted(map(str, await landed(server, tmp_path))) == sorted(
        f"w{k}-{i}" for k in range(16) for i in range(10)
    )


async def test_engine_thread_idle_counts_queued_and_running_calls() -> None:
    engine = EngineThread("idle-test")
    try:
        assert engine.idle()
        started, release = threading.Event(), threading.Event()
        engine.submit(lambda: (started.set(), release.wait(5)))
        assert not engine.idle()
        pending = asyncio.ensure_future(engine.call(lambda: 42))
        await asyncio.sleep(0)  # the task queues its call
        assert started.wait(5)
        assert engine._submitted - engine._finished == 2  # one running, one queued
        release.set()
        assert await pending == 42
        assert engine.idle()
        with pytest.raises(ZeroDivisionError):
            await engine.call(lambda: 1 / 0)
        assert engine.idle()  # a failed call counts as finished
    finally:
        await engine.stop()


async def test_a_submitted_call_that_panics_does_not_end_the_engine_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pyo3 raises a Rust panic as a BaseException; one in a call nobody awaits (a queued
    RELEASE) used to end the thread, and every later call waited for ever."""

    class Panic(BaseException):
        pass

    def panics() -> None:
        raise Panic("a Rust panic")

    engine = EngineThread("panic-test")
    try:
        engine.submit(panics)
        assert await asyncio.wait_for(engine.call(lambda: 42), 5) == 42
        assert engine.idle()
    finally:
        await engine.stop()
    assert "nobody awaited it" in caplog.text
