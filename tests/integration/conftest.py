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

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.server.support import KEYVAL_MANIFEST
from tests.support.tursodb import SyncServer


def require_keyval() -> None:
    """Skip (saying why) when the keyval plugin is not there yet."""
    if not KEYVAL_MANIFEST.exists():
        pytest.skip(f"keyval plugin absent ({KEYVAL_MANIFEST} missing): keyval checks not run")


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"method": request.method, "path": request.rel_url.raw_path})


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return await aiohttp_server(app)


@pytest.fixture(scope="module")
def shared_sync_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncServer]:
    """One real ``tursodb --sync-server`` for a module's replicas."""
    server = SyncServer(tmp_path_factory.mktemp("sync") / "remote.db").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def replica_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replicas")
