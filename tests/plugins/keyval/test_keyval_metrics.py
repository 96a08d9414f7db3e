"""Persisted metrics (``kv_metrics``, schema v4), storage size and queue stats in ``/metrics``.

Feeds in real plugin hosts on local files (and, for the cluster-wide totals, two replicas on a
real turso-server); persistence is switched on through the env variables an operator sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from buntime.plugins import PluginConfigError, PluginHost
from buntime.plugins.keyval import (
    KEYVAL_PLUGIN_NAME,
    InvalidKeyError,
    KeyValCommitUnknownError,
    KeyValConfigError,
    Kv,
    resolve_settings,
)
from buntime.plugins.keyval._schema import MIGRATIONS, SCHEMA_V1, SCHEMA_V2, SCHEMA_V3
from buntime.turso import BlockingDatabase, TursoService, resolve_config

from .conftest import commit_outcome_unknown, mount

API = "/keyval/api"
HostStarter = Callable[[dict[str, str]], Awaitable[PluginHost]]
Client = TestClient[web.Request, web.Application]
PERSIST = {"KEYVAL_METRICS_PERSISTENT": "true", "KEYVAL_METRICS_FLUSH_INTERVAL": "1h"}


def kv_of(host: PluginHost) -> Kv:
    kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
    assert isinstance(kv, Kv)
    return kv


async def test_a_v3_store_migrates_to_v4_and_keeps_its_data(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    def v3_store(db: BlockingDatabase) -> None:
        db.exec("CREATE TABLE kv_schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        for version, script in ((1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3)):
            db.exec(script)
            db.run("INSERT INTO kv_schema_version(version, applied_at) VALUES (?, 0)", [version])
        db.run(
            "INSERT INTO kv_entries(key, value, versionstamp) VALUES (?, ?, ?)",
            [b"\x02old\x00", b'"kept"', "0" * 19 + "1"],
        )

    async with TursoService(resolve_config(env=local_env)) as service:
        await service.run_transaction(v3_store, namespace="keyval", type="exclusive")
        db = await service.connect("keyval")
        assert await db.all("SELECT name FROM sqlite_schema WHERE name = 'kv_metrics'") == []
    kv = kv_of(await start_host({**local_env, **PERSIST}))
    assert (await kv.get(["old"])).value == "kept"
    db = await kv.service.connect(kv.namespace)
    versions = await db.all("SELECT version FROM kv_schema_version ORDER BY version")
    assert [r["version"] for r in versions] == [v for v, _ in MIGRATIONS] == [1, 2, 3, 4]
    await kv.set(["new"], 1)
    assert await kv.flush_metrics() > 0
    assert (await kv.persisted_metrics())["set"]["count"] == 1


async def test_flushes_add_increments_and_survive_restarts(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    env = {**local_env, **PERSIST}
    host = await start_host(env)
    kv = kv_of(host)
    for i in range(3):
        await kv.set(["k", i], i)
    assert await kv.flush_metrics() >= 1
    persisted = await kv.persisted_metrics()
    assert persisted["set"]["count"] == 3 and persisted["set"]["errors"] == 0
    assert persisted["set"]["latencySumMs"] > 0 and persisted["set"]["updatedAt"] > 0
    assert await kv.flush_metrics() == 0  # nothing counted since: no write at all
    with pytest.raises(InvalidKeyError):
        await kv.get([None])  # an error, counted under "get"
    await kv.set(["k", 3], 3)
    await host.stop()  # the final flush
    kv2 = kv_of(await start_host(env))
    persisted = await kv2.persisted_metrics()
    assert persisted["set"]["count"] == 4  # 3 + 1, not 3 + 4: only increments are added
    assert persisted["get"]["errors"] == 1
    assert kv2.metrics.snapshot().get("set", {}).get("count", 0) == 0  # this process: since start


async def test_a_flush_whose_outcome_is_unknown_is_never_added_again(
    start_host: HostStarter, local_env: dict[str, str]
) -> None:
    """A flush the service reports as TursoCommitUnknownError (here it landed) counts as flushed:
    the next flush adds only what was counted since, never the same increments twice."""
    host = await start_host({**local_env, **PERSIST})
    kv = kv_of(host)
    for i in range(3):
        await kv.set(["k", i], i)
    with commit_outcome_unknown(kv), pytest.raises(KeyValCommitUnknownError):
        await kv.flush_metrics()
    await kv.set(["k", 3], 3)
    await kv.flush_metrics()
    assert (await kv.persisted_metrics())["set"]["count"] == 4


async def test_the_background_flush_runs_and_persistence_is_off_by_default(
    start_host: HostStarter, local_env: dict[str, str], tmp_path: Path
) -> None:
    off = kv_of(await start_host(local_env))
    await off.set(["a"], 1)
    await asyncio.sleep(0.1)
    assert await off.persisted_metrics() == {}
    on = kv_of(
        await start_host(
            {
                **local_env,
                "TURSO_LOCAL_PATH": str(tmp_path / "second" / "runtime.db"),
                "KEYVAL_METRICS_PERSISTENT": "1",
                "KEYVAL_METRICS_FLUSH_INTERVAL": "50ms",
            }
        )
    )
    await on.set(["a"], 1)
    for _ in range(50):
        if (await on.persisted_metrics()).get("set", {}).get("count") == 1:
            break
        await asyncio.sleep(0.05)
    assert (await on.persisted_metrics())["set"]["count"] == 1


def test_metrics_settings() -> None:
    defaults = resolve_settings({"metrics": {"persistent": False, "flushInterval": "30s"}}, {})
    assert (defaults.metrics_persistent, defaults.metrics_flush_every) == (False, 0)
    tuned = resolve_settings({}, {"KEYVAL_METRICS_PERSISTENT": "true", "KEYVAL_METRICS_FLUSH_INTERVAL": "5s"})
    assert (tuned.metrics_persistent, tuned.metrics_flush_every) == (True, 5)
    for env in (
        {"KEYVAL_METRICS_PERSISTENT": "maybe"},
        {"KEYVAL_METRICS_PERSISTENT": "true", "KEYVAL_METRICS_FLUSH_INTERVAL": "0"},
    ):
        with pytest.raises(PluginConfigError, match=r"^KEYVAL_METRICS_"):  # a KeyValConfigError for the pair
            resolve_settings({}, env)
    with pytest.raises(PluginConfigError, match=r"option metrics must be a mapping"):
        resolve_settings({"metrics": "on"}, {})
    with pytest.raises(KeyValConfigError, match=r"^KEYVAL_METRICS_FLUSH_INTERVAL must be more than 0s"):
        resolve_settings({}, {"KEYVAL_METRICS_PERSISTENT": "true", "KEYVAL_METRICS_FLUSH_INTERVAL": "0"})


async def test_every_pod_adds_its_own_counts(
    replica_env: Callable[[str], dict[str, str]], start_host: HostStarter
) -> None:
    # replica_env (the sync server) first: the hosts stop, with their final flush, before it does.
    a = kv_of(await start_host({**replica_env("a"), **PERSIST}))
    b = kv_of(await start_host({**replica_env("b"), **PERSIST}))
    await a.set(["x"], 1)
    await a.set(["x"], 2)
    await b.set(["y"], 1)
    await a.flush_metrics()
    await b.flush_metrics()  # under the write lease, on fresh data: adds to a's row
    await a.service.sync(a.namespace)
    persisted = await a.persisted_metrics()
    assert persisted["set"]["count"] == 3
    # The pulls made both refresh their index lists: housekeeping, so nothing is left to
    # flush and the two idle pods do not keep writing each other's flushes.
    assert "refresh" not in persisted and "open" not in persisted
    await b.service.sync(b.namespace)
    assert await a.flush_metrics() == 0 and await b.flush_metrics() == 0


async def test_metrics_json_and_prometheus(
    aiohttp_client: Callable[..., Awaitable[Client]], start_host: HostStarter, local_env: dict[str, str]
) -> None:
    host = await start_host({**local_env, **PERSIST})
    client = await aiohttp_client(mount(host))
    await client.put(f"{API}/keys/a", json="xyz")  # key 3 bytes (02 'a' 00) + value 5 bytes ("xyz")
    await client.post(f"{API}/queue/enqueue", json={"value": 1})
    body = await (await client.get(f"{API}/metrics")).json()
    assert body["storage"] == {"entries": 1, "sizeBytes": 8}
    assert body["queue"] == {"pending": 1, "processing": 0, "dlq": 0, "total": 1}
    assert body["persisted"] == {} and body["operations"]["set"]["count"] == 1
    # The upstream client's KvMetrics: operations[op] = {count, errors, avgLatencyMs}.
    assert {"count", "errors", "avgLatencyMs"} <= set(body["operations"]["set"])
    await kv_of(host).flush_metrics()
    body = await (await client.get(f"{API}/metrics")).json()
    assert body["persisted"]["set"]["count"] == 1
    text = await (await client.get(f"{API}/metrics/prometheus")).text()
    assert "buntime_keyval_storage_bytes 8.0" in text and "buntime_keyval_entries 1.0" in text
    assert 'buntime_keyval_queue_messages{state="pending"} 1.0' in text
