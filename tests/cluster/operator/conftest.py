"""Fixtures for the operator tests: a real control plane, a real turso-server, the operator process.

Feeds in: the CRD from ``deploy/crds/`` (applied with the pinned kubectl), a turso-server
subprocess with generated tokens, ``buntime-operator`` as a subprocess configured by env (the way
it runs in its pod), and a MutatingWebhookConfiguration pointing at the operator's webhook on
loopback with a CA generated here.
Checks: nothing by itself; helpers poll the API until a condition holds or a deadline passes.
Leaves unmocked: kube-apiserver (validation, CEL, admission webhooks), turso-server, tursodb.
Pods are stored, never run (no kubelet).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import CRD_FILE, OperatorProcess, kubectl, webhook_configuration
from tests.support.tursoserver import TursoServer

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> ControlPlane:
    kubectl(control_plane, "apply", "-f", str(CRD_FILE))
    kubectl(
        control_plane,
        "wait",
        "--for=condition=Established",
        "crd/tursonamespaces.turso.buntime.io",
        "--timeout=60s",
    )
    return control_plane


@pytest.fixture(scope="module")
def turso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    with TursoServer(tmp_path_factory.mktemp("turso") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def operator(
    crd: ControlPlane, turso: TursoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(crd, turso, tmp_path_factory.mktemp("operator")).start()
    status, _ = crd.request(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        webhook_configuration(f"https://127.0.0.1:{process.webhook_port}", process.ca_pem),
    )
    assert status == 201, status
    try:
        yield process
    finally:
        crd.request(
            "DELETE", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/buntime-test"
        )
        process.stop()
        print(process.tail())


@pytest.fixture
def k8s_namespace(crd: ControlPlane) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    status, body = crd.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name
