"""The proxy admin API over HTTP against a real local database."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from buntime.server import HOST_KEY
from tests.server.support import PROXY, TURSO, raw_request, start_runtime

RULES = "/redirects/admin/rules"
STATIC = json.dumps([{"name": "docs", "pattern": "^/docs/", "target": "http://docs.internal:8080"}])
KEY = "pr0xy-admin-key"


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def stored(client: TestClient) -> list[dict[str, Any]]:
    service = client.app[HOST_KEY].get_plugin(TURSO)
    db = await service.connect("proxy")
    return await db.all("SELECT id, rule_order, rule_json FROM proxy_rules ORDER BY rule_order")


async def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"pattern": "^/svc/", "target": "http://127.0.0.1:9", **fields}
    return await json_of(await client.post(RULES, json=body), 201)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, env: dict[str, str]) -> TestClient:
    return await start_runtime(aiohttp_client, {**env, "PROXY_RULES": STATIC}, TURSO, PROXY)


async def test_static_rules_are_listed_read_only(client: TestClient) -> None:
    rules = await json_of(await client.get(RULES), 200)
    assert rules == [
        {
            "id": "static-0",
            "name": "docs",
            "pattern": "^/docs/",
            "target": "http://docs.internal:8080",
            "rewrite": None,
            "changeOrigin": False,
            "headers": {},
            "enabled": True,
            "order": 0,
            "redirect": None,
            "secure": True,
            "ws": True,
            "base": None,
            "relativePaths": False,
            "publicRoutes": None,
            "readonly": True,
            "readOnly": True,
        }
    ]
    assert (await json_of(await client.get(f"{RULES}/static-0"), 200))["readOnly"] is True
    assert await stored(client) == []  # static rules never touch storage


async def test_create_get_and_store(client: TestClient) -> None:
    first = await create(client, name="api", headers={"X-Team": "core"}, changeOrigin=True)
    second = await create(client, pattern="^/old/", redirect=301)
    assert len(first["id"]) == 36 and first["readOnly"] is False
    assert (first["order"], second["order"]) == (0, 1)
    assert first["headers"] == {"X-Team": "[redacted]"} and first["changeOrigin"] is True
    assert await json_of(await client.get(f"{RULES}/{first['id']}"), 200) == first
    assert [r["id"] for r in await json_of(await client.get(RULES), 200)] == [
        "static-0",
        first["id"],
        second["id"],
    ]
    rows = await stored(client)
    assert [(r["id"], r["rule_order"]) for r in rows] == [(first["id"], 0), (second["id"], 1)]
    assert json.loads(rows[1]["rule_json"])["redirect"] == 301
    assert json.loads(rows[0]["rule_json"])["headers"] == {"X-Team": "core"}  # stored as given


async def test_the_number_of_stored_rules_is_bounded(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every proxied request tries each rule, so at most MAX_RULES are stored; the next create is
    409 PROXY_TOO_MANY_RULES and stores nothing."""
    monkeypatch.setattr("buntime.plugins.proxy._store.MAX_RULES", 2)
    await create(client, pattern="^/one/")
    await create(client, pattern="^/two/")
    refused = await client.post(RULES, json={"name": "three", "pattern": "^/three/", "target": "http://x:1"})
    assert refused.status == 409 and (await refused.json())["code"] == "PROXY_TOO_MANY_RULES"
    assert len(await stored(client)) == 2


async def test_get_unknown_is_404(client: TestClient) -> None:
    assert (await json_of(await client.get(f"{RULES}/nope"), 404))["code"] == "PROXY_RULE_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"target": "http://x"}, "PROXY_INVALID_RULE"),
        ({"pattern": "^/x"}, "PROXY_INVALID_RULE"),
        ({"pattern": "([", "target": "http://x"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/x", "target": "not a url"}, "PROXY_INVALID_TARGET"),
        ({"pattern": "^/x", "target": "http://x", "redirect": 299}, "PROXY_INVALID_REDIRECT"),
    ],
)
async def test_create_rejects_invalid_rules(client: TestClient, body: dict[str, Any], code: str) -> None:
    assert (await json_of(await client.post(RULES, json=body), 400))["code"] == code
    assert await stored(client) == []


async def test_create_rejects_non_object_bodies(client: TestClient) -> None:
    assert (await json_of(await client.post(RULES, json=[1, 2]), 400))["code"] == "INVALID_JSON"


async def test_aiohttp_refusals_answer_json_with_a_code(client: TestClient) -> None:
    """404, 405 and 413 came from aiohttp as text/plain, without the code clients key on."""
    body = await json_of(await client.delete(RULES), 405)
    assert body["code"] == "METHOD_NOT_ALLOWED" and isinstance(body["error"], str)
    assert "GET" in (await client.delete(RULES)).headers["Allow"]
    assert (await json_of(await client.get("/redirects/admin/nope"), 404))["code"] == "NOT_FOUND"
    huge = json.dumps({"pattern": "^/svc/", "target": "http://127.0.0.1:9", "name": "x" * (3 << 20)})
    sent = await client.post(
        RULES, data=io.BytesIO(huge.encode()), headers={"Content-Type": "application/json"}
    )
    assert (await json_of(sent, 413))["code"] == "PAYLOAD_TOO_LARGE"
    assert await stored(client) == []


async def test_update_merges_fields(client: TestClient) -> None:
    rule = await create(client, name="before")
    updated = await json_of(
        await client.put(f"{RULES}/{rule['id']}", json={"name": "after", "rewrite": ""}), 200
    )
    assert updated == {**rule, "name": "after", "rewrite": ""}
    assert json.loads((await stored(client))[0]["rule_json"])["name"] == "after"
    bad = await json_of(await client.put(f"{RULES}/{rule['id']}", json={"pattern": "(("}), 400)
    assert bad["code"] == "PROXY_INVALID_PATTERN"
    assert await json_of(await client.get(f"{RULES}/{rule['id']}"), 200) == updated  # unchanged


async def test_update_static_is_403_and_unknown_404(client: TestClient) -> None:
    assert (await json_of(await client.put(f"{RULES}/static-0", json={"name": "x"}), 403))["code"] == (
        "PROXY_RULE_READ_ONLY"
    )
    assert (await client.put(f"{RULES}/nope", json={"name": "x"})).status == 404


async def test_toggle(client: TestClient) -> None:
    rule = await create(client)
    off = await json_of(await client.patch(f"{RULES}/{rule['id']}/toggle"), 200)
    assert off["enabled"] is False
    assert json.loads((await stored(client))[0]["rule_json"])["enabled"] is False
    assert (await json_of(await client.patch(f"{RULES}/{rule['id']}/toggle"), 200))["enabled"] is True
    assert (await client.patch(f"{RULES}/static-0/toggle")).status == 403
    assert (await client.patch(f"{RULES}/nope/toggle")).status == 404


async def test_delete(client: TestClient) -> None:
    rule = await create(client)
    assert await json_of(await client.delete(f"{RULES}/{rule['id']}"), 200) == {"success": True}
    assert await stored(client) == []
    assert (await client.get(f"{RULES}/{rule['id']}")).status == 404
    assert (await json_of(await client.delete(f"{RULES}/{rule['id']}"), 404))[
        "code"
    ] == "PROXY_RULE_NOT_FOUND"
    assert (await client.delete(f"{RULES}/static-0")).status == 403
    assert [r["id"] for r in await json_of(await client.get(RULES), 200)] == ["static-0"]


async def test_reorder(client: TestClient) -> None:
    a, b, c = [await create(client, name=name) for name in "abc"]
    rules = await json_of(
        await client.put(f"{RULES}/reorder", json={"ids": [c["id"], a["id"], b["id"]]}), 200
    )
    assert [(r["id"], r["order"]) for r in rules] == [  # the dynamic rules, as upstream answers
        (c["id"], 0),
        (a["id"], 1),
        (b["id"], 2),
    ]
    assert [(r["id"], r["rule_order"]) for r in await stored(client)] == [
        (c["id"], 0),
        (a["id"], 1),
        (b["id"], 2),
    ]
    assert [r["id"] for r in await json_of(await client.get(RULES), 200)][1:] == [c["id"], a["id"], b["id"]]


@pytest.mark.parametrize(
    ("ids", "status", "code"),
    [
        (lambda a, b: [a], 400, "PROXY_INVALID_REORDER"),  # missing one
        (lambda a, b: [a, b, b], 400, "PROXY_INVALID_REORDER"),  # duplicate
        (lambda a, b: [a, b, "nope"], 404, "PROXY_RULE_NOT_FOUND"),  # unknown
        (lambda a, b: "a,b", 400, "PROXY_INVALID_REORDER"),  # not a list
        (lambda a, b: [a, b, "static-0"], 403, "PROXY_RULE_READ_ONLY"),
    ],
)
async def test_reorder_rejects(client: TestClient, ids: Any, status: int, code: str) -> None:
    a, b = await create(client), await create(client)
    body = await json_of(await client.put(f"{RULES}/reorder", json={"ids": ids(a["id"], b["id"])}), status)
    assert body["code"] == code
    assert [r["id"] for r in await stored(client)] == [a["id"], b["id"]]  # nothing changed


async def test_rules_survive_a_restart_and_migrations_are_idempotent(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    first = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    rule = await create(first, name="durable")
    await first.close()
    second = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    assert await json_of(await second.get(RULES), 200) == [rule]


async def test_invalid_stored_rows_are_skipped(
    aiohttp_client: AiohttpClient, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    first = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    good = await create(first)
    service = first.app[HOST_KEY].get_plugin(TURSO)
    await service.transaction(
        lambda db: db.run("INSERT INTO proxy_rules VALUES ('broken', 9, '{\"pattern\": \"((\"}')"),
        namespace="proxy",
    )
    lookahead = json.dumps({"pattern": "^/svc/(?!x)", "target": "http://127.0.0.1:9"})
    await service.transaction(  # stored by a version that matched with Python's re: RE2 refuses it
        lambda db: db.run("INSERT INTO proxy_rules VALUES ('lookahead', 10, ?)", [lookahead]),
        namespace="proxy",
    )
    await first.close()
    with caplog.at_level(logging.WARNING):
        second = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    assert "skipping invalid proxy rule broken" in caplog.text
    assert "skipping invalid proxy rule lookahead" in caplog.text
    assert await json_of(await second.get(RULES), 200) == [good]


SECRET_TARGETS = [
    "http://admin:S3cretPass@127.0.0.1:9",
    "http://admin@127.0.0.1:9",  # a user alone is a credential too (a token as the user name)
    "http://:S3cretPass@127.0.0.1:9",
    "http://admin:S3cret@Pass@127.0.0.1:9/base",  # the userinfo ends at the authority's last @
    " ftp://admin:S3cretPass@127.0.0.1:9",  # refused for its credentials first, never repeated
]


@pytest.mark.parametrize("target", SECRET_TARGETS)
async def test_a_target_with_credentials_is_refused_at_create_and_update_and_never_repeated(
    client: TestClient, target: str
) -> None:
    """aiohttp 500ed on every request with both URL credentials and an Authorization header, and
    the API answered the credential in clear: such a target is 400 and changes nothing."""
    refused = await client.post(RULES, json={"pattern": "^/x", "target": target})
    body = await json_of(refused, 400)
    assert body["code"] == "PROXY_INVALID_TARGET" and "S3cret" not in body["error"], body
    assert "admin" not in body["error"], body
    assert await stored(client) == []
    rule = await create(client)
    before = await stored(client)
    body = await json_of(await client.put(f"{RULES}/{rule['id']}", json={"target": target}), 400)
    assert body["code"] == "PROXY_INVALID_TARGET" and "S3cret" not in body["error"], body
    assert await stored(client) == before


async def test_a_rule_stored_with_credentials_before_loads_redacted_and_proxies_without_a_500(
    aiohttp_client: AiohttpClient,
    env: dict[str, str],
    upstream: TestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    port = upstream.make_url("").port
    legacy = {"pattern": "^/svc/", "target": f"http://admin:S3cretPass@127.0.0.1:{port}"}
    redirecting = {"pattern": "^/go/", "target": f"http://admin:S3cretPass@127.0.0.1:{port}", "redirect": 302}
    websocket = {"pattern": "^/upstream/ws", "target": f"http://admin:S3cretPass@127.0.0.1:{port}"}
    service = first.app[HOST_KEY].get_plugin(TURSO)
    rows = (("legacy", 0, legacy), ("redirecting", 1, redirecting), ("websocket", 2, websocket))
    for rid, order, data in rows:
        await service.transaction(  # stored by a version that took credentials in targets
            lambda db, rid=rid, order=order, data=data: db.run(
                "INSERT INTO proxy_rules VALUES (?, ?, ?)", [rid, order, json.dumps(data)]
            ),
            namespace="proxy",
        )
    await first.close()
    with caplog.at_level(logging.DEBUG):
        client = await start_runtime(aiohttp_client, env, TURSO, PROXY)
        answers = [await client.get(RULES), await client.get(f"{RULES}/legacy")]
        listed = await json_of(answers[0], 200)
        assert [r["target"] for r in listed] == [f"http://[redacted]@127.0.0.1:{port}"] * 3
        # A client's Authorization beside the URL's credentials was a 500: the client's wins.
        seen = await json_of(await client.get("/svc/x", headers={"Authorization": "Bearer client"}), 200)
        assert seen["headers"]["Authorization"] == "Bearer client"
        seen = await json_of(await client.get("/svc/x"), 200)  # as before: the URL's, as Basic
        assert seen["headers"]["Authorization"] == "Basic YWRtaW46UzNjcmV0UGFzcw=="
        for sent, expected in (("Bearer client", "Bearer client"), (None, "Basic YWRtaW46UzNjcmV0UGFzcw==")):
            headers = {"Authorization": sent} if sent else {}
            async with client.ws_connect("/upstream/ws", headers=headers) as ws:  # ws_connect 500ed too
                await ws.send_str("hello")
                assert (await ws.receive_json())["headers"]["Authorization"] == expected
        moved = await client.get("/go/x", allow_redirects=False)
        assert moved.status == 302 and moved.headers["Location"] == f"http://127.0.0.1:{port}/go/x"
        # A change must drop the credentials; once it does, the rule is an ordinary one.
        answers.append(await client.put(f"{RULES}/legacy", json={"name": "renamed"}))
        assert (await json_of(answers[-1], 400))["code"] == "PROXY_INVALID_TARGET"
        fixed = {"target": f"http://127.0.0.1:{port}", "headers": {"Authorization": "Bearer new"}}
        answers.append(await client.put(f"{RULES}/legacy", json=fixed))
        assert (await json_of(answers[-1], 200))["target"] == f"http://127.0.0.1:{port}"
        for answer in answers:
            assert "S3cretPass" not in await answer.text()
    assert "S3cretPass" not in caplog.text


LONE = "\ud800"  # json.dumps sends it as the escape "\ud800": legal JSON, no UTF-8 text


@pytest.mark.parametrize(
    "fields",
    [
        {"pattern": LONE},  # RE2 raised UnicodeEncodeError: a plain-text 500
        {"rewrite": LONE},  # stored (201), then a 500 on every request it matched
        {"publicRoutes": [f"/{LONE}"]},
        {"headers": {"X-Team": LONE}},
        {"name": LONE},
    ],
)
@pytest.mark.parametrize("sent_as", ["escape", "bytes"])
async def test_a_lone_surrogate_in_a_rule_is_400_invalid_unicode_and_changes_nothing(
    client: TestClient, fields: dict[str, Any], sent_as: str
) -> None:
    """Also sent as UTF-8-encoded bytes (``ED A0 80``), which ``json.loads`` decodes with
    ``surrogatepass``: a pattern that way was a plain-text 500 again."""

    def raw(body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, ensure_ascii=sent_as == "escape").encode("utf-8", "surrogatepass")
        return {"data": data, "headers": {"Content-Type": "application/json"}}

    refused = await client.post(RULES, **raw({"pattern": "^/svc/", "target": "http://127.0.0.1:9", **fields}))
    assert (await json_of(refused, 400))["code"] == "INVALID_UNICODE"
    assert await stored(client) == []
    rule = await create(client)
    before = await stored(client)
    refused = await client.put(f"{RULES}/{rule['id']}", **raw(fields))
    assert (await json_of(refused, 400))["code"] == "INVALID_UNICODE"
    assert await stored(client) == before


async def test_a_rule_stored_with_a_lone_surrogate_before_is_skipped_not_a_500_per_request(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    first = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    row = json.dumps({"pattern": "^/svc/", "target": str(upstream.make_url("")), "rewrite": "\ud800"})
    service = first.app[HOST_KEY].get_plugin(TURSO)
    await service.transaction(
        lambda db: db.run("INSERT INTO proxy_rules VALUES ('lone', 0, ?)", [row]), namespace="proxy"
    )
    await first.close()
    second = await start_runtime(aiohttp_client, env, TURSO, PROXY)
    assert await json_of(await second.get(RULES), 200) == []
    assert (await second.get("/svc/x")).status == 404  # no rule serves it: not a 500
    refused = await second.put(f"{RULES}/lone", json={"rewrite": "/x"})
    assert (await json_of(refused, 400))["code"] == "INVALID_UNICODE"


async def test_without_storage_static_rules_still_work_and_writes_are_503(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, {**env, "PROXY_RULES": STATIC}, PROXY)  # no turso plugin
    assert (await client.get("/api/health/ready")).status == 200
    assert [r["id"] for r in await json_of(await client.get(RULES), 200)] == ["static-0"]
    body = await json_of(await client.post(RULES, json={"pattern": "^/x", "target": "http://x"}), 503)
    assert body["code"] == "PROXY_STORAGE_DISABLED"
    assert (await client.delete(f"{RULES}/static-0")).status == 403


# -- API key --------------------------------------------------------------------------------------
@pytest.fixture
async def guarded(aiohttp_client: AiohttpClient, env: dict[str, str]) -> TestClient:
    """The runtime with ``PROXY_API_KEY`` set (what the chart always renders)."""
    return await start_runtime(
        aiohttp_client, {**env, "PROXY_RULES": STATIC, "PROXY_API_KEY": KEY}, TURSO, PROXY
    )


async def test_api_key_guards_every_admin_route_and_a_refusal_changes_nothing(guarded: TestClient) -> None:
    with_key = {"X-API-Key": KEY}
    rule = await json_of(
        await guarded.post(
            RULES, json={"pattern": "^/svc/", "target": "http://127.0.0.1:9"}, headers=with_key
        ),
        201,
    )
    before = await stored(guarded)
    rid = rule["id"]
    routes = [
        ("GET", RULES, None),
        ("POST", RULES, {"pattern": "^/meta/", "target": "http://169.254.169.254", "headers": {"X": "y"}}),
        ("PUT", f"{RULES}/reorder", {"ids": [rid]}),
        ("GET", f"{RULES}/{rid}", None),
        ("GET", f"{RULES}/static-0", None),
        ("PUT", f"{RULES}/{rid}", {"target": "http://169.254.169.254"}),
        ("PATCH", f"{RULES}/{rid}/toggle", None),
        ("DELETE", f"{RULES}/{rid}", None),
        ("GET", f"{RULES}/nope", None),  # 401 before 404: no probing for ids
    ]
    for method, path, body in routes:
        for headers in ({}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}, {"X-API-Key": KEY[:-1]}):
            refused = await guarded.request(method, path, json=body, headers=headers)
            assert refused.status == 401, (method, path, headers)
            assert await refused.json() == {
                "error": "missing or invalid X-API-Key",
                "code": "PROXY_UNAUTHORIZED",
            }
    assert await stored(guarded) == before  # nothing created, changed, reordered or deleted
    assert [r["id"] for r in await json_of(await guarded.get(RULES, headers=with_key), 200)] == [
        "static-0",
        rid,
    ]
    # With the key every route answers as without one.
    assert (await json_of(await guarded.get(f"{RULES}/{rid}", headers=with_key), 200))["id"] == rid
    toggled = await json_of(await guarded.patch(f"{RULES}/{rid}/toggle", headers=with_key), 200)
    assert toggled["enabled"] is False
    assert (
        len(await json_of(await guarded.put(f"{RULES}/reorder", json={"ids": [rid]}, headers=with_key), 200))
        == 1
    )
    renamed = await json_of(await guarded.put(f"{RULES}/{rid}", json={"name": "n"}, headers=with_key), 200)
    assert renamed["name"] == "n"
    assert await json_of(await guarded.delete(f"{RULES}/{rid}", headers=with_key), 200) == {"success": True}
    assert await stored(guarded) == []


@pytest.mark.parametrize("key", [b"\xff\xfe", "pr0xy-\u00e9".encode(), KEY.encode() + b"\x80"])
async def test_an_api_key_that_is_not_ascii_is_401_not_a_500(guarded: TestClient, key: bytes) -> None:
    assert guarded.port is not None
    body = json.dumps({"pattern": "^/svc/", "target": "http://127.0.0.1:9"}).encode()
    reply = await raw_request(
        guarded.port,
        f"POST {RULES} HTTP/1.1",
        b"Content-Type: application/json\r\nX-API-Key: " + key + b"\r\n",
        body,
    )
    head, _, answer = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), reply
    assert json.loads(answer)["code"] == "PROXY_UNAUTHORIZED"
    assert await stored(guarded) == []


async def test_without_a_key_the_rules_api_stays_open_as_upstream(client: TestClient) -> None:
    """PROXY_API_KEY unset (a developer's machine): no header needed, a stray one is ignored."""
    assert (await client.get(RULES)).status == 200
    assert (await client.get(RULES, headers={"X-API-Key": "anything"})).status == 200


# -- header values never leave ----------------------------------------------------------------------
UPSTREAM_TOKEN = "Bearer upstream-s3cret-token"


async def test_header_values_are_redacted_in_every_answer_and_sent_upstream(
    aiohttp_client: AiohttpClient, env: dict[str, str], upstream: TestServer
) -> None:
    static = json.dumps(
        [
            {
                "pattern": "^/static/",
                "target": "http://127.0.0.1:9",
                "headers": {"Authorization": UPSTREAM_TOKEN},
            }
        ]
    )
    client = await start_runtime(aiohttp_client, {**env, "PROXY_RULES": static}, TURSO, PROXY)
    target = str(upstream.make_url("")).rstrip("/")
    headers = {"Authorization": UPSTREAM_TOKEN, "X-Team": "core"}
    answers = [await client.post(RULES, json={"pattern": "^/svc/", "target": target, "headers": headers})]
    rule = await json_of(answers[0], 201)
    rid = rule["id"]
    assert rule["headers"] == {"Authorization": "[redacted]", "X-Team": "[redacted]"}
    answers += [
        await client.get(RULES),
        await client.get(f"{RULES}/{rid}"),
        await client.get(f"{RULES}/static-0"),
        await client.patch(f"{RULES}/{rid}/toggle"),
        await client.patch(f"{RULES}/{rid}/toggle"),
        await client.put(f"{RULES}/reorder", json={"ids": [rid]}),
        await client.put(f"{RULES}/{rid}", json={"name": "renamed"}),
    ]
    for answer in answers:
        text = await answer.text()
        assert answer.status in (200, 201), text
        assert "s3cret" not in text and "core" not in text, text
    listed = await json_of(await client.get(RULES), 200)
    assert [r["headers"] for r in listed] == [
        {"Authorization": "[redacted]"},
        {"Authorization": "[redacted]", "X-Team": "[redacted]"},
    ]
    # The values themselves are kept and go to the upstream.
    assert json.loads((await stored(client))[0]["rule_json"])["headers"] == headers
    seen = await json_of(await client.get("/svc/x"), 200)
    assert seen["headers"]["Authorization"] == UPSTREAM_TOKEN and seen["headers"]["X-Team"] == "core"


async def test_a_redacted_answer_sent_back_keeps_the_stored_values(
    client: TestClient, upstream: TestServer
) -> None:
    target = str(upstream.make_url("")).rstrip("/")
    rule = await create(client, target=target, headers={"Authorization": UPSTREAM_TOKEN, "X-Team": "core"})
    # The GET answer, edited and sent back whole: the redacted values stay what they were.
    edited = {**rule, "name": "edited", "headers": {**rule["headers"], "x-team": "[redacted]", "X-New": "n"}}
    del edited["headers"]["X-Team"]
    updated = await json_of(await client.put(f"{RULES}/{rule['id']}", json=edited), 200)
    assert updated["name"] == "edited"
    assert updated["headers"] == {
        "Authorization": "[redacted]",
        "x-team": "[redacted]",
        "X-New": "[redacted]",
    }
    stored_headers = json.loads((await stored(client))[0]["rule_json"])["headers"]
    assert stored_headers == {"Authorization": UPSTREAM_TOKEN, "x-team": "core", "X-New": "n"}
    seen = await json_of(await client.get("/svc/x"), 200)
    assert seen["headers"]["Authorization"] == UPSTREAM_TOKEN and seen["headers"]["X-New"] == "n"
    # A new value replaces the stored one; leaving a header out removes it.
    await json_of(
        await client.put(f"{RULES}/{rule['id']}", json={"headers": {"Authorization": "Bearer new"}}), 200
    )
    assert json.loads((await stored(client))[0]["rule_json"])["headers"] == {"Authorization": "Bearer new"}


async def test_the_redaction_marker_is_never_stored_as_a_value(client: TestClient) -> None:
    """Copying a GET answer into a new rule (or naming a header the rule lacks) is refused, not
    stored as the literal marker, which would send ``[redacted]`` upstream."""
    refused = await client.post(
        RULES,
        json={
            "pattern": "^/svc/",
            "target": "http://127.0.0.1:9",
            "headers": {"Authorization": "[redacted]"},
        },
    )
    assert (await json_of(refused, 400))["code"] == "PROXY_INVALID_HEADERS"
    assert await stored(client) == []
    rule = await create(client, headers={"X-Team": "core"})
    body = await json_of(
        await client.put(f"{RULES}/{rule['id']}", json={"headers": {"X-Other": "[redacted]"}}), 400
    )
    assert body["code"] == "PROXY_INVALID_HEADERS"
    assert json.loads((await stored(client))[0]["rule_json"])["headers"] == {"X-Team": "core"}


# -- stored headers stay with their origin ----------------------------------------------------------
async def echo_server(aiohttp_server: AiohttpServer) -> tuple[TestServer, list[dict[str, str]]]:
    """A second loopback upstream (another port, so another origin) that records the headers of
    every request it gets: the server an editor of a rule would control."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"path": request.rel_url.raw_path, "headers": dict(request.headers)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return await aiohttp_server(app), seen


def origin_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def test_moving_a_rule_to_another_origin_without_headers_is_409_and_changes_nothing(
    client: TestClient,
    upstream: TestServer,
    aiohttp_server: AiohttpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stored Authorization was given for the upstream's origin: a PUT that points the rule at
    another origin without sending headers, or sending the GET answer's ``[redacted]`` back, is
    refused and the rule keeps proxying to the old origin with its header."""
    other, other_seen = await echo_server(aiohttp_server)
    rule = await create(client, target=origin_of(upstream), headers={"Authorization": UPSTREAM_TOKEN})
    before = await stored(client)
    bodies: list[dict[str, Any]] = [
        {"target": origin_of(other)},
        {"target": f"{origin_of(other)}/base", "name": "moved"},
        {**rule, "target": origin_of(other)},  # the GET answer, headers "[redacted]", sent back
        {"target": f"https://127.0.0.1:{upstream.port}"},  # the scheme is part of the origin
    ]
    with caplog.at_level(logging.DEBUG):
        for body in bodies:
            refused = await client.put(f"{RULES}/{rule['id']}", json=body)
            text = await refused.text()
            assert refused.status == 409, text
            assert (await refused.json())["code"] == "PROXY_HEADERS_REQUIRED"
            assert "s3cret" not in text
    assert "s3cret" not in caplog.text
    assert await stored(client) == before
    assert await json_of(await client.get(f"{RULES}/{rule['id']}"), 200) == rule
    seen = await json_of(await client.get("/svc/x"), 200)
    assert seen["headers"]["Authorization"] == UPSTREAM_TOKEN  # still the old origin, with its header
    assert other_seen == []


async def test_moving_a_rule_to_another_origin_with_headers_sends_only_the_new_ones(
    client: TestClient, upstream: TestServer, aiohttp_server: AiohttpServer
) -> None:
    other, other_seen = await echo_server(aiohttp_server)
    rule = await create(
        client, target=origin_of(upstream), headers={"Authorization": UPSTREAM_TOKEN, "X-Team": "core"}
    )
    moved = await client.put(
        f"{RULES}/{rule['id']}", json={"target": origin_of(other), "headers": {"X-Other": "theirs"}}
    )
    text = await moved.text()
    assert moved.status == 200, text
    assert "theirs" not in text and (await moved.json())["headers"] == {"X-Other": "[redacted]"}
    assert json.loads((await stored(client))[0]["rule_json"])["headers"] == {"X-Other": "theirs"}
    await json_of(await client.get("/svc/x"), 200)
    assert len(other_seen) == 1
    assert other_seen[0]["X-Other"] == "theirs"
    assert "Authorization" not in other_seen[0] and "X-Team" not in other_seen[0]
    # An empty object (or null) is headers too: the rule moves with none.
    back = {"target": origin_of(upstream), "headers": {}}
    assert (await json_of(await client.put(f"{RULES}/{rule['id']}", json=back), 200))["headers"] == {}
    away = {"target": f"http://localhost:{upstream.port}", "headers": None}
    assert (await json_of(await client.put(f"{RULES}/{rule['id']}", json=away), 200))["headers"] == {}
    await json_of(await client.put(f"{RULES}/{rule['id']}", json=back), 200)
    seen = await json_of(await client.get("/svc/y"), 200)
    assert "Authorization" not in seen["headers"] and "X-Other" not in seen["headers"]


async def test_a_change_on_the_same_origin_keeps_the_stored_headers(
    client: TestClient, upstream: TestServer
) -> None:
    """Only the path of the target (and other fields) change: the headers stay as stored. The
    origin is compared normalized (an explicit default port is the same origin)."""
    rule = await create(client, target=origin_of(upstream), headers={"Authorization": UPSTREAM_TOKEN})
    body = {"target": f"{origin_of(upstream)}/under", "name": "same origin", "pattern": "^/svc/"}
    updated = await json_of(await client.put(f"{RULES}/{rule['id']}", json=body), 200)
    assert updated["headers"] == {"Authorization": "[redacted]"}
    assert updated["target"] == f"{origin_of(upstream)}/under"
    assert json.loads((await stored(client))[0]["rule_json"])["headers"] == {"Authorization": UPSTREAM_TOKEN}
    seen = await json_of(await client.get("/svc/x"), 200)
    assert seen["path"] == "/under/svc/x" and seen["headers"]["Authorization"] == UPSTREAM_TOKEN
    default_port = await create(client, pattern="^/dp/", target="http://docs.internal", headers={"X-A": "a"})
    await json_of(
        await client.put(f"{RULES}/{default_port['id']}", json={"target": "http://DOCS.internal:80/p"}), 200
    )
    rows = {row["id"]: json.loads(row["rule_json"]) for row in await stored(client)}
    assert rows[default_port["id"]]["headers"] == {"X-A": "a"}
