"""The operator with nothing but the chart's ClusterRole: every call kopf and the operator make is allowed.

Feeds in: the ClusterRole ``helm template`` renders (cluster-wide mode), bound to a ServiceAccount
whose token comes from the real TokenRequest API; the operator logs in with that token only.
Checks: a TursoNamespace goes Ready (watch, patch, status, Secret, Events), the drift loop writes
status, the webhook reads it, deletion archives it, and the API server refused nothing.
Leaves unmocked: kube-apiserver's RBAC authorizer, turso-server, kopf.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.rendering import one, render
from tests.support.controlplane import ControlPlane
from tests.support.operator import (
    API,
    OperatorProcess,
    apply_tns,
    get_tns,
    wait_for,
    wait_ready,
    webhook_configuration,
)
from tests.support.tursoserver import TursoServer

pytestmark = pytest.mark.cluster

RBAC = "/apis/rbac.authorization.k8s.io/v1"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def _created(cp: ControlPlane, path: str, body: dict[str, object]) -> dict[str, object]:
    status, result = cp.request("POST", path, body)
    assert status == 201, result
    return dict(result)


@pytest.fixture
def chart_rbac_operator(crd: ControlPlane, turso: TursoServer, tmp_path: Path) -> Iterator[OperatorProcess]:
    suffix = uuid.uuid4().hex[:8]
    namespace, account, name = f"rbac-{suffix}", "operator", f"buntime-operator-{suffix}"
    _created(crd, "/api/v1/namespaces", {"metadata": {"name": namespace}})
    _created(crd, f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": account}})
    role = one(render({"tursoServer.enabled": "true"}), "ClusterRole")
    _created(crd, f"{RBAC}/clusterroles", {**role, "metadata": {"name": name}})
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    _created(crd, f"{RBAC}/clusterrolebindings", binding)
    request = {"spec": {"expirationSeconds": 3600}}
    token = _created(crd, f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request)
    kubeconfig = json.loads(crd.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": token["status"]["token"]}  # type: ignore[index]
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    process = OperatorProcess(crd, turso, tmp_path / "operator", KUBECONFIG=str(tmp_path / "kubeconfig"))
    process.start()
    hook = webhook_configuration(f"https://127.0.0.1:{process.webhook_port}", process.ca_pem)
    hook["metadata"] = {"name": name}
    _created(crd, WEBHOOKS, hook)
    try:
        yield process
    finally:
        crd.request("DELETE", f"{WEBHOOKS}/{name}")
        process.stop()
        crd.request("DELETE", f"{RBAC}/clusterrolebindings/{name}")
        crd.request("DELETE", f"{RBAC}/clusterroles/{name}")
        print(process.tail())


def test_the_operator_needs_no_more_than_the_charts_cluster_role(
    crd: ControlPlane, chart_rbac_operator: OperatorProcess, turso: TursoServer, k8s_namespace: str
) -> None:
    apply_tns(crd, k8s_namespace, "least")
    first = wait_ready(crd, k8s_namespace, "least")["status"]["lastCheckedAt"]
    wait_for(
        lambda: (get_tns(crd, k8s_namespace, "least") or {})["status"]["lastCheckedAt"] != first,
        what="the drift loop writes status",
    )
    status, events = crd.request("GET", f"/api/v1/namespaces/{k8s_namespace}/events")
    assert status == 200 and any(e["reason"] == "SecretWritten" for e in events["items"])
    labelled = {
        "metadata": {"name": "app", "labels": {"turso.buntime.io/inject": "least"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    stored = _created(crd, f"/api/v1/namespaces/{k8s_namespace}/pods", labelled)
    assert stored["metadata"]["annotations"]["turso.buntime.io/injected"] == "least"  # type: ignore[index]
    status, _ = crd.request("DELETE", f"{API}/namespaces/{k8s_namespace}/tursonamespaces/least")
    assert status == 200
    wait_for(lambda: get_tns(crd, k8s_namespace, "least") is None, what="finalized")
    _, listing = turso.admin("GET", "/v1/namespaces")
    items = listing.get("namespaces", listing) if isinstance(listing, dict) else listing
    assert "least" not in {item["name"] for item in items}, "archived"
    log = chart_rbac_operator.log.read_text(errors="replace")
    assert "forbidden" not in log.lower(), chart_rbac_operator.tail()
