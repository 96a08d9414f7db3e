"""WebSocket proxying through a real upstream, the rule fields ``ws``, ``base``, ``relativePaths``,
``publicRoutes`` and ``secure``, and the refusal of rules that would shadow a reserved path."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from buntime.server import HOST_KEY
from tests.plugins.proxy.conftest import CLOSED_BY_CLIENT
from tests.plugins.proxy.test_forwarding import RULES, add_rule, runtime, target
from tests.server.support import GATEWAY, KEYVAL, PROXY, TURSO, start_runtime


async def ws_rule(client: TestClient, upstream: TestServer, **fields: Any) -> dict[str, Any]:
    return await add_rule(client, pattern="^/live/", target=target(upstream), rewrite="/upstream/", **fields)


# -- WebSocket ------------------------------------------------------------------------------------
async def test_websocket_frames_cross_the_proxy_both_ways(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await ws_rule(client, upstream, headers={"X-Rule": "on"})
    async with client.ws_connect("/live/ws?room=7", protocols=("chat",), max_msg_size=0) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo hi"
        await ws.send_bytes(b"\x00\x01\x02")
        assert await ws.receive_bytes(timeout=5) == b"\x02\x01\x00"
        big = "x" * (5 * 1024 * 1024)  # larger than aiohttp's 4 MiB default frame limit
        await ws.send_str(big)
        assert await ws.receive_str(timeout=10) == f"echo {big}"
        await ws.send_str("hello")
        seen = await ws.receive_json(timeout=5)
    assert seen["path"] == "/upstream/ws" and seen["query"] == "room=7"
    assert seen["protocol"] == "chat"
    assert seen["headers"]["X-Rule"] == "on"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"


async def test_an_idle_websocket_outlives_the_upstream_read_timeout(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env, PROXY_TIMEOUT="0.2")
    await ws_rule(client, upstream)
    async with client.ws_connect("/live/ws") as ws:
        await asyncio.sleep(0.6)
        await ws.send_str("still there")
        assert await ws.receive_str(timeout=5) == "echo still there"


async def test_an_upstream_close_code_and_reason_reach_the_client(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await ws_rule(client, upstream)
    async with client.ws_connect("/live/ws") as ws:
        await ws.send_str("close:4001:room closed")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4001, "room closed")


async def test_a_client_close_code_reaches_the_upstream(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await ws_rule(client, upstream)
    CLOSED_BY_CLIENT.clear()
    ws = await client.ws_connect("/live/ws")
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == "echo ping"
    await ws.close(code=4002, message=b"bye")
    for _ in range(100):
        if CLOSED_BY_CLIENT:
            break
        await asyncio.sleep(0.02)
    assert CLOSED_BY_CLIENT == [4002]


async def test_an_upstream_that_vanishes_closes_the_client_with_1014(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await ws_rule(client, upstream)
    async with client.ws_connect("/live/ws") as ws:
        await ws.send_str("vanish")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1014


async def test_a_refused_upgrade_keeps_the_upstream_status(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await ws_rule(client, upstream)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/live/teapot")  # a plain HTTP route upstream answers 418
    assert refused.value.status == 418


async def test_ws_false_leaves_upgrades_alone_but_proxies_http(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await ws_rule(client, upstream, ws=False)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/live/ws")
    assert refused.value.status == 404  # nothing else serves /live/ws in the runtime
    assert (await client.get("/live/teapot")).status == 418


# -- HTML rewriting -------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["", "?gzip=1"])
async def test_base_and_relative_paths_rewrite_html(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer, query: str
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(
        client,
        pattern="^/spa/",
        target=target(upstream),
        rewrite="/upstream/",
        base="/spa",
        relativePaths=True,
    )
    response = await client.get(f"/spa/page{query}", headers={"Accept-Encoding": "gzip"})
    text = await response.text()
    assert response.status == 200 and "Content-Encoding" not in response.headers
    assert text.startswith('<html><head lang="en"><base href="/spa/" /><script src="./app.js">')
    assert 'href="./docs"' in text and 'href="//cdn.example/x"' in text and "go('./next')" in text
    assert int(response.headers["Content-Length"]) == len(text.encode())


async def test_without_base_or_relative_paths_html_passes_untouched(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/spa/", target=target(upstream), rewrite="/upstream/")
    text = await (await client.get("/spa/page")).text()
    assert '<script src="/app.js">' in text and "<base" not in text


# -- fields, validation ---------------------------------------------------------------------------
async def test_new_fields_round_trip_and_are_validated(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    rule = await add_rule(
        client,
        pattern="^/svc/",
        target="https://self-signed.internal",
        secure=False,
        ws=False,
        base="/svc",
        relativePaths=True,
        publicRoutes={"GET": ["/svc/config/**"], "ALL": ["/svc/health"]},
    )
    assert rule["secure"] is False and rule["ws"] is False and rule["base"] == "/svc"
    assert rule["relativePaths"] is True
    assert rule["publicRoutes"] == {"GET": ["/svc/config/**"], "ALL": ["/svc/health"]}
    assert (await (await client.get(f"{RULES}/{rule['id']}")).json()) == rule
    for bad, code in [
        ({"base": 'x"><script>'}, "PROXY_INVALID_BASE"),
        ({"base": "/svc\n"}, "PROXY_INVALID_BASE"),
        ({"publicRoutes": {"GET\n": ["/svc/x"]}}, "PROXY_INVALID_PUBLIC_ROUTES"),
        ({"publicRoutes": "nope"}, "PROXY_INVALID_PUBLIC_ROUTES"),
        ({"publicRoutes": {"GET": ["no-slash"]}}, "PROXY_INVALID_PUBLIC_ROUTES"),
        ({"ws": "yes"}, "PROXY_INVALID_RULE"),
        ({"secure": 1}, "PROXY_INVALID_RULE"),
    ]:
        response = await client.post(RULES, json={"pattern": "^/svc/", "target": target(upstream), **bad})
        assert response.status == 400 and (await response.json())["code"] == code, bad


async def test_public_routes_answer_is_public(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(
        client,
        pattern="^/svc/",
        target=target(upstream),
        publicRoutes={"GET": ["/svc/config/**"], "ALL": ["/svc/health", "/svc/item-?"]},
    )
    await add_rule(client, pattern="^/list/", target=target(upstream), publicRoutes=["/list/*"])
    proxy = client.app[HOST_KEY].get_plugin(PROXY)
    assert proxy.is_public("/svc/config/a/b", "GET")
    assert not proxy.is_public("/svc/config/a/b", "POST")
    assert proxy.is_public("/svc/health", "DELETE") and proxy.is_public("/svc/item-7", "PUT")
    assert not proxy.is_public("/svc/item-77", "PUT") and not proxy.is_public("/svc/other", "GET")
    assert proxy.is_public("/list/a", "POST") and not proxy.is_public("/list/a/b", "POST")


# -- reserved paths -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "shadowed"),
    [
        ("^/keyval", "/keyval"),
        ("^/keyval/api", "/keyval"),
        ("/api/keys/", "/keyval"),
        ("^/gateway/", "/gateway"),
        ("^/redirects", "/redirects"),
        ("^/api/health", "/api/health/live"),
        ("^/metrics$", "/metrics"),
        (".*", "/api/health/live"),
    ],
)
async def test_a_rule_that_would_shadow_a_reserved_path_is_refused(
    aiohttp_client: AiohttpClient, env: dict[str, str], pattern: str, shadowed: str
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, KEYVAL, GATEWAY, PROXY)
    response = await client.post(RULES, json={"pattern": pattern, "target": "http://127.0.0.1:9"})
    body = await response.json()
    assert response.status == 409, body
    assert body["code"] == "PROXY_RULE_SHADOWS_RESERVED" and shadowed in body["error"]
    assert await (await client.get(RULES)).json() == []


async def test_changing_or_enabling_a_rule_into_a_shadow_is_refused(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, KEYVAL, PROXY)
    rule = await add_rule(client, pattern="^/svc/", target="http://127.0.0.1:9")
    moved = await client.put(f"{RULES}/{rule['id']}", json={"pattern": "^/keyval/"})
    assert moved.status == 409 and (await moved.json())["code"] == "PROXY_RULE_SHADOWS_RESERVED"
    parked = await add_rule(client, pattern="^/keyval/", target="http://127.0.0.1:9", enabled=False)
    toggled = await client.patch(f"{RULES}/{parked['id']}/toggle")
    assert toggled.status == 409 and (await toggled.json())["code"] == "PROXY_RULE_SHADOWS_RESERVED"
    assert [r["pattern"] for r in await (await client.get(RULES)).json()] == ["^/svc/", "^/keyval/"]


async def test_a_stored_shadowing_rule_never_takes_over_a_plugin_api(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    """A rule written before the plugin existed (or by another replica) still cannot win."""
    client = await start_runtime(aiohttp_client, env, TURSO, KEYVAL, PROXY)
    service = client.app[HOST_KEY].get_plugin(TURSO)
    rule_json = f'{{"pattern": "^/keyval", "target": "{target(upstream)}", "enabled": true}}'
    await service.transaction(
        lambda db: db.run(
            "INSERT INTO proxy_rules(id, rule_order, rule_json) VALUES ('old', 0, ?)", [rule_json]
        ),
        namespace="proxy",
    )
    await client.app[HOST_KEY].get_plugin(PROXY).store._store.reload()
    assert [r["id"] for r in await (await client.get(RULES)).json()] == ["old"]
    assert (await client.put("/keyval/api/keys/x", json={"v": 1})).status in (200, 201)
    got = await client.get("/keyval/api/keys/x")
    assert got.status == 200, await got.text()
    # Only the base and what is below it are reserved: /keyvalue is the rule's.
    assert (await (await client.get("/keyvalue/x")).json())["path"] == "/keyvalue/x"
