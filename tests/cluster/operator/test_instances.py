"""Two operators in one cluster, on one CRD: each serves only the TursoNamespaces of its instance.

Feeds in: the module's default-instance operator (``TURSO_INSTANCE`` empty) with its turso-server,
and a second operator with ``TURSO_INSTANCE=second`` and a turso-server of its own, both
watching the whole cluster, each with its webhook registered.
Checks: an unlabelled object lives only on the first server, an object labelled
``turso.buntime.io/instance=second`` only on the second; each carries only its operator's
finalizer; each operator's deletion archives on its own server only; a pod is injected from its
own TursoNamespace's Secret.
Leaves unmocked: kube-apiserver, both turso-servers, both operators.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import (
    API,
    API_VERSION,
    OperatorProcess,
    get_tns,
    wait_for,
    wait_ready,
    webhook_configuration,
)
from tests.support.tursoserver import TursoServer

pytestmark = pytest.mark.cluster

WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@pytest.fixture
def second(crd: ControlPlane, tmp_path: Path) -> Iterator[tuple[OperatorProcess, TursoServer]]:
    with TursoServer(tmp_path / "turso") as server:
        process = OperatorProcess(crd, server, tmp_path / "operator", TURSO_INSTANCE="second").start()
        hook = webhook_configuration(f"https://127.0.0.1:{process.webhook_port}", process.ca_pem)
        hook["metadata"] = {"name": "buntime-test-second"}
        status, body = crd.request("POST", WEBHOOKS, hook)
        assert status == 201, body
        try:
            yield process, server
        finally:
            crd.request("DELETE", f"{WEBHOOKS}/buntime-test-second")
            process.stop()
            print(process.tail())


def names(server: TursoServer) -> set[str]:
    status, body = server.admin("GET", "/v1/namespaces")
    assert status == 200, body
    items = body.get("namespaces", body) if isinstance(body, dict) else body
    return {item["name"] for item in items}


def create(cp: ControlPlane, namespace: str, name: str, labels: dict[str, str]) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "TursoNamespace",
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    }
    status, result = cp.request("POST", f"{API}/namespaces/{namespace}/tursonamespaces", body)
    assert status == 201, result


def test_a_second_instance_leaves_the_first_instances_objects_alone(
    crd: ControlPlane,
    operator: OperatorProcess,
    turso: TursoServer,
    second: tuple[OperatorProcess, TursoServer],
    k8s_namespace: str,
) -> None:
    other, other_server = second
    create(crd, k8s_namespace, "first-db", {})
    create(crd, k8s_namespace, "second-db", {"turso.buntime.io/instance": "second"})
    first = wait_ready(crd, k8s_namespace, "first-db")
    theirs = wait_ready(crd, k8s_namespace, "second-db")
    assert first["status"]["databaseUrl"] == f"{turso.url}/first-db"
    assert theirs["status"]["databaseUrl"] == f"{other_server.url}/second-db"
    assert first["metadata"]["finalizers"] == ["turso.buntime.io/finalizer"]
    assert theirs["metadata"]["finalizers"] == ["turso.buntime.io/finalizer-second"]
    # A few drift periods later, still nobody else's: no database, no Secret rewrite.
    secret_path = f"/api/v1/namespaces/{k8s_namespace}/secrets/first-db-turso"
    _, before = crd.request("GET", secret_path)
    wait_for(
        lambda: (
            (get_tns(crd, k8s_namespace, "first-db") or {})["status"]["lastCheckedAt"]
            != first["status"]["lastCheckedAt"]
        ),
        what="a drift pass",
    )
    _, after = crd.request("GET", secret_path)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "first-db" in names(turso) and "first-db" not in names(other_server)
    assert "second-db" in names(other_server) and "second-db" not in names(turso)

    # Each webhook injects only its own TursoNamespaces (both are asked about every pod).
    pod: dict[str, Any] = {
        "metadata": {"name": "app", "labels": {"turso.buntime.io/inject": "second-db"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    status, stored = crd.request("POST", f"/api/v1/namespaces/{k8s_namespace}/pods", pod)
    assert status == 201, stored
    env = {e["name"]: e for e in stored["spec"]["containers"][0]["env"]}
    assert env["TURSO_SERVER_URL"]["valueFrom"]["secretKeyRef"]["name"] == "second-db-turso"
    _, secret = crd.request("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets/second-db-turso")
    assert base64.b64decode(secret["data"]["TURSO_SERVER_URL"]).decode() == other_server.url

    # Deleting archives on the owning server only, and only its operator lets the object go.
    for name in ("second-db", "first-db"):
        status, _ = crd.request("DELETE", f"{API}/namespaces/{k8s_namespace}/tursonamespaces/{name}")
        assert status == 200
        wait_for(lambda n=name: get_tns(crd, k8s_namespace, n) is None, what=f"{name} finalized")
    assert "second-db" not in names(other_server) and "first-db" not in names(turso)
    assert '"name": "first-db"' not in other.log.read_text(), "the second never handled the first's object"
    assert '"name": "second-db"' not in operator.log.read_text(), "nor the first the second's"
