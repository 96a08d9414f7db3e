"""The runtime's worker token is owned: a worker-* database its first request creates is the runtime's.

A real kube-apiserver (``tests/support/controlplane``) gets the runtime's Secret from
``Reconciler.ensure_runtime_credentials``, and a real turso-server mints its tokens. The token read
back from that Secret opens a database only the ``worker-*`` prefix names: it is created explicit,
locked and owned by ``runtime:<release namespace>``, and survives a GC pass with a tiny
``TURSO_AUTO_IDLE_DURATION`` with its rows. Before, it was ``auto`` with no owner, archived once
idle, and the worker's next open started an empty database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import kubectl
from tests.support.tursoserver import TursoServer
from turso_operator import AdminClient
from turso_operator._builders import runtime_secret_body, scope_hash
from turso_operator._config import OperatorConfig
from turso_operator._constants import SecretKey
from turso_operator._kube import KubeClient
from turso_operator._reconcile import Reconciler

pytestmark = pytest.mark.cluster

RELEASE_NAMESPACE = "buntime-system"
SECRET = "buntime-runtime-turso"
RUNTIME_OWNER = f"runtime:{RELEASE_NAMESPACE}"


@pytest.fixture(scope="module")
def api() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        kubectl(cp, "create", "namespace", RELEASE_NAMESPACE)
        yield cp


def _view(server: TursoServer, database: str) -> tuple[int, Any]:
    return server.admin("GET", f"/v1/namespaces/{database}")


def _config(server: TursoServer, secret: str) -> OperatorConfig:
    return OperatorConfig.from_env(
        {
            "TURSO_SERVER_URL": server.url,
            "TURSO_SERVER_ADMIN_URL": server.admin_url,
            "TURSO_SERVER_ADMIN_TOKEN": server.admin_token,
            "TURSO_SERVER_TOKEN": server.data_token,
            "TURSO_RUNTIME_SECRET": secret,
            "TURSO_RUNTIME_NAMESPACES": "runtime,keyval",
            "TURSO_RUNTIME_WORKER_NAMESPACES": "worker-*",
            "POD_NAMESPACE": RELEASE_NAMESPACE,
        }
    )


async def _ensure_credentials(api: ControlPlane, server: TursoServer, secret: str) -> tuple[bool, str]:
    """One pass of the runtime-credentials step; whether it wrote the Secret, and its worker token."""
    kube = KubeClient(kopf.ConnectionInfo(server=api.url, token=api.token, insecure=True))
    admin = AdminClient(server.admin_url, server.admin_token)
    try:
        wrote = await Reconciler(_config(server, secret), admin, kube).ensure_runtime_credentials()
    finally:
        await admin.aclose()
        await kube.aclose()
    found = json.loads(kubectl(api, "get", "secret", secret, "-n", RELEASE_NAMESPACE, "-o", "json"))
    return wrote, base64.b64decode(found["data"][SecretKey.RUNTIME_SERVER_TOKEN]).decode()


async def test_a_worker_database_the_runtime_token_creates_is_the_runtimes_and_outlives_the_gc(
    api: ControlPlane, tmp_path: Path
) -> None:
    env = {"TURSO_GC_INTERVAL": "500ms", "TURSO_AUTO_IDLE_DURATION": "2s"}
    with TursoServer(tmp_path / "data", extra_env=env) as server:
        wrote, workers = await _ensure_credentials(api, server, SECRET)
        assert wrote is True
        assert _view(server, "worker-orders")[0] == 404, "a prefix names no database ahead"

        await asyncio.to_thread(
            server.fresh_replica,
            workers,
            "worker-orders",
            "CREATE TABLE o(v TEXT)",
            "INSERT INTO o VALUES ('kept')",
        )
        status, found = _view(server, "worker-orders")
        assert status == 200
        assert (found["origin"], found["locked"], found["owner"]) == ("explicit", True, RUNTIME_OWNER)

        # A bystander auto database idles out meanwhile: the GC ran past the idle limit.
        await asyncio.to_thread(server.fresh_replica, server.data_token, "bystander", "CREATE TABLE b(v)")
        deadline = time.monotonic() + 15
        while _view(server, "bystander")[0] != 404:
            assert time.monotonic() < deadline, "the GC never archived the idle auto database"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # more sweeps: worker-orders was idle longer still
        rows = await asyncio.to_thread(server.fresh_replica, workers, "worker-orders", "SELECT v FROM o")
        assert rows == [{"v": "kept"}]


async def test_a_secret_an_earlier_operator_minted_without_the_owner_is_minted_again(
    api: ControlPlane, tmp_path: Path
) -> None:
    """Its scope annotation matched, so it was kept, and its workers' databases still idled out."""
    secret = "runtime-turso-from-before"
    with TursoServer(tmp_path / "data") as server:
        status, minted = server.admin("POST", "/v1/tokens", {"namespaces": ["worker-*"]})
        assert status == 201
        plugins = server.admin("POST", "/v1/tokens", {"namespaces": ["runtime", "keyval"]})[1]["token"]
        earlier = {SecretKey.SERVER_TOKEN: plugins, SecretKey.RUNTIME_SERVER_TOKEN: minted["token"]}
        body = runtime_secret_body(
            secret, RELEASE_NAMESPACE, earlier, scope_hash(["runtime", "keyval"], ["worker-*"])
        )
        kubectl(api, "apply", "-f", "-", input=json.dumps(body))

        wrote, workers = await _ensure_credentials(api, server, secret)
        assert wrote is True and workers != minted["token"]
        await asyncio.to_thread(server.fresh_replica, workers, "worker-new", "SELECT 1")
        status, found = _view(server, "worker-new")
        assert (found["origin"], found["locked"], found["owner"]) == ("explicit", True, RUNTIME_OWNER)
        again, same = await _ensure_credentials(api, server, secret)
        assert (again, same) == (False, workers), "minted once: the next pass keeps it"
