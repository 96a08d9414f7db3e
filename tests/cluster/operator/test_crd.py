"""The CRD as the API server enforces it: schema, defaults, CEL rules, printer columns."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import API

pytestmark = pytest.mark.cluster


def tns(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "turso.buntime.io/v1alpha1",
        "kind": "TursoNamespace",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(cp: ControlPlane, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
    return cp.request("POST", f"{API}/namespaces/{namespace}/tursonamespaces", body)


def test_defaults_are_applied(crd: ControlPlane, k8s_namespace: str) -> None:
    status, body = create(crd, k8s_namespace, tns("orders"))
    assert status == 201, body
    assert body["spec"] == {"deletionPolicy": "Archive", "locked": False, "access": "rw"}


@pytest.mark.parametrize(
    ("name", "spec", "fragment"),
    [
        ("bad-db", {"database": "Bad_Name"}, "spec.database"),
        ("bad-db2", {"database": "_state"}, "spec.database"),
        ("bad-db3", {"database": "a" * 64}, "spec.database"),
        ("bad-policy", {"deletionPolicy": "Delete"}, "deletionPolicy"),
        ("bad-access", {"access": "admin"}, "access"),
        ("bad-ttl", {"ttl": "forever"}, "ttl"),
        ("zero-ttl", {"ttl": "0"}, "ttl must be greater than 0"),
        ("zero-ttl2", {"ttl": "0s"}, "ttl must be greater than 0"),
        ("zero-ttl3", {"ttl": "0.0"}, "ttl must be greater than 0"),
        ("zero-ttl4", {"ttl": "0h0.00ms"}, "ttl must be greater than 0"),
        ("dotted.name", {}, "not a valid database name"),
        ("healthz", {}, "not a valid database name"),
        ("bad-db4", {"database": "readyz"}, "reserved for turso-server's health endpoints"),
    ],
)
def test_invalid_objects_are_rejected(
    crd: ControlPlane, k8s_namespace: str, name: str, spec: dict[str, Any], fragment: str
) -> None:
    status, body = create(crd, k8s_namespace, tns(name, **spec))
    assert status == 422, body
    assert fragment in body["message"]


def test_a_short_ttl_above_zero_is_accepted(crd: ControlPlane, k8s_namespace: str) -> None:
    for name, ttl in (("short-ttl", "0.5s"), ("short-ttl2", "1ms"), ("short-ttl3", "0h1ms")):
        status, body = create(crd, k8s_namespace, tns(name, ttl=ttl))
        assert status == 201, body


def test_a_dotted_name_is_fine_with_an_explicit_database(crd: ControlPlane, k8s_namespace: str) -> None:
    status, body = create(crd, k8s_namespace, tns("team.orders", database="team-orders"))
    assert status == 201, body


def test_database_is_immutable(crd: ControlPlane, k8s_namespace: str) -> None:
    status, body = create(crd, k8s_namespace, tns("immutable", database="first"))
    assert status == 201, body
    path = f"{API}/namespaces/{k8s_namespace}/tursonamespaces/immutable"
    for patch in ({"spec": {"database": "second"}}, {"spec": {"database": None}}):
        status, body = crd.request("PATCH", path, patch, content_type="application/merge-patch+json")
        assert status == 422 and "immutable" in body["message"], body
    status, body = crd.request(
        "PATCH", path, {"spec": {"locked": True}}, content_type="application/merge-patch+json"
    )
    assert status == 200, body


def test_secret_name_is_immutable(crd: ControlPlane, k8s_namespace: str) -> None:
    """A changed secretName would leave the old Secret (a revoked token, pods still mounting it)."""
    path = f"{API}/namespaces/{k8s_namespace}/tursonamespaces"
    status, body = create(crd, k8s_namespace, tns("named", secretName="first-turso"))
    assert status == 201, body
    status, body = create(crd, k8s_namespace, tns("defaulted"))
    assert status == 201, body
    for name, patch in (
        ("named", {"spec": {"secretName": "second-turso"}}),
        ("named", {"spec": {"secretName": None}}),  # back to the default <name>-turso
        ("defaulted", {"spec": {"secretName": "defaulted-turso"}}),  # even the default's own name
    ):
        status, body = crd.request(
            "PATCH", f"{path}/{name}", patch, content_type="application/merge-patch+json"
        )
        assert status == 422 and "spec.secretName is immutable" in body["message"], body
    status, body = crd.request(
        "PATCH", f"{path}/named", {"spec": {"locked": True}}, content_type="application/merge-patch+json"
    )
    assert status == 200 and body["spec"]["secretName"] == "first-turso", body


def test_short_name_and_printer_columns(crd: ControlPlane, k8s_namespace: str) -> None:
    from tests.support.operator import kubectl

    create(crd, k8s_namespace, tns("shown"))
    out = kubectl(crd, "get", "tns", "-n", k8s_namespace)
    header = out.splitlines()[0].split()
    assert header == ["NAME", "DATABASE", "READY", "URL", "AGE"]
