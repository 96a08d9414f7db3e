"""Who gets a database: turso-server's recorded owner, and never the global data token by accident.

Each test runs operators of its own, watching only its namespaces (the module-wide operator of
``test_operator`` is gone by then), against a real turso-server: one that records the first claim,
and one started without a signing key, which mints no scoped tokens.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kopfcontext import kopf_events
from tests.support.operator import OperatorProcess, apply_tns, condition, get_tns, wait_for, wait_ready
from tests.support.tursoserver import TursoServer, post_status
from turso_operator import AdminClient, desired_namespace
from turso_operator._admin import MintedToken
from turso_operator._config import OperatorConfig
from turso_operator._kube import KubeClient
from turso_operator._reconcile import Reconciler

pytestmark = pytest.mark.cluster


def namespace(cp: ControlPlane, name: str) -> str:
    status, body = cp.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name


def secret(cp: ControlPlane, namespace: str, name: str) -> dict[str, str] | None:
    status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    if status != 200:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}


def ready_reason(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: (o := get_tns(cp, namespace, name)) and condition(o, "Ready").get("reason") and o)


def pulls(turso: TursoServer, database: str, token: str) -> int:
    return post_status(f"{turso.url}/{database}/pull-updates", token, b"")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TursoServer]:
    with TursoServer(tmp_path / "turso") as running:
        yield running


@pytest.fixture
def unsigned_server(tmp_path: Path) -> Iterator[TursoServer]:
    with TursoServer(tmp_path / "plain", extra_env={"TURSO_TOKEN_SIGNING_KEY": ""}) as running:
        yield running


def test_a_later_claim_never_takes_the_database_from_the_earlier_one(
    crd: ControlPlane, server: TursoServer, tmp_path: Path
) -> None:
    # An older TursoNamespace the operator does not see yet (its namespace is not watched), and a
    # younger one in a watched namespace that gets the database, its token and Ready.
    base = f"t-{uuid.uuid4().hex[:8]}"
    older_ns, younger_ns = namespace(crd, f"{base}-a"), namespace(crd, f"{base}-b")
    apply_tns(crd, older_ns, "ledger")
    time.sleep(1.1)  # creationTimestamp has one-second resolution: the other is strictly younger
    apply_tns(crd, younger_ns, "ledger")
    first = OperatorProcess(crd, server, tmp_path / "op1", TURSO_WATCH_NAMESPACES=younger_ns).start()
    try:
        wait_ready(crd, younger_ns, "ledger")
    finally:
        first.stop()
    held = secret(crd, younger_ns, "ledger-turso")
    assert held is not None and pulls(server, "ledger", held["TURSO_SERVER_TOKEN"]) == 200

    # Now the operator watches both (a config change, or a second watch stream catching up): the
    # older claim arrives after the mint and must not win the database.
    both = OperatorProcess(crd, server, tmp_path / "op2", TURSO_WATCH_NAMESPACES=f"{older_ns},{younger_ns}")
    both.start()
    try:
        ready = condition(ready_reason(crd, older_ns, "ledger"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "DatabaseConflict"), both.tail()
        assert repr(younger_ns) in ready["message"]
        time.sleep(5)  # two drift passes (TURSO_RESYNC_SECONDS=2) later, still the same
        assert condition(get_tns(crd, older_ns, "ledger"), "Ready")["reason"] == "DatabaseConflict"
        assert condition(get_tns(crd, younger_ns, "ledger"), "Ready")["status"] == "True"
        assert pulls(server, "ledger", held["TURSO_SERVER_TOKEN"]) == 200, "its token was not revoked"
        assert secret(crd, younger_ns, "ledger-turso") == held
        assert secret(crd, older_ns, "ledger-turso") is None
        _, view = server.admin("GET", "/v1/namespaces/ledger")
        assert view["owner"] == younger_ns
    finally:
        both.stop()


def test_a_server_that_cannot_mint_leaves_ready_false_and_never_the_global_token(
    crd: ControlPlane, unsigned_server: TursoServer, tmp_path: Path
) -> None:
    ns = namespace(crd, f"t-{uuid.uuid4().hex[:10]}")
    operator = OperatorProcess(crd, unsigned_server, tmp_path / "op", TURSO_WATCH_NAMESPACES=ns).start()
    try:
        apply_tns(crd, ns, "orders")
        ready = condition(ready_reason(crd, ns, "orders"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ServerRejected"), operator.tail()
        assert "mints no scoped token" in ready["message"]
        time.sleep(3)  # a drift pass later, still nothing handed out
        assert condition(get_tns(crd, ns, "orders"), "Ready")["status"] == "False"
        assert secret(crd, ns, "orders-turso") is None
        _, events = crd.request("GET", f"/api/v1/namespaces/{ns}/events")
        assert any(e["type"] == "Warning" and e["reason"] == "ServerRejected" for e in events["items"])
    finally:
        operator.stop()
    assert unsigned_server.data_token not in operator.log.read_text(errors="replace")

    # Given the shared token explicitly (the chart's scopedTokens=false), it writes it, and says so.
    shared = OperatorProcess(
        crd,
        unsigned_server,
        tmp_path / "op-shared",
        TURSO_WATCH_NAMESPACES=ns,
        TURSO_SERVER_TOKEN=unsigned_server.data_token,
    ).start()
    try:
        wait_ready(crd, ns, "orders")
        written = secret(crd, ns, "orders-turso")
        assert written is not None and written["TURSO_SERVER_TOKEN"] == unsigned_server.data_token
        _, events = crd.request("GET", f"/api/v1/namespaces/{ns}/events")
        assert any(e["type"] == "Warning" and e["reason"] == "SharedToken" for e in events["items"])
    finally:
        shared.stop()


class _RacedAdmin(AdminClient):
    """The operator's own admin client, with a real delete and another owner's create of the
    database run on the server between the create that checked it and the mint (the race)."""

    async def mint_token(self, name: str, access: str, **preconditions: Any) -> MintedToken | None:
        assert await self.delete(name)
        await asyncio.sleep(1.1)  # createdAt has whole seconds: the new database's differs
        await self.create(name, owner="intruder")
        return await super().mint_token(name, access, **preconditions)


async def test_a_database_created_again_for_another_owner_between_check_and_mint_gets_no_token(
    crd: ControlPlane, server: TursoServer
) -> None:
    ns = namespace(crd, f"t-{uuid.uuid4().hex[:10]}")
    body = kopf.Body(
        {
            "apiVersion": "turso.buntime.io/v1alpha1",
            "kind": "TursoNamespace",
            "metadata": {"name": "raced", "namespace": ns, "uid": f"uid-{ns}", "generation": 1},
            "spec": {},
        }
    )
    config = OperatorConfig.from_env(
        {
            "TURSO_SERVER_URL": server.url,
            "TURSO_SERVER_ADMIN_URL": server.admin_url,
            "TURSO_SERVER_ADMIN_TOKEN": server.admin_token,
        }
    )
    kube = KubeClient(kopf.ConnectionInfo(server=crd.url, token=crd.token, insecure=True))
    admin = _RacedAdmin(server.admin_url, server.admin_token)
    desired = desired_namespace(body.spec, body.meta)
    patch = kopf.Patch()
    try:
        with kopf_events(), pytest.raises(kopf.TemporaryError):
            await Reconciler(config, admin, kube).reconcile(desired, body, patch, drift=False)
    finally:
        await admin.aclose()
        await kube.aclose()
    assert patch.status["phaseReason"] == "DatabaseConflict", patch.status
    _, view = server.admin("GET", f"/v1/namespaces/{desired.database}")
    assert view["owner"] == "intruder" and view["tokenGeneration"] == 0, "nothing minted, nothing revoked"
    assert secret(crd, ns, desired.secret_name) is None
