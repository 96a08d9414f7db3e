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
from pathlib import Path

from pytest_aiohttp import AiohttpClient

from buntime.plugins import BUILTIN_DIR, PluginHost, discover
from buntime.server import PLUGIN_STARTING, build_app
from buntime.turso import TursoService, resolve_config
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
    assert body["reasons"] == [] and "no luck" in body["failed"]["extra"]
    assert "missing required dependency not-installed" in body["skipped"]["orphan"]


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
    assert body["reasons"] == ["plugin needy skipped: missing required dependency not-installed"]


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
        assert body["failed"] == {} and body["skipped"] == {} and body["retrying"] == []
        assert {TURSO, KEYVAL, PROXY} <= {p["name"] for p in body["plugins"]}

        assert (await client.put("/keyval/api/keys/m/one", json={"n": 1})).status in (200, 201, 204)
        response = await client.get("/keyval/api/keys/m/one")
        assert response.status == 200
        assert "1" in await response.text()
    finally:
        await client.close()
        server.kill()
