"""Sync mode: two "pods" with their own replicas of one database on a real turso-server.

Background sync is off (``TURSO_SYNC_INTERVAL=0``), so the only pushes are the ones each write
makes at commit and the only pulls are the explicit ``service.sync()`` calls (which also fire
the pull listeners, exactly as the background loop does).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from buntime.plugins import PluginHost
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, KeyValConflictError, Kv, KvTransaction
from buntime.plugins.keyval._keys import encode_key
from buntime.plugins.keyval._search import index_table_name
from buntime.turso import Database

HostStarter = Callable[[dict[str, str]], Awaitable[PluginHost]]
EnvFor = Callable[[str], dict[str, str]]


async def start_kv(start_host: HostStarter, env: dict[str, str]) -> Kv:
    kv = (await start_host(env)).get_plugin(KEYVAL_PLUGIN_NAME)
    assert isinstance(kv, Kv) and kv.service.config.mode == "sync"
    return kv


async def pull(kv: Kv) -> None:
    await kv.service.sync(kv.namespace)


async def test_writes_on_one_pod_are_visible_on_another(start_host: HostStarter, replica_env: EnvFor) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    written = await a.set(["users", 1], {"name": "Ada"})
    await a.atomic().sum(["visits"], 3).commit()
    await a.queue.enqueue("job")
    await pull(b)
    entry = await b.get(["users", 1])
    assert entry.value == {"name": "Ada"} and entry.versionstamp == written.versionstamp
    assert (await b.get(["visits"])).value == 3
    assert (await b.queue.stats()).pending == 1
    await b.delete(["users"])
    await pull(a)
    assert await a.count(["users"]) == 0


async def test_every_write_is_pushed_at_commit(start_host: HostStarter, replica_env: EnvFor) -> None:
    a = await start_kv(start_host, replica_env("a"))
    await a.set(["pushed"], "by set")
    await a.atomic().set(["pushed", "atomic"], 1).commit()
    await a.create_index(["pushed"], ["t"])
    # Upstream pushed only transaction() commits: its set, delete, queue and index writes were
    # autocommits that stayed in the pod's replica (lost with it) until some later push.
    await a.set(["gone"], 1)
    await a.create_index(["gone"], ["t"])
    assert await a.delete(["gone"]) == 1
    assert await a.remove_index(["gone"])
    kept = await a.queue.enqueue("kept")
    acked = await a.queue.enqueue("acked", delay=0)
    leased = await a.queue.dequeue()
    assert leased is not None and leased.id == kept
    assert await a.queue.ack(leased.id)
    # No sync on A: a brand-new replica (a pod started later) must already see everything.
    fresh = await start_kv(start_host, replica_env("fresh"))
    assert (await fresh.get(["pushed"])).value == "by set"
    assert (await fresh.get(["pushed", "atomic"])).value == 1
    assert [i.prefix for i in await fresh.list_indexes()] == [("pushed",)]
    assert (await fresh.get(["gone"])).versionstamp is None
    stats = await fresh.queue.stats()
    assert (stats.pending, stats.processing) == (1, 0)
    message = await fresh.queue.dequeue()
    assert message is not None and message.id == acked


async def test_data_survives_a_pod_restart(start_host: HostStarter, replica_env: EnvFor) -> None:
    host = await start_host(replica_env("a"))
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    await kv.set(["durable"], 42)
    await host.stop()
    # The pod comes back with an empty emptyDir: a new replica file, same server.
    again = await start_kv(start_host, replica_env("a-restarted"))
    assert (await again.get(["durable"])).value == 42


async def test_ttl_and_search_stay_consistent_across_pods(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    await a.create_index(["notes"], ["text"])
    await a.set(["notes", 1], {"text": "shared apple"})
    expires = asyncio.get_running_loop().time() + 1.5
    await a.set(["notes", 2], {"text": "short-lived apple"}, expire_in=1500)
    await pull(b)
    assert [e.key[1] for e in await b.search(["notes"], "apple")] == [1, 2]
    # B learned of the index through the pull listener: its own writes are indexed and pushed.
    await b.set(["notes", 3], {"text": "apple from b"})
    await b.delete(["notes", 1], exact=True)
    assert [e.key[1] for e in await b.search(["notes"], "apple")] == [2, 3]
    await pull(a)
    assert [e.key[1] for e in await a.search(["notes"], "apple")] == [2, 3]
    await asyncio.sleep(expires - asyncio.get_running_loop().time() + 0.1)
    assert [e.key[1] for e in await a.search(["notes"], "apple")] == [3]  # expired everywhere at once
    assert [e.key[1] for e in await b.search(["notes"], "apple")] == [3]
    assert await a.sweep_expired() == 1
    await pull(b)
    db = await b.service.connect(b.namespace)
    assert await db.get("SELECT count(*) AS n FROM kv_entries") == {"n": 1}


async def test_an_index_created_elsewhere_catches_up_local_writes(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    await b.set(["docs", "b1"], {"t": "written by b before it knew"})
    # A never pulled b1, but its create_index runs under the write lease on fresh data.
    await a.create_index(["docs"], ["t"])
    await pull(b)
    assert await b.refresh() == 0  # nothing to catch up: no write ever missed the index
    assert [e.key for e in await b.search(["docs"], "knew")] == [("docs", "b1")]
    await pull(a)
    assert [e.key for e in await a.search(["docs"], "knew")] == [("docs", "b1")]


async def test_a_write_never_misses_an_index_another_pod_just_created(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    await a.create_index(["docs"], ["t"])
    # B has not pulled, so its in-memory list has no index: the write reads the index
    # generation in its own transaction, reloads the list and writes the document with the entry.
    assert b._search.indexes.get(encode_key(["docs"])) is None
    await b.set(["docs", 1], {"t": "from b"})

    async def documents(db: Database) -> int:
        row = await db.get(f"SELECT count(*) AS n FROM {index_table_name(encode_key(['docs']))}")
        return int(row["n"]) if row else 0

    # Read inside a transaction: fresh from the server, whatever A's replica holds.
    assert await a.service.transaction(documents, namespace=a.namespace) == 1
    await pull(a)
    assert [e.key for e in await a.search(["docs"], "from")] == [("docs", 1)]


async def test_versionstamps_follow_commit_order_whatever_the_clocks(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    a.clock = lambda: time.time() + 60  # A's clock runs a minute ahead of B's
    first = await a.set(["skewed"], "a")
    second = await b.set(["skewed"], "b")  # later in commit order: a greater versionstamp
    assert first.versionstamp is not None and second.versionstamp is not None
    assert second.versionstamp > first.versionstamp
    # A check with the versionstamp A handed out fails against B's later write.
    assert not (await a.atomic().check(["skewed"], first.versionstamp).set(["skewed"], "x").commit()).ok


async def test_pods_on_one_clock_never_share_a_versionstamp(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    frozen = time.time()
    a.clock = b.clock = lambda: frozen  # the same millisecond on both pods
    random.seed(7)  # and the same random start of the counter in that millisecond
    first = await a.set(["same"], "a")
    random.seed(7)
    second = await b.set(["same"], "b")
    assert first.versionstamp != second.versionstamp
    assert not (await b.atomic().check(["same"], first.versionstamp).delete(["same"]).commit()).ok


async def test_concurrent_sums_from_two_pods_are_exact(start_host: HostStarter, replica_env: EnvFor) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    await asyncio.gather(*(kv.atomic().sum(["total"], 1).commit() for kv in (a, b) * 5))
    await pull(a)
    assert (await a.get(["total"])).value == 10


async def test_a_message_is_leased_to_one_pod_at_a_time(start_host: HostStarter, replica_env: EnvFor) -> None:
    a = await start_kv(start_host, {**replica_env("a"), "KEYVAL_QUEUE_LOCK_DURATION": "300ms"})
    b = await start_kv(start_host, {**replica_env("b"), "KEYVAL_QUEUE_LOCK_DURATION": "300ms"})
    message_id = await a.queue.enqueue("job")
    got = await asyncio.gather(a.queue.dequeue(), b.queue.dequeue())
    leased = [m for m in got if m is not None]
    assert [(m.id, m.attempts) for m in leased] == [(message_id, 1)]
    holder, other = (a, b) if got[0] is not None else (b, a)
    await asyncio.sleep(0.4)
    assert await other.queue.requeue_stale() == 1  # the lease ran out: back to pending
    again = await other.queue.dequeue()
    assert again is not None and (again.id, again.attempts) == (message_id, 2)
    with pytest.raises(KeyValConflictError):  # the first holder's lease is over
        await holder.queue.ack(message_id, attempts=1)
    with pytest.raises(KeyValConflictError):
        await holder.queue.nack(message_id, attempts=1)
    assert await other.queue.ack(message_id, attempts=2) is True
    assert await holder.queue.ack(message_id, attempts=2) is False  # gone: acked once only


async def test_a_transaction_conflicts_with_another_pods_write(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    """The reads' checks run under the write lease on fresh data: another pod's write that this
    pod never pulled still fails them, and the retry reads the fresh value."""
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    await a.set(["acct"], 1)
    await pull(b)
    attempts = 0

    async def bump(tx: KvTransaction) -> int:
        nonlocal attempts
        attempts += 1
        entry = await tx.get(["acct"])
        if attempts == 1:
            await b.set(["acct"], 100)  # pushed by B; A does not pull
        tx.set(["acct"], entry.value + 1)
        return int(entry.value)

    assert (await a.transaction(bump)).error == "conflict"
    attempts = 0
    result = await a.transaction(bump, max_retries=3, retry_delay=1)
    assert result.ok and result.value == 100 and attempts == 2
    await pull(b)
    assert (await b.get(["acct"])).value == 101


async def test_uuidv7_keys_from_two_pods_sort_in_commit_order(
    start_host: HostStarter, replica_env: EnvFor
) -> None:
    a = await start_kv(start_host, replica_env("a"))
    b = await start_kv(start_host, replica_env("b"))
    a.clock = lambda: time.time() + 60  # A's clock ahead: order must still be commit order
    order = []
    for kv, name in ((a, "a1"), (b, "b1"), (a, "a2"), (b, "b2")):
        result = await kv.atomic().set(["log", kv.uuidv7()], name).commit()
        order.append(result.versionstamp)
    await pull(a)
    listed = await a.list(["log"])
    assert [e.value for e in listed] == ["a1", "b1", "a2", "b2"]
    assert [e.key[1] for e in listed] == order
