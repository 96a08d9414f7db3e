"""The runtime app in process: probes, readiness rules, metrics, plugin routes and middlewares."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from buntime.plugins import PluginHost, discover
from buntime.server import STATE_KEY, build_app
from tests.server.support import GATEWAY, PROXY, TURSO, builtin_host, start_runtime, write_plugin
from tests.support.ports import free_port
from tests.support.tursodb import SyncServer

TEAPOT_MANIFEST = """
name: teapot
entry: MODULE:create
base: /teapot
"""
TEAPOT_MODULE = """
from aiohttp import web
from buntime.plugins import Plugin


async def hello(request):
    return web.json_response({"hello": "teapot"})


async def short_and_stout(request, handler):
    # Answers everything outside its own base: the server must still keep its probes.
    if request.path.startswith("/teapot"):
        return await handler(request)
    return web.Response(status=418, text="short and stout")


class Teapot(Plugin):
    def routes(self):
        app = web.Application()
        app.router.add_get("/hello", hello)
        return app

    def middlewares(self):
        return [short_and_stout]


def create(options):
    return Teapot()
"""


async def test_live_is_ok(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO)
    response = await client.get("/api/health/live")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_ready_lists_plugins_and_turso_health(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY, PROXY)
    response = await client.get("/api/health/ready")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready" and body["reasons"] == []
    assert [p["name"] for p in body["plugins"]] == [TURSO, GATEWAY, PROXY]
    assert {p["name"]: p["base"] for p in body["plugins"]}[GATEWAY] == "/gateway"
    assert body["turso"] == {"status": "ok", "namespaces": {"gateway": "ok", "proxy": "ok", "runtime": "ok"}}


async def test_ready_is_503_once_shutdown_begins(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO)
    client.app[STATE_KEY].stopping = True
    response = await client.get("/api/health/ready")
    assert response.status == 503
    assert "shutting down" in (await response.json())["reasons"]


async def test_ready_is_503_when_a_plugin_failed(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins,
        "broken",
        "name: broken\nentry: MODULE:create\n",
        "from buntime.plugins import Plugin\n\n"
        "class Broken(Plugin):\n"
        "    async def on_init(self, ctx):\n"
        "        raise RuntimeError('no luck')\n\n"
        "def create(options):\n"
        "    return Broken()\n",
    )
    client = await start_runtime(aiohttp_client, env, TURSO, PROXY, extra_dirs=[plugins])
    response = await client.get("/api/health/ready")
    body = await response.json()
    assert response.status == 503
    assert body["failed"] == ["broken"] and "plugin broken failed" in body["reasons"]
    # the failure does not take the rest down: the built-ins still serve
    assert (await client.get("/redirects/admin/rules")).status == 200


async def test_broken_manifests_are_listed_apart_by_name_and_only_the_log_has_their_files(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two broken x/manifest.yaml under two plugin dirs, beside a real plugin named x, and one in a
    # directory whose name holds a ':' (the message's first ':' is not the end of the path).
    one, two = tmp_path / "one", tmp_path / "two"
    write_plugin(one, "real", "name: x\nentry: MODULE:create\nbase: /teapot\n", TEAPOT_MODULE)
    for root, dirname in ((one, "x"), (one, "odd:dir"), (two, "x")):
        write_plugin(root, dirname, "name: x\nentry: m:c\nbase: 3\n")
    with caplog.at_level(logging.ERROR, logger="buntime.plugins"):
        host = PluginHost.from_env({**env, "BUNTIME_PLUGIN_DIRS": f"{one}:{two}"}, builtin=False)
        client = await aiohttp_client(await build_app(env, host=host))
    response = await client.get("/api/health/ready")
    text = await response.text()
    body = await response.json()
    assert response.status == 503
    # The real x started and keeps its name; each broken manifest has its own, none is "x".
    assert [p["name"] for p in body["plugins"]] == ["x"]
    assert body["failed"] == ["odd:dir", "x#2", "x#3"]
    assert sorted(body["reasons"]) == ["plugin odd:dir failed", "plugin x#2 failed", "plugin x#3 failed"]
    assert str(tmp_path) not in text and "manifest.yaml" not in text
    # Every consumer of the host sees the same names; the file is in the error and the log line.
    assert set(host.blocking()) == set(host.failed) == {"odd:dir", "x#2", "x#3"}
    for name, path in (("x#2", one / "x"), ("odd:dir", one / "odd:dir"), ("x#3", two / "x")):
        assert host.failed[name].startswith(f"{path / 'manifest.yaml'}: 'base' must be")
        assert f"invalid plugin manifest {name}: {path / 'manifest.yaml'}: 'base' must be" in caplog.text


async def test_ready_is_503_when_turso_cannot_open(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a new replica cannot bootstrap
    env = {"TURSO_LOCAL_PATH": str(tmp_path / "replica" / "r.db"), "TURSO_SYNC_URL": dead}
    client = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    response = await client.get("/api/health/ready")
    body = await response.json()
    assert response.status == 503
    assert TURSO in body["failed"]
    assert body["turso"] is None
    assert PROXY in [p["name"] for p in body["plugins"]]  # optional dependency: up without storage


async def test_ready_stays_200_when_a_replica_works_offline(
    aiohttp_client: AiohttpClient, sync_server: SyncServer, tmp_path: Path
) -> None:
    env = {
        "TURSO_LOCAL_PATH": str(tmp_path / "replica" / "r.db"),
        "TURSO_SYNC_URL": sync_server.url,
        "TURSO_SYNC_INTERVAL": "0.2s",
    }
    first = await start_runtime(aiohttp_client, env, TURSO)
    assert (await first.get("/api/health/ready")).status == 200
    await first.close()  # bootstraps the replica file, then a clean stop
    sync_server.kill()
    client = await start_runtime(aiohttp_client, env, TURSO)
    response = await client.get("/api/health/ready")
    body = await response.json()
    assert response.status == 200, body
    assert body["turso"] == {"status": "degraded", "namespaces": {"runtime": "degraded"}}


async def test_metrics_render_plugin_and_server_metrics(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY, PROXY)
    assert (await client.get("/api/health/live")).status == 200
    assert (await client.get("/no/such/path")).status == 404
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'buntime_http_requests_total{method="GET",route="/api/health/live",status="200"} 1.0' in text
    assert 'buntime_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    assert "buntime_http_request_duration_seconds_bucket" in text
    assert 'buntime_gateway_requests_total{outcome="allowed"}' in text  # from the host's shared registry


async def test_plugin_routes_are_mounted_and_middlewares_never_see_probes(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "teapot", TEAPOT_MANIFEST, TEAPOT_MODULE)
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY, extra_dirs=[plugins])
    assert await (await client.get("/teapot/hello")).json() == {"hello": "teapot"}
    assert (await client.get("/anything/else")).status == 418
    assert (await client.get("/gateway/admin/shell/excludes")).status == 418  # plugins see plugin paths
    for path in ("/api/health/live", "/api/health/ready", "/metrics"):
        assert (await client.get(path)).status == 200, path


async def test_routes_without_a_base_are_not_mounted(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "baseless", "name: baseless\nentry: MODULE:create\n", TEAPOT_MODULE)
    host = PluginHost(discover([plugins]), env=env)
    with caplog.at_level(logging.ERROR, logger="buntime.server"):
        client = await aiohttp_client(await build_app(env, host=host))
    assert "plugin baseless has routes but base None" in caplog.text
    assert (await client.get("/hello")).status == 418  # its middleware still runs


async def test_cleanup_stops_plugins_in_reverse_order(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    host = builtin_host(env, TURSO, GATEWAY)
    client = await aiohttp_client(await build_app(env, host=host))
    service = host.get_plugin(TURSO)
    assert [p.manifest.name for p in host.loaded] == [TURSO, GATEWAY]
    await client.close()
    assert host.loaded == []
    assert (await service.health()).ok is False  # the turso plugin closed its service


async def test_default_host_loads_builtins_and_plugin_dirs(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "teapot", TEAPOT_MANIFEST, TEAPOT_MODULE)
    client = await aiohttp_client(await build_app({**env, "BUNTIME_PLUGIN_DIRS": str(plugins)}))
    names = [p["name"] for p in (await (await client.get("/api/health/ready")).json())["plugins"]]
    assert {TURSO, GATEWAY, PROXY, "teapot"} <= set(names)
    assert await (await client.get("/teapot/hello")).json() == {"hello": "teapot"}
