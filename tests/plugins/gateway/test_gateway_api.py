"""The gateway admin API over HTTP against a real local database."""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from buntime.server import HOST_KEY
from tests.server.support import GATEWAY, PROXY, TURSO, raw_request, start_runtime

EXCLUDES = "/gateway/admin/shell/excludes"
HISTORY = "/gateway/admin/metrics/history"
SNAPSHOT = "/gateway/admin/metrics/snapshot"


async def gateway_rows(client: TestClient, sql: str) -> list[dict[str, Any]]:
    service = client.app[HOST_KEY].get_plugin(TURSO)
    return await (await service.connect("gateway")).all(sql)


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


# -- shell excludes -------------------------------------------------------------------------------
async def test_env_excludes_are_listed_with_source_env(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(
        aiohttp_client, {**env, "GATEWAY_SHELL_EXCLUDES": "b-app, a_app"}, TURSO, GATEWAY
    )
    assert await json_of(await client.get(EXCLUDES), 200) == [
        {"basename": "a_app", "source": "env"},
        {"basename": "b-app", "source": "env"},
    ]


async def test_the_manifest_default_exclude_is_cpanel(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    assert await json_of(await client.get(EXCLUDES), 200) == [{"basename": "cpanel", "source": "env"}]


async def test_add_exclude_persists_with_a_real_added_at(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    before = int(time.time() * 1000)
    created = await json_of(await client.post(EXCLUDES, json={"basename": " legacy-app "}), 200)
    assert created["added"] is True and created["basename"] == "legacy-app" and created["source"] == "turso"
    assert before <= created["addedAt"] <= int(time.time() * 1000)
    listed = await json_of(await client.get(EXCLUDES), 200)
    assert listed == [  # env ones first, then persisted ones with the stored time (upstream: now)
        {"basename": "cpanel", "source": "env"},
        {"basename": "legacy-app", "source": "turso", "addedAt": created["addedAt"]},
    ]
    rows = await gateway_rows(client, "SELECT basename, added_at FROM gateway_shell_excludes")
    assert rows == [{"basename": "legacy-app", "added_at": created["addedAt"]}]


@pytest.mark.parametrize("basename", ["", "has space", "../etc", "a/b", 42, None])
async def test_add_exclude_rejects_invalid_basenames(
    aiohttp_client: AiohttpClient, env: dict[str, str], basename: Any
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    body = await json_of(await client.post(EXCLUDES, json={"basename": basename}), 400)
    assert body["code"] == "GATEWAY_INVALID_BASENAME"


async def test_add_exclude_refuses_non_json(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    body = await json_of(await client.post(EXCLUDES, data=b"{nope"), 400)
    assert body["code"] == "INVALID_JSON"


async def test_aiohttp_refusals_answer_json_with_a_code(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    """404, 405 and 413 came from aiohttp as text/plain, without the code clients key on."""
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    assert (await json_of(await client.get("/gateway/admin/nope"), 404))["code"] == "NOT_FOUND"
    refused = await client.patch(EXCLUDES)
    assert (await json_of(refused, 405))["code"] == "METHOD_NOT_ALLOWED" and "POST" in refused.headers[
        "Allow"
    ]
    huge = io.BytesIO(json.dumps({"basename": "x" * (3 << 20)}).encode())
    sent = await client.post(EXCLUDES, data=huge, headers={"Content-Type": "application/json"})
    assert (await json_of(sent, 413))["code"] == "PAYLOAD_TOO_LARGE"
    assert await gateway_rows(client, "SELECT * FROM gateway_shell_excludes") == []


async def test_add_exclude_twice_answers_added_false(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    first = await json_of(await client.post(EXCLUDES, json={"basename": "twice"}), 200)
    again = await json_of(await client.post(EXCLUDES, json={"basename": "twice"}), 200)
    assert (first["added"], again["added"]) == (True, False)
    assert again["addedAt"] == first["addedAt"]  # the stored time, not the second request's
    env_one = await json_of(await client.post(EXCLUDES, json={"basename": "cpanel"}), 400)
    assert env_one["code"] == "GATEWAY_ENV_EXCLUDE" and "via environment" in env_one["error"]


async def test_remove_exclude(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    await json_of(await client.post(EXCLUDES, json={"basename": "gone"}), 200)
    removed = await json_of(await client.delete(f"{EXCLUDES}/gone"), 200)
    assert removed == {"removed": True, "basename": "gone"}
    assert await gateway_rows(client, "SELECT * FROM gateway_shell_excludes") == []
    assert "gone" not in [item["basename"] for item in await json_of(await client.get(EXCLUDES), 200)]
    again = await json_of(await client.delete(f"{EXCLUDES}/gone"), 200)
    assert again == {"removed": False, "basename": "gone"}
    assert (await json_of(await client.delete(f"{EXCLUDES}/cpanel"), 400))["code"] == "GATEWAY_ENV_EXCLUDE"
    assert (await json_of(await client.delete(f"{EXCLUDES}/bad%20name"), 400))["code"] == (
        "GATEWAY_INVALID_BASENAME"
    )


# -- metrics history ------------------------------------------------------------------------------
async def test_snapshot_records_the_request_counters(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    for _ in range(3):
        await client.get("/not-here")
    snapshot = await json_of(await client.post(SNAPSHOT), 201)
    assert snapshot["totalRequests"] == 4  # three 404s and the snapshot request itself
    assert snapshot["blockedRequests"] == 0 and snapshot["allowedRequests"] == 4
    assert snapshot["activeBuckets"] == 1  # one client address
    rows = await gateway_rows(client, "SELECT * FROM gateway_metrics_history")
    assert rows == [
        {
            "timestamp": snapshot["timestamp"],
            "total_requests": 4,
            "blocked_requests": 0,
            "allowed_requests": 4,
            "active_buckets": 1,
        }
    ]
    assert await json_of(await client.get(HISTORY), 200) == [snapshot]


async def test_a_snapshot_never_replaces_another_replicas_row(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    service = client.app[HOST_KEY].get_plugin(TURSO)
    ahead = int(time.time() * 1000) + 60_000  # another pod, whose clock runs ahead, recorded first

    async def other_pod(db: Any) -> None:
        await db.run("INSERT INTO gateway_metrics_history VALUES (?, 7, 0, 7, 1)", [ahead])

    await service.transaction(other_pod, namespace="gateway")
    mine = await json_of(await client.post(SNAPSHOT), 201)
    assert mine["timestamp"] == ahead + 1
    again = await json_of(await client.post(SNAPSHOT), 201)
    assert again["timestamp"] == ahead + 2
    rows = await gateway_rows(client, "SELECT timestamp, total_requests FROM gateway_metrics_history")
    assert sorted((r["timestamp"], r["total_requests"]) for r in rows) == [
        (ahead, 7),
        (ahead + 1, mine["totalRequests"]),
        (ahead + 2, again["totalRequests"]),
    ]


async def test_history_is_bounded_to_the_newest_rows(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    client = await start_runtime(aiohttp_client, {**env, "GATEWAY_METRICS_RETENTION": "3"}, TURSO, GATEWAY)
    snapshots = [await json_of(await client.post(SNAPSHOT), 201) for _ in range(5)]
    count = await gateway_rows(client, "SELECT count(*) AS n FROM gateway_metrics_history")
    assert count == [{"n": 3}]
    history = await json_of(await client.get(HISTORY), 200)
    newest_first = [s["timestamp"] for s in reversed(snapshots)]
    assert [s["timestamp"] for s in history] == newest_first[:3]  # upstream's order
    assert [s["timestamp"] for s in await json_of(await client.get(HISTORY, params={"limit": "2"}), 200)] == (
        newest_first[:2]
    )


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "3601"])
async def test_history_limit_is_validated(
    aiohttp_client: AiohttpClient, env: dict[str, str], limit: str
) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    body = await json_of(await client.get(HISTORY, params={"limit": limit}), 400)
    assert body["code"] == "GATEWAY_INVALID_LIMIT"


async def test_clear_history(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    for _ in range(2):
        await json_of(await client.post(SNAPSHOT), 201)
    assert await json_of(await client.delete(HISTORY), 200) == {"cleared": True, "deleted": 2}
    assert await json_of(await client.get(HISTORY), 200) == []
    assert await gateway_rows(client, "SELECT * FROM gateway_metrics_history") == []


# -- API key --------------------------------------------------------------------------------------
async def test_api_key_guards_every_admin_route(aiohttp_client: AiohttpClient, env: dict[str, str]) -> None:
    client = await start_runtime(aiohttp_client, {**env, "GATEWAY_API_KEY": "s3cret"}, TURSO, GATEWAY)
    for method, path in [("GET", EXCLUDES), ("POST", EXCLUDES), ("DELETE", f"{EXCLUDES}/x"), ("GET", HISTORY),
                         ("DELETE", HISTORY), ("POST", SNAPSHOT)]:  # fmt: skip
        missing = await client.request(method, path)
        assert missing.status == 401, (method, path)
        assert (await missing.json())["code"] == "GATEWAY_UNAUTHORIZED"
        wrong = await client.request(method, path, headers={"X-API-Key": "s3cret-not"})
        assert wrong.status == 401, (method, path)
    ok = await client.get(EXCLUDES, headers={"X-API-Key": "s3cret"})
    assert ok.status == 200
    snapshot = await json_of(await client.post(SNAPSHOT, headers={"X-API-Key": "s3cret"}), 201)
    assert snapshot["blockedRequests"] == 12 and snapshot["allowedRequests"] == snapshot["totalRequests"] - 12
    metrics = await (await client.get("/metrics")).text()
    assert 'buntime_gateway_requests_total{outcome="blocked"} 12.0' in metrics


@pytest.mark.parametrize("key", [b"\xff\xfe", "s3cr\u00e9t".encode(), b"s3cret\x80"])
async def test_an_api_key_that_is_not_ascii_is_401_not_a_500(
    aiohttp_client: AiohttpClient, env: dict[str, str], key: bytes
) -> None:
    """Raw header bytes: aiohttp hands 0xff over as a lone surrogate, which ``str.encode`` refuses."""
    client = await start_runtime(aiohttp_client, {**env, "GATEWAY_API_KEY": "s3cret"}, TURSO, GATEWAY)
    assert client.port is not None
    reply = await raw_request(client.port, f"GET {EXCLUDES} HTTP/1.1", b"X-API-Key: " + key + b"\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), reply
    assert json.loads(body)["code"] == "GATEWAY_UNAUTHORIZED"


# -- lifecycle ------------------------------------------------------------------------------------
async def test_state_survives_a_restart_and_migrations_are_idempotent(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    first = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)
    created = await json_of(await first.post(EXCLUDES, json={"basename": "durable"}), 200)
    del created["added"]
    snapshot = await json_of(await first.post(SNAPSHOT), 201)
    await first.close()
    second = await start_runtime(aiohttp_client, env, TURSO, GATEWAY)  # migrations run again
    assert (await second.get("/api/health/ready")).status == 200
    assert created in await json_of(await second.get(EXCLUDES), 200)
    assert await json_of(await second.get(HISTORY), 200) == [snapshot]


async def test_without_turso_it_starts_with_persistence_disabled(
    aiohttp_client: AiohttpClient, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client = await start_runtime(aiohttp_client, {**env, "GATEWAY_SHELL_EXCLUDES": "only-env"}, GATEWAY)
    assert "gateway persistence disabled" in caplog.text
    ready = await json_of(await client.get("/api/health/ready"), 200)
    assert ready["turso"] is None
    assert await json_of(await client.get(EXCLUDES), 200) == [{"basename": "only-env", "source": "env"}]
    assert await json_of(await client.get(HISTORY), 200) == []
    for method, path, body in [("POST", EXCLUDES, {"basename": "x"}), ("DELETE", f"{EXCLUDES}/x", None),
                               ("POST", SNAPSHOT, None), ("DELETE", HISTORY, None)]:  # fmt: skip
        response = await client.request(method, path, json=body)
        assert response.status == 503, (method, path)
        assert (await response.json())["code"] == "GATEWAY_STORAGE_DISABLED"
    # validation still answers first: a bad or env basename is a client error, not a storage one
    assert (await client.post(EXCLUDES, json={"basename": "only-env"})).status == 400


async def test_an_admin_url_whose_percent_encoding_is_not_utf8_is_400_invalid_unicode(
    aiohttp_client: AiohttpClient, env: dict[str, str]
) -> None:
    """yarl decodes ``%FF`` to U+FFFD, so ``/shell/routes/%FF`` and ``/%FE`` named one host: the
    gateway's and the proxy's admin APIs refuse such a URL (path or query) as keyval does; a
    proxied path is not theirs to refuse."""
    client = await start_runtime(aiohttp_client, env, TURSO, GATEWAY, PROXY)
    for method, path in (
        ("DELETE", "/gateway/admin/shell/routes/%FF"),
        ("DELETE", "/gateway/admin/shell/excludes/a%ED%A0%80"),
        ("GET", "/gateway/admin/metrics/history?limit=%C0%80"),
        ("GET", "/redirects/admin/rules/%FE"),
        ("PATCH", "/redirects/admin/rules/%FE/toggle"),
    ):
        body = await json_of(await client.request(method, path), 400)
        assert body["code"] == "INVALID_UNICODE", (method, path, body)
    euro = await client.delete("/gateway/admin/shell/routes/%E2%82%AC")
    assert await json_of(euro, 200) == {"removed": False}
    assert (await client.get("/not-a-plugin/%FF")).status == 404


async def test_every_gateway_write_is_pushed_at_commit_in_sync_mode(
    aiohttp_client: AiohttpClient, tmp_path: Any, sync_server: Any
) -> None:
    """Upstream cleared the history with an autocommit statement that was never pushed: in sync
    mode the rows came back on the next pod. A pod started afterwards on a fresh replica file
    (and no sync on the first) sees every write, the clear included."""

    def pod(name: str) -> dict[str, str]:
        return {
            "TURSO_SYNC_URL": sync_server.url,
            "TURSO_LOCAL_PATH": str(tmp_path / name / "runtime.db"),
            "TURSO_SYNC_INTERVAL": "0",
            "GATEWAY_SNAPSHOT_INTERVAL": "0",
        }

    first = await start_runtime(aiohttp_client, pod("a"), TURSO, GATEWAY)
    for _ in range(2):
        await json_of(await first.post(SNAPSHOT), 201)
    await json_of(await first.post(EXCLUDES, json={"basename": "kept"}), 200)
    assert (await json_of(await first.delete(HISTORY), 200))["deleted"] == 2
    await json_of(await first.post(SNAPSHOT), 201)
    fresh = await start_runtime(aiohttp_client, pod("fresh"), TURSO, GATEWAY)
    assert len(await gateway_rows(fresh, "SELECT * FROM gateway_metrics_history")) == 1
    excludes = await gateway_rows(fresh, "SELECT basename FROM gateway_shell_excludes")
    assert [r["basename"] for r in excludes] == ["kept"]
