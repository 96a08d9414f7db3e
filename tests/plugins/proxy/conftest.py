"""Fixtures for the proxy plugin (``buntime.plugins.proxy``).

Feeds in: HTTP requests to the real runtime app (turso + proxy) on a fresh local database per
test, and a real upstream aiohttp server on loopback that echoes what it received (method, raw
path, query, headers, body) and can be slow, compressed, streamed or redirecting.
Checks: every admin route with its status and error codes, what lands in ``proxy_rules``, and
that matching requests are really proxied (or redirected) with rewrite, headers and
X-Forwarded-*.
Leaves unmocked: the plugin host, the Turso engine, the aiohttp client the proxy uses and both
HTTP servers — bytes cross real sockets twice.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.server.support import local_env

GZIPPED = gzip.compress(b"tea " * 1000)
BIG_CHUNK = b"x" * 65536
BIG_CHUNKS = 16


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.rel_url.raw_path,
            "query": request.rel_url.raw_query_string,
            "headers": {k: v for k, v in request.headers.items()},
            "connection_named": request.headers.getall("X-Drop-Me", []),
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(3)
    return web.Response(text="too late")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def teapot(request: web.Request) -> web.Response:
    response = web.Response(status=418, text="short and stout", headers={"X-Upstream": "yes"})
    response.set_cookie("session", "abc")
    return response


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(body=GZIPPED, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(BIG_CHUNKS):
        await response.write(BIG_CHUNK)
    await response.write_eof()
    return response


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> TestServer:
    """A real HTTP server on 127.0.0.1 that the proxy forwards to."""
    app = web.Application(client_max_size=16 * 1024 * 1024)  # the uploads are bigger than 1 MiB
    app.router.add_get("/upstream/slow", slow)
    app.router.add_get("/upstream/redirect", redirect)
    app.router.add_get("/upstream/teapot", teapot)
    app.router.add_get("/upstream/gzip", gzipped)
    app.router.add_get("/upstream/big", big)
    app.router.add_route("*", "/{tail:.*}", echo)
    return await aiohttp_server(app)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)
