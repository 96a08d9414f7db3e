"""Requests that match a rule are really proxied to (or redirected towards) a loopback upstream."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from buntime.server import HOST_KEY
from tests.plugins.proxy.conftest import BIG_CHUNK, BIG_CHUNKS, GZIPPED
from tests.server.support import GATEWAY, PROXY, TURSO, raw_request, start_runtime
from tests.support.ports import free_port

RULES = "/redirects/admin/rules"


def target(upstream: TestServer) -> str:
    return str(upstream.make_url("")).rstrip("/")


async def add_rule(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = await client.post(RULES, json=fields)
    body = await response.json()
    assert response.status == 201, body
    return body


async def runtime(aiohttp_client: AiohttpClient, env: dict[str, str], **extra: str) -> TestClient:
    return await start_runtime(aiohttp_client, {**env, **extra}, TURSO, GATEWAY, PROXY)


async def test_get_is_proxied_with_query_forwarded_headers_and_rule_headers(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/svc/", target=target(upstream), headers={"X-Rule": "on"})
    response = await client.get(
        "/svc/items/caf%C3%A9?a=1&b=two%20words",
        headers={
            "X-Client": "kept",
            "X-Forwarded-For": "10.0.0.9",
            "Connection": "X-Drop-Me",
            "X-Drop-Me": "1",
        },
    )
    seen = await response.json()
    assert response.status == 200, seen
    assert seen["method"] == "GET"
    assert seen["path"] == "/svc/items/caf%C3%A9"
    assert seen["query"] == "a=1&b=two%20words"
    headers = seen["headers"]
    assert headers["X-Client"] == "kept" and headers["X-Rule"] == "on"
    assert headers["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == f"127.0.0.1:{client.port}"
    assert headers["Host"] == f"127.0.0.1:{client.port}"  # changeOrigin false keeps the client's Host
    assert seen["connection_named"] == []  # hop-by-hop headers named in Connection are dropped
    bare = await client.get("/svc/bare", skip_auto_headers=["Accept-Encoding", "User-Agent"])
    added = {"Accept-Encoding", "User-Agent"} & set((await bare.json())["headers"])
    assert added == set()  # the proxy sends what the client sent, nothing more


async def test_change_origin_sends_the_target_host(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/svc/", target=target(upstream), changeOrigin=True)
    seen = await (await client.get("/svc/x")).json()
    assert seen["headers"]["Host"] == f"127.0.0.1:{upstream.port}"


async def test_post_body_streams_through_unchanged(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/upload", target=target(upstream))
    payload = os.urandom(3 * 1024 * 1024 + 17)
    response = await client.post(
        "/upload/file", data=io.BytesIO(payload), headers={"Content-Type": "application/x-blob"}
    )
    seen = await response.json()
    assert (seen["method"], seen["length"]) == ("POST", len(payload))
    assert seen["sha256"] == hashlib.sha256(payload).hexdigest()
    assert seen["headers"]["Content-Type"] == "application/x-blob"
    put = await (await client.put("/upload/json", json={"k": "v"})).json()
    assert put["method"] == "PUT" and put["length"] == len(json.dumps({"k": "v"}))


async def test_rewrite_with_groups_and_prefix_strip(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/v1/(.*)$", target=target(upstream), rewrite="/v2/$1")
    await add_rule(client, pattern="^/ext", target=f"{target(upstream)}/base", rewrite="")
    assert (await (await client.get("/v1/users/7?x=1")).json())["path"] == "/v2/users/7"
    assert (await (await client.get("/ext/deep/path")).json())["path"] == "/base/deep/path"


async def test_upstream_status_headers_and_bytes_pass_through(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/upstream/", target=target(upstream))
    teapot = await client.get("/upstream/teapot")
    assert teapot.status == 418 and await teapot.text() == "short and stout"
    assert teapot.headers["X-Upstream"] == "yes" and "session=abc" in teapot.headers["Set-Cookie"]
    moved = await client.get("/upstream/redirect", allow_redirects=False)
    assert moved.status == 302 and moved.headers["Location"] == "/elsewhere"  # not followed by the proxy
    zipped = await client.get("/upstream/gzip", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    raw = await zipped.read()
    assert raw == GZIPPED and gzip.decompress(raw) == b"tea " * 1000
    big = await client.get("/upstream/big")
    assert await big.read() == BIG_CHUNK * BIG_CHUNKS


async def test_redirect_rules_answer_with_location(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(
        client, pattern="^/old/(.*)", target="https://new.example", rewrite="/new/$1", redirect=308
    )
    response = await client.get("/old/page?q=1", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == "https://new.example/new/page?q=1"


async def test_static_rules_proxy_too(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    rules = json.dumps([{"pattern": "^/static/", "target": target(upstream)}])
    client = await runtime(aiohttp_client, env, PROXY_RULES=rules)
    assert (await (await client.get("/static/file.css")).json())["path"] == "/static/file.css"


async def test_first_enabled_rule_in_order_wins(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    first = await add_rule(client, pattern="^/pick", target=f"{target(upstream)}/first")
    second = await add_rule(client, pattern="^/pick", target=f"{target(upstream)}/second")
    assert (await (await client.get("/pick")).json())["path"] == "/first/pick"
    await client.patch(f"{RULES}/{first['id']}/toggle")
    assert (await (await client.get("/pick")).json())["path"] == "/second/pick"
    await client.patch(f"{RULES}/{first['id']}/toggle")
    await client.put(f"{RULES}/reorder", json={"ids": [second["id"], first["id"]]})
    assert (await (await client.get("/pick")).json())["path"] == "/second/pick"
    await client.delete(f"{RULES}/{second['id']}")
    assert (await (await client.get("/pick")).json())["path"] == "/first/pick"


async def test_unmatched_and_disabled_fall_through(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/off/", target=target(upstream), enabled=False)
    assert (await client.get("/off/x")).status == 404
    assert (await client.get("/elsewhere")).status == 404


async def test_a_catch_all_rule_is_refused_and_a_static_one_never_wins_over_reserved_paths(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    rules = json.dumps([{"pattern": ".*", "target": target(upstream)}])
    client = await runtime(aiohttp_client, env, PROXY_RULES=rules)
    refused = await client.post(RULES, json={"pattern": ".*", "target": target(upstream)})
    assert refused.status == 409 and (await refused.json())["code"] == "PROXY_RULE_SHADOWS_RESERVED"
    # The static catch-all still proxies everything else, never a reserved path.
    assert (await (await client.get("/anything")).json())["path"] == "/anything"
    assert (await client.get(RULES)).status == 200
    assert (await client.get("/api/health/ready")).status == 200
    assert (await client.get("/metrics")).status == 200
    excludes = await client.get("/gateway/admin/shell/excludes")
    assert excludes.status == 200 and isinstance(await excludes.json(), list)


async def test_unreachable_upstream_is_502_and_slow_is_504(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env, PROXY_TIMEOUT="0.3")
    await add_rule(client, pattern="^/dead", target=f"http://127.0.0.1:{free_port()}")
    await add_rule(client, pattern="^/upstream/slow", target=target(upstream))
    dead = await client.get("/dead")
    assert dead.status == 502 and (await dead.json())["code"] == "PROXY_UPSTREAM_UNAVAILABLE"
    slow = await client.get("/upstream/slow")
    assert slow.status == 504 and (await slow.json())["code"] == "PROXY_UPSTREAM_TIMEOUT"


async def test_proxied_requests_are_counted(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    rule = await add_rule(client, pattern="^/svc/", target=target(upstream))
    await add_rule(client, pattern="^/go", target="http://x.example", redirect=302)
    for _ in range(2):
        await client.get("/svc/x")
    await client.get("/go", allow_redirects=False)
    text = await (await client.get("/metrics")).text()
    assert 'buntime_proxy_requests_total{outcome="proxied",pattern="^/svc/"} 2.0' in text
    assert 'buntime_proxy_requests_total{outcome="redirected",pattern="^/go"} 1.0' in text
    assert rule["id"] not in text  # labelled by pattern, never by the rule's UUID

    assert (await client.delete(f"{RULES}/{rule['id']}")).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'pattern="^/svc/"' not in text  # the deleted rule's series is gone
    assert 'buntime_proxy_requests_total{outcome="redirected",pattern="^/go"} 1.0' in text
    # a rule recreated with the same pattern starts a fresh series (a counter reset), not a new one
    await add_rule(client, pattern="^/svc/", target=target(upstream))
    await client.get("/svc/x")
    text = await (await client.get("/metrics")).text()
    assert 'buntime_proxy_requests_total{outcome="proxied",pattern="^/svc/"} 1.0' in text


async def test_a_proxied_request_with_header_bytes_that_are_not_utf8_is_not_a_500(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    client = await runtime(aiohttp_client, env)
    assert client.port is not None
    await add_rule(client, pattern="^/svc/", target=target(upstream))
    for header in ("X-Client", "X-Forwarded-For", "Origin", "Cookie", "Authorization"):
        reply = await raw_request(
            client.port, "GET /svc/raw HTTP/1.1", header.encode() + b": ab\xff\xfecd\r\n"
        )
        status = int(reply.split(b" ", 2)[1])
        assert status == 200, (header, reply)  # aiohttp's client drops the bytes it cannot encode


async def test_a_backtracking_pattern_matches_in_linear_time_and_the_pod_keeps_answering(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    """``^/x/(a+)+$`` took 0.8 s for 24 a's with Python's re, x4 per two more; RE2 is linear."""
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/x/(a+)+$", target=target(upstream))
    for path, status in (
        ("/x/" + "a" * 26 + "!", 404),
        ("/x/" + "a" * 5000 + "!", 404),
        ("/x/" + "a" * 5000, 200),
    ):
        started = time.monotonic()
        response = await client.get(path)
        assert response.status == status, await response.text()
        took = time.monotonic() - started
        assert took < 1.0, f"{len(path)} characters took {took:.2f}s"
    assert (await client.get("/api/health/live")).status == 200


async def test_backtracking_public_route_globs_answer_in_linear_time(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    """``/**a**a**a**a**b`` took about 2 s for 150 a's with Python's re, growing as n^5."""
    client = await runtime(aiohttp_client, env)
    await add_rule(client, pattern="^/aa", target=target(upstream), publicRoutes=["/**a**a**a**a**b"])
    proxy = client.app[HOST_KEY].get_plugin(PROXY)
    for path in ("/" + "a" * 170, "/" + "a" * 5000):
        started = time.monotonic()
        assert not proxy.is_public(path, "GET")
        took = time.monotonic() - started
        assert took < 1.0, f"{len(path)} characters took {took:.2f}s"
    assert proxy.is_public("/" + "a" * 5000 + "b", "GET")
