"""The webhook's pod mutation against a real kube-apiserver: the token as files of a Secret volume.

The handler (``inject_turso``) looks the TursoNamespace up in a real API server (the CRD applied,
its status set Ready through the status subresource, as the operator would), and the pod it
patched is created there, so the API server's validation (volume and mount names, the Secret
volume's items, ``readOnly``) and its defaulting (``defaultMode``…) apply. The stored pod is then
mutated again to show the mutation is idempotent on what the API server really keeps.
Leaves unmocked: kube-apiserver and etcd (``tests/support/controlplane``), kopf's ``Patch``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import API, CRD_FILE, apply_tns, kubectl
from turso_operator._builders import mutate_pod_spec, now_iso
from turso_operator._config import OperatorConfig
from turso_operator._constants import (
    DATA_DIR,
    INJECT_LABEL,
    INJECTED_ANNOTATION,
    TOKEN_DIR,
    TOKEN_VOLUME,
    SecretKey,
)
from turso_operator._handlers import close_clients, configure, inject_turso, operator_memo

pytestmark = pytest.mark.cluster

BASE_ENV = {"TURSO_SERVER_URL": "http://turso:8080", "TURSO_SERVER_ADMIN_URL": "http://turso-admin:8081"}
TOKEN_FILES = {
    "TURSO_SERVER_TOKEN_FILE": f"{TOKEN_DIR}/TURSO_SERVER_TOKEN",
    "RUNTIME_TURSO_SERVER_TOKEN_FILE": f"{TOKEN_DIR}/RUNTIME_TURSO_SERVER_TOKEN",
}
TOKEN_MOUNT = {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}


@pytest.fixture(scope="module")
def api() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        kubectl(cp, "apply", "-f", str(CRD_FILE))
        kubectl(cp, "wait", "--for=condition=Established", "crd/tursonamespaces.turso.buntime.io")
        yield cp


@pytest.fixture
def ready(api: ControlPlane) -> tuple[str, str]:
    """A fresh namespace with a Ready TursoNamespace ``orders`` (Secret ``orders-turso``)."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    status, body = api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    assert status == 201, body
    apply_tns(api, namespace, "orders")
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "",
        "lastTransitionTime": now_iso(),
    }
    status, body = api.request(
        "PATCH",
        f"{API}/namespaces/{namespace}/tursonamespaces/orders/status",
        {"status": {"conditions": [condition], "secretName": "orders-turso"}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    return namespace, "orders-turso"


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {INJECT_LABEL: "orders"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}], **spec},
    }


async def _inject(
    api: ControlPlane, monkeypatch: pytest.MonkeyPatch, namespace: str, pod: dict[str, Any]
) -> tuple[kopf.Patch, list[str]]:
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    memo = operator_memo(OperatorConfig.from_env(BASE_ENV))
    await configure(settings=kopf.OperatorSettings(), memo=memo)
    body = kopf.Body({**pod, "metadata": {**pod["metadata"], "namespace": namespace}})
    patch, warnings = kopf.Patch(), []
    try:
        await inject_turso(spec=body.spec, meta=body.meta, patch=patch, warnings=warnings, memo=memo)
    finally:
        await close_clients(memo=memo)
    return patch, warnings


def _apply(pod: dict[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    """The pod as the API server receives it after the webhook's patch."""
    result = copy.deepcopy(pod)
    result["spec"].update(copy.deepcopy(dict(patch.get("spec") or {})))
    annotations = (patch.get("metadata") or {}).get("annotations") or {}
    result["metadata"].setdefault("annotations", {}).update(annotations)
    return result


def _create(api: ControlPlane, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    status, stored = api.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert status == 201, stored
    return dict(stored)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


async def test_containers_and_init_containers_get_token_files_of_a_read_only_secret_volume(
    api: ControlPlane, ready: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, secret = ready
    pod = _pod(
        "two-and-init",
        initContainers=[{"name": "migrate", "image": "example/app:1"}],
        containers=[{"name": "app", "image": "example/app:1"}, {"name": "worker", "image": "example/app:1"}],
    )
    patch, warnings = await _inject(api, monkeypatch, namespace, pod)
    assert not warnings
    stored = _create(api, namespace, _apply(pod, patch))
    spec = stored["spec"]
    for container in [*spec["initContainers"], *spec["containers"]]:
        env = _env(container)
        assert {k: env[k] for k in TOKEN_FILES} == TOKEN_FILES, container["name"]
        assert "TURSO_SERVER_TOKEN" not in env and "RUNTIME_TURSO_SERVER_TOKEN" not in env
        for name, key in (
            ("TURSO_SERVER_URL", SecretKey.SERVER_URL),
            ("RUNTIME_TURSO_SERVER_URL", SecretKey.RUNTIME_SERVER_URL),
            ("TURSO_NAMESPACE", SecretKey.NAMESPACE),
        ):
            assert env[name] == {"secretKeyRef": {"name": secret, "key": key}}, name
        assert env["RUNTIME_TURSO_DIR"] == DATA_DIR
        assert TOKEN_MOUNT in container["volumeMounts"], container["name"]
        assert {"name": "turso-data", "mountPath": DATA_DIR} in container["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[TOKEN_VOLUME]["secret"]["secretName"] == secret
    assert volumes[TOKEN_VOLUME]["secret"]["items"] == [
        {"key": "RUNTIME_TURSO_SERVER_TOKEN", "path": "RUNTIME_TURSO_SERVER_TOKEN"},
        {"key": "TURSO_SERVER_TOKEN", "path": "TURSO_SERVER_TOKEN"},
    ]
    assert stored["metadata"]["annotations"][INJECTED_ANNOTATION] == "orders"

    # Idempotent on what the API server stored (defaults added): mutating again adds nothing,
    # and the handler leaves an injected pod alone.
    assert mutate_pod_spec(spec, secret) == spec
    again, _ = await _inject(api, monkeypatch, namespace, stored)
    assert not again


async def test_a_containers_own_token_or_token_file_wins_and_gets_neither_of_its_pair(
    api: ControlPlane, ready: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, secret = ready
    own_file = {"name": "TURSO_SERVER_TOKEN_FILE", "value": "/mine/token"}
    own_token = {"name": "RUNTIME_TURSO_SERVER_TOKEN", "value": "mine"}
    both = [
        {"name": "TURSO_SERVER_TOKEN", "value": "mine"},
        {"name": "RUNTIME_TURSO_SERVER_TOKEN_FILE", "value": "/m"},
    ]
    pod = _pod(
        "own-values",
        initContainers=[{"name": "init", "image": "example/app:1", "env": [own_token]}],
        containers=[
            {"name": "file", "image": "example/app:1", "env": [own_file]},
            {"name": "both", "image": "example/app:1", "env": both},
        ],
    )
    patch, _ = await _inject(api, monkeypatch, namespace, pod)
    stored = _create(api, namespace, _apply(pod, patch))
    init, file, own = stored["spec"]["initContainers"][0], *stored["spec"]["containers"]

    assert _env(init)["RUNTIME_TURSO_SERVER_TOKEN"] == "mine"
    assert "RUNTIME_TURSO_SERVER_TOKEN_FILE" not in _env(init)
    assert _env(init)["TURSO_SERVER_TOKEN_FILE"] == TOKEN_FILES["TURSO_SERVER_TOKEN_FILE"]
    assert TOKEN_MOUNT in init["volumeMounts"]

    assert _env(file)["TURSO_SERVER_TOKEN_FILE"] == "/mine/token" and "TURSO_SERVER_TOKEN" not in _env(file)
    assert _env(file)["RUNTIME_TURSO_SERVER_TOKEN_FILE"] == TOKEN_FILES["RUNTIME_TURSO_SERVER_TOKEN_FILE"]

    env = _env(own)  # both of its pairs set by the app: no token injected, no token volume mounted
    assert (env["TURSO_SERVER_TOKEN"], env["RUNTIME_TURSO_SERVER_TOKEN_FILE"]) == ("mine", "/m")
    assert "TURSO_SERVER_TOKEN_FILE" not in env and "RUNTIME_TURSO_SERVER_TOKEN" not in env
    assert "TURSO_SERVER_URL" in env and all(m["name"] != TOKEN_VOLUME for m in own["volumeMounts"])
    assert [e["name"] for e in own["env"]].count("TURSO_SERVER_TOKEN") == 1
    assert mutate_pod_spec(stored["spec"], secret) == stored["spec"]


async def test_a_pod_already_using_the_token_volumes_name_or_path_is_refused_and_untouched(
    api: ControlPlane, ready: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, _secret = ready
    named = _pod("named", volumes=[{"name": TOKEN_VOLUME, "emptyDir": {}}])
    mounted = _pod("mounted", volumes=[{"name": "mine", "emptyDir": {}}])
    mounted["spec"]["containers"][0]["volumeMounts"] = [{"name": "mine", "mountPath": TOKEN_DIR}]
    for pod, says in ((named, f"volume named '{TOKEN_VOLUME}'"), (mounted, f"already mounts {TOKEN_DIR}")):
        with pytest.raises(kopf.AdmissionError) as refused:
            await _inject(api, monkeypatch, namespace, pod)
        assert refused.value.code == 403 and says in str(refused.value), refused.value
        stored = _create(api, namespace, pod)  # a pod the webhook refused is valid as it was
        assert "env" not in stored["spec"]["containers"][0]
