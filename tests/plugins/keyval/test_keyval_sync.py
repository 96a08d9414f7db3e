"""Sync mode: two "pods" with their own replicas of one real ``tursodb --sync-server``.

Background sync is off (``TURSO_SYNC_INTERVAL=0``), so the only pushes are the ones each write
makes at commit and the only pulls are the explicit ``service.sync()`` calls (which also fire
the pull listeners, exactly as the background loop does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from buntime.plugins import PluginHost
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, Kv

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
    # No sync on A: a brand-new replica (a pod started later) must already see everything.
    fresh = await start_kv(start_host, replica_env("fresh"))
    assert (await fresh.get(["pushed"])).value == "by set"
    assert (await fresh.get(["pushed", "atomic"])).value == 1
    assert [i.prefix for i in await fresh.list_indexes()] == [("pushed",)]


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
    await a.create_index(["docs"], ["t"])  # A has not seen b1 yet: its index lacks it
    await pull(b)  # B pulls the index; its listener rebuilds it over B's data and pushes
    assert [e.key for e in await b.search(["docs"], "knew")] == [("docs", "b1")]
    await pull(a)
    assert [e.key for e in await a.search(["docs"], "knew")] == [("docs", "b1")]
