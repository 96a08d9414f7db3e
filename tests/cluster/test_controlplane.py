"""The test control plane is a real, secured kube-apiserver.

Everything that talks to Kubernetes in this suite trusts this fixture, so these tests pin
down what it promises: it becomes ready, stores objects through the REST API, serves a
working kubeconfig, and enforces authentication and RBAC (a permissive fake would hide
missing Roles in the operator's manifests).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support.controlplane import (
    TOOLS_BIN,
    ControlPlane,
    ControlPlaneError,
    find_binary,
    make_pki,
)


def _unique_namespace(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.cluster
def test_readyz_and_version(control_plane: ControlPlane) -> None:
    status, body = control_plane.request("GET", "/readyz")
    assert (status, body) == (200, "ok")

    status, version = control_plane.request("GET", "/version")
    assert status == 200
    assert version["major"] == "1"
    assert version["gitVersion"].startswith("v1.34.")


@pytest.mark.cluster
def test_namespace_and_configmap_round_trip(control_plane: ControlPlane) -> None:
    ns = _unique_namespace("cp-rest")
    status, created = control_plane.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    assert status == 201, created
    assert created["status"]["phase"] == "Active"

    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "buntime"}},
        "data": {"mode": "local", "replicas": "3"},
    }
    status, created = control_plane.request("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap)
    assert status == 201, created
    assert created["metadata"]["namespace"] == ns
    assert created["metadata"]["resourceVersion"]

    status, fetched = control_plane.request("GET", f"/api/v1/namespaces/{ns}/configmaps/settings")
    assert status == 200
    assert fetched["data"] == {"mode": "local", "replicas": "3"}
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]

    # Real storage semantics: a second create conflicts, a stale update is rejected.
    status, conflict = control_plane.request("POST", f"/api/v1/namespaces/{ns}/configmaps", configmap)
    assert status == 409, conflict
    stale = {**fetched, "data": {"mode": "cluster"}}
    stale["metadata"] = {**fetched["metadata"], "resourceVersion": "1"}
    status, rejected = control_plane.request("PUT", f"/api/v1/namespaces/{ns}/configmaps/settings", stale)
    assert status == 409, rejected


@pytest.mark.cluster
def test_server_side_validation(control_plane: ControlPlane) -> None:
    status, body = control_plane.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Not_A_Valid_Name"}},
    )
    assert status == 422, body
    assert body["reason"] == "Invalid"


@pytest.mark.cluster
def test_unauthenticated_and_unauthorized_requests_are_rejected(control_plane: ControlPlane) -> None:
    # Anonymous: authenticated as system:anonymous, then denied by RBAC.
    status, body = control_plane.request("GET", "/api/v1/namespaces", token=None)
    assert status == 403, body
    assert "system:anonymous" in body["message"]

    # A token the server does not know is an authentication failure.
    status, body = control_plane.request("GET", "/api/v1/namespaces", token="not-a-real-token")
    assert status == 401, body

    # An authenticated user with no RoleBindings is denied: authorization is RBAC,
    # not AlwaysAllow. The admin may impersonate, which shows exactly that.
    status, body = control_plane.request(
        "GET", "/api/v1/namespaces", headers={"Impersonate-User": "nobody@example.com"}
    )
    assert status == 403, body
    assert "nobody@example.com" in body["message"]

    # The public health endpoint stays open to anonymous probes.
    assert control_plane.request("GET", "/readyz", token=None)[0] == 200


@pytest.mark.cluster
def test_tls_uses_the_generated_ca(control_plane: ControlPlane) -> None:
    assert control_plane.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    # The serving cert chains to the per-run CA only, so system trust must reject it.
    default_trust = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError) as excinfo:
        urllib.request.urlopen(control_plane.url + "/readyz", context=default_trust, timeout=5)
    assert isinstance(excinfo.value.reason, ssl.SSLCertVerificationError)


def _kubectl() -> str | None:
    local = TOOLS_BIN / "kubectl"
    if local.exists():
        return str(local)
    return shutil.which("kubectl")


@pytest.mark.cluster
def test_kubeconfig_works_with_kubectl(control_plane: ControlPlane) -> None:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl not in .tools/bin or on PATH")
    ns = _unique_namespace("cp-kubectl")
    env = {**os.environ, **control_plane.env()}

    def run(*args: str) -> str:
        result = subprocess.run(
            [kubectl, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("create", "namespace", ns)
    run("-n", ns, "create", "configmap", "via-kubectl", "--from-literal=hello=world")
    got = json.loads(run("-n", ns, "get", "configmap", "via-kubectl", "-o", "json"))
    assert got["data"] == {"hello": "world"}
    assert run("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == "admin"


def test_missing_binary_error_names_the_build_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETCD_BIN", str(tmp_path / "no-such-etcd"))
    with pytest.raises(ControlPlaneError, match=r"hack/build-control-plane\.sh"):
        find_binary("etcd", "ETCD_BIN")
    with pytest.raises(ControlPlaneError, match="ETCD_BIN"):
        ControlPlane().start()


@pytest.mark.parametrize("backend", ["openssl", "cryptography"])
def test_pki_backends_produce_a_loadable_chain(backend: str, tmp_path: Path) -> None:
    if backend == "openssl" and shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    if backend == "cryptography":
        pytest.importorskip("cryptography")
    make_pki(tmp_path, backend)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert client.cert_store_stats()["x509_ca"] == 1
    for name in ("sa.key", "sa.pub"):
        assert (tmp_path / name).read_text().startswith("-----BEGIN ")
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
