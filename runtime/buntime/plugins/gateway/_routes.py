"""The gateway admin API, an aiohttp sub-app the server mounts under ``/gateway``.

Routes (all under ``/gateway/admin``, behind ``X-API-Key`` when ``GATEWAY_API_KEY`` is set):

* ``GET /metrics/history?limit=`` — newest snapshots, oldest first (default 60).
* ``DELETE /metrics/history`` — clear the history.
* ``POST /metrics/snapshot`` — record a snapshot of the request counters now (201).
* ``GET /shell/excludes`` — env and persisted excludes with ``source`` and ``addedAt``.
* ``POST /shell/excludes {basename}`` — persist an exclude (201; 400, 409).
* ``DELETE /shell/excludes/{basename}`` — remove a persisted exclude (204; 400 for env ones, 404).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .._http import json_errors, read_json_object
from ._gateway import Gateway

GATEWAY_KEY = web.AppKey("gateway", Gateway)
API_KEY_HEADER = "X-API-Key"
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
    return web.json_response({"deleted": await request.app[GATEWAY_KEY].clear_history()})


async def post_snapshot(request: web.Request) -> web.Response:
    snapshot = await request.app[GATEWAY_KEY].record_snapshot()
    return web.json_response(snapshot.as_json(), status=201)


async def get_excludes(request: web.Request) -> web.Response:
    return web.json_response(request.app[GATEWAY_KEY].list_excludes())


async def post_exclude(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return web.json_response(await request.app[GATEWAY_KEY].add_exclude(body.get("basename")), status=201)


async def delete_exclude(request: web.Request) -> web.Response:
    await request.app[GATEWAY_KEY].remove_exclude(request.match_info["basename"])
    return web.Response(status=204)


def build_admin_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[json_errors, require_api_key])
    app[GATEWAY_KEY] = gateway
    app.router.add_get(f"{ADMIN}/metrics/history", get_history)
    app.router.add_delete(f"{ADMIN}/metrics/history", delete_history)
    app.router.add_post(f"{ADMIN}/metrics/snapshot", post_snapshot)
    app.router.add_get(f"{ADMIN}/shell/excludes", get_excludes)
    app.router.add_post(f"{ADMIN}/shell/excludes", post_exclude)
    app.router.add_delete(f"{ADMIN}/shell/excludes/{{basename}}", delete_exclude)
    return app
