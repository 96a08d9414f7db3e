"""The gateway admin API, an aiohttp sub-app the server mounts under ``/gateway``.

Routes (all under ``/gateway/admin``, behind ``X-API-Key`` when ``GATEWAY_API_KEY`` is set):

* ``GET /metrics/history?limit=`` — the newest snapshots, newest first (default 60).
* ``DELETE /metrics/history`` — clear the history (``{cleared: true, deleted}``).
* ``POST /metrics/snapshot`` — record a snapshot of the request counters now (201).
* ``GET /shell/excludes`` — env excludes, then persisted ones with their stored ``addedAt``.
* ``POST /shell/excludes {basename}`` — persist an exclude (``{added, basename, source}``; 400).
* ``DELETE /shell/excludes/{basename}`` — remove one (``{removed, basename}``; 400 for env ones).
* ``PUT /shell/config {dir}``, ``POST /shell/config/reset`` — the shell directory override.
* ``GET /shell/routes``, ``PUT /shell/routes {host, dir}``, ``DELETE /shell/routes/{host}``.
* ``GET|POST /cors/rules``, ``PUT|DELETE /cors/rules/{id}`` — per-domain CORS rules (POST 201).
* ``GET /rate-limit/metrics``, ``GET /rate-limit/buckets?limit=100``,
  ``DELETE /rate-limit/buckets/{key}``, ``POST /rate-limit/clear`` (400 when disabled).
* ``GET /stats``, ``GET /config``, ``GET /sse`` (an event every ``sseInterval``).
* ``GET|DELETE /logs``, ``GET /logs/stats`` — the rate-limited requests this pod refused.
* ``POST /cache/invalidate`` — 400: there is no response cache (as upstream, where it is off).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.typedefs import Handler

from .._errors import ApiError
from .._http import API_KEY_HEADER, json_errors, read_json_object
from ._gateway import CACHE_DISABLED, Gateway

GATEWAY_KEY = web.AppKey("gateway", Gateway)
ADMIN = "/admin"


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[GATEWAY_KEY].authorize(request.headers.get(API_KEY_HEADER))
    return await handler(request)


async def get_history(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    limit = gateway.parse_limit(request.query.get("limit"))
    return web.json_response([snapshot.as_json() for snapshot in await gateway.history(limit)])


async def delete_history(request: web.Request) -> web.Response:
    deleted = await request.app[GATEWAY_KEY].clear_history()
    return web.json_response({"cleared": True, "deleted": deleted})


async def post_snapshot(request: web.Request) -> web.Response:
    snapshot = await request.app[GATEWAY_KEY].record_snapshot()
    return web.json_response(snapshot.as_json(), status=201)


async def get_excludes(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].list_excludes())


async def post_exclude(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return web.json_response(await request.app[GATEWAY_KEY].add_exclude(body.get("basename")))


async def delete_exclude(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GATEWAY_KEY].remove_exclude(request.match_info["basename"]))


# -- shell config and routes -----------------------------------------------------------------------
async def put_shell_config(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return web.json_response(await request.app[GATEWAY_KEY].set_shell_dir(body.get("dir")))


async def reset_shell_config(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GATEWAY_KEY].reset_shell_dir())


async def get_shell_routes(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].shell_routes())


async def put_shell_route(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return web.json_response(await request.app[GATEWAY_KEY].save_shell_route(body))


async def delete_shell_route(request: web.Request) -> web.Response:
    removed = await request.app[GATEWAY_KEY].delete_shell_route(request.match_info["host"])
    return web.json_response({"removed": removed})


# -- CORS rules ---------------------------------------------------------------------------------------
async def get_cors_rules(request: web.Request) -> web.Response:
    return web.json_response([rule.as_json() for rule in request.app[GATEWAY_KEY].cors_rules])


async def post_cors_rule(request: web.Request) -> web.Response:
    rule = await request.app[GATEWAY_KEY].create_cors_rule(await read_json_object(request))
    return web.json_response(rule.as_json(), status=201)


async def put_cors_rule(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    rule = await gateway.update_cors_rule(request.match_info["id"], await read_json_object(request))
    return web.json_response(rule.as_json())


async def delete_cors_rule(request: web.Request) -> web.Response:
    removed = await request.app[GATEWAY_KEY].delete_cors_rule(request.match_info["id"])
    return web.json_response({"removed": removed})


# -- rate limit ---------------------------------------------------------------------------------------
def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ApiError(f"{name} must be an integer", code="GATEWAY_INVALID_QUERY", status=400) from exc


async def get_rate_limit_metrics(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].require_limiter().metrics())


async def get_rate_limit_buckets(request: web.Request) -> web.Response:
    limiter = request.app[GATEWAY_KEY].require_limiter()
    return web.json_response(limiter.active_buckets(_int_query(request, "limit", 100)))


async def delete_rate_limit_bucket(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    deleted = request.app[GATEWAY_KEY].require_limiter().clear_bucket(key)
    return web.json_response({"deleted": deleted, "key": key})


async def clear_rate_limit(request: web.Request) -> web.Response:
    return web.json_response({"cleared": request.app[GATEWAY_KEY].require_limiter().clear()})


# -- stats, config, sse, logs, cache ------------------------------------------------------------------
async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].stats())


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].config_json())


async def get_sse(request: web.Request) -> web.StreamResponse:
    """``data: <json>`` every ``sseInterval`` until the client leaves or the runtime stops."""
    gateway = request.app[GATEWAY_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        while not gateway.stopping.is_set():
            await response.write(f"data: {gateway.sse_payload()}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gateway.stopping.wait(), timeout=gateway.config.sse_interval)
        await response.write_eof()
    return response


async def get_logs(request: web.Request) -> web.Response:
    query = request.query
    status_range = _int_query(request, "statusRange", 0) or None
    entries = request.app[GATEWAY_KEY].logs(
        limit=_int_query(request, "limit", 50),
        ip=query.get("ip") or None,
        rate_limited=True if query.get("rateLimited") == "true" else None,
        status_range=status_range,
    )
    return web.json_response(entries)


async def delete_logs(request: web.Request) -> web.Response:
    request.app[GATEWAY_KEY].request_log.clear()
    return web.json_response({"cleared": True})


async def get_log_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].log_stats())


async def invalidate_cache(request: web.Request) -> web.Response:
    raise ApiError("Cache not enabled", code=CACHE_DISABLED, status=400)


def build_admin_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[json_errors, require_api_key])
    app[GATEWAY_KEY] = gateway
    app.router.add_get(f"{ADMIN}/metrics/history", get_history)
    app.router.add_delete(f"{ADMIN}/metrics/history", delete_history)
    app.router.add_post(f"{ADMIN}/metrics/snapshot", post_snapshot)
    app.router.add_get(f"{ADMIN}/shell/excludes", get_excludes)
    app.router.add_post(f"{ADMIN}/shell/excludes", post_exclude)
    app.router.add_delete(f"{ADMIN}/shell/excludes/{{basename}}", delete_exclude)
    app.router.add_put(f"{ADMIN}/shell/config", put_shell_config)
    app.router.add_post(f"{ADMIN}/shell/config/reset", reset_shell_config)
    app.router.add_get(f"{ADMIN}/shell/routes", get_shell_routes)
    app.router.add_put(f"{ADMIN}/shell/routes", put_shell_route)
    app.router.add_delete(f"{ADMIN}/shell/routes/{{host}}", delete_shell_route)
    app.router.add_get(f"{ADMIN}/cors/rules", get_cors_rules)
    app.router.add_post(f"{ADMIN}/cors/rules", post_cors_rule)
    app.router.add_put(f"{ADMIN}/cors/rules/{{id}}", put_cors_rule)
    app.router.add_delete(f"{ADMIN}/cors/rules/{{id}}", delete_cors_rule)
    app.router.add_get(f"{ADMIN}/rate-limit/metrics", get_rate_limit_metrics)
    app.router.add_get(f"{ADMIN}/rate-limit/buckets", get_rate_limit_buckets)
    app.router.add_delete(f"{ADMIN}/rate-limit/buckets/{{key}}", delete_rate_limit_bucket)
    app.router.add_post(f"{ADMIN}/rate-limit/clear", clear_rate_limit)
    app.router.add_get(f"{ADMIN}/stats", get_stats)
    app.router.add_get(f"{ADMIN}/config", get_config)
    app.router.add_get(f"{ADMIN}/sse", get_sse)
    app.router.add_get(f"{ADMIN}/logs", get_logs)
    app.router.add_delete(f"{ADMIN}/logs", delete_logs)
    app.router.add_get(f"{ADMIN}/logs/stats", get_log_stats)
    app.router.add_post(f"{ADMIN}/cache/invalidate", invalidate_cache)
    return app
