"""Fixtures for the chart tests on the real control plane (etcd + kube-apiserver 1.34).

Feeds in: the chart rendered by the pinned helm, the CRD from ``deploy/crds/`` and, for
the end-to-end test, a real turso-server, the operator and ``buntime serve`` processes, each
configured from the environment the chart renders for its pod.
Checks: nothing by itself.
Leaves unmocked: kube-apiserver (OpenAPI and CEL validation, admission webhooks, RBAC objects,
``lookup``), helm's install/upgrade/uninstall, turso-server, tursodb and the runtime. Pods are
stored, never run (there is no kubelet): processes on loopback ports stand in for them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.chart.rendering import CRD_FILE, helm_env
from tests.support.controlplane import ControlPlane
from tests.support.operator import kubectl

CRD_NAME = "crd/tursonamespaces.turso.buntime.io"


@pytest.fixture
def chart_crd(control_plane: ControlPlane) -> ControlPlane:
    """The CRD applied from the chart's single source file (idempotent across modules)."""
    kubectl(control_plane, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl(control_plane, "wait", "--for=condition=Established", CRD_NAME, "--timeout=60s")
    return control_plane


@pytest.fixture
def fresh_namespace(control_plane: ControlPlane) -> str:
    """A new namespace (namespaces are never reclaimed here: no namespace controller)."""
    name = f"chart-{uuid.uuid4().hex[:10]}"
    status, body = control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name


@pytest.fixture
def helm_kube_env(control_plane: ControlPlane, tmp_path: Path) -> dict[str, str]:
    """helm's environment against the control plane, with caches in the test's tmp dir."""
    return helm_env(control_plane.env(), home=tmp_path / "helm")
