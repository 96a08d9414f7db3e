"""Health tells the truth: one rule for ok/degraded/down, optional plugins, local namespaces.

Feeds in: the runtime app in process (``aiohttp_client``) with the built-in plugins and small
third-party plugins written to ``tmp_path``, and the Turso service on a local file. Checks: the
``ok``/``usable``/``status`` rule, that an optional plugin's failure or skip leaves the pod ready
while a required one's does not, that local-mode health names the namespaces the pod opened, and
that a pod started before its turso-server becomes ready by itself once the server is up.
Leaves unmocked: the real plugin host, tursodb engine and (for recovery) a real turso-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
from pytest_aiohttp import AiohttpClient

from buntime.plugins import BUILTIN_DIR, PluginHost, discover
from buntime.server import HOST_KEY, PLUGIN_STARTING, build_app
from buntime.turso import TursoError, TursoHealth, TursoService, resolve_config
from tests.server.support import GATEWAY, KEYVAL, PROXY, TURSO, start_runtime, write_plugin
from tests.support.tursoserver import SyncEndpoint

BROKEN_MODULE = (
    "from buntime.plugins import Plugin\n\n"
    "class Broken(Plugin):\n"
    "    async def on_init(self, ctx):\n"
    "        raise RuntimeError('no luck')\n\n"
    "def create(options):\n"
    "    return Broken()\n"
)


async def test_an_optional_plugin_that_fails_or_is_skipped_keeps_the_pod_ready(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "extra", "name: extra\noptional: true\nentry: MODULE:create\n", BROKEN_MODULE)
    write_plugin(
        plugins,
        "orphan",
        "name: orphan\noptional: true\nentry: MODULE:create\ndependencies: [not-installed]\n",
        BROKEN_MODULE,
    )
    client = await start_runtime(aiohttp_client, env, TURSO, PROXY, extra_dirs=[plugins])
    response = await client.get("/api/health/ready")
    body = await response.json()
    assert response.status == 200, body
    assert body["reasons"] == [] and body["failed"] == ["extra"] and body["skipped"] == ["orphan"]


async def test_a_required_third_party_plugin_that_is_skipped_makes_the_pod_unready(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins, "needy", "name: needy\nentry: MODULE:create\ndependencies: [not-installed]\n", BROKEN_MODULE
    )
    client = await start_runtime(aiohttp_client, env, TURSO, PROXY, extra_dirs=[plugins])
    response = await client.get("/api/health/ready")
    body = await response.json()
    assert response.status == 503
    assert body["reasons"] == ["plugin needy skipped"]


async def test_local_health_lists_the_namespaces_the_pod_opened(tmp_path: Path) -> None:
    async with TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(tmp_path / "rt.db")})) as service:
        down = await service.health()
        assert (down.ok, down.usable, down.status) == (False, False, "down")
        await service.connect("keyval")
        await service.connect("gateway")
        health = await service.health()
    assert (health.ok, health.usable, health.status) == (True, True, "ok")
    assert sorted(health.namespaces) == ["gateway", "keyval"]
    assert {entry.replica_path for entry in health.namespaces.values()} == {str(tmp_path / "rt.db")}


async def test_every_runtime_metric_has_the_buntime_prefix(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY, PROXY, KEYVAL)
    await client.put("/keyval/api/keys/m/one", json=1)
    text = await (await client.get("/metrics")).text()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert any(n.startswith("buntime_keyval_") for n in names), names
    assert names and all(n.startswith("buntime_") for n in names), sorted(names)


async def test_a_pod_started_while_turso_server_is_down_recovers_when_it_comes_back(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    server = SyncEndpoint(tmp_path / "server")  # its ports are chosen now; nothing listens yet
    env = {"TURSO_LOCAL_PATH": str(tmp_path / "replica" / "r.db"), "TURSO_SYNC_URL": server.url}
    manifests = [m for m in discover([BUILTIN_DIR]) if m.name in (TURSO, KEYVAL, PROXY)]
    host = PluginHost(manifests, env=env, retry_initial=0.2, retry_max=0.5)
    client = await aiohttp_client(await build_app(env, host=host))
    try:
        response = await client.get("/api/health/ready")
        body = await response.json()
        assert response.status == 503
        assert TURSO in body["failed"] and KEYVAL in body["skipped"]
        assert sorted(body["retrying"]) == sorted([TURSO, KEYVAL])
        response = await client.get("/keyval/api/keys/m/one")
        assert response.status == 503
        assert (await response.json())["code"] == PLUGIN_STARTING
        assert response.headers["Retry-After"].isdigit()

        await asyncio.to_thread(server.start)
        deadline = asyncio.get_running_loop().time() + 30
        while (response := await client.get("/api/health/ready")).status != 200:
            assert asyncio.get_running_loop().time() < deadline, await response.json()
            await asyncio.sleep(0.2)
        body = await response.json()
        assert body["failed"] == [] and body["skipped"] == [] and body["retrying"] == []
        assert {TURSO, KEYVAL, PROXY} <= {p["name"] for p in body["plugins"]}

        assert (await client.put("/keyval/api/keys/m/one", json={"n": 1})).status in (200, 201, 204)
        response = await client.get("/keyval/api/keys/m/one")
        assert response.status == 200
        assert "1" in await response.text()
    finally:
        await client.close()
        server.kill()


def _replica_env(tmp_path: Path, name: str, url: str, **extra: str) -> dict[str, str]:
    return {"TURSO_LOCAL_PATH": str(tmp_path / name / "r.db"), "TURSO_SYNC_INTERVAL": "0", **extra}


async def _timed_health(service: TursoService) -> tuple[float, TursoHealth]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    health = await asyncio.wait_for(service.health(), 10)
    return loop.time() - started, health


async def test_health_answers_at_once_while_a_write_waits_for_the_lease(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    # Pod b holds turso-server's write lease; pod a's write waits for it holding a's write gate.
    # Health used to wait behind that gate, so readiness timed out exactly when the pod serves.
    a = TursoService(
        resolve_config(env={**_replica_env(tmp_path, "a", ""), "TURSO_SYNC_URL": sync_server.url})
    )
    b = TursoService(
        resolve_config(env={**_replica_env(tmp_path, "b", ""), "TURSO_SYNC_URL": sync_server.url})
    )
    try:
        await (await a.connect()).exec("CREATE TABLE IF NOT EXISTS t(v TEXT)")
        await (await b.connect()).get("SELECT 1 AS ok")
        holding, release = asyncio.Event(), asyncio.Event()

        async def hold(db: Any) -> None:
            await db.run("INSERT INTO t VALUES ('b')")
            holding.set()
            await release.wait()

        held = asyncio.create_task(b.transaction(hold))
        await asyncio.wait_for(holding.wait(), 10)
        waiting = asyncio.create_task(a.transaction(lambda db: db.run("INSERT INTO t VALUES ('a')")))
        await asyncio.sleep(0.5)  # a's write is now waiting for the lease, holding a's gate
        assert not waiting.done()
        elapsed, health = await _timed_health(a)
        assert elapsed < 1.5, elapsed
        assert health.usable and health.status != "down", health
        release.set()
        await held
        await waiting
    finally:
        await a.aclose()
        await b.aclose()


async def test_ready_answers_fast_and_stays_ready_degraded_while_turso_server_is_blackholed(
    aiohttp_client: AiohttpClient, sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    env = {**_replica_env(tmp_path, "pod", ""), "TURSO_SYNC_URL": sync_server.url}
    client = await start_runtime(aiohttp_client, env, TURSO, KEYVAL)
    service: TursoService = client.app[HOST_KEY].get_plugin(TURSO)
    proc = sync_server.server.proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)  # connections are accepted by the kernel, never answered
    try:
        pulling = asyncio.create_task(service.sync("keyval"))  # holds the replica's engine thread
        await asyncio.sleep(0.3)
        assert not pulling.done()
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.get("/api/health/ready", timeout=aiohttp.ClientTimeout(total=10))
        elapsed = loop.time() - started
        body = await response.json()
        assert elapsed < 2.5, elapsed  # the chart's probe gives up after 3 s
        assert response.status == 200, body
        assert body["turso"]["status"] == "degraded", body
        assert set(body["turso"]["namespaces"].values()) == {"degraded"}, body
    finally:
        proc.send_signal(signal.SIGCONT)
    with contextlib.suppress(TursoError):
        await pulling


async def test_one_namespace_that_cannot_serve_leaves_the_pod_ready_and_is_reported_alone(
    router: SyncEndpoint, tmp_path: Path
) -> None:
    env = {**_replica_env(tmp_path, "pod", ""), "TURSO_SERVER_URL": router.url}
    async with TursoService(resolve_config(env=env)) as service:
        await service.connect("keyval")
        await service.connect("gateway")
        await service._backends["keyval"].aclose()  # keyval's replica is gone; gateway's serves
        health = await service.health()
        assert (health.status, health.usable, health.connected) == ("degraded", True, True), health
        assert health.namespaces["keyval"].status == "down" and health.namespaces["gateway"].status == "ok"
        assert health.error is not None and health.error.count("keyval:") == 1  # each error once
        assert health.public() == {"status": "degraded", "namespaces": {"gateway": "ok", "keyval": "down"}}
        await service._backends["gateway"].aclose()
        assert (await service.health()).status == "down"  # nothing serves any more


async def test_the_ready_body_names_no_path_url_or_error_text(
    aiohttp_client: AiohttpClient, sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "extra", "name: extra\noptional: true\nentry: MODULE:create\n", BROKEN_MODULE)
    env = {**_replica_env(tmp_path, "pod", ""), "TURSO_SYNC_URL": sync_server.url}
    client = await start_runtime(aiohttp_client, env, TURSO, KEYVAL, extra_dirs=[plugins])
    await client.put("/keyval/api/keys/m/one", json=1)
    sync_server.kill()
    service: TursoService = client.app[HOST_KEY].get_plugin(TURSO)
    with contextlib.suppress(TursoError):
        await service.sync("keyval")  # records the failed sync (its text names the server's URL)
    response = await client.get("/api/health/ready")
    text = await response.text()
    assert response.status == 200, text
    body = json.loads(text)
    assert body["turso"] == {
        "status": "degraded",
        "namespaces": {"keyval": "degraded", "runtime": "degraded"},
    }
    assert body["failed"] == ["extra"]
    host_port = sync_server.base_url.split("://", 1)[1]
    for secret in (str(tmp_path), host_port, "no luck", "failed:", "Error"):
        assert secret not in text, secret


async def test_a_storage_503_names_no_path_or_url(
    aiohttp_client: AiohttpClient, sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    env = {
        **_replica_env(tmp_path, "pod", ""),
        "TURSO_SYNC_URL": sync_server.url,
        "TURSO_WRITE_TIMEOUT": "1s",
    }
    client = await start_runtime(aiohttp_client, env, TURSO, KEYVAL)
    assert (await client.put("/keyval/api/keys/m/one", json=1)).status in (200, 201, 204)
    sync_server.kill()
    response = await client.put("/keyval/api/keys/m/two", json=2)
    text = await response.text()
    assert response.status == 503, text
    assert json.loads(text)["code"] == "KEYVAL_UNAVAILABLE"
    host_port = sync_server.base_url.split("://", 1)[1]
    for secret in (str(tmp_path), host_port, "127.0.0.1"):
        assert secret not in text, (secret, text)
