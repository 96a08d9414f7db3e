"""KeyVal plugin tests.

Feeds in: a real :class:`~buntime.plugins.PluginHost` loading only the built-in turso and keyval
manifests, on a fresh local MVCC file under ``tmp_path`` (the sync tests start a real
turso-server, whose write leases serialise the pods' writes, and give each "pod" its own
replica file). HTTP tests mount the
plugin's sub-app under ``/keyval`` the way the runtime server does and call it with
``aiohttp_client``.

Checks: the Python API (keys, order, TTL, atomics, queue, search, metrics), every HTTP route and
its error codes, migrations, restarts, and cross-replica visibility in sync mode.

Leaves unmocked: the Turso engine and sync server, the plugin host, the HTTP stack and the
clock (TTL and backoff tests sleep a few hundred milliseconds). Background sweeps are off
unless a test turns them on through the same env variables an operator would set. One fault is
injected at the service boundary: :func:`commit_outcome_unknown`, a write that lands and is then
reported as ``TursoCommitUnknownError`` (a push whose reply was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from buntime.plugins import BUILTIN_DIR, Manifest, PluginHost, load_manifest
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, KeyValPlugin, Kv
from buntime.turso import TursoCommitUnknownError
from tests.support.tursoserver import SyncEndpoint

HostStarter = Callable[[dict[str, str]], Awaitable[PluginHost]]


@contextlib.contextmanager
def commit_outcome_unknown(kv: Kv) -> Iterator[list[Any]]:
    """Every write of ``kv`` meanwhile lands, then raises ``TursoCommitUnknownError`` (its push's
    outcome was lost); yields the list of what each write's transaction returned."""
    service = kv._store.service
    real = service.run_transaction
    results: list[Any] = []

    async def landed_but_unknown(*args: Any, **kwargs: Any) -> Any:
        results.append(await real(*args, **kwargs))
        raise TursoCommitUnknownError("the push may or may not have landed")

    service.run_transaction = landed_but_unknown  # type: ignore[method-assign]
    try:
        yield results
    finally:
        service.run_transaction = real  # type: ignore[method-assign]


def keyval_manifests() -> list[Manifest]:
    """Only turso + keyval, so plugins other engineers are writing cannot break these tests."""
    return [
        load_manifest(BUILTIN_DIR / "turso" / "manifest.yaml"),
        load_manifest(BUILTIN_DIR / "keyval" / "manifest.yaml"),
    ]


def keyval_plugin(host: PluginHost) -> KeyValPlugin:
    for loaded in host.loaded:
        if loaded.manifest.name == KEYVAL_PLUGIN_NAME:
            assert isinstance(loaded.plugin, KeyValPlugin)
            return loaded.plugin
    raise AssertionError(f"keyval did not load: failed={host.failed} skipped={host.skipped}")


def mount(host: PluginHost) -> web.Application:
    """The parent app as the runtime server builds it: the sub-app under the manifest base."""
    app = web.Application()
    subapp = keyval_plugin(host).routes()
    assert subapp is not None
    app.add_subapp("/keyval", subapp)
    return app


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (sweeps, sync loops) after teardown."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftover, f"tasks left running: {leftover}"


@pytest.fixture
def local_env(tmp_path: Path) -> dict[str, str]:
    return {
        "TURSO_LOCAL_PATH": str(tmp_path / "turso" / "runtime.db"),
        "KEYVAL_SWEEP_INTERVAL": "0",
        "KEYVAL_QUEUE_CLEANUP_INTERVAL": "0",
    }


@pytest.fixture
async def start_host() -> AsyncIterator[HostStarter]:
    """Start hosts on demand (restarts, several pods); every one is stopped at teardown."""
    hosts: list[PluginHost] = []

    async def start(env: dict[str, str]) -> PluginHost:
        host = PluginHost(keyval_manifests(), env=env, init_timeout=20)
        hosts.append(host)
        await host.start()
        assert host.ready, f"failed={host.failed} skipped={host.skipped}"
        return host

    yield start
    for host in reversed(hosts):
        await host.stop()


@pytest.fixture
async def host(start_host: HostStarter, local_env: dict[str, str]) -> PluginHost:
    return await start_host(local_env)


@pytest.fixture
def kv(host: PluginHost) -> Kv:
    provided = host.get_plugin(KEYVAL_PLUGIN_NAME)
    assert isinstance(provided, Kv)
    return provided


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]], host: PluginHost
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(mount(host))


@pytest.fixture
def replica_env(tmp_path: Path, sync_server: SyncEndpoint) -> Callable[[str], dict[str, str]]:
    """``replica_env("a")``: the env of one pod with its own replica file; sync only when asked."""

    def make(pod: str) -> dict[str, str]:
        return {
            "TURSO_SYNC_URL": sync_server.url,
            "TURSO_LOCAL_PATH": str(tmp_path / pod / "runtime.db"),
            "TURSO_SYNC_INTERVAL": "0",
            "KEYVAL_SWEEP_INTERVAL": "0",
            "KEYVAL_QUEUE_CLEANUP_INTERVAL": "0",
        }

    return make
