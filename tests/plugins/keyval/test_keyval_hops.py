"""Engine-thread hops: each public call costs one, and the shortcuts behind that stay correct.

Feeds in: the real store on a local MVCC file (the ``kv`` fixture); the only instrument is a
counter wrapped around the backend's :meth:`EngineThread.call`, which every statement, every
``run_transaction`` and every commit goes through.

Checks: one hop per read and per write (BEGIN, statements and COMMIT travel together), search's
one-statement path and its fallback when the in-memory index list is stale, and that a
cancelled index creation (whose transaction still commits on the engine thread) leaves the
in-memory index list in step with ``kv_indexes``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from buntime.plugins.keyval import CommitResult, IndexInfo, KeyValNotFoundError, Kv, KvTransaction
from buntime.plugins.keyval._keys import encode_key
from buntime.plugins.keyval._search import index_table_name
from buntime.turso import Database

T = TypeVar("T")


class Hops:
    """Counts the engine-thread calls of one store's backend."""

    def __init__(self) -> None:
        self.count = 0

    async def of(self, awaitable: Awaitable[T]) -> tuple[int, T]:
        before = self.count
        result = await awaitable
        return self.count - before, result


@pytest.fixture
async def hops(kv: Kv, monkeypatch: pytest.MonkeyPatch) -> Hops:
    engine = (await kv.service._backend(kv.namespace))._engine
    counter = Hops()
    original = engine.call

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        counter.count += 1
        return await original(fn, *args)

    monkeypatch.setattr(engine, "call", call)
    return counter


async def test_every_read_and_write_is_one_hop(kv: Kv, hops: Hops) -> None:
    await kv.create_index(["people"], ["name"])
    assert (await hops.of(kv.set(["people", 1], {"name": "Ada"}, expire_in=60_000)))[0] == 1
    n, entry = await hops.of(kv.get(["people", 1]))
    assert n == 1 and entry.value == {"name": "Ada"}
    n, entries = await hops.of(kv.get_many([["people", 1], ["missing"]]))
    assert n == 1 and [e.versionstamp is not None for e in entries] == [True, False]
    assert await hops.of(kv.list(["people"])) == (1, [entry])
    assert await hops.of(kv.count(["people"])) == (1, 1)
    n, page = await hops.of(kv.paginate(["people"], limit=1))
    assert n == 1 and page.entries == [entry]
    assert await hops.of(kv.search(["people"], "ada")) == (1, [entry])
    n, result = await hops.of(kv.atomic().check(["people", 1], None).set(["x"], 1).commit())
    assert n == 1 and not result.ok
    n, result = await hops.of(kv.atomic().sum(["n"], 2).set(["people", 2], {"name": "Alan"}).commit())
    assert n == 1 and result.ok
    assert await hops.of(kv.atomic().commit()) == (0, CommitResult(True))  # nothing to do
    assert await hops.of(kv.delete(["people", 2], exact=True)) == (1, 1)
    assert await hops.of(kv.delete_many([["people"], ["n"]])) == (1, 2)
    assert await hops.of(kv.sweep_expired()) == (1, 0)


async def test_a_transaction_is_one_hop_per_read_batch_plus_its_commit(kv: Kv, hops: Hops) -> None:
    await kv.set(["a"], 1)

    async def fn(tx: KvTransaction) -> int:
        a, _ = await tx.get_many([["a"], ["b"]])  # one batch
        await tx.get(["a"])  # cached: no statement
        tx.set(["b"], a.value + 1)
        return int(a.value)

    n, result = await hops.of(kv.transaction(fn))
    assert n == 2 and result.ok
    fired: list[Any] = []
    kv.add_trigger(["b"], ["set"], fired.append)  # triggers cost no statement either
    assert (await hops.of(kv.set(["b"], 5)))[0] == 1 and len(fired) == 1


async def test_every_queue_call_is_one_hop(kv: Kv, hops: Hops) -> None:
    n, message_id = await hops.of(kv.queue.enqueue("job", backoff_schedule=[]))
    assert n == 1
    assert (await hops.of(kv.queue.stats()))[1].pending == 1
    n, message = await hops.of(kv.queue.dequeue())
    assert n == 1 and message is not None and message.id == message_id
    assert await hops.of(kv.queue.nack(message_id)) == (1, "dead")
    n, stats = await hops.of(kv.queue.stats())
    assert n == 1 and (stats.pending, stats.processing, stats.dlq) == (0, 0, 1)
    (dead,) = await kv.queue.list_dlq()
    n, new_id = await hops.of(kv.queue.requeue_dlq(dead.id))
    assert n == 1 and new_id is not None
    assert await hops.of(kv.queue.requeue_stale()) == (1, 0)


async def _drop_index_elsewhere(kv: Kv, info: IndexInfo) -> None:
    """Drop an index behind the store's back, as another pod would (the list keeps it)."""

    async def drop(db: Database) -> None:
        await db.exec(f"DROP TABLE {info.table}")
        await db.run("DELETE FROM kv_indexes WHERE prefix = ?", [info.encoded])

    await kv.service.transaction(drop, namespace=kv.namespace, type="exclusive")


async def test_search_checks_the_index_list_against_storage(kv: Kv, hops: Hops) -> None:
    await kv.set(["docs", 1], {"t": "hello", "u": "other"})
    info = await kv.create_index(["docs"], ["t"])
    # The list misses the index (created by another pod, no refresh yet): read it, then search.
    kv._search.indexes.drop(info.encoded)
    n, found = await hops.of(kv.search(["docs"], "hello"))
    assert n == 2 and [e.key for e in found] == [("docs", 1)]
    # The list has other fields than storage: storage wins (the field name is not stripped).
    kv._search.indexes.put(IndexInfo(info.prefix, info.encoded, ("u",), info.tokenize, info.table, 0))
    assert await hops.of(kv.search(["docs"], "u:hello")) == (2, [])
    assert await kv.remove_index(["docs"]) is True
    # The list has an index whose table and row are gone: not found, as without the list.
    kv._search.indexes.put(info)
    with pytest.raises(KeyValNotFoundError) as raised:
        await kv.search(["docs"], "hello")
    assert raised.value.code == "INDEX_NOT_FOUND"
    with pytest.raises(KeyValNotFoundError):  # reported before the query's own error, as always
        await kv.search(["docs"], " OR ")


async def test_search_after_an_index_was_dropped_elsewhere(kv: Kv) -> None:
    await kv.set(["a", "b", 1], {"t": "deep"})
    await kv.create_index(["a"], ["t"])
    inner = await kv.create_index(["a", "b"], ["t"])
    await _drop_index_elsewhere(kv, inner)  # the list still picks the deeper, vanished one
    assert [e.key for e in await kv.search(["a", "b"], "deep")] == [("a", "b", 1)]


async def test_cancelled_index_creation_keeps_the_index_list_in_step(kv: Kv) -> None:
    for start in range(0, 4000, 1000):
        op = kv.atomic()
        for i in range(start, start + 1000):
            op.set(["bulk", i], {"t": f"item {i}"})
        await op.commit()
    task = asyncio.create_task(kv.create_index(["bulk"], ["t"]))
    await asyncio.sleep(0.005)  # the rebuild is running on the engine thread by now
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()  # the caller saw the cancellation (the rebuild takes ~90 ms here)
    stored = [i.encoded for i in await kv.list_indexes()]
    assert stored == [encode_key(("bulk",))]  # it committed anyway: the engine cannot be interrupted
    assert [i.encoded for i in kv._search.indexes.all] == stored  # and the list knows it
    await kv.set(["bulk", "new"], {"t": "fresh"})
    assert [e.key for e in await kv.search(["bulk"], "fresh")] == [("bulk", "new")]
    assert index_table_name(stored[0]) == kv._search.indexes.all[0].table
