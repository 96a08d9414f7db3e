"""The webhook's pod mutation against a real kube-apiserver: the token as files of a Secret volume,
and the variables a container takes through ``envFrom`` kept (the ConfigMaps' and Secrets' key
names read from the API server, with the chart's RBAC or a role that may not read them).

The handler (``inject_turso``) looks the TursoNamespace up in a real API server (the CRD applied,
its status set Ready through the status subresource, as the operator would), and the pod it
patched is created there, so the API server's validation (volume and mount names, the Secret
volume's items, ``readOnly``) and its defaulting (``defaultMode``…) apply. The stored pod is then
mutated again to show the mutation is idempotent on what the API server really keeps.
Leaves unmocked: kube-apiserver and etcd (``tests/support/controlplane``), its RBAC authorizer and
TokenRequest API, kopf's ``Patch``.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import uuid
from typing import Any

import kopf
import pytest

from tests.chart.rendering import EnvSources, container_env, one, render
from tests.support.controlplane import ControlPlane
from tests.support.operator import API, apply_tns
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
    api: ControlPlane,
    monkeypatch: pytest.MonkeyPatch,
    namespace: str,
    pod: dict[str, Any],
    *,
    kubeconfig: str = "",
    **env: str,
) -> tuple[kopf.Patch, list[str]]:
    monkeypatch.setenv("KUBECONFIG", kubeconfig or str(api.kubeconfig))
    memo = operator_memo(OperatorConfig.from_env({**BASE_ENV, **env}))
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


async def test_a_mount_path_is_compared_normalised_so_a_trailing_slash_gets_no_second_mount(
    api: ControlPlane, ready: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, _secret = ready
    for path in (f"{DATA_DIR}/", f"/{DATA_DIR}", "/data/./turso", "/data/x/../turso/"):
        pod = _pod(f"own-data-{uuid.uuid4().hex[:6]}", volumes=[{"name": "mine", "emptyDir": {}}])
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "mine", "mountPath": path}]
        patch, _ = await _inject(api, monkeypatch, namespace, pod)
        stored = _create(api, namespace, _apply(pod, patch))
        (container,) = stored["spec"]["containers"]
        mounts = [m for m in container["volumeMounts"] if m != TOKEN_MOUNT]
        assert mounts == [{"name": "mine", "mountPath": path}], (path, container["volumeMounts"])
        assert "turso-data" not in {v["name"] for v in stored["spec"]["volumes"]}, path
        assert _env(container)["RUNTIME_TURSO_DIR"] == DATA_DIR  # its own volume is the data dir
        assert TOKEN_MOUNT in container["volumeMounts"]
    # The token directory with a trailing slash is the token directory: refused, as without it.
    taken = _pod("own-token-dir", volumes=[{"name": "mine", "emptyDir": {}}])
    taken["spec"]["containers"][0]["volumeMounts"] = [{"name": "mine", "mountPath": f"{TOKEN_DIR}/"}]
    with pytest.raises(kopf.AdmissionError) as refused:
        await _inject(api, monkeypatch, namespace, taken)
    assert refused.value.code == 403 and f"already mounts {TOKEN_DIR}" in str(refused.value)


# -- envFrom ----------------------------------------------------------------------------------------

#: A value no patch, warning, refusal or log line may carry: the webhook reads key names only.
SECRET_VALUE = "app-own-token-value"
INJECTED_SECRET = {  # the TursoNamespace's Secret, as the operator writes it (for container_env)
    SecretKey.SERVER_URL: "http://turso:8080",
    SecretKey.RUNTIME_SERVER_URL: "http://turso:8080",
    SecretKey.NAMESPACE: "orders",
}


def _object(api: ControlPlane, namespace: str, kind: str, name: str, data: dict[str, str]) -> None:
    if kind == "Secret":
        body = {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        status, result = api.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body)
    else:
        status, result = api.request(
            "POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": name}, "data": data}
        )
    assert status == 201, result


def _kubelet_env(container: dict[str, Any], sources: EnvSources, secret: str) -> dict[str, str]:
    """What the kubelet would give the stored container (envFrom, then env over it)."""
    sources.secrets.setdefault(secret, INJECTED_SECRET)
    return container_env(container, sources)


async def test_a_variable_a_container_takes_through_env_from_is_not_overridden(
    api: ControlPlane,
    ready: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    namespace, secret = ready
    sources = EnvSources()
    for kind, name, data in (
        ("ConfigMap", "app-config", {"TURSO_SERVER_URL": "http://my-turso:9090", "LOG_LEVEL": "debug"}),
        ("Secret", "app-token", {"TURSO_SERVER_TOKEN": SECRET_VALUE}),
        (
            "Secret",
            "both-tokens",
            {"TURSO_SERVER_TOKEN": SECRET_VALUE, "RUNTIME_TURSO_SERVER_TOKEN_FILE": "/m"},
        ),
    ):
        _object(api, namespace, kind, name, data)
        (sources.config_maps if kind == "ConfigMap" else sources.secrets)[name] = data
    pod = _pod(
        "env-from",
        initContainers=[
            {"name": "migrate", "image": "example/app:1", "envFrom": [{"secretRef": {"name": "app-token"}}]}
        ],
        containers=[
            {
                "name": "app",
                "image": "example/app:1",
                "envFrom": [{"configMapRef": {"name": "app-config"}}, {"secretRef": {"name": "app-token"}}],
            },
            {"name": "both", "image": "example/app:1", "envFrom": [{"secretRef": {"name": "both-tokens"}}]},
        ],
    )
    with caplog.at_level(logging.DEBUG):
        patch, warnings = await _inject(api, monkeypatch, namespace, pod)
    assert not warnings
    assert SECRET_VALUE not in json.dumps(dict(patch)) and SECRET_VALUE not in caplog.text
    stored = _create(api, namespace, _apply(pod, patch))
    migrate, app, both = stored["spec"]["initContainers"][0], *stored["spec"]["containers"]

    # The ConfigMap's URL wins; the Secret's token gets no token file beside it, while the
    # workers' token the app does not set is still injected, with the volume its file is on.
    env = _env(app)
    assert "TURSO_SERVER_URL" not in env and "TURSO_SERVER_TOKEN_FILE" not in env
    assert env["RUNTIME_TURSO_SERVER_TOKEN_FILE"] == TOKEN_FILES["RUNTIME_TURSO_SERVER_TOKEN_FILE"]
    assert env["TURSO_NAMESPACE"] == {"secretKeyRef": {"name": secret, "key": SecretKey.NAMESPACE}}
    assert TOKEN_MOUNT in app["volumeMounts"]
    kubelet = _kubelet_env(app, sources, secret)
    assert kubelet["TURSO_SERVER_URL"] == "http://my-turso:9090"
    assert kubelet["TURSO_SERVER_TOKEN"] == SECRET_VALUE and "TURSO_SERVER_TOKEN_FILE" not in kubelet

    env = _env(migrate)  # init containers alike
    assert "TURSO_SERVER_TOKEN_FILE" not in env and env["TURSO_SERVER_URL"]["secretKeyRef"]["name"] == secret
    assert TOKEN_MOUNT in migrate["volumeMounts"]

    # Both of its tokens from envFrom (one as a file of its own): nothing of either pair injected,
    # and no token volume mounted.
    env = _env(both)
    assert not {"TURSO_SERVER_TOKEN_FILE", "RUNTIME_TURSO_SERVER_TOKEN_FILE"} & set(env)
    assert all(m["name"] != TOKEN_VOLUME for m in both["volumeMounts"])
    kubelet = _kubelet_env(both, sources, secret)
    assert (kubelet["TURSO_SERVER_TOKEN"], kubelet["RUNTIME_TURSO_SERVER_TOKEN_FILE"]) == (SECRET_VALUE, "/m")
    assert "TURSO_SERVER_TOKEN_FILE" not in kubelet

    keys = {
        ("configmaps", "app-config"): frozenset({"TURSO_SERVER_URL", "LOG_LEVEL"}),
        ("secrets", "app-token"): frozenset({"TURSO_SERVER_TOKEN"}),
        ("secrets", "both-tokens"): frozenset({"TURSO_SERVER_TOKEN", "RUNTIME_TURSO_SERVER_TOKEN_FILE"}),
    }
    assert mutate_pod_spec(stored["spec"], secret, keys) == stored["spec"]


async def test_env_from_prefix_is_applied_to_the_key_names(
    api: ControlPlane, ready: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, secret = ready
    _object(
        api, namespace, "ConfigMap", "urls", {"SERVER_URL": "http://my-turso:9090", "TURSO_NAMESPACE": "x"}
    )
    _object(api, namespace, "Secret", "tokens", {"SERVER_TOKEN": SECRET_VALUE})
    pod = _pod(
        "prefixed",
        containers=[
            {
                "name": "app",
                "image": "example/app:1",
                "envFrom": [
                    {
                        "prefix": "TURSO_",
                        "configMapRef": {"name": "urls"},
                    },  # TURSO_SERVER_URL, TURSO_TURSO_NAMESPACE
                    {"prefix": "TURSO_", "secretRef": {"name": "tokens"}},  # TURSO_SERVER_TOKEN
                ],
            }
        ],
    )
    patch, _ = await _inject(api, monkeypatch, namespace, pod)
    app = _create(api, namespace, _apply(pod, patch))["spec"]["containers"][0]
    env = _env(app)
    assert "TURSO_SERVER_URL" not in env and "TURSO_SERVER_TOKEN_FILE" not in env
    # The key TURSO_NAMESPACE arrives as TURSO_TURSO_NAMESPACE: TURSO_NAMESPACE is still injected.
    assert env["TURSO_NAMESPACE"] == {"secretKeyRef": {"name": secret, "key": SecretKey.NAMESPACE}}
    assert env["RUNTIME_TURSO_SERVER_TOKEN_FILE"] == TOKEN_FILES["RUNTIME_TURSO_SERVER_TOKEN_FILE"]


async def test_a_missing_env_from_object_optional_or_not_gives_no_names_and_the_others_still_count(
    api: ControlPlane, ready: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace, secret = ready
    _object(api, namespace, "Secret", "app-token", {"TURSO_SERVER_TOKEN": SECRET_VALUE})
    pod = _pod(
        "missing",
        containers=[
            {
                "name": "app",
                "image": "example/app:1",
                "envFrom": [
                    {"configMapRef": {"name": "not-there", "optional": True}},
                    {"secretRef": {"name": "app-token"}},
                ],
            },
            {
                "name": "later",
                "image": "example/app:1",
                "envFrom": [{"configMapRef": {"name": "created-later"}}],
            },
        ],
    )
    patch, warnings = await _inject(api, monkeypatch, namespace, pod)
    assert not warnings
    app, later = _create(api, namespace, _apply(pod, patch))["spec"]["containers"]
    env = _env(app)
    assert "TURSO_SERVER_TOKEN_FILE" not in env  # the existing Secret still counts
    assert env["TURSO_SERVER_URL"] == {"secretKeyRef": {"name": secret, "key": SecretKey.SERVER_URL}}
    # A missing non-optional object: the container cannot start before it exists; it gives nothing.
    assert {k: _env(later)[k] for k in TOKEN_FILES} == TOKEN_FILES


def _service_account_kubeconfig(
    api: ControlPlane, namespace: str, role_ref: dict[str, str], path: str
) -> str:
    """A kubeconfig whose only identity is a new ServiceAccount bound to ``role_ref`` in ``namespace``."""
    account = f"op-{uuid.uuid4().hex[:6]}"
    for url, body in (
        (f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": account}}),
        (
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            {
                "metadata": {"name": account},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", **role_ref},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            },
        ),
    ):
        status, result = api.request("POST", url, body)
        assert status == 201, result
    status, token = api.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"spec": {"expirationSeconds": 3600}},
    )
    assert status == 201, token
    config = json.loads(api.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": token["status"]["token"]}
    with open(path, "w") as file:
        json.dump(config, file)
    return path


async def test_the_charts_rbac_reads_env_from_objects_and_one_the_operator_may_not_read_refuses(
    api: ControlPlane,
    ready: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    namespace, _secret = ready
    _object(api, namespace, "ConfigMap", "app-config", {"TURSO_SERVER_URL": "http://my-turso:9090"})
    _object(api, namespace, "Secret", "app-token", {"TURSO_SERVER_TOKEN": SECRET_VALUE})
    pod = _pod(
        "rbac",
        containers=[
            {
                "name": "app",
                "image": "example/app:1",
                "envFrom": [{"configMapRef": {"name": "app-config"}}, {"secretRef": {"name": "app-token"}}],
            }
        ],
    )
    # The operator's ClusterRole as the chart renders it: enough to read both.
    chart_role = one(render({"tursoServer.enabled": "true"}), "ClusterRole")
    name = f"chart-operator-{uuid.uuid4().hex[:6]}"
    status, body = api.request(
        "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {**chart_role, "metadata": {"name": name}}
    )
    assert status == 201, body
    chart = _service_account_kubeconfig(
        api, namespace, {"kind": "ClusterRole", "name": name}, str(tmp_path / "chart")
    )
    patch, warnings = await _inject(api, monkeypatch, namespace, pod, kubeconfig=chart)
    assert not warnings
    env = _env(_apply(pod, patch)["spec"]["containers"][0])
    assert "TURSO_SERVER_URL" not in env and "TURSO_SERVER_TOKEN_FILE" not in env

    # A role that may read the TursoNamespace, and Secrets, but no ConfigMap: refused (403 from
    # the API server), naming the object and nothing of its contents; Ignore admits it untouched.
    status, body = api.request(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        {
            "metadata": {"name": "no-configmaps"},
            "rules": [
                {"apiGroups": ["turso.buntime.io"], "resources": ["tursonamespaces"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            ],
        },
    )
    assert status == 201, body
    narrow = _service_account_kubeconfig(
        api, namespace, {"kind": "Role", "name": "no-configmaps"}, str(tmp_path / "narrow")
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(kopf.AdmissionError) as refused:
        await _inject(api, monkeypatch, namespace, pod, kubeconfig=narrow)
    message = str(refused.value)
    assert refused.value.code == 403, message
    assert f"cannot read ConfigMap {namespace}/app-config (envFrom of container 'app')" in message, message
    assert "(403)" in message and "http://my-turso:9090" not in message, message
    patch, warnings = await _inject(
        api, monkeypatch, namespace, pod, kubeconfig=narrow, TURSO_INJECT_FAILURE_POLICY="Ignore"
    )
    assert not patch and len(warnings) == 1 and "cannot read ConfigMap" in warnings[0], warnings
    assert SECRET_VALUE not in caplog.text + message + warnings[0]
