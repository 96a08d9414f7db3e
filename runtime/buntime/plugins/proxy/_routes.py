"""The proxy admin API, an aiohttp sub-app the server mounts under ``/redirects``.

Routes (all under ``/redirects/admin``, behind ``X-API-Key`` when ``PROXY_API_KEY`` is set; the
key is checked before the body is read, so a refused request changes nothing). Every answer
shows a rule's header names with the value ``[redacted]`` (``ProxyRule.public_json``):

* ``GET /rules`` — every rule in match order (static first, ``readOnly: true``).
* ``GET /rules/{id}`` — one rule (404).
* ``POST /rules`` — create a dynamic rule (201; 400 missing pattern/target, bad regex or target).
* ``PUT /rules/reorder {ids}`` — new order of the dynamic rules, which it returns; must list every
  dynamic id once (400; 403 static ids, 404 an unknown id).
* ``PUT /rules/{id}`` — change fields of a dynamic rule (403 static, 404 missing); a header sent
  back as ``[redacted]`` keeps its stored value. A ``target`` on another origin needs ``headers``
  with real values in the same body (409 ``PROXY_HEADERS_REQUIRED``, nothing changed).
* ``PATCH /rules/{id}/toggle`` — flip ``enabled`` (403 static, 404 missing).
* ``DELETE /rules/{id}`` — remove a dynamic rule (``{success: true}``; 403 static, 404 missing).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .._http import API_KEY_HEADER, json_errors, read_json_object
from ._proxy import Proxy

PROXY_KEY = web.AppKey("proxy", Proxy)
ADMIN = "/admin"


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[PROXY_KEY].authorize(request.headers.get(API_KEY_HEADER))
    return await handler(request)


async def list_rules(request: web.Request) -> web.Response:
    return web.json_response([rule.public_json() for rule in request.app[PROXY_KEY].rules])


async def get_rule(request: web.Request) -> web.Response:
    return web.json_response(request.app[PROXY_KEY].get(request.match_info["id"]).public_json())


async def create_rule(request: web.Request) -> web.Response:
    rule = await request.app[PROXY_KEY].create(await read_json_object(request))
    return web.json_response(rule.public_json(), status=201)


async def reorder_rules(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    rules = await request.app[PROXY_KEY].reorder(body.get("ids"))
    return web.json_response([rule.public_json() for rule in rules])


async def update_rule(request: web.Request) -> web.Response:
    proxy = request.app[PROXY_KEY]
    rule = await proxy.update(request.match_info["id"], await read_json_object(request))
    return web.json_response(rule.public_json())


async def toggle_rule(request: web.Request) -> web.Response:
    rule = await request.app[PROXY_KEY].toggle(request.match_info["id"])
    return web.json_response(rule.public_json())


async def delete_rule(request: web.Request) -> web.Response:
    await request.app[PROXY_KEY].delete(request.match_info["id"])
    return web.json_response({"success": True})


def build_admin_app(proxy: Proxy) -> web.Application:
    app = web.Application(middlewares=[json_errors, require_api_key])
    app[PROXY_KEY] = proxy
    app.router.add_get(f"{ADMIN}/rules", list_rules)
    app.router.add_post(f"{ADMIN}/rules", create_rule)
    app.router.add_put(f"{ADMIN}/rules/reorder", reorder_rules)  # before /rules/{id}
    app.router.add_get(f"{ADMIN}/rules/{{id}}", get_rule)
    app.router.add_put(f"{ADMIN}/rules/{{id}}", update_rule)
    app.router.add_patch(f"{ADMIN}/rules/{{id}}/toggle", toggle_rule)
    app.router.add_delete(f"{ADMIN}/rules/{{id}}", delete_rule)
    return app
