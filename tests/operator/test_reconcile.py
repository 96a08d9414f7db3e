"""Reconcile steps against a real turso-server and a Kubernetes API that cannot be reached.

The admin client talks to a real turso-server (the database is created for real); the operator's
own Kubernetes client points at a port nobody listens on, or at a listener that accepts and never
answers, so the failure is aiohttp's own — exactly what a network failure to the API server
raises. kopf's event queue is a real one, read back instead of posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest

from buntime.turso import TursoUnavailableError
from tests.support.kopfcontext import drained_reasons, kopf_events
from tests.support.ports import free_port
from tests.support.tursoserver import TursoServer
from turso_operator import AdminClient, KubeUnavailableError, OperatorError, desired_namespace
from turso_operator._backoff import backoff_delay
from turso_operator._config import OperatorConfig
from turso_operator._constants import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_MAX_SECONDS,
    ConditionType,
    Phase,
    Reason,
)
from turso_operator._errors import DatabaseNotOwnedError
from turso_operator._kube import KubeClient
from turso_operator._reconcile import Reconciler


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    with TursoServer(tmp_path_factory.mktemp("reconcile") / "data") as running:
        yield running


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never says a word (TLS handshake included)."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def tns_body(name: str) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "turso.buntime.io/v1alpha1",
            "kind": "TursoNamespace",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1},
            "spec": {},
        }
    )


def config(server: TursoServer, **overrides: str) -> OperatorConfig:
    env = {
        "TURSO_SERVER_URL": server.url,
        "TURSO_SERVER_ADMIN_URL": server.admin_url,
        "TURSO_SERVER_ADMIN_TOKEN": server.admin_token,
        "TURSO_SERVER_TOKEN": server.data_token,
        **overrides,
    }
    return OperatorConfig.from_env(env)


def conditions(patch: kopf.Patch) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in patch.status["conditions"]}


@pytest.mark.parametrize("api", ["refused", "silent"])
async def test_a_network_failure_to_the_api_server_is_secret_failed(server: TursoServer, api: str) -> None:
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_listener()) if api == "silent" else free_port()
        info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{port}", insecure=True, token="t")
        kube = KubeClient(info, timeout=0.5)
        admin = AdminClient(server.admin_url, server.admin_token, timeout=10)
        reconciler = Reconciler(config(server), admin, kube)
        body, patch = tns_body(f"net-{api}"), kopf.Patch()
        desired = desired_namespace(body.spec, body.meta)
        try:
            with kopf_events() as events, pytest.raises(kopf.TemporaryError) as raised:
                await reconciler.reconcile(desired, body, patch, drift=False)
        finally:
            await admin.aclose()
            await kube.aclose()
    # The operator's own error, chained to aiohttp's (or the timeout), never aiohttp's bare.
    cause = raised.value.__cause__
    assert isinstance(cause, KubeUnavailableError) and isinstance(cause, OperatorError | ConnectionError)
    assert isinstance(cause.__cause__, aiohttp.ClientError | TimeoutError), repr(cause.__cause__)
    assert raised.value.delay is not None and raised.value.delay <= BACKOFF_INITIAL_SECONDS
    status = patch.status
    assert (status["phase"], status["phaseReason"]) == (Phase.PENDING, Reason.SECRET_FAILED)
    found = conditions(patch)
    assert found[ConditionType.PROVISIONED]["status"] == "True", "the database was created for real"
    for type_ in (ConditionType.CREDENTIALS_READY, ConditionType.READY):
        assert (found[type_]["status"], found[type_]["reason"]) == ("False", Reason.SECRET_FAILED)
        assert "unreachable" in found[type_]["message"]
    assert Reason.SECRET_FAILED in drained_reasons(events)


async def test_an_unreachable_server_backs_off_exponentially_with_jitter(server: TursoServer) -> None:
    """``ServerUnavailable`` retries wait longer the more often they failed, capped, never equal."""
    info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{free_port()}", insecure=True)
    kube = KubeClient(info, timeout=0.5)
    admin = AdminClient(f"http://127.0.0.1:{free_port()}", "t", timeout=1)
    reconciler = Reconciler(config(server, TURSO_RESYNC_SECONDS="1h"), admin, kube)
    body = tns_body("down")
    desired = desired_namespace(body.spec, body.meta)
    delays: dict[int, list[float]] = {}
    try:
        with kopf_events():
            for attempt in (0, 1, 2, 3, 30):
                for _ in range(3):
                    patch = kopf.Patch()
                    with pytest.raises(kopf.TemporaryError) as raised:
                        await reconciler.reconcile(desired, body, patch, drift=False, attempt=attempt)
                    assert patch.status["phaseReason"] == Reason.SERVER_UNAVAILABLE
                    assert raised.value.delay is not None
                    delays.setdefault(attempt, []).append(raised.value.delay)
    finally:
        await admin.aclose()
        await kube.aclose()
    for attempt, seen in delays.items():
        step = min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2**attempt)
        assert all(step / 2 <= d <= step for d in seen), (attempt, seen)
    assert max(delays[0]) < min(delays[3]) and max(delays[3]) <= 8
    assert min(delays[30]) >= BACKOFF_MAX_SECONDS / 2 and max(delays[30]) <= BACKOFF_MAX_SECONDS
    assert len({*delays[30]}) > 1, "jittered, so many objects do not retry in step"


async def test_the_resync_period_caps_the_backoff(server: TursoServer) -> None:
    info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{free_port()}", insecure=True)
    kube = KubeClient(info)
    admin = AdminClient(server.admin_url, server.admin_token)
    try:
        reconciler = Reconciler(config(server, TURSO_RESYNC_SECONDS="4"), admin, kube)
        assert all(2 <= reconciler.retry_delay(20) <= 4 for _ in range(50))
    finally:
        await admin.aclose()
        await kube.aclose()


def test_backoff_steps_double_up_to_the_cap() -> None:
    top = [backoff_delay(n, initial=1, cap=60, rand=lambda: 0.999999) for n in range(10)]
    bottom = [backoff_delay(n, initial=1, cap=60, rand=lambda: 0.0) for n in range(10)]
    assert [round(t) for t in top] == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert bottom == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert backoff_delay(10_000, initial=1, cap=60, rand=lambda: 0.5) == 45
    assert backoff_delay(-3, initial=2, cap=60, rand=lambda: 0.0) == 1
    assert backoff_delay(5, initial=10, cap=1, rand=lambda: 0.0) == 5, "a cap below initial is initial"


# --- the runtime's databases ---------------------------------------------------------------------

RUNTIME_OWNER = "runtime:buntime-system"


def runtime_config(server: TursoServer) -> OperatorConfig:
    return config(
        server,
        TURSO_RUNTIME_SECRET="buntime-runtime-turso",
        TURSO_RUNTIME_NAMESPACES="runtime,keyval",
        TURSO_RUNTIME_WORKER_NAMESPACES="worker-*,orders",
        POD_NAMESPACE="buntime-system",
    )


async def fresh_open(server: TursoServer, token: str, database: str, *statements: str) -> list[Any]:
    """:meth:`TursoServer.fresh_replica` off the event loop."""
    return await asyncio.to_thread(server.fresh_replica, token, database, *statements)


def view(server: TursoServer, database: str) -> dict[str, Any]:
    status, body = server.admin("GET", f"/v1/namespaces/{database}")
    assert status == 200, (database, body)
    return dict(body)


@contextlib.asynccontextmanager
async def runtime_reconciler(server: TursoServer) -> AsyncIterator[Reconciler]:
    """A reconciler with the chart's runtime settings; its Kubernetes API is unreachable, so the
    runtime-credentials step stops at the Secret: what it did before is on turso-server."""
    info = kopf.ConnectionInfo(server=f"https://127.0.0.1:{free_port()}", insecure=True, token="t")
    kube = KubeClient(info, timeout=0.5)
    admin = AdminClient(server.admin_url, server.admin_token)
    try:
        yield Reconciler(runtime_config(server), admin, kube)
    finally:
        await admin.aclose()
        await kube.aclose()


async def test_the_runtime_databases_are_explicit_before_a_token_and_outlive_the_idle_archive(
    tmp_path: Path,
) -> None:
    """Auto-provisioned by the runtime's first write, they were archived once idle past
    TURSO_AUTO_IDLE_DURATION, and the next open started an empty database ("no such table")."""
    env = {"TURSO_GC_INTERVAL": "1s", "TURSO_AUTO_IDLE_DURATION": "3s"}
    with TursoServer(tmp_path / "data", extra_env=env) as server:
        # An earlier runtime's keyval: auto-provisioned by its first write, with a row in it.
        await fresh_open(
            server, server.data_token, "keyval", "CREATE TABLE kv(k TEXT)", "INSERT INTO kv VALUES ('a')"
        )
        assert view(server, "keyval")["origin"] == "auto"
        async with runtime_reconciler(server) as reconciler:
            with pytest.raises(KubeUnavailableError):
                await reconciler.ensure_runtime_credentials()  # databases first, then the Secret
            views = {name: view(server, name) for name in ("runtime", "keyval", "orders")}
            for name, found in views.items():
                assert (found["origin"], found["locked"], found["owner"]) == (
                    "explicit",
                    True,
                    RUNTIME_OWNER,
                ), name
            listed = {n["name"] for n in server.admin("GET", "/v1/namespaces")[1]["namespaces"]}
            assert listed == {"runtime", "keyval", "orders"}, "a prefix (worker-*) names no database"
            again = await reconciler.ensure_runtime_databases()  # every pass: idempotent
            assert [v.created_at for v in again] == [
                views[n]["createdAt"] for n in ("runtime", "keyval", "orders")
            ]
            token = await reconciler.admin.mint_scope_token(["runtime", "keyval"], "rw")
        assert token is not None
        assert await fresh_open(server, token, "keyval", "SELECT k FROM kv") == [{"k": "a"}], (
            "adopted, rows kept"
        )
        await fresh_open(server, token, "runtime", "CREATE TABLE t(v INTEGER)", "INSERT INTO t VALUES (7)")
        # A bystander auto database idles out: the GC ran past the idle limit meanwhile.
        await fresh_open(server, server.data_token, "bystander", "CREATE TABLE b(v)")
        deadline = time.monotonic() + 15
        while server.admin("GET", "/v1/namespaces/bystander")[0] != 404:
            assert time.monotonic() < deadline, "the GC never archived the idle auto database"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # one more sweep: the runtime's databases were idle longer still
        assert await fresh_open(server, token, "keyval", "SELECT k FROM kv") == [{"k": "a"}]
        assert await fresh_open(server, token, "runtime", "SELECT v FROM t") == [{"v": 7}]


async def test_with_auto_provisioning_off_the_runtime_still_opens_its_databases(tmp_path: Path) -> None:
    """Nothing created them before: the runtime's first open was 404 and it never became ready."""
    with TursoServer(tmp_path / "data", extra_env={"TURSO_ALLOW_AUTO_PROVISION": "false"}) as server:
        async with runtime_reconciler(server) as reconciler:
            with pytest.raises(KubeUnavailableError):
                await reconciler.ensure_runtime_credentials()
            plugins = await reconciler.admin.mint_scope_token(["runtime", "keyval"], "rw")
            workers = await reconciler.admin.mint_scope_token(["worker-*", "orders"], "rw")
        assert plugins is not None and workers is not None
        for token, database in ((plugins, "keyval"), (plugins, "runtime"), (workers, "orders")):
            assert await fresh_open(server, token, database, "SELECT 1 AS one") == [{"one": 1}], database
        # A database a prefix names is never created ahead: with auto-provisioning off it cannot open.
        with pytest.raises(TursoUnavailableError, match="namespace not found"):
            await fresh_open(server, workers, "worker-a", "SELECT 1")


async def test_a_runtime_database_another_owner_holds_is_refused_and_left_alone(tmp_path: Path) -> None:
    with TursoServer(tmp_path / "data") as server:
        status, created = server.admin("POST", "/v1/namespaces/keyval/create", {"owner": "shop"})
        assert status == 201
        async with runtime_reconciler(server) as reconciler:
            with pytest.raises(DatabaseNotOwnedError, match="POST /v1/namespaces/keyval/owner") as raised:
                await reconciler.ensure_runtime_credentials()
            assert raised.value.code == "owner mismatch"
            kept = view(server, "keyval")
            assert [kept["owner"], kept["createdAt"]] == ["shop", created["createdAt"]], "unchanged"
            # The admin's way out: hand it to the runtime; the next pass converges.
            server.admin("POST", "/v1/namespaces/keyval/owner", {"owner": RUNTIME_OWNER})
            with pytest.raises(KubeUnavailableError):
                await reconciler.ensure_runtime_credentials()
        assert view(server, "keyval")["owner"] == RUNTIME_OWNER
