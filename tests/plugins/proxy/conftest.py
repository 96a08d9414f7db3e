"""Fixtures for the proxy plugin (``buntime.plugins.proxy``).

Feeds in: HTTP requests to the real runtime app (turso + proxy) on a fresh local database per
test, and a real upstream aiohttp server on loopback that echoes what it received (method, raw
path, query, headers, body) and can be slow, compressed, streamed or redirecting.
Checks: every admin route with its status and error codes, what lands in ``proxy_rules``, and
that matching requests are really proxied (or redirected) with rewrite, headers and
X-Forwarded-*; that WebSocket frames and close codes cross the proxy both ways; HTML rewriting
(``base``, ``relativePaths``); and that no rule can take over a reserved path.
Leaves unmocked: the plugin host, the Turso engine, the aiohttp client the proxy uses and both
HTTP servers — bytes cross real sockets twice.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
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


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    """Echoes frames; ``hello`` answers with what the handshake carried; ``close:<code>:<why>``
    closes with that code; ``vanish`` drops the TCP connection without a close frame."""
    ws = web.WebSocketResponse(protocols=("chat",), max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
        elif msg.data == "hello":
            await ws.send_json(
                {
                    "path": request.rel_url.raw_path,
                    "query": request.rel_url.raw_query_string,
                    "headers": dict(request.headers),
                    "protocol": ws.ws_protocol,
                }
            )
        elif msg.data.startswith("close:"):
            _, code, why = msg.data.split(":", 2)
            await ws.close(code=int(code), message=why.encode())
        elif msg.data == "vanish":
            assert request.transport is not None
            request.transport.abort()
        else:
            await ws.send_str(f"echo {msg.data}")
    CLOSED_BY_CLIENT.append(ws.close_code)
    return ws


#: Close codes the upstream WebSocket saw, in order (tests read and clear it).
CLOSED_BY_CLIENT: list[int | None] = []


async def html(request: web.Request) -> web.Response:
    page = (
        b'<html><head lang="en"><script src="/app.js"></script></head>'
        b'<body><a href="/docs">d</a><a href="//cdn.example/x">c</a>'
        b"<script>go('/next')</script></body></html>"
    )
    if request.query.get("gzip"):
        return web.Response(
            body=gzip.compress(page), headers={"Content-Encoding": "gzip", "Content-Type": "text/html"}
        )
    return web.Response(body=page, content_type="text/html")


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
    app.router.add_get("/upstream/ws", ws_echo)
    app.router.add_get("/upstream/page", html)
    app.router.add_route("*", "/{tail:.*}", echo)
    return await aiohttp_server(app)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)
