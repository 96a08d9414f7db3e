"""Fixtures for cross-plugin and cross-replica tests of the whole runtime.

Feeds in: the runtime with *all* built-in plugins (turso, gateway, proxy and keyval when its
manifest exists), in process for the smoke test and as real ``buntime serve`` processes for the
replica tests, plus a real loopback upstream for the proxy and real ``tursodb --sync-server``
processes (or the namespace router for multi-tenant mode).
Checks: the plugins work side by side in one runtime, and a change made through one replica is
served by another within the sync interval and survives a restart.
Leaves unmocked: everything — no engine, server, plugin or HTTP stack is replaced.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"method": request.method, "path": request.rel_url.raw_path})


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return await aiohttp_server(app)
