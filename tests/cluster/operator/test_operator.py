"""The operator end to end: TursoNamespace → database on turso-server → Secret → pods.

The operator runs as ``buntime-operator`` subprocess against the real control plane and a real
turso-server; every assertion reads the API server, turso-server's admin API, or a real pyturso
replica opened with what the Secret says.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from turso.sync import connect as sync_connect

from tests.support.controlplane import ControlPlane
from tests.support.operator import API, OperatorProcess, apply_tns, condition, get_tns, wait_for, wait_ready
from tests.support.tursoserver import TursoServer, post_status

pytestmark = pytest.mark.cluster

SECRET_KEYS = {
    "TURSO_SERVER_URL",
    "TURSO_SERVER_TOKEN",
    "TURSO_NAMESPACE",
    "TURSO_DATABASE_URL",
    "RUNTIME_TURSO_SERVER_URL",
    "RUNTIME_TURSO_SERVER_TOKEN",
    "type",
    "provider",
    "uri",
}


def secret(cp: ControlPlane, namespace: str, name: str) -> dict[str, str] | None:
    status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    if status != 200:
        return None
    return {k: base64.b64decode(v).decode() for k, v in body["data"].items()}


def push_through(secret_data: dict[str, str], path: Path, *statements: str) -> None:
    """A real replica opened with a Secret's values runs ``statements``, commits and pushes."""
    conn = sync_connect(
        str(path), secret_data["TURSO_DATABASE_URL"], auth_token=secret_data["TURSO_SERVER_TOKEN"]
    )
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.push()
    finally:
        conn.close()


def admin_names(turso: TursoServer) -> set[str]:
    status, body = turso.admin("GET", "/v1/namespaces")
    assert status == 200, body
    items = body.get("namespaces", body) if isinstance(body, dict) else body
    return {item["name"] for item in items}


def test_apply_provisions_database_secret_and_ready(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str, tmp_path: Path
) -> None:
    apply_tns(crd, k8s_namespace, "billing", locked=True, ttl="30d")
    obj = wait_ready(crd, k8s_namespace, "billing")
    status = obj["status"]
    assert status["phase"] == "Ready" and status["database"] == "billing"
    assert status["databaseUrl"] == f"{turso.url}/billing" and status["secretName"] == "billing-turso"
    for type_ in ("Ready", "Provisioned", "CredentialsReady"):
        cond = condition(obj, type_)
        assert cond["status"] == "True" and cond["observedGeneration"] == obj["metadata"]["generation"]
    assert "billing" in admin_names(turso)
    _, view = turso.admin("GET", "/v1/namespaces/billing")
    assert view["locked"] is True and view["ttl"] == "30d"

    data = secret(crd, k8s_namespace, "billing-turso")
    assert data is not None and set(data) == SECRET_KEYS
    assert data["TURSO_NAMESPACE"] == "billing" and data["TURSO_DATABASE_URL"] == f"{turso.url}/billing"
    assert data["TURSO_SERVER_TOKEN"] == data["RUNTIME_TURSO_SERVER_TOKEN"]
    assert data["TURSO_SERVER_TOKEN"] not in (turso.admin_token, turso.data_token), "a scoped token is minted"
    assert turso.admin_token not in json.dumps(data)
    log_text = operator.log.read_text(errors="replace")
    for token in (data["TURSO_SERVER_TOKEN"], turso.admin_token, turso.data_token):
        assert token not in log_text, "tokens never reach the operator's log"
    _, raw_secret = crd.request("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets/billing-turso")
    assert raw_secret["metadata"]["ownerReferences"][0]["kind"] == "TursoNamespace"

    # A real replica opened with the Secret's values reads and writes.
    push_through(
        data, tmp_path / "app.db", "CREATE TABLE t(v TEXT)", "INSERT INTO t VALUES ('through the secret')"
    )
    other = sync_connect(
        str(tmp_path / "other.db"), data["TURSO_DATABASE_URL"], auth_token=data["TURSO_SERVER_TOKEN"]
    )
    assert other.execute("SELECT v FROM t").fetchall() == [("through the secret",)]
    other.close()

    events = kubectl_events(crd, k8s_namespace)
    assert any(e["reason"] == "SecretWritten" for e in events)


SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'


def data_status(turso: TursoServer, database: str, route: str, token: str) -> int:
    """The data port's answer to ``POST /<database><route>`` with ``token`` (a push for
    ``/v2/pipeline``, a pull for ``/pull-updates``)."""
    body = SELECT_ONE if route == "/v2/pipeline" else b""
    return post_status(f"{turso.url}/{database}{route}", token, body)


def provisioned_rw_token(crd: ControlPlane, turso: TursoServer, k8s_namespace: str, name: str) -> str:
    """Apply the TursoNamespace ``name`` (rw), wait until Ready; its Secret's token, which pushes."""
    apply_tns(crd, k8s_namespace, name)
    wait_ready(crd, k8s_namespace, name)
    before = secret(crd, k8s_namespace, f"{name}-turso")
    assert before is not None
    rw = before["TURSO_SERVER_TOKEN"]
    assert data_status(turso, name, "/v2/pipeline", rw) == 200
    return rw


def set_access(crd: ControlPlane, k8s_namespace: str, name: str, access: str) -> None:
    status, result = crd.request(
        "PATCH",
        f"{API}/namespaces/{k8s_namespace}/tursonamespaces/{name}",
        {"spec": {"access": access}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, result


def wait_new_token(crd: ControlPlane, k8s_namespace: str, name: str, old: str) -> dict[str, str]:
    """The Secret of ``name`` once its token is no longer ``old``."""
    after: dict[str, str] = wait_for(
        lambda: (s := secret(crd, k8s_namespace, f"{name}-turso")) and s["TURSO_SERVER_TOKEN"] != old and s,
        what="a new token in the Secret",
    )
    return after


def wait_minted_for(crd: ControlPlane, k8s_namespace: str, name: str, access: str) -> dict[str, Any]:
    """The TursoNamespace once its status says the Secret's token was minted for ``access``
    (and it is Ready)."""
    obj: dict[str, Any] = wait_for(
        lambda: (
            (o := get_tns(crd, k8s_namespace, name))
            and (o.get("status") or {}).get("credentialsFor", {}).get("access") == access
            and o
        )
    )
    assert condition(obj, "Ready")["status"] == "True"
    return obj


def test_changing_access_to_ro_mints_a_read_only_token_into_the_secret(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    rw = provisioned_rw_token(crd, turso, k8s_namespace, "downgrade")

    set_access(crd, k8s_namespace, "downgrade", "ro")
    after = wait_new_token(crd, k8s_namespace, "downgrade", rw)
    ro = after["TURSO_SERVER_TOKEN"]
    assert after["RUNTIME_TURSO_SERVER_TOKEN"] == ro
    assert data_status(turso, "downgrade", "/pull-updates", ro) == 200
    assert data_status(turso, "downgrade", "/v2/pipeline", ro) == 403, "the Secret's token can no longer push"
    # The rw token an app read before the downgrade is revoked: it can neither push nor pull.
    assert data_status(turso, "downgrade", "/v2/pipeline", rw) == 401, "the old rw token can no longer push"
    assert data_status(turso, "downgrade", "/pull-updates", rw) == 401
    obj = wait_minted_for(crd, k8s_namespace, "downgrade", "ro")
    _, view = turso.admin("GET", "/v1/namespaces/downgrade")
    assert obj["status"]["credentialsFor"] == {
        "database": "downgrade",
        "databaseCreatedAt": view["createdAt"],
        "tokenGeneration": view["tokenGeneration"],
        "access": "ro",
    }
    assert any(
        e["reason"] == "SecretWritten" and "minted again" in e["message"]
        for e in kubectl_events(crd, k8s_namespace)
    )
    log_text = operator.log.read_text(errors="replace")
    assert rw not in log_text and ro not in log_text


def test_a_token_minted_by_a_run_that_died_before_writing_the_secret_is_minted_again_and_revoked(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    rw = provisioned_rw_token(crd, turso, k8s_namespace, "crashy")

    # The operator dies after turso-server answered its revoking mint for access: ro, before the
    # Secret was written: the server's side of that run is replayed here, status and Secret are
    # as the run left them (rw).
    operator.stop(signal.SIGKILL)
    try:
        set_access(crd, k8s_namespace, "crashy", "ro")
        code, lost = turso.admin(
            "POST", "/v1/namespaces/crashy/tokens", {"access": "ro", "revokeOthers": True}
        )
        assert code == 201, lost
        assert data_status(turso, "crashy", "/pull-updates", rw) == 401, "the Secret's token is revoked"
    finally:
        operator.start()

    # The next run mints again (revoking the lost token too) and converges.
    after = wait_new_token(crd, k8s_namespace, "crashy", rw)
    ro = after["TURSO_SERVER_TOKEN"]
    assert ro != lost["token"]
    assert data_status(turso, "crashy", "/pull-updates", ro) == 200
    assert data_status(turso, "crashy", "/v2/pipeline", ro) == 403
    for revoked in (rw, lost["token"]):
        assert data_status(turso, "crashy", "/pull-updates", revoked) == 401
    obj = wait_minted_for(crd, k8s_namespace, "crashy", "ro")
    _, view = turso.admin("GET", "/v1/namespaces/crashy")
    assert obj["status"]["credentialsFor"]["tokenGeneration"] == view["tokenGeneration"]
    assert view["tokenGeneration"] > lost["tokenGeneration"]


def test_a_database_claimed_twice_is_refused_without_harm(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "first-claim", database="shared-db", locked=True)
    wait_ready(crd, k8s_namespace, "first-claim")
    other_ns = f"{k8s_namespace}-b"
    crd.request("POST", "/api/v1/namespaces", {"metadata": {"name": other_ns}})
    apply_tns(crd, other_ns, "second-claim", database="shared-db", locked=False)
    obj = wait_for(
        lambda: (o := get_tns(crd, other_ns, "second-claim")) and condition(o, "Ready").get("reason") and o
    )
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "DatabaseConflict"
    assert repr(k8s_namespace) in ready["message"], "it names the namespace that owns the database"
    _, view = turso.admin("GET", "/v1/namespaces/shared-db")
    assert view["locked"] is True, "the second claim must not reconfigure the owner's database"
    crd.request("DELETE", f"{API}/namespaces/{other_ns}/tursonamespaces/second-claim")
    wait_for(lambda: get_tns(crd, other_ns, "second-claim") is None)
    assert "shared-db" in admin_names(turso), "deleting the loser must not archive the owner's data"
    assert secret(crd, k8s_namespace, "first-claim-turso") is not None


def test_a_retained_database_is_refused_to_another_namespace_and_reclaimed_by_its_own(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str, tmp_path: Path
) -> None:
    apply_tns(crd, k8s_namespace, "kept", deletionPolicy="Retain")
    wait_ready(crd, k8s_namespace, "kept")
    original = secret(crd, k8s_namespace, "kept-turso")
    assert original is not None
    push_through(
        original,
        tmp_path / "y.db",
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, what TEXT)",
        "INSERT INTO orders VALUES (1, 'y private')",
    )
    _, view = turso.admin("GET", "/v1/namespaces/kept")
    crd.request("DELETE", f"{API}/namespaces/{k8s_namespace}/tursonamespaces/kept")
    wait_for(lambda: get_tns(crd, k8s_namespace, "kept") is None)
    assert "kept" in admin_names(turso)

    # Another Kubernetes namespace asks for the same name: refused, no Secret, data untouched.
    other = f"{k8s_namespace}-x"
    crd.request("POST", "/api/v1/namespaces", {"metadata": {"name": other}})
    apply_tns(crd, other, "kept")
    refused = wait_for(
        lambda: (o := get_tns(crd, other, "kept")) and condition(o, "Ready").get("reason") and o
    )
    ready = condition(refused, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DatabaseConflict")
    assert repr(k8s_namespace) in ready["message"]
    time.sleep(3)  # a drift pass or more (TURSO_RESYNC_SECONDS=2) changes none of it
    assert condition(get_tns(crd, other, "kept"), "Ready")["reason"] == "DatabaseConflict"
    assert secret(crd, other, "kept-turso") is None
    _, after = turso.admin("GET", "/v1/namespaces/kept")
    assert (after["owner"], after["createdAt"]) == (k8s_namespace, view["createdAt"])
    assert after["tokenGeneration"] == view["tokenGeneration"], "no token was minted for the intruder"
    warnings = [e for e in kubectl_events(crd, other) if e.get("type") == "Warning"]
    assert any(e["reason"] == "DatabaseConflict" for e in warnings)

    # Its own namespace re-creates the TursoNamespace: the retained data comes back with it.
    apply_tns(crd, k8s_namespace, "kept", deletionPolicy="Retain")
    wait_ready(crd, k8s_namespace, "kept")
    back = secret(crd, k8s_namespace, "kept-turso")
    assert back is not None
    reader = sync_connect(
        str(tmp_path / "y-again.db"), back["TURSO_DATABASE_URL"], auth_token=back["TURSO_SERVER_TOKEN"]
    )
    reader.pull()
    assert reader.execute("SELECT what FROM orders").fetchall() == [("y private",)]
    reader.close()


def test_an_ownerless_database_is_adopted_only_by_its_provisioner_or_after_an_admin_hands_it_over(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    # Made by hand (or auto-provisioned): nobody's. A TursoNamespace does not silently take it.
    status, _ = turso.admin("POST", "/v1/namespaces/handmade/create")
    assert status == 201
    apply_tns(crd, k8s_namespace, "handmade")
    refused = wait_for(
        lambda: (o := get_tns(crd, k8s_namespace, "handmade")) and condition(o, "Ready").get("reason") and o
    )
    ready = condition(refused, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DatabaseConflict")
    assert "no owner" in ready["message"] and "/v1/namespaces/handmade/owner" in ready["message"]
    assert secret(crd, k8s_namespace, "handmade-turso") is None
    _, view = turso.admin("GET", "/v1/namespaces/handmade")
    assert view["owner"] is None
    # The admin's explicit action gives it to this namespace; the drift timer then provisions it.
    turso.admin("POST", "/v1/namespaces/handmade/owner", {"owner": k8s_namespace})
    wait_ready(crd, k8s_namespace, "handmade")

    # A database this TursoNamespace provisioned, whose owner is gone (as on a server from before
    # owners): status.credentialsFor proves it is that very database, so it is claimed again.
    apply_tns(crd, k8s_namespace, "upgraded")
    wait_ready(crd, k8s_namespace, "upgraded")
    token = secret(crd, k8s_namespace, "upgraded-turso")
    assert token is not None
    _, view = turso.admin("POST", "/v1/namespaces/upgraded/owner")
    assert view["owner"] is None
    wait_for(lambda: turso.admin("GET", "/v1/namespaces/upgraded")[1]["owner"] == k8s_namespace)
    assert condition(get_tns(crd, k8s_namespace, "upgraded"), "Ready")["status"] == "True"
    assert data_status(turso, "upgraded", "/pull-updates", token["TURSO_SERVER_TOKEN"]) == 200


def test_a_foreign_secret_is_never_overwritten(
    crd: ControlPlane, operator: OperatorProcess, k8s_namespace: str
) -> None:
    body = {"metadata": {"name": "precious"}, "stringData": {"keep": "me"}}
    status, _ = crd.request("POST", f"/api/v1/namespaces/{k8s_namespace}/secrets", body)
    assert status == 201
    apply_tns(crd, k8s_namespace, "grabby", secretName="precious")
    obj = wait_for(
        lambda: (
            (o := get_tns(crd, k8s_namespace, "grabby"))
            and condition(o, "CredentialsReady").get("reason")
            and o
        )
    )
    assert condition(obj, "CredentialsReady")["status"] == "False"
    assert "not managed by this TursoNamespace" in condition(obj, "CredentialsReady")["message"]
    assert secret(crd, k8s_namespace, "precious") == {"keep": "me"}


def kubectl_events(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    status, body = cp.request("GET", f"/api/v1/namespaces/{namespace}/events")
    assert status == 200
    return list(body["items"])


FINALIZER = "turso.buntime.io/finalizer"
MERGE = "application/merge-patch+json"


def finalizers(cp: ControlPlane, namespace: str, name: str) -> list[str]:
    return list(((get_tns(cp, namespace, name) or {}).get("metadata") or {}).get("finalizers") or [])


@pytest.mark.parametrize(("policy", "kept"), [("Archive", False), ("Retain", True)])
def test_delete_with_each_policy(
    crd: ControlPlane,
    operator: OperatorProcess,
    turso: TursoServer,
    k8s_namespace: str,
    policy: str,
    kept: bool,
) -> None:
    name = f"del-{policy.lower()}"
    apply_tns(crd, k8s_namespace, name, deletionPolicy=policy)
    obj = wait_ready(crd, k8s_namespace, name)
    assert secret(crd, k8s_namespace, f"{name}-turso") is not None
    status, _ = crd.request("DELETE", f"{API}/namespaces/{k8s_namespace}/tursonamespaces/{name}")
    assert status == 200
    wait_for(lambda: get_tns(crd, k8s_namespace, name) is None)
    if kept:
        # No finalizer: the garbage collector removes the Secret through its owner reference (this
        # control plane runs no controller-manager, so it is still there, owned by the gone object).
        _, raw = crd.request("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets/{name}-turso")
        assert [r["uid"] for r in raw["metadata"]["ownerReferences"]] == [obj["metadata"]["uid"]]
    else:
        assert secret(crd, k8s_namespace, f"{name}-turso") is None
    assert (name in admin_names(turso)) is kept


def test_a_retain_resource_carries_no_finalizer_and_deletes_with_the_operator_stopped(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "unfinalized", deletionPolicy="Retain")
    apply_tns(crd, k8s_namespace, "archived")
    wait_ready(crd, k8s_namespace, "unfinalized")
    wait_ready(crd, k8s_namespace, "archived")
    assert finalizers(crd, k8s_namespace, "unfinalized") == []
    assert finalizers(crd, k8s_namespace, "archived") == [FINALIZER]
    # One finalized by an earlier operator loses the finalizer on its next reconcile (drift loop).
    path = f"{API}/namespaces/{k8s_namespace}/tursonamespaces/unfinalized"
    status, _ = crd.request("PATCH", path, {"metadata": {"finalizers": [FINALIZER]}}, content_type=MERGE)
    assert status == 200
    wait_for(lambda: not finalizers(crd, k8s_namespace, "unfinalized"), timeout=30, what="finalizer dropped")
    operator.stop()
    try:
        status, _ = crd.request("DELETE", path)
        assert status == 200
        wait_for(
            lambda: get_tns(crd, k8s_namespace, "unfinalized") is None, what="deleted without the operator"
        )
    finally:
        operator.start()
    assert "unfinalized" in admin_names(turso)


def test_an_archive_that_cannot_happen_lets_go_with_the_skip_archive_annotation(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "stuck")
    wait_ready(crd, k8s_namespace, "stuck")
    path = f"{API}/namespaces/{k8s_namespace}/tursonamespaces/stuck"
    turso.stop()
    try:
        status, _ = crd.request("DELETE", path)
        assert status == 200
        wait_for(
            lambda: "skip-archive" in json.dumps(kubectl_events(crd, k8s_namespace)),
            what="the retry says how to get out",
        )
        assert get_tns(crd, k8s_namespace, "stuck") is not None, "the archive is retried, not skipped"
        body = {"metadata": {"annotations": {"turso.buntime.io/skip-archive": "true"}}}
        status, _ = crd.request("PATCH", path, body, content_type=MERGE)
        assert status == 200
        wait_for(lambda: get_tns(crd, k8s_namespace, "stuck") is None, what="deleted without archiving")
        assert secret(crd, k8s_namespace, "stuck-turso") is None
    finally:
        turso.start()
    assert "stuck" in admin_names(turso), "the annotation skips the archive"


def test_server_outage_sets_ready_false_and_recovers(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    turso.stop()
    try:
        apply_tns(crd, k8s_namespace, "outage")
        obj = wait_for(
            lambda: (o := get_tns(crd, k8s_namespace, "outage")) and condition(o, "Ready").get("reason") and o
        )
        ready = condition(obj, "Ready")
        assert ready["status"] == "False" and ready["reason"] == "ServerUnavailable"
        assert "unavailable" in ready["message"]
    finally:
        turso.start()
    wait_ready(crd, k8s_namespace, "outage", timeout=60)


def test_drift_is_repaired(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "drifty")
    wait_ready(crd, k8s_namespace, "drifty")
    original = secret(crd, k8s_namespace, "drifty-turso")
    assert original is not None

    # The database disappears from the server: recreated, and the condition says so.
    status, _ = turso.admin("DELETE", "/v1/namespaces/drifty")
    assert status == 200
    obj = wait_for(
        lambda: (
            (o := get_tns(crd, k8s_namespace, "drifty"))
            and condition(o, "Provisioned").get("reason") == "Recreated"
            and o
        )
    )
    assert "drifty" in admin_names(turso)
    assert condition(obj, "Ready")["status"] == "True"
    # The old token died with the old database; the Secret holds one for the new database.
    recreated = secret(crd, k8s_namespace, "drifty-turso")
    assert recreated is not None and recreated["TURSO_SERVER_TOKEN"] != original["TURSO_SERVER_TOKEN"]
    assert data_status(turso, "drifty", "/pull-updates", original["TURSO_SERVER_TOKEN"]) == 401
    assert data_status(turso, "drifty", "/pull-updates", recreated["TURSO_SERVER_TOKEN"]) == 200

    # The database's tokens are revoked on the server: the Secret gets a new one.
    status, _ = turso.admin("POST", "/v1/namespaces/drifty/tokens/revoke")
    assert status == 200
    assert data_status(turso, "drifty", "/pull-updates", recreated["TURSO_SERVER_TOKEN"]) == 401
    reminted = wait_for(
        lambda: (
            (s := secret(crd, k8s_namespace, "drifty-turso"))
            and s["TURSO_SERVER_TOKEN"] != recreated["TURSO_SERVER_TOKEN"]
            and s
        ),
        what="a token of the new generation in the Secret",
    )
    assert data_status(turso, "drifty", "/pull-updates", reminted["TURSO_SERVER_TOKEN"]) == 200

    # The Secret is edited: restored.
    path = f"/api/v1/namespaces/{k8s_namespace}/secrets/drifty-turso"
    tampered = base64.b64encode(b"http://evil").decode()
    crd.request(
        "PATCH", path, {"data": {"TURSO_SERVER_URL": tampered}}, content_type="application/merge-patch+json"
    )
    wait_for(lambda: (s := secret(crd, k8s_namespace, "drifty-turso")) and s["TURSO_SERVER_URL"] == turso.url)

    wait_for(lambda: _restored_events(crd, k8s_namespace) == 1)

    # The Secret is deleted: restored with a new token, the deleted one revoked, and said so.
    crd.request("DELETE", path)
    restored = wait_for(lambda: secret(crd, k8s_namespace, "drifty-turso"))
    assert set(restored) == SECRET_KEYS
    assert data_status(turso, "drifty", "/pull-updates", reminted["TURSO_SERVER_TOKEN"]) == 401
    assert data_status(turso, "drifty", "/pull-updates", restored["TURSO_SERVER_TOKEN"]) == 200
    wait_for(lambda: _restored_events(crd, k8s_namespace) == 2)


def _restored_events(crd: ControlPlane, k8s_namespace: str) -> int:
    return sum(
        e.get("count", 1)
        for e in kubectl_events(crd, k8s_namespace)
        if e["reason"] == "SecretRestored" and "drifty" in e["involvedObject"]["name"]
    )


def test_operator_restart_creates_nothing_twice(
    crd: ControlPlane, operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "stable")
    wait_ready(crd, k8s_namespace, "stable")
    before = secret(crd, k8s_namespace, "stable-turso")
    names = [f"burst-{i}" for i in range(5)]
    for name in names:
        apply_tns(crd, k8s_namespace, name)
    operator.stop(signal.SIGKILL)  # mid-reconcile
    operator.start()
    for name in names:
        wait_ready(crd, k8s_namespace, name, timeout=60)
    assert set(names) <= admin_names(turso)
    assert secret(crd, k8s_namespace, "stable-turso") == before, "a Ready resource keeps its token"
    _status, body = crd.request("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets")
    owners = [s["metadata"]["labels"].get("turso.buntime.io/tursonamespace") for s in body["items"]]
    assert sorted(o for o in owners if o) == sorted([*names, "stable"]), "one Secret per resource"


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}], **spec},
    }


def test_pod_injection(crd: ControlPlane, operator: OperatorProcess, k8s_namespace: str) -> None:
    apply_tns(crd, k8s_namespace, "inject")
    wait_ready(crd, k8s_namespace, "inject")
    pods = f"/api/v1/namespaces/{k8s_namespace}/pods"

    status, stored = crd.request("POST", pods, pod("with-label", {"turso.buntime.io/inject": "inject"}))
    assert status == 201, stored
    env = {e["name"]: e for e in stored["spec"]["containers"][0]["env"]}
    assert env["RUNTIME_TURSO_DIR"]["value"] == "/data/turso"
    for name in ("RUNTIME_TURSO_SERVER_URL", "TURSO_SERVER_URL", "TURSO_NAMESPACE"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "inject-turso"
    # The tokens are files of a Secret volume (refreshed by the kubelet), never env.
    tokens = "/var/run/secrets/buntime/turso"
    assert env["TURSO_SERVER_TOKEN_FILE"]["value"] == f"{tokens}/TURSO_SERVER_TOKEN"
    assert env["RUNTIME_TURSO_SERVER_TOKEN_FILE"]["value"] == f"{tokens}/RUNTIME_TURSO_SERVER_TOKEN"
    assert "TURSO_SERVER_TOKEN" not in env and "RUNTIME_TURSO_SERVER_TOKEN" not in env
    mounts = stored["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "turso-data", "mountPath": "/data/turso"} in mounts
    assert {"name": "turso-token", "mountPath": tokens, "readOnly": True} in mounts
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["turso-data"] == {"name": "turso-data", "emptyDir": {}}
    assert volumes["turso-token"]["secret"]["secretName"] == "inject-turso"
    assert stored["metadata"]["annotations"]["turso.buntime.io/injected"] == "inject"
    assert len(stored["spec"]["containers"][0]["env"]) == 6, "injected once, nothing duplicated"

    status, plain = crd.request("POST", pods, pod("no-label"))
    assert status == 201 and "env" not in plain["spec"]["containers"][0]
    assert "turso.buntime.io/injected" not in (plain["metadata"].get("annotations") or {})

    own_volume = pod(
        "own-volume",
        {"turso.buntime.io/inject": "inject"},
        volumes=[{"name": "mine", "emptyDir": {}}],
    )
    own_volume["spec"]["containers"][0]["volumeMounts"] = [{"name": "mine", "mountPath": "/data/turso"}]
    status, stored = crd.request("POST", pods, own_volume)
    # Its own volume at /data/turso: no emptyDir added (the token volume still is).
    assert status == 201 and [v["name"] for v in stored["spec"]["volumes"]] == ["mine", "turso-token"]

    status, refused = crd.request("POST", pods, pod("missing", {"turso.buntime.io/inject": "nope"}))
    assert status == 403, refused
    assert "TursoNamespace" in refused["message"] and "does not exist" in refused["message"]


def review(operator: OperatorProcess, request: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview to the operator's webhook the way the API server does."""
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    context = ssl.create_default_context(cadata=operator.ca_pem.decode())
    req = urllib.request.Request(
        f"https://127.0.0.1:{operator.webhook_port}/inject-turso",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, context=context, timeout=10) as resp:
        return dict(json.loads(resp.read())["response"])


def test_a_pod_without_a_namespace_is_refused_not_looked_up_in_default(
    crd: ControlPlane, operator: OperatorProcess
) -> None:
    """A Ready TursoNamespace in ``default`` must not serve a pod that names no namespace."""
    name = f"fallback-{uuid.uuid4().hex[:6]}"
    apply_tns(crd, "default", name, deletionPolicy="Retain")
    wait_ready(crd, "default", name)
    try:
        nameless = pod("nameless", {"turso.buntime.io/inject": name})
        answer = review(
            operator,
            {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "nameless",
                "namespace": "kube-system",
                "operation": "CREATE",
                "userInfo": {"username": "test"},
                "object": nameless,
                "oldObject": None,
                "dryRun": False,
            },
        )
        assert answer["allowed"] is False and "patch" not in answer, answer
        assert "names no namespace" in answer["status"]["message"]
    finally:
        crd.request("DELETE", f"{API}/namespaces/default/tursonamespaces/{name}")


def test_liveness_endpoint_reports_the_watch(operator: OperatorProcess) -> None:
    assert operator.healthz() == 200


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_reconciles_and_ready_objects(
    crd: ControlPlane, operator: OperatorProcess, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "metered")
    wait_ready(crd, k8s_namespace, "metered")
    ready = ("buntime_operator_ready_objects", frozenset())

    def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        samples = _samples(operator.metrics())
        return samples if samples.get(ready, 0) >= 1 else None

    samples = wait_for(counted)
    assert {name for name, _ in samples} and all(n.startswith("buntime_operator_") for n, _ in samples)
    handler = ("handler", "reconcile_tursonamespace")
    success = frozenset({handler, ("outcome", "success")})
    assert samples[("buntime_operator_reconciles_total", success)] >= 1
    assert samples[("buntime_operator_reconcile_duration_seconds_count", frozenset({handler}))] >= 1
    before = samples[ready]

    status, _ = crd.request("DELETE", f"{API}/namespaces/{k8s_namespace}/tursonamespaces/metered")
    assert status == 200
    wait_for(lambda: get_tns(crd, k8s_namespace, "metered") is None)
    wait_for(lambda: _samples(operator.metrics())[ready] == before - 1)
    finalized = frozenset({("handler", "finalize_tursonamespace"), ("outcome", "success")})
    assert _samples(operator.metrics())[("buntime_operator_reconciles_total", finalized)] >= 1
