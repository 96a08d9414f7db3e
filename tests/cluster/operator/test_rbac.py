"""The operator with nothing but the chart's ClusterRole: every call kopf and the operator make is allowed.

Feeds in: the ClusterRole ``helm template`` renders (cluster-wide mode), bound to a ServiceAccount
whose token comes from the real TokenRequest API; the operator logs in with that token only.
Checks: a TursoNamespace goes Ready (watch, patch, status, Secret, Events), the drift loop writes
status, the webhook reads it, deletion archives it, and the API server refused nothing.
Leaves unmocked: kube-apiserver's RBAC authorizer, turso-server, kopf.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest

from tests.chart.rendering import RELEASE, find, one, render
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
from turso_operator import AdminClient
from turso_operator._config import OperatorConfig
from turso_operator._constants import EXPIRES_ANNOTATION
from turso_operator._errors import KubeError
from turso_operator._kube import KubeClient
from turso_operator._reconcile import Reconciler

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


async def test_the_release_namespace_role_keeps_the_runtime_secret_and_opens_no_other(
    crd: ControlPlane, turso: TursoServer
) -> None:
    """With operator.watchNamespaces, the release namespace's Role: the real runtime-credentials
    pass creates and replaces its Secret; deleting it, or reading another Secret there, is refused."""
    namespace = f"rel-{uuid.uuid4().hex[:8]}"
    docs = render(
        {"tursoServer.enabled": "true", "operator.watchNamespaces[0]": "team-a"}, namespace=namespace
    )
    (role,) = [r for r in find(docs, "Role") if r["metadata"]["namespace"] == namespace]
    (binding,) = [b for b in find(docs, "RoleBinding") if b["metadata"]["namespace"] == namespace]
    account = binding["subjects"][0]["name"]
    _created(crd, "/api/v1/namespaces", {"metadata": {"name": namespace}})
    _created(crd, f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": account}})
    _created(crd, f"{RBAC}/namespaces/{namespace}/roles", role)
    _created(crd, f"{RBAC}/namespaces/{namespace}/rolebindings", binding)
    helm_secret = {"metadata": {"name": f"{RELEASE}-turso-auth"}, "stringData": {"TURSO_ADMIN_TOKEN": "x"}}
    _created(crd, f"/api/v1/namespaces/{namespace}/secrets", helm_secret)
    request = {"spec": {"expirationSeconds": 3600}}
    token = _created(crd, f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request)
    sa_token = str(token["status"]["token"])  # type: ignore[index]

    runtime_secret = f"{RELEASE}-runtime-turso"
    config = OperatorConfig.from_env(
        {
            "TURSO_SERVER_URL": turso.url,
            "TURSO_SERVER_ADMIN_URL": turso.admin_url,
            "TURSO_SERVER_ADMIN_TOKEN": turso.admin_token,
            "TURSO_TOKEN_LIFETIME": "1h",
            "TURSO_RUNTIME_SECRET": runtime_secret,
            "TURSO_RUNTIME_NAMESPACES": f"rt-{namespace}",
            "POD_NAMESPACE": namespace,
        }
    )
    kube = KubeClient(kopf.ConnectionInfo(server=crd.url, token=sa_token, ca_path=str(crd.ca_file)))
    admin = AdminClient(turso.admin_url, turso.admin_token)
    path = f"/api/v1/namespaces/{namespace}/secrets/{runtime_secret}"
    try:
        reconciler = Reconciler(config, admin, kube)
        assert await reconciler.ensure_runtime_credentials()  # GET (404), POST
        soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)).isoformat()
        status, body = crd.request(
            "PATCH",
            path,
            {"metadata": {"annotations": {EXPIRES_ANNOTATION: soon}}},
            content_type="application/merge-patch+json",
        )
        assert status == 200, body
        assert await reconciler.ensure_runtime_credentials()  # GET, PUT (renewed)
        status, body = crd.request("GET", path)
        assert status == 200 and body["metadata"]["annotations"][EXPIRES_ANNOTATION] != soon, body

        for call in (
            kube.delete_secret(namespace, runtime_secret),
            kube.get_secret(namespace, f"{RELEASE}-turso-auth"),
            kube.replace_secret(namespace, f"{RELEASE}-turso-auth", helm_secret),
        ):
            with pytest.raises(KubeError) as refused:
                await call
            assert refused.value.status == 403, refused.value
        status, _ = crd.request("GET", path)
        assert status == 200, "still there"
    finally:
        await admin.aclose()
        await kube.aclose()
