"""The gateway at the edge: CORS rules and preflight, rate limiting, periodic snapshots, the shell
settings, and a route-by-route table of the admin API against the reference's shapes."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from buntime.server import HOST_KEY
from tests.server.support import GATEWAY, KEYVAL, PROXY, TURSO, start_runtime

ADMIN = "/gateway/admin"
RULES = f"{ADMIN}/cors/rules"
APP = "https://app.example.com"


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def gateway(aiohttp_client: AiohttpClient, env: dict[str, str], **extra: str) -> TestClient:
    return await start_runtime(aiohttp_client, {**env, **extra}, TURSO, GATEWAY, PROXY)


async def add_cors(client: TestClient, **fields: Any) -> dict[str, Any]:
    return await json_of(await client.post(RULES, json={"name": "app", "origins": [APP], **fields}), 201)


# -- CORS -------------------------------------------------------------------------------------------
async def test_preflight_for_a_covered_origin_is_answered_204(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await gateway(aiohttp_client, env)
    await add_cors(client, methods=["GET", "post"], credentials=True, maxAge=600, exposedHeaders=["X-Id"])
    response = await client.options(
        "/anything/here",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type, X-Custom",
        },
    )
    assert response.status == 204
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type, X-Custom"  # reflected
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Max-Age"] == "600"
    assert set(headers.getall("Vary")) == {"Origin", "Access-Control-Request-Headers"}


async def test_actual_responses_get_cors_headers_even_errors_and_unknown_origins_get_none(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await gateway(aiohttp_client, env)
    await add_cors(client, exposedHeaders=["X-Request-Id"])
    await add_cors(client, name="partners", origins=["*.partner.example"])
    ok = await client.get(f"{ADMIN}/stats", headers={"Origin": APP})
    assert ok.headers["Access-Control-Allow-Origin"] == APP
    assert ok.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    missing = await client.get("/nowhere", headers={"Origin": "https://a.partner.example"})
    assert missing.status == 404
    assert missing.headers["Access-Control-Allow-Origin"] == "https://a.partner.example"
    for origin in ("https://evil.example", "https://partner.example"):
        denied = await client.get(f"{ADMIN}/stats", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in denied.headers
        preflight = await client.options(
            "/x", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status != 204 and "Access-Control-Allow-Origin" not in preflight.headers


async def test_a_wildcard_rule_answers_star_and_loses_to_a_specific_rule(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await gateway(aiohttp_client, env)
    await add_cors(client, name="all", origins="*")
    await add_cors(client, name="app", credentials=True)
    anyone = await client.get("/x", headers={"Origin": "https://other.example"})
    assert anyone.headers["Access-Control-Allow-Origin"] == "*"
    app = await client.get("/x", headers={"Origin": APP})
    assert app.headers["Access-Control-Allow-Origin"] == APP
    assert app.headers["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"origins": [APP]}, "CORS_NAME_REQUIRED"),
        ({"name": "x"}, "CORS_ORIGINS_REQUIRED"),
        ({"name": "x", "origins": ["*"], "credentials": True}, "CORS_CREDENTIALS_WILDCARD"),
        ({"name": "x", "origins": [APP], "methods": ["FETCH"]}, "CORS_INVALID_METHOD"),
        ({"name": "x", "origins": [APP], "maxAge": -1}, "CORS_INVALID_MAX_AGE"),
        ({"name": "x", "origins": ["not an origin"]}, "CORS_INVALID_ORIGIN"),
        ({"name": "x", "origins": ["http://a:99999"]}, "CORS_INVALID_ORIGIN"),
        ({"name": "x", "origins": ["http://[::1"]}, "CORS_INVALID_ORIGIN"),
        ({"name": "x", "origins": [APP], "exposedHeaders": ["X-Id\u0001"]}, "CORS_INVALID_HEADER"),
        ({"name": "x", "origins": [APP], "allowedHeaders": ["X-A\nSet-Cookie: x=1"]}, "CORS_INVALID_HEADER"),
    ],
)
async def test_invalid_cors_rules_are_refused(
    aiohttp_client: AiohttpClient, env: dict[str, str], body: dict[str, Any], code: str
) -> None:
    client = await gateway(aiohttp_client, env)
    assert (await json_of(await client.post(RULES, json=body), 400))["code"] == code


LONE = "\ud800"  # json.dumps sends it as the escape "\ud800": legal JSON, no UTF-8 text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/cors/rules", {"name": LONE, "origins": ["https://x.example"]}),
        ("POST", "/cors/rules", {"name": "n", "origins": ["https://x.example"], "methods": [LONE]}),
        ("PUT", "/cors/rules/{id}", {"name": LONE, "origins": ["https://x.example"]}),
        ("POST", "/shell/excludes", {"basename": LONE}),
        ("PUT", "/shell/routes", {"host": LONE, "dir": "/tmp"}),
    ],
)
@pytest.mark.parametrize("sent_as", ["escape", "bytes"])
async def test_a_lone_surrogate_in_a_body_is_400_invalid_unicode_and_changes_nothing(
    aiohttp_client: AiohttpClient,
    env: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any],
    sent_as: str,
) -> None:
    """The engine refused the string as a parameter, which answered 503 "storage unavailable";
    sent as UTF-8-encoded bytes (``ED A0 80``), which ``json.loads`` decodes with
    ``surrogatepass``, it got there without an escape for the check to find."""
    client = await gateway(aiohttp_client, env)
    rule = await add_cors(client)
    before = await json_of(await client.get(RULES), 200)
    data = json.dumps(body, ensure_ascii=sent_as == "escape").encode("utf-8", "surrogatepass")
    answer = await client.request(
        method, ADMIN + path.format(id=rule["id"]), data=data, headers={"Content-Type": "application/json"}
    )
    assert (await json_of(answer, 400))["code"] == "INVALID_UNICODE"
    assert await json_of(await client.get(RULES), 200) == before


#: Origin headers yarl cannot parse (port out of range, broken IPv6, bad punycode, bad port)
#: and ones that are not a bare origin.
MALFORMED_ORIGINS = (
    "http://a:99999",
    "http://[::1",
    "http://xn--zz",
    "http://a:b",
    "http://a.partner.example/path",
    "ftp://a.partner.example",
    "http://user@a.partner.example",
)


@pytest.mark.parametrize("origin", MALFORMED_ORIGINS)
async def test_a_malformed_origin_gets_the_normal_answer_without_cors_headers(
    aiohttp_client: AiohttpClient, env: dict[str, str], origin: str
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY, KEYVAL)
    await add_cors(client, name="partners", origins=["*.partner.example"])
    await add_cors(client, name="all", origins="*")
    headers = {"Origin": origin}
    put = await client.put("/keyval/api/keys/x", data="42", headers=headers)
    assert put.status == 200, await put.text()
    assert "Access-Control-Allow-Origin" not in put.headers
    got = await client.get("/keyval/api/keys/x", headers=headers)
    assert got.status == 200 and (await got.json())["value"] == 42
    assert "Access-Control-Allow-Origin" not in got.headers
    preflight = await client.options(
        "/keyval/api/keys/x", headers={**headers, "Access-Control-Request-Method": "PUT"}
    )
    assert preflight.status != 204 and "Access-Control-Allow-Origin" not in preflight.headers
    # the same rules still answer well-formed origins (and the opaque "null" only through *)
    partner = await client.get("/keyval/api/keys/x", headers={"Origin": "http://a.partner.example:8080"})
    assert partner.headers["Access-Control-Allow-Origin"] == "http://a.partner.example:8080"
    opaque = await client.get("/keyval/api/keys/x", headers={"Origin": "null"})
    assert opaque.headers["Access-Control-Allow-Origin"] == "*"


async def test_a_stored_cors_rule_with_a_bad_header_name_is_skipped_and_responses_still_go_out(
    aiohttp_client: AiohttpClient, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    first = await gateway(aiohttp_client, env)
    good = await add_cors(first, name="good", origins=["https://good.example"])
    service = first.app[HOST_KEY].get_plugin(TURSO)
    await service.transaction(
        lambda db: db.run(
            "INSERT INTO gateway_cors_rules(id, name, origins, methods, allowed_headers, exposed_headers, "
            "credentials, max_age, created_at) VALUES ('broken', 'b', ?, '[\"GET\"]', '[]', ?, 0, 60, 0)",
            [json.dumps([APP]), json.dumps(["X-Id\r\nX-Injected: 1"])],
        ),
        namespace="gateway",
    )
    await first.close()
    with caplog.at_level(logging.WARNING):
        second = await gateway(aiohttp_client, env)
    assert "skipping invalid CORS rule broken" in caplog.text
    assert [r["id"] for r in await json_of(await second.get(RULES), 200)] == [good["id"]]
    response = await second.get(f"{ADMIN}/stats", headers={"Origin": APP})
    assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers


async def test_cors_rules_persist_and_the_env_seed_applies_once(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    seeded = {**env, "GATEWAY_CORS_ORIGIN": "https://a.example, https://b.example"}
    client = await gateway(aiohttp_client, seeded)
    [seed] = await json_of(await client.get(RULES), 200)
    assert seed["name"] == "Default" and seed["origins"] == ["https://a.example", "https://b.example"]
    assert seed["methods"] == ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"] and seed["maxAge"] == 86400
    await json_of(await client.delete(f"{RULES}/{seed['id']}"), 200)
    rule = await add_cors(client)
    service = client.app[HOST_KEY].get_plugin(TURSO)
    rows = await (await service.connect("gateway")).all(
        "SELECT id, origins, credentials FROM gateway_cors_rules"
    )
    assert rows == [{"id": rule["id"], "origins": json.dumps([APP]), "credentials": 0}]
    await client.close()
    again = await gateway(aiohttp_client, seeded)  # a rule exists: no second seed
    assert [r["id"] for r in await json_of(await again.get(RULES), 200)] == [rule["id"]]


# -- rate limiting ------------------------------------------------------------------------------------
async def test_rate_limit_answers_429_with_retry_after_per_client(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await gateway(
        aiohttp_client,
        env,
        GATEWAY_RATE_LIMIT_REQUESTS="3",
        GATEWAY_RATE_LIMIT_WINDOW="1h",
        GATEWAY_RATE_LIMIT_EXCLUDE_PATHS="^/free/, ^/gateway/admin/",
    )
    alice = {"X-Forwarded-For": "10.0.0.1, 10.9.9.9"}
    statuses = []
    for _ in range(3):
        response = await client.get("/nowhere", headers=alice)
        statuses.append((response.status, response.headers["X-RateLimit-Remaining"]))
    assert statuses == [(404, "2"), (404, "1"), (404, "0")]
    limited = await client.get("/nowhere", headers=alice)
    body = await json_of(limited, 429)
    assert body == {"error": "Too Many Requests", "code": "GATEWAY_RATE_LIMITED"}
    assert int(limited.headers["Retry-After"]) == 1200  # one token per 3600/3 s
    assert limited.headers["X-RateLimit-Limit"] == "3" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert (await client.get("/nowhere", headers={"X-Forwarded-For": "10.0.0.2"})).status == 404
    assert (await client.get("/free/x", headers=alice)).status == 404  # excluded path
    assert (await client.get("/api/health/live", headers=alice)).status == 200  # probes: never limited
    metrics = await json_of(
        await client.get(f"{ADMIN}/rate-limit/metrics", headers={"X-Real-IP": "ops"}), 200
    )
    assert metrics["blockedRequests"] == 1 and metrics["activeBuckets"] == 2
    assert metrics["config"] == {"capacity": 3, "windowSeconds": 3600.0}
    buckets = await json_of(
        await client.get(f"{ADMIN}/rate-limit/buckets", headers={"X-Real-IP": "ops"}), 200
    )
    assert {b["key"] for b in buckets} == {"ip:10.0.0.1", "ip:10.0.0.2"}
    cleared = await client.delete(f"{ADMIN}/rate-limit/buckets/ip:10.0.0.1", headers={"X-Real-IP": "ops"})
    assert await json_of(cleared, 200) == {"deleted": True, "key": "ip:10.0.0.1"}
    assert (await client.get("/nowhere", headers=alice)).status == 404  # a fresh bucket
    logs = await json_of(
        await client.get(f"{ADMIN}/logs?rateLimited=true", headers={"X-Real-IP": "ops"}), 200
    )
    assert [(e["ip"], e["path"], e["status"]) for e in logs] == [("10.0.0.1", "/nowhere", 429)]


async def test_rate_limit_by_user_and_the_disabled_answers(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    client = await gateway(
        aiohttp_client, env, GATEWAY_RATE_LIMIT_REQUESTS="1", GATEWAY_RATE_LIMIT_KEY_BY="user"
    )
    ann = {"X-Identity": json.dumps({"sub": "ann"}), "X-Forwarded-For": "10.0.0.1"}
    bob = {"X-Identity": json.dumps({"sub": "bob"}), "X-Forwarded-For": "10.0.0.1"}
    assert (await client.get("/x", headers=ann)).status == 404
    assert (await client.get("/x", headers=ann)).status == 429
    assert (await client.get("/x", headers=bob)).status == 404  # same address, other user
    off = await start_runtime(aiohttp_client, {"TURSO_LOCAL_PATH": str(tmp_path / "b.db")}, TURSO, GATEWAY)
    for method, path in [("GET", "metrics"), ("GET", "buckets"), ("POST", "clear"), ("DELETE", "buckets/k")]:
        refused = await off.request(method, f"{ADMIN}/rate-limit/{path}")
        assert (await json_of(refused, 400))["error"] == "Rate limiting not enabled"


# -- periodic snapshots -------------------------------------------------------------------------------
async def test_snapshots_are_taken_periodically_and_not_while_idle(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await gateway(aiohttp_client, env, GATEWAY_SNAPSHOT_INTERVAL="50ms")
    await client.get("/x")
    history: list[dict[str, Any]] = []
    for _ in range(100):
        history = await json_of(await client.get(f"{ADMIN}/metrics/history"), 200)
        if history:
            break
        await asyncio.sleep(0.02)
    assert history and history[0]["totalRequests"] >= 1
    # Reading the history is a request too; stop and check that idle time writes nothing new.
    service = client.app[HOST_KEY].get_plugin(TURSO)
    db = await service.connect("gateway")
    await asyncio.sleep(0.2)
    before = await db.all("SELECT COUNT(*) AS n FROM gateway_metrics_history")
    await asyncio.sleep(0.3)
    assert await db.all("SELECT COUNT(*) AS n FROM gateway_metrics_history") == before


async def test_snapshot_interval_zero_disables_and_a_bad_one_fails_the_plugin(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    client = await gateway(aiohttp_client, env, GATEWAY_SNAPSHOT_INTERVAL="0")
    await client.get("/x")
    await asyncio.sleep(0.2)
    assert await json_of(await client.get(f"{ADMIN}/metrics/history"), 200) == []
    bad = await start_runtime(
        aiohttp_client,
        {"TURSO_LOCAL_PATH": str(tmp_path / "c.db"), "GATEWAY_SNAPSHOT_INTERVAL": "soon"},
        TURSO,
        GATEWAY,
    )
    assert "GATEWAY_SNAPSHOT_INTERVAL" in bad.app[HOST_KEY].failed[GATEWAY]


# -- shell settings, stats, config, sse ---------------------------------------------------------------
async def test_shell_config_and_routes(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    seed, override = tmp_path / "seed-shell", tmp_path / "other-shell"
    seed.mkdir()
    override.mkdir()
    client = await gateway(aiohttp_client, env, GATEWAY_SHELL_DIR=str(seed))
    put = await client.put(f"{ADMIN}/shell/config", json={"dir": str(override)})
    assert await json_of(put, 200) == {"dir": str(override), "source": "override"}
    stats = await json_of(await client.get(f"{ADMIN}/stats"), 200)
    assert stats["shell"] == {"enabled": True, "dir": str(override), "excludesCount": 1}
    missing = await client.put(f"{ADMIN}/shell/config", json={"dir": str(tmp_path / "nope")})
    assert (await json_of(missing, 400))["code"] == "GATEWAY_SHELL_DIR_INVALID"
    assert (await json_of(await client.put(f"{ADMIN}/shell/config", json={}), 400))[
        "code"
    ] == "SHELL_DIR_REQUIRED"
    reset = await client.post(f"{ADMIN}/shell/config/reset")
    assert await json_of(reset, 200) == {"dir": str(seed), "source": "default", "enabled": True}

    route = await client.put(f"{ADMIN}/shell/routes", json={"host": "*.Tenant.Example", "dir": str(override)})
    assert await json_of(route, 200) == {"host": "*.tenant.example", "dir": str(override)}
    [listed] = await json_of(await client.get(f"{ADMIN}/shell/routes"), 200)
    assert listed["host"] == "*.tenant.example" and listed["dir"] == str(override)
    for bad in ({"host": "a b", "dir": str(seed)}, {"host": "x.example"}):
        assert (await json_of(await client.put(f"{ADMIN}/shell/routes", json=bad), 400))["code"] in (
            "SHELL_ROUTE_INVALID",
        )
    deleted = await client.delete(f"{ADMIN}/shell/routes/*.tenant.example")
    assert await json_of(deleted, 200) == {"removed": True}
    assert await json_of(await client.delete(f"{ADMIN}/shell/routes/none"), 200) == {"removed": False}


async def test_a_shell_dir_that_cannot_be_looked_up_is_400_and_changes_nothing(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    """A path the OS refuses to stat (a name over NAME_MAX: ENAMETOOLONG) was a plain-text 500
    that logged the whole path; it is the same 400 as a missing directory."""
    seed = tmp_path / "seed-shell"
    seed.mkdir()
    client = await gateway(aiohttp_client, env, GATEWAY_SHELL_DIR=str(seed))
    for bad in ("x" * 5000, f"{seed}/{'y' * 300}", "a\x00b"):
        put = await client.put(f"{ADMIN}/shell/config", json={"dir": bad})
        assert (await json_of(put, 400))["code"] == "GATEWAY_SHELL_DIR_INVALID", bad[:20]
        route = await client.put(f"{ADMIN}/shell/routes", json={"host": "t.example", "dir": bad})
        assert (await json_of(route, 400))["code"] == "GATEWAY_SHELL_DIR_INVALID", bad[:20]
    stats = await json_of(await client.get(f"{ADMIN}/stats"), 200)
    assert stats["shell"]["dir"] == str(seed)
    assert await json_of(await client.get(f"{ADMIN}/shell/routes"), 200) == []


async def test_sse_streams_state_updates(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await gateway(
        aiohttp_client, env, GATEWAY_SSE_INTERVAL="50ms", GATEWAY_RATE_LIMIT_REQUESTS="100"
    )
    await add_cors(client)
    response = await client.get(f"{ADMIN}/sse")
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    events = []
    while len(events) < 2:
        line = (await response.content.readline()).decode().strip()
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
    first = events[0]
    assert set(first) == {"timestamp", "rateLimit", "cors", "shell", "recentLogs"}
    assert first["rateLimit"]["config"] == {"requests": 100, "window": "1m", "keyBy": "ip"}
    assert first["cors"]["enabled"] is True and first["cors"]["rules"][0]["origins"] == [APP]
    assert first["shell"] is None and events[1]["timestamp"] >= first["timestamp"]
    response.close()


# -- the route table ------------------------------------------------------------------------------
def _shape(value: Any) -> Any:
    """Key structure only, so the table pins shapes without pinning values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


LOG_STATS_SHAPE = {"total": "int", "rateLimited": "int", "byStatus": {}, "avgDuration": "int"}
ROUTE_SHAPE = {"host": "str", "dir": "str"}
RULE_SHAPE = {
    "id": "str",
    "name": "str",
    "origins": ["str"],
    "methods": ["str"],
    "allowedHeaders": [],
    "exposedHeaders": [],
    "credentials": "bool",
    "maxAge": "int",
    "createdAt": "int",
}


async def test_every_admin_route_answers_the_reference_shape(
    aiohttp_client: AiohttpClient, env: dict[str, str], tmp_path: Path
) -> None:
    shell = tmp_path / "shell"
    shell.mkdir()
    client = await gateway(
        aiohttp_client, env, GATEWAY_RATE_LIMIT_REQUESTS="1000", GATEWAY_SHELL_DIR=str(shell)
    )
    rule = await add_cors(client)
    await client.post(f"{ADMIN}/metrics/snapshot")
    table: list[tuple[str, str, Any, int, Any]] = [
        ("GET", "/stats", None, 200, {
            "rateLimit": {"enabled": "bool", "metrics": {
                "totalRequests": "int", "blockedRequests": "int", "allowedRequests": "int",
                "activeBuckets": "int", "config": {"capacity": "int", "windowSeconds": "float"}},
                "config": {"requests": "int", "window": "str", "keyBy": "str", "excludePaths": []}},
            "cors": {"enabled": "bool", "rulesCount": "int"},
            "cache": {"enabled": "bool"},
            "shell": {"enabled": "bool", "dir": "str", "excludesCount": "int"},
            "logs": LOG_STATS_SHAPE,
        }),
        ("GET", "/config", None, 200, {
            "rateLimit": {"requests": "int", "window": "str", "keyBy": "str", "excludePaths": []},
            "cors": [RULE_SHAPE], "cache": "NoneType",
            "shell": {"dir": "str", "envExcludes": ["str"]},
        }),
        ("GET", "/cors/rules", None, 200, [RULE_SHAPE]),
        ("POST", "/cors/rules", {"name": "n", "origins": "https://n.example"}, 201, RULE_SHAPE),
        ("PUT", f"/cors/rules/{rule['id']}", {"name": "m", "origins": [APP]}, 200, RULE_SHAPE),
        ("PUT", "/cors/rules/missing", {"name": "m", "origins": [APP]}, 404, {"error": "str", "code": "str"}),
        ("DELETE", "/cors/rules/missing", None, 200, {"removed": "bool"}),
        ("GET", "/rate-limit/metrics", None, 200, {
            "totalRequests": "int", "blockedRequests": "int", "allowedRequests": "int",
            "activeBuckets": "int", "config": {"capacity": "int", "windowSeconds": "float"}}),
        ("GET", "/rate-limit/buckets?limit=5", None, 200, [
            {"key": "str", "tokens": "int", "retryAfter": "int", "lastActivity": "int"}]),
        ("DELETE", "/rate-limit/buckets/none", None, 200, {"deleted": "bool", "key": "str"}),
        ("POST", "/rate-limit/clear", None, 200, {"cleared": "int"}),
        ("GET", "/metrics/history?limit=5", None, 200, [{
            "timestamp": "int", "totalRequests": "int", "blockedRequests": "int",
            "allowedRequests": "int", "activeBuckets": "int"}]),
        ("GET", "/shell/excludes", None, 200, [{"basename": "str", "source": "str"}]),
        ("PUT", "/shell/config", {"dir": str(shell)}, 200, {"dir": "str", "source": "str"}),
        ("POST", "/shell/config/reset", None, 200, {"dir": "str", "source": "str", "enabled": "bool"}),
        ("PUT", "/shell/routes", {"host": "t.example", "dir": str(shell)}, 200, ROUTE_SHAPE),
        ("GET", "/shell/routes", None, 200, [{"host": "str", "dir": "str", "createdAt": "int"}]),
        ("DELETE", "/shell/routes/t.example", None, 200, {"removed": "bool"}),
        ("GET", "/logs", None, 200, []),
        ("GET", "/logs/stats", None, 200, LOG_STATS_SHAPE),
        ("DELETE", "/logs", None, 200, {"cleared": "bool"}),
        ("POST", "/cache/invalidate", {}, 400, {"error": "str", "code": "str"}),
        ("DELETE", "/metrics/history", None, 200, {"cleared": "bool", "deleted": "int"}),
    ]  # fmt: skip
    for method, path, body, status, shape in table:
        response = await client.request(method, f"{ADMIN}{path}", json=body)
        assert _shape(await json_of(response, status)) == shape, (method, path)
