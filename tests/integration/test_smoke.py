"""All built-in plugins in one runtime: keyval, gateway and proxy side by side, in local and
multi-tenant mode (one real tursodb per namespace behind the router)."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpClient

from buntime.server import HOST_KEY
from tests.server.support import (
    GATEWAY,
    KEYVAL,
    PROXY,
    TURSO,
    kv_value,
    local_env,
    start_runtime,
)
from tests.support.tursoserver import SyncEndpoint


async def test_all_plugins_in_one_runtime_local(
    aiohttp_client: AiohttpClient, tmp_path: Path, upstream: TestServer
) -> None:
    await exercise(aiohttp_client, local_env(tmp_path), upstream)


async def test_all_plugins_in_one_runtime_multi_tenant(
    aiohttp_client: AiohttpClient, tmp_path: Path, upstream: TestServer, router: SyncEndpoint
) -> None:
    env = local_env(tmp_path, TURSO_SERVER_URL=router.url, TURSO_SYNC_INTERVAL="0.3s")
    await exercise(aiohttp_client, env, upstream)
    assert {"gateway", "proxy"} <= set(router.children)  # one tursodb per namespace


async def exercise(aiohttp_client: AiohttpClient, runtime_env: dict[str, str], upstream: TestServer) -> None:
    client = await start_runtime(aiohttp_client, runtime_env)  # every built-in plugin
    ready = await client.get("/api/health/ready")
    body = await ready.json()
    assert ready.status == 200, body
    names = [p["name"] for p in body["plugins"]]
    assert names[0] == TURSO and {GATEWAY, PROXY} <= set(names)

    # gateway
    created = await client.post("/gateway/admin/shell/excludes", json={"basename": "smoke"})
    assert created.status == 200
    # proxy, to a real upstream
    rule = await client.post(
        "/redirects/admin/rules", json={"pattern": "^/svc/", "target": str(upstream.make_url("")).rstrip("/")}
    )
    assert rule.status == 201
    proxied = await client.get("/svc/hello")
    assert (await proxied.json())["path"] == "/svc/hello"
    # the gateway counted the proxied request too
    snapshot = await (await client.post("/gateway/admin/metrics/snapshot")).json()
    assert snapshot["totalRequests"] >= 4

    service = client.app[HOST_KEY].get_plugin(TURSO)
    for namespace, table in [("gateway", "gateway_shell_excludes"), ("proxy", "proxy_rules")]:
        rows = await (await service.connect(namespace)).all(f"SELECT count(*) AS n FROM {table}")
        assert rows == [{"n": 1}], (namespace, table)
    if runtime_env.get("TURSO_SERVER_URL"):
        assert {"gateway", "proxy"} <= set(service.namespaces)  # a replica per namespace

    text = await (await client.get("/metrics")).text()
    assert "buntime_gateway_requests_total" in text and "buntime_proxy_requests_total" in text
    assert 'route="/gateway/admin/shell/excludes"' in text

    assert KEYVAL in names
    put = await client.put("/keyval/api/keys/smoke/a", json={"n": 1})
    assert put.status == 200, await put.text()
    got = await client.get("/keyval/api/keys/smoke/a")
    assert got.status == 200
    assert kv_value(await got.json()) == {"n": 1}
    text = await (await client.get("/metrics")).text()
    assert "buntime_keyval_operations_total" in text  # keyval's metrics come through the host registry too
