"""TURSO_TOKEN_LIFETIME: minted data tokens expire, and are renewed without revoking the old one.

The reconciler runs against a real kube-apiserver (``tests/support/controlplane``: the CRD applied,
the TursoNamespace's status written through its status subresource and read back, as kopf does,
so the CRD's schema must keep the new fields) and a real turso-server, whose data port answers a
real ``/v2/pipeline`` ``SELECT 1`` with each token. A token "near expiry" is made by editing the
expiry recorded in status (``credentialsExpiresAt``, or the runtime Secret's annotation): what the
renewal reads, so the real renewal path runs without waiting for an hour-long token.
"""

from __future__ import annotations

import base64
import datetime
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kopf
import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kopfcontext import drained_reasons, kopf_events
from tests.support.operator import API, apply_tns, get_tns
from tests.support.tursoserver import TursoServer
from turso_operator import AdminClient, desired_namespace
from turso_operator._config import OperatorConfig
from turso_operator._constants import EXPIRES_ANNOTATION, Reason, SecretKey
from turso_operator._handlers import MEMO_STATE, close_clients, configure, operator_memo, repair_drift
from turso_operator._kube import KubeClient
from turso_operator._reconcile import Reconciler

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    with TursoServer(tmp_path_factory.mktemp("lifetime") / "data") as running:
        yield running


@pytest.fixture
def namespace(api: ControlPlane) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    status, body = api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name


@pytest.fixture
async def kube(api: ControlPlane) -> AsyncIterator[KubeClient]:
    client = KubeClient(kopf.ConnectionInfo(server=api.url, token=api.token, ca_path=str(api.ca_file)))
    try:
        yield client
    finally:
        await client.aclose()


def config(server: TursoServer, **env: str) -> OperatorConfig:
    return OperatorConfig.from_env(
        {
            "TURSO_SERVER_URL": server.url,
            "TURSO_SERVER_ADMIN_URL": server.admin_url,
            "TURSO_SERVER_ADMIN_TOKEN": server.admin_token,
            **env,
        }
    )


async def reconcile(
    api: ControlPlane, server: TursoServer, kube: KubeClient, namespace: str, lifetime: str, *, drift: bool
) -> tuple[dict[str, Any], list[str]]:
    """One reconcile of TursoNamespace ``orders`` as read from the API server; its status is
    written back through the status subresource. Returns the stored status and the events."""
    obj = get_tns(api, namespace, "orders")
    assert obj is not None
    body, patch = kopf.Body(obj), kopf.Patch()
    admin = AdminClient(server.admin_url, server.admin_token)
    reconciler = Reconciler(config(server, TURSO_TOKEN_LIFETIME=lifetime), admin, kube)
    try:
        with kopf_events() as events:
            await reconciler.reconcile(desired_namespace(body.spec, body.meta), body, patch, drift=drift)
            reasons = drained_reasons(events)
    finally:
        await admin.aclose()
    write_status(api, namespace, dict(patch["status"]))
    stored = get_tns(api, namespace, "orders")
    assert stored is not None
    return dict(stored["status"]), reasons


def write_status(api: ControlPlane, namespace: str, status: dict[str, Any]) -> None:
    code, body = api.request(
        "PATCH",
        f"{API}/namespaces/{namespace}/tursonamespaces/orders/status",
        {"status": json.loads(json.dumps(status))},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body


class Token(str):
    """A token that a failed assertion never prints."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<token>"


def secret_token(api: ControlPlane, namespace: str, name: str, key: str = SecretKey.SERVER_TOKEN) -> Token:
    code, body = api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    assert code == 200, "cannot read the Secret"
    return Token(base64.b64decode(body["data"][key]).decode())


def select_one(server: TursoServer, database: str, token: str) -> int:
    """The status of a real data request: ``SELECT 1`` through ``/v2/pipeline``."""
    stmt: dict[str, Any] = {
        "sql": "SELECT 1",
        "sql_id": None,
        "args": [],
        "named_args": [],
        "want_rows": True,
    }
    steps = [{"condition": None, "stmt": stmt}]
    payload = {"baton": None, "requests": [{"type": "batch", "batch": {"steps": steps}}]}
    request = urllib.request.Request(
        f"{server.url}/{database}/v2/pipeline",
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert b'"rows":[[' in reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


def expires_in(text: str) -> float:
    """Seconds from now until the RFC 3339 timestamp ``text``."""
    expiry = datetime.datetime.fromisoformat(text)
    return (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()


def soon(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_token_near_its_expiry_is_renewed_without_revoking_and_a_normal_re_mint_still_revokes(
    api: ControlPlane, server: TursoServer, kube: KubeClient, namespace: str
) -> None:
    apply_tns(api, namespace, "orders", database=f"life-{namespace}")
    database = f"life-{namespace}"
    status, _ = await reconcile(api, server, kube, namespace, "1h", drift=False)
    first = secret_token(api, namespace, "orders-turso")
    # turso-server's expiresAt, kept by the CRD next to what the token was minted for.
    assert 3500 < expires_in(status["credentialsExpiresAt"]) <= 3600
    assert status["credentialsFor"]["tokenLifetime"] == "1h"
    assert select_one(server, database, first) == 200
    assert first not in json.dumps(status)

    # Nothing due: the next drift pass keeps the token and its expiry.
    again, _ = await reconcile(api, server, kube, namespace, "1h", drift=True)
    assert secret_token(api, namespace, "orders-turso") == first
    assert again["credentialsExpiresAt"] == status["credentialsExpiresAt"]

    # Less than a third of the lifetime left (19 of 60 minutes): the drift pass renews it.
    write_status(api, namespace, {"credentialsExpiresAt": soon(19 * 60)})
    renewed, reasons = await reconcile(api, server, kube, namespace, "1h", drift=True)
    second = secret_token(api, namespace, "orders-turso")
    assert second != first and Reason.SECRET_WRITTEN in reasons
    assert 3500 < expires_in(renewed["credentialsExpiresAt"]) <= 3600
    assert renewed["credentialsFor"] == status["credentialsFor"], "same generation: nothing revoked"
    # Pods still holding the old file keep working until the kubelet refreshes it.
    assert select_one(server, database, first) == 200
    assert select_one(server, database, second) == 200

    # An edited Secret is re-minted as before: every earlier token is revoked.
    code, body = api.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/secrets/orders-turso",
        {"stringData": {SecretKey.SERVER_TOKEN: "edited"}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    await reconcile(api, server, kube, namespace, "1h", drift=True)
    third = secret_token(api, namespace, "orders-turso")
    assert third not in (first, second, "edited")
    assert select_one(server, database, third) == 200
    assert select_one(server, database, first) == 401
    assert select_one(server, database, second) == 401


async def test_changing_the_lifetime_mints_again_and_zero_is_a_token_that_never_expires(
    api: ControlPlane, server: TursoServer, kube: KubeClient, namespace: str
) -> None:
    apply_tns(api, namespace, "orders", database=f"switch-{namespace}")
    status, _ = await reconcile(api, server, kube, namespace, "0", drift=False)
    never = secret_token(api, namespace, "orders-turso")
    assert status.get("credentialsExpiresAt") is None and "tokenLifetime" not in status["credentialsFor"]

    status, _ = await reconcile(api, server, kube, namespace, "2h", drift=True)
    expiring = secret_token(api, namespace, "orders-turso")
    assert expiring != never and 7100 < expires_in(status["credentialsExpiresAt"]) <= 7200
    # One that never expires would defeat the lifetime: it is revoked like any re-mint.
    assert select_one(server, f"switch-{namespace}", never) == 401

    status, _ = await reconcile(api, server, kube, namespace, "0", drift=True)
    back = secret_token(api, namespace, "orders-turso")
    assert back != expiring
    assert status.get("credentialsExpiresAt") is None and "tokenLifetime" not in status["credentialsFor"]
    # Settled: the next pass mints nothing (status kept no stale lifetime to differ from).
    await reconcile(api, server, kube, namespace, "0", drift=True)
    assert secret_token(api, namespace, "orders-turso") == back


async def test_the_runtime_secrets_tokens_expire_and_are_renewed_near_their_expiry(
    server: TursoServer, kube: KubeClient, namespace: str, api: ControlPlane
) -> None:
    cfg = config(
        server,
        TURSO_TOKEN_LIFETIME="1h",
        TURSO_RUNTIME_SECRET="runtime-turso",
        TURSO_RUNTIME_NAMESPACES=f"rt-{namespace}",
        TURSO_RUNTIME_WORKER_NAMESPACES=f"wk-{namespace}",
        POD_NAMESPACE=namespace,
    )
    admin = AdminClient(server.admin_url, server.admin_token)
    reconciler = Reconciler(cfg, admin, kube)
    path = f"/api/v1/namespaces/{namespace}/secrets/runtime-turso"
    try:
        assert await reconciler.ensure_runtime_credentials()
        code, secret = api.request("GET", path)
        assert code == 200, secret
        expiry = secret["metadata"]["annotations"][EXPIRES_ANNOTATION]
        assert 3500 < expires_in(expiry) <= 3600
        old = {
            key: secret_token(api, namespace, "runtime-turso", key)
            for key in (SecretKey.SERVER_TOKEN, SecretKey.RUNTIME_SERVER_TOKEN)
        }
        assert not await reconciler.ensure_runtime_credentials(), "not due yet: left alone"

        code, body = api.request(
            "PATCH",
            path,
            {"metadata": {"annotations": {EXPIRES_ANNOTATION: soon(10 * 60)}}},
            content_type="application/merge-patch+json",
        )
        assert code == 200, body
        assert await reconciler.ensure_runtime_credentials()
    finally:
        await admin.aclose()
    code, secret = api.request("GET", path)
    assert 3500 < expires_in(secret["metadata"]["annotations"][EXPIRES_ANNOTATION]) <= 3600
    for key, database in (
        (SecretKey.SERVER_TOKEN, f"rt-{namespace}"),
        (SecretKey.RUNTIME_SERVER_TOKEN, f"wk-{namespace}"),
    ):
        new = secret_token(api, namespace, "runtime-turso", key)
        assert new != old[key]
        assert select_one(server, database, old[key]) == 200, "the old token works until it expires"
        assert select_one(server, database, new) == 200

    # Another lifetime (or none) is another scope hash: minted again on the next pass.
    for lifetime, expiring in (("2h", True), ("0", False)):
        other = Reconciler(
            config(
                server,
                TURSO_TOKEN_LIFETIME=lifetime,
                TURSO_RUNTIME_SECRET="runtime-turso",
                TURSO_RUNTIME_NAMESPACES=f"rt-{namespace}",
                TURSO_RUNTIME_WORKER_NAMESPACES=f"wk-{namespace}",
                POD_NAMESPACE=namespace,
            ),
            AdminClient(server.admin_url, server.admin_token),
            kube,
        )
        try:
            assert await other.ensure_runtime_credentials()
            assert not await other.ensure_runtime_credentials()
        finally:
            await other.admin.aclose()
        code, secret = api.request("GET", path)
        assert (EXPIRES_ANNOTATION in secret["metadata"]["annotations"]) is expiring


async def test_the_drift_loop_renews_a_token_near_its_expiry_and_writes_the_status_itself(
    api: ControlPlane, server: TursoServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``repair_drift``, what the loop runs every resync period, with the operator's own clients
    (logged in from a kubeconfig of the real API server) and its own status patch."""
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    database = f"drift-{namespace}"
    apply_tns(api, namespace, "orders", database=database)
    memo = operator_memo(config(server, TURSO_TOKEN_LIFETIME="1h", TURSO_WEBHOOK_ENABLED="false"))
    await configure(settings=kopf.OperatorSettings(), memo=memo)
    state = memo[MEMO_STATE]
    try:
        with kopf_events():
            stored = get_tns(api, namespace, "orders")
            assert stored is not None
            await repair_drift(state, stored, {})
            first = secret_token(api, namespace, "orders-turso")
            stored = get_tns(api, namespace, "orders")
            assert stored is not None and 3500 < expires_in(stored["status"]["credentialsExpiresAt"]) <= 3600

            write_status(api, namespace, {"credentialsExpiresAt": soon(60)})
            stored = get_tns(api, namespace, "orders")
            assert stored is not None
            await repair_drift(state, stored, {})
    finally:
        await close_clients(memo=memo)
    second = secret_token(api, namespace, "orders-turso")
    stored = get_tns(api, namespace, "orders")
    assert stored is not None and 3500 < expires_in(stored["status"]["credentialsExpiresAt"]) <= 3600
    assert second != first
    assert select_one(server, database, first) == 200, "renewed, not revoked"
    assert select_one(server, database, second) == 200
