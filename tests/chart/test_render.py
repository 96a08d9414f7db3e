"""``helm lint`` and ``helm template`` of every value set: schema validity and what each object says.

Every rendered object is validated against the Kubernetes 1.34 OpenAPI schemas in strict mode
(unknown fields fail). The assertions then pin the behaviour the issue asks for and the upstream
defects the chart must not repeat (HPA kind, secrets in ConfigMaps, random roll annotations,
missing NetworkPolicy or securityContext, generated tokens).
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from buntime.plugins import BUILTIN_DIR, discover, resolve_settings
from tests.chart.rendering import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    EnvSources,
    HelmError,
    container_env,
    containers,
    decoded,
    find,
    helm,
    install_notes,
    one,
    pod_spec,
    render,
    set_flags,
)
from tests.support.tursoserver import TursoServer
from turso_operator._config import OperatorConfig
from turso_server._config import load_config

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Pod", "Job")
#: The runtime's scoped tokens, in a Secret the operator writes (Helm never renders it).
RUNTIME_TURSO_SECRET = f"{RELEASE}-runtime-turso"
#: Pods that run the runtime or worker code: they may hold scoped tokens only.
TENANT_COMPONENTS = ("runtime", "test")
SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
ADMIN_TOKEN_KEY = "TURSO_ADMIN_TOKEN"


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def secret_refs(container: dict[str, Any]) -> set[tuple[str, str]]:
    refs = set()
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs.add((ref["name"], ref["key"]))
    return refs


# -- lint and schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(value_set: str) -> None:
    out = helm("lint", "--strict", str(CHART), *set_flags(VALUE_SETS[value_set]))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_matches_the_kubernetes_openapi_schema(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    docs = rendered[value_set]
    assert docs
    for doc in docs:
        # Raises ValidationError (with the path) on a wrong type or an unknown field.
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_the_validator_rejects_a_broken_object() -> None:
    """Guard against a validator that silently accepts everything (e.g. a missing schema)."""
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "2"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("path", ["examples/app.yaml"])
def test_examples_match_the_openapi_schema(path: str) -> None:
    for doc in yaml.safe_load_all((CHART.parents[1] / path).read_text()):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


# -- every value set ------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_selectors_use_only_stable_labels(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    for doc in rendered[value_set]:
        selector = None
        if doc["kind"] in ("Deployment", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        elif doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        if selector is not None:
            assert set(selector) == SELECTOR_KEYS, (doc["kind"], doc["metadata"]["name"], selector)
        labels = doc["metadata"].get("labels") or {}
        if doc["kind"] != "CustomResourceDefinition":
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_container_is_locked_down(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    for obj in workloads(rendered[value_set]):
        spec = pod_spec(obj)
        assert spec["enableServiceLinks"] is False  # no "<SERVICE>_PORT" shadowing BUNTIME_PORT
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in containers(obj):
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, container["name"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert "resources" in container


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_no_secret_value_in_a_config_map(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    docs = rendered[value_set]
    secret_values = {v for s in find(docs, "Secret") for v in decoded(s).values() if len(v) >= 8}
    secret_keys = {
        "TURSO_SYNC_AUTH_TOKEN",
        "GATEWAY_API_KEY",
        "TURSO_AUTH_TOKEN",
        ADMIN_TOKEN_KEY,
        "TURSO_SERVER_TOKEN",
        "TURSO_TOKEN_SIGNING_KEY",
        "PROXY_API_KEY",
        "PROXY_RULES",
    }
    for cm in find(docs, "ConfigMap"):
        data = cm.get("data") or {}
        assert not secret_keys & set(data), cm["metadata"]["name"]
        assert not secret_values & set(data.values())
    for obj in workloads(docs):
        for container in containers(obj):
            for entry in container.get("env") or []:
                if entry["name"] in secret_keys:
                    assert "valueFrom" in entry, (obj["metadata"]["name"], entry["name"])


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_workload_pods_never_get_the_admin_token(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    for obj in workloads(rendered[value_set]):
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        for container in containers(obj):
            keys = {key for _, key in secret_refs(container)}
            if component not in ("operator", "turso-server"):
                assert ADMIN_TOKEN_KEY not in keys, (obj["metadata"]["name"], keys)
            assert not container.get("envFrom") or all(
                "secretRef" not in s or "turso-auth" not in s["secretRef"]["name"]
                for s in container["envFrom"]
            )


def test_static_proxy_rules_and_their_header_values_go_to_the_secret_only(tmp_path: Path) -> None:
    """A rule's headers are upstream credentials (Authorization): PROXY_RULES is never in a ConfigMap."""
    rules = [
        {
            "pattern": "^/api/(.*)",
            "target": "http://api:8080",
            "headers": {"Authorization": "Bearer up-s3cret"},
        }
    ]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"plugins": {"proxy": {"rules": rules}}}))
    docs = render(extra=["-f", str(values)])
    for cm in find(docs, "ConfigMap"):
        assert "PROXY_RULES" not in (cm.get("data") or {}), cm["metadata"]["name"]
        assert "up-s3cret" not in yaml.safe_dump(cm)
    assert yaml.safe_load(decoded(one(docs, "Secret", f"{RELEASE}-runtime"))["PROXY_RULES"]) == rules
    container = one(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    assert yaml.safe_load(container_env(container, EnvSources(docs))["PROXY_RULES"]) == rules


ADMIN_KEYS = ("GATEWAY_API_KEY", "PROXY_API_KEY")
GIVEN_KEYS = [
    "--set-string",
    "plugins.gateway.apiKey=gw-given",
    "--set-string",
    "plugins.proxy.apiKey=px-given",
]


def without_generated_keys(out: str) -> list[dict[str, Any]]:
    """The documents with the runtime Secret's generated admin keys taken out."""
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in find(docs, "Secret", f"{RELEASE}-runtime"):
        for key in ADMIN_KEYS:
            doc["data"].pop(key)
    return docs


def test_defaults_render_reproducibly() -> None:
    """No random roll annotation: with the admin keys given, two renders are byte-identical; with
    them generated, only the generated values differ (checksum/secret included: it hashes no key)."""
    given = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *GIVEN_KEYS)
    assert given == helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *GIVEN_KEYS)
    first = helm("template", RELEASE, str(CHART), "-n", NAMESPACE)
    second = helm("template", RELEASE, str(CHART), "-n", NAMESPACE)
    assert first != second
    assert without_generated_keys(first) == without_generated_keys(second)
    assert "rollme" not in first


def test_the_admin_keys_are_generated_into_the_runtime_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """A default install has both admin APIs closed: GATEWAY_API_KEY and PROXY_API_KEY are generated
    (lookup keeps them on upgrade: tests/cluster/chart/test_chart_install.py); given ones win."""
    for name, docs in rendered.items():
        secret = decoded(one(docs, "Secret", f"{RELEASE}-runtime"))
        if name != "everything":
            assert len(secret["GATEWAY_API_KEY"]) == 48 and secret["GATEWAY_API_KEY"].isalnum(), name
        assert len(secret["PROXY_API_KEY"]) == 48 and secret["PROXY_API_KEY"].isalnum(), name
        assert secret["GATEWAY_API_KEY"] != secret["PROXY_API_KEY"]
        env = container_env(
            one(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0],
            _with_runtime_secret(docs),
        )
        assert all(env[key] == secret[key] for key in ADMIN_KEYS), name
    assert (
        decoded(one(rendered["everything"], "Secret", f"{RELEASE}-runtime"))["GATEWAY_API_KEY"]
        == "gateway-key"
    )
    given = decoded(one(render({"plugins.proxy.apiKey": "px-given"}), "Secret", f"{RELEASE}-runtime"))
    assert given["PROXY_API_KEY"] == "px-given" and len(given["GATEWAY_API_KEY"]) == 48


def test_checksums_follow_the_config_and_only_the_config() -> None:
    def annotations(values: dict[str, str]) -> dict[str, str]:
        deployment = one(render(values), "Deployment", RELEASE)
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    base = annotations({})
    assert set(base) >= {"checksum/config", "checksum/secret"}
    assert annotations({}) == base
    changed_config = annotations({"plugins.keyval.sweepInterval": "30s"})
    assert changed_config["checksum/config"] != base["checksum/config"]
    assert changed_config["checksum/secret"] == base["checksum/secret"]
    changed_secret = annotations({"plugins.gateway.apiKey": "abcdefgh"})
    assert changed_secret["checksum/secret"] != base["checksum/secret"]
    assert changed_secret["checksum/config"] == base["checksum/config"]


def test_a_change_of_the_runtime_token_scopes_rolls_the_runtime_pods() -> None:
    """runtime.turso.* reaches only the operator's env (it mints the runtime's token for that
    scope), not the runtime's ConfigMap or Secret: checksum/turso-scopes rolls the runtime pods."""

    def annotations(values: dict[str, str]) -> dict[str, str]:
        deployment = one(render({"tursoServer.enabled": "true", **values}), "Deployment", RELEASE)
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    base = annotations({})
    assert annotations({}) == base
    for values in (
        {"runtime.turso.namespaces": "{runtime,gateway,keyval,proxy,orders2}"},
        {"runtime.turso.workerNamespaces": "{worker-*,jobs}"},
    ):
        changed = annotations(values)
        assert changed["checksum/turso-scopes"] != base["checksum/turso-scopes"], values
        assert (changed["checksum/config"], changed["checksum/secret"]) == (
            base["checksum/config"],
            base["checksum/secret"],
        )
    local = one(render({}), "Deployment", RELEASE)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/turso-scopes" not in local  # no operator, no minted token


# -- defaults: local mode --------------------------------------------------------------------------


def test_defaults_are_the_runtime_in_local_mode(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        ["ConfigMap", "CustomResourceDefinition", "Deployment", "Pod", "Secret", "Service", "ServiceAccount"]
    )
    assert not find(docs, "StatefulSet")
    deployment = one(docs, "Deployment", RELEASE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][0] == "buntime" and container["command"][-1] == "serve"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/data/turso"]]
    env = container_env(container, EnvSources(docs))
    assert env["TURSO_MODE"] == "local"
    assert env["TURSO_LOCAL_PATH"] == "/data/turso/runtime.db"
    assert env["BUNTIME_PORT"] == "8000"
    assert "TURSO_SERVER_URL" not in env and "TURSO_SYNC_URL" not in env
    # Generated plugin settings reach the ConfigMap with their manifest defaults (0 is not "unset").
    assert env["GATEWAY_METRICS_RETENTION"] == "3600"
    assert env["KEYVAL_QUEUE_LOCK_DURATION"] == "30s"
    zero = render({"plugins.keyval.sweepInterval": "0"})
    assert (
        container_env(one(zero, "Deployment")["spec"]["template"]["spec"]["containers"][0], EnvSources(zero))[
            "KEYVAL_SWEEP_INTERVAL"
        ]
        == "0"
    )


def test_single_tenant_sync_takes_the_token_from_a_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["single-tenant-sync"]
    configmap = one(docs, "ConfigMap")["data"]
    assert configmap["TURSO_MODE"] == "sync"
    assert configmap["TURSO_SYNC_URL"] == "http://turso.example:8080/buntime"
    assert "TURSO_SYNC_AUTH_TOKEN" not in configmap
    secret = decoded(one(docs, "Secret", f"{RELEASE}-runtime"))
    assert set(secret) == {"TURSO_SYNC_AUTH_TOKEN", "GATEWAY_API_KEY", "PROXY_API_KEY"}
    assert secret["TURSO_SYNC_AUTH_TOKEN"] == "sync-secret-token"
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container, EnvSources(docs))
    assert env["TURSO_SYNC_AUTH_TOKEN"] == "sync-secret-token"
    assert "TURSO_SERVER_URL" not in env


def test_sync_mode_without_a_url_stops_the_render() -> None:
    with pytest.raises(HelmError, match=r"plugins.turso.mode=sync needs plugins.turso.sync.url"):
        render({"plugins.turso.mode": "sync"})


def test_the_inline_executor_outside_local_mode_stops_the_render() -> None:
    for values in (
        {"tursoServer.enabled": "true"},
        {"plugins.turso.mode": "sync", "plugins.turso.sync.url": "http://s"},
    ):
        with pytest.raises(HelmError, match=r"executor=inline applies to local mode only"):
            render({**values, "plugins.turso.executor": "inline"})
    configmap = one(render({"plugins.turso.executor": "inline"}), "ConfigMap")["data"]
    assert configmap["TURSO_EXECUTOR"] == "inline"


def test_contradictory_autoscaling_stops_the_render() -> None:
    with pytest.raises(HelmError, match="minReplicas"):
        render(
            {
                "runtime.autoscaling.enabled": "true",
                "runtime.autoscaling.minReplicas": "5",
                "runtime.autoscaling.maxReplicas": "2",
            }
        )


# -- the in-cluster turso-server ---------------------------------------------------------------------


def test_turso_server_statefulset_services_and_probes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["turso-server"]
    sts = one(docs, "StatefulSet", f"{RELEASE}-turso")
    assert sts["spec"]["replicas"] == 1
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["turso-server"]
    assert {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/var/lib/turso"] == claim[
        "metadata"
    ]["name"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    data = one(docs, "Service", f"{RELEASE}-turso")
    admin = one(docs, "Service", f"{RELEASE}-turso-admin")
    assert [(p["port"], p["targetPort"]) for p in data["spec"]["ports"]] == [(8080, "data")]
    assert [(p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [(8081, "admin")]
    env = container_env(container, EnvSources(docs))
    assert env["TURSO_DATA_ADDR"] == ":8080" and env["TURSO_ADMIN_ADDR"] == ":8081"
    assert env["TURSO_DATA_DIR"] == "/var/lib/turso"
    assert env["TURSODB_BIN"] == "/usr/local/bin/tursodb"
    assert env["TURSO_MAX_NAMESPACES"] == "256" and env["TURSO_ALLOW_AUTO_PROVISION"] == "true"
    assert len(env["TURSO_TOKEN_SIGNING_KEY"]) >= 32


def test_tokens_are_generated_into_a_kept_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    secret = one(rendered["turso-server"], "Secret", f"{RELEASE}-turso-auth")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    tokens = decoded(secret)
    assert set(tokens) == {"TURSO_AUTH_TOKEN", ADMIN_TOKEN_KEY, "TURSO_TOKEN_SIGNING_KEY"}
    assert all(len(v) >= 32 and v.isalnum() for v in tokens.values())
    assert len(set(tokens.values())) == 3
    explicit = decoded(
        one(
            render({"tursoServer.enabled": "true", "tursoServer.auth.dataToken": "given-token"}),
            "Secret",
            f"{RELEASE}-turso-auth",
        )
    )
    assert explicit["TURSO_AUTH_TOKEN"] == "given-token"


def test_existing_secret_replaces_the_generated_one() -> None:
    docs = render({"tursoServer.enabled": "true", "tursoServer.auth.existingSecret": "my-tokens"})
    assert not find(docs, "Secret", f"{RELEASE}-turso-auth")
    refs = {ref for obj in workloads(docs) for c in containers(obj) for ref in secret_refs(c)}
    # The runtime's Secret is the operator's and the metrics token has a Secret of its own.
    names = {name for name, _ in refs if name.startswith(("my-", RELEASE))}
    assert names == {"my-tokens", RUNTIME_TURSO_SECRET, f"{RELEASE}-turso-metrics"}


def test_an_existing_secret_without_a_signing_key_starts_turso_server_which_mints_no_token(
    tmp_path: Path,
) -> None:
    """docs/chart.md: an existingSecret without TURSO_TOKEN_SIGNING_KEY leaves TursoNamespaces
    Ready=False/ServerRejected. The StatefulSet's reference is optional, so the kubelet starts the
    container, and the real turso-server started with that environment serves and refuses to mint
    (409, what the operator reports as ServerRejected)."""
    docs = render({"tursoServer.enabled": "true", "tursoServer.auth.existingSecret": "my-tokens"})
    server = containers(one(docs, "StatefulSet", f"{RELEASE}-turso"))[0]
    (ref,) = [e for e in server["env"] if e["name"] == "TURSO_TOKEN_SIGNING_KEY"]
    assert ref["valueFrom"]["secretKeyRef"] == {
        "name": "my-tokens",
        "key": "TURSO_TOKEN_SIGNING_KEY",
        "optional": True,
    }
    sources = EnvSources(docs)
    sources.secrets["my-tokens"] = {"TURSO_AUTH_TOKEN": "data-token", "TURSO_ADMIN_TOKEN": "admin-token"}
    server_env = container_env(server, sources)
    assert "TURSO_TOKEN_SIGNING_KEY" not in server_env
    with TursoServer(tmp_path / "data", extra_env={"TURSO_TOKEN_SIGNING_KEY": ""}) as turso:
        status, body = turso.admin("POST", "/v1/tokens", {"namespaces": ["orders"], "access": "rw"})
        assert status == 409 and "TURSO_TOKEN_SIGNING_KEY" in json.dumps(body), (status, body)


def _with_runtime_secret(docs: list[dict[str, Any]]) -> EnvSources:
    """The rendered sources plus a stand-in for the Secret the operator writes."""
    sources = EnvSources(docs)
    sources.secrets[RUNTIME_TURSO_SECRET] = {
        "TURSO_SERVER_TOKEN": "scoped-to-the-plugins",
        "RUNTIME_TURSO_SERVER_TOKEN": "scoped-to-the-workers",
    }
    return sources


def test_runtime_switches_to_the_turso_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["turso-server"]
    container = one(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container, _with_runtime_secret(docs))
    assert env["TURSO_SERVER_URL"] == f"http://{RELEASE}-turso:8080"
    assert "RUNTIME_TURSO_SERVER_TOKEN" not in env and "RUNTIME_TURSO_SERVER_TOKEN_FILE" in env
    assert secret_refs(container) == set(), "both tokens are files of the turso-token volume"
    assert not find(docs, "Secret", RUNTIME_TURSO_SECRET), "the operator writes it, not Helm"


def test_the_plugins_token_is_a_file_of_a_secret_volume_so_a_re_mint_reaches_running_pods(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """An env value is read once, at container start; a Secret volume's file is refreshed in
    place by the kubelet, and the runtime reads ``TURSO_SERVER_TOKEN_FILE`` again when it changes."""
    spec = pod_spec(one(rendered["turso-server"], "Deployment", RELEASE))
    container = spec["containers"][0]
    env = {entry["name"]: entry for entry in container["env"]}
    mount = one_named(container["volumeMounts"], "turso-token")
    assert mount["readOnly"] is True and "subPath" not in mount, (
        mount
    )  # the kubelet never refreshes a subPath
    for key in ("TURSO_SERVER_TOKEN", "RUNTIME_TURSO_SERVER_TOKEN"):
        assert key not in env, f"{key} is read at start only: a re-minted token would need a restart"
        assert env[f"{key}_FILE"]["value"] == f"{mount['mountPath']}/{key}"
    volume = one_named(spec["volumes"], "turso-token")
    assert volume["secret"]["secretName"] == RUNTIME_TURSO_SECRET
    assert volume["secret"]["items"] == [
        {"key": "TURSO_SERVER_TOKEN", "path": "TURSO_SERVER_TOKEN"},
        {"key": "RUNTIME_TURSO_SERVER_TOKEN", "path": "RUNTIME_TURSO_SERVER_TOKEN"},
    ]
    assert "optional" not in volume["secret"]  # the pod waits for the operator's Secret
    # No worker scope: the operator writes no workers' token, so the volume must not ask for one.
    alone = pod_spec(
        one(
            render({"tursoServer.enabled": "true", "runtime.turso.workerNamespaces": "null"}),
            "Deployment",
            RELEASE,
        )
    )
    assert one_named(alone["volumes"], "turso-token")["secret"]["items"] == volume["secret"]["items"][:1]
    assert "RUNTIME_TURSO_SERVER_TOKEN_FILE" not in {e["name"] for e in alone["containers"][0]["env"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Without the in-cluster server there is no such Secret, so no volume and no file setting.
    local = pod_spec(one(rendered["defaults"], "Deployment", RELEASE))
    assert "turso-token" not in {v["name"] for v in local["volumes"]}
    assert "TURSO_SERVER_TOKEN_FILE" not in {e["name"] for e in local["containers"][0].get("env") or []}


def one_named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [item for item in items if item["name"] == name]
    assert len(found) == 1, (name, [item["name"] for item in items])
    return found[0]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_runtime_and_worker_pods_carry_no_token_that_opens_another_tenant(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    """No runtime or test pod references turso-server's credentials or holds one of their values.

    Their only tokens come from the operator-written Secret, minted for the scopes the operator
    is given (the runtime's own databases), and the operator refuses TursoNamespaces for those.
    """
    docs = rendered[value_set]
    auth = find(docs, "Secret", f"{RELEASE}-turso-auth")
    generated = {v for s in auth for v in decoded(s).values()}
    generated |= {v for s in find(docs, "Secret", f"{RELEASE}-turso-metrics") for v in decoded(s).values()}
    for obj in workloads(docs):
        if obj["metadata"]["labels"]["app.kubernetes.io/component"] not in TENANT_COMPONENTS:
            continue
        for container in containers(obj):
            names = {name for name, _ in secret_refs(container)}
            assert names <= {RUNTIME_TURSO_SECRET, f"{RELEASE}-runtime"}, (obj["metadata"]["name"], names)
            for source in container.get("envFrom") or []:
                assert "turso" not in (source.get("secretRef") or {}).get("name", ""), source
            env = container_env(container, _with_runtime_secret(docs), field_refs={"metadata.namespace": "x"})
            assert not generated & set(env.values()), obj["metadata"]["name"]
            # The plugins' token never reaches code that only needs the workers' one.
            if obj["kind"] == "Pod":
                assert (RUNTIME_TURSO_SECRET, "TURSO_SERVER_TOKEN") not in secret_refs(container)


def test_the_operator_mints_the_runtime_tokens_for_the_runtime_scopes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["turso-server"]
    container = containers(one(docs, "Deployment", f"{RELEASE}-operator"))[0]
    env = container_env(container, EnvSources(docs), field_refs={"metadata.namespace": NAMESPACE})
    assert env["TURSO_RUNTIME_SECRET"] == RUNTIME_TURSO_SECRET
    assert env["TURSO_RUNTIME_NAMESPACES"] == "runtime,gateway,keyval,proxy"
    assert env["TURSO_RUNTIME_WORKER_NAMESPACES"] == "worker-*"
    hook = containers(one(docs, "Pod"))[0]
    hook_env = container_env(hook, _with_runtime_secret(docs))
    assert hook_env["TEST_TURSO_NAMESPACE"] == "worker-helm-test"  # inside the workers' scope

    custom = render(
        {
            "tursoServer.enabled": "true",
            "runtime.turso.namespaces": "{runtime,billing}",
            "runtime.turso.workerNamespaces": "null",
        }
    )
    env = container_env(
        containers(one(custom, "Deployment", f"{RELEASE}-operator"))[0],
        EnvSources(custom),
        field_refs={"metadata.namespace": NAMESPACE},
    )
    assert (env["TURSO_RUNTIME_NAMESPACES"], env["TURSO_RUNTIME_WORKER_NAMESPACES"]) == (
        "runtime,billing",
        "",
    )
    runtime = next(c for c in containers(one(custom, "Deployment", RELEASE)) if c["name"] == "runtime")
    assert secret_refs(runtime) == set(), "no workers, no token (the plugins' one is a volume's file)"
    assert "TURSO_SERVER_TOKEN_FILE" in {entry["name"] for entry in runtime["env"]}
    hook_names = {entry["name"] for entry in containers(one(custom, "Pod"))[0].get("env") or []}
    assert "RUNTIME_TURSO_SERVER_TOKEN" not in hook_names and "RUNTIME_TURSO_SERVER_URL" not in hook_names


@pytest.mark.parametrize("scope", ["{*}", "{UPPER}", "{_state}", "{a*b}", "{healthz}", "{runtime,readyz}"])
def test_a_scope_turso_server_would_refuse_fails_the_schema(scope: str) -> None:
    with pytest.raises(HelmError):
        render({"tursoServer.enabled": "true", "runtime.turso.workerNamespaces": scope})
    with pytest.raises(HelmError):
        render({"tursoServer.enabled": "true", "runtime.turso.namespaces": scope})
    for empty in ("null", "{}"):
        with pytest.raises(HelmError, match=r"runtime\.turso\.namespaces"):
            render({"tursoServer.enabled": "true", "runtime.turso.namespaces": empty})


def test_the_turso_server_needs_the_operator_that_mints_the_runtime_tokens() -> None:
    with pytest.raises(HelmError, match=r"operator\.enabled"):
        render({"tursoServer.enabled": "true", "operator.enabled": "false"})


def test_metrics_have_a_read_only_token_of_their_own(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["turso-server"]
    metrics = decoded(one(docs, "Secret", f"{RELEASE}-turso-metrics"))
    assert set(metrics) == {"token"} and len(metrics["token"]) >= 32
    assert metrics["token"] not in decoded(one(docs, "Secret", f"{RELEASE}-turso-auth")).values()
    server = containers(one(docs, "StatefulSet", f"{RELEASE}-turso"))[0]
    assert (f"{RELEASE}-turso-metrics", "token") in secret_refs(server)
    assert container_env(server, EnvSources(docs))["TURSO_METRICS_TOKEN"] == metrics["token"]
    for obj in workloads(docs):
        if obj["kind"] != "StatefulSet":
            for container in containers(obj):
                assert f"{RELEASE}-turso-metrics" not in {name for name, _ in secret_refs(container)}
    given = render({"tursoServer.enabled": "true", "tursoServer.auth.metricsToken": "scrape-me-please"})
    assert decoded(one(given, "Secret", f"{RELEASE}-turso-metrics")) == {"token": "scrape-me-please"}


def test_network_policy_fences_the_admin_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    policy = one(rendered["turso-server"], "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "turso-server"
    data_rule, admin_rule = policy["spec"]["ingress"]
    assert data_rule == {"ports": [{"port": "data", "protocol": "TCP"}]}
    assert admin_rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
    (peer,) = admin_rule["from"]
    # The operator only: runtime pods get their tokens from it and never call the admin port.
    assert peer == {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "buntime",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "operator",
            }
        }
    }
    assert not find(
        render({"tursoServer.enabled": "true", "tursoServer.networkPolicy.enabled": "false"}), "NetworkPolicy"
    )


# -- the operator ------------------------------------------------------------------------------------


def test_operator_runs_once_with_recreate_and_its_env(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["turso-server"]
    deployment = one(docs, "Deployment", f"{RELEASE}-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][0] == "buntime-operator"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = container_env(container, EnvSources(docs), field_refs={"metadata.namespace": NAMESPACE})
    tokens = decoded(one(docs, "Secret", f"{RELEASE}-turso-auth"))
    assert env["TURSO_SERVER_URL"] == f"http://{RELEASE}-turso.{NAMESPACE}.svc:8080"
    assert env["TURSO_SERVER_ADMIN_URL"] == f"http://{RELEASE}-turso-admin:8081"
    assert env["TURSO_SERVER_ADMIN_TOKEN"] == tokens[ADMIN_TOKEN_KEY]
    assert "TURSO_SERVER_TOKEN" not in env, "with scoped tokens the operator never holds the data token"
    assert env["POD_NAMESPACE"] == NAMESPACE
    assert env["TURSO_WEBHOOK_ENABLED"] == "true" and env["TURSO_INJECT_FAILURE_POLICY"] == "Fail"
    assert env["TURSO_INSTANCE"] == "", "the default instance serves unlabelled TursoNamespaces"
    # Ready only once the webhook listens, and its lookup bounded by the API server's wait.
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert env["TURSO_WEBHOOK_TIMEOUT"] == str(hook["timeoutSeconds"])
    tls = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["TURSO_WEBHOOK_CERT_FILE"].rsplit("/", 1)[0] in tls
    everything = one(rendered["everything"], "Deployment", f"{RELEASE}-operator")
    everything_env = container_env(
        everything["spec"]["template"]["spec"]["containers"][0],
        EnvSources(rendered["everything"]),
        field_refs={"metadata.namespace": "x"},
    )
    assert everything_env["TURSO_WATCH_NAMESPACES"] == "team-a,team-b"


def test_the_operator_holds_the_global_data_token_only_without_scoped_tokens() -> None:
    docs = render({"tursoServer.enabled": "true", "tursoServer.auth.scopedTokens": "false"})
    operator = one(docs, "Deployment", f"{RELEASE}-operator")["spec"]["template"]["spec"]["containers"][0]
    tokens = decoded(one(docs, "Secret", f"{RELEASE}-turso-auth"))
    env = container_env(operator, EnvSources(docs), field_refs={"metadata.namespace": NAMESPACE})
    assert env["TURSO_SERVER_TOKEN"] == tokens["TURSO_AUTH_TOKEN"]


def test_operator_is_only_rendered_beside_the_turso_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in (rendered["defaults"], rendered["single-tenant-sync"]):
        operator = [
            d["kind"]
            for d in docs
            if d["kind"] != "CustomResourceDefinition"
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        ]
        assert not operator


def test_operator_rbac_is_least_privilege(rendered: dict[str, list[dict[str, Any]]]) -> None:
    role = one(rendered["turso-server"], "ClusterRole")
    rules = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert rules == {
        # kopf patches (never PUTs) the object and its status; the operator's own client GETs one
        # TursoNamespace (webhook) and GETs/POSTs/PUTs/DELETEs Secrets, and GETs the ConfigMaps a
        # pod's envFrom names (webhook); kopf POSTs core v1 Events and, cluster-wide, watches
        # across namespaces without listing them.
        ("turso.buntime.io", "tursonamespaces"): {"get", "list", "watch", "patch"},
        ("turso.buntime.io", "tursonamespaces/status"): {"patch"},
        ("", "secrets"): {"get", "create", "update", "delete"},
        ("", "configmaps"): {"get"},
        ("", "events"): {"create"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    binding = one(rendered["turso-server"], "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}
    ]


def test_the_operator_instance_reaches_the_operator_and_its_cluster_role() -> None:
    docs = render(
        {
            "tursoServer.enabled": "true",
            "operator.instance": "staging",
            "operator.watchNamespaces[0]": "team-a",
        }
    )
    container = one(docs, "Deployment", f"{RELEASE}-operator")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container, EnvSources(docs), field_refs={"metadata.namespace": NAMESPACE})
    assert env["TURSO_INSTANCE"] == "staging"
    # What install-time validation compares against other releases (validate.yaml).
    assert one(docs, "ClusterRole")["metadata"]["annotations"] == {
        "turso.buntime.io/instance": "staging",
        "turso.buntime.io/watch-namespaces": "team-a",
    }
    with pytest.raises(HelmError, match="instance"):
        render({"tursoServer.enabled": "true", "operator.instance": "Not_A_Label"})


def test_webhook_configuration(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["turso-server"]
    (webhook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["objectSelector"] == {
        "matchExpressions": [{"key": "turso.buntime.io/inject", "operator": "Exists"}]
    }
    assert webhook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}
    ]
    assert webhook["reinvocationPolicy"] == "Never"
    assert webhook["sideEffects"] == "None"
    assert webhook["failurePolicy"] == "Fail"
    service = webhook["clientConfig"]["service"]
    assert service["path"] == "/inject-turso"
    assert one(docs, "Service", service["name"])["spec"]["ports"][0]["targetPort"] == "webhook"
    tls = one(docs, "Secret", f"{RELEASE}-operator-webhook-tls")
    assert tls["type"] == "kubernetes.io/tls"
    assert webhook["clientConfig"]["caBundle"] == tls["data"]["ca.crt"]
    cert = base64.b64decode(tls["data"]["tls.crt"])
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
    ignore = render({"tursoServer.enabled": "true", "operator.webhook.failurePolicy": "Ignore"})
    assert one(ignore, "MutatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Ignore"


def test_webhook_off_renders_no_webhook(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["webhook-off"]
    assert not find(docs, "MutatingWebhookConfiguration")
    assert not find(docs, "Secret", f"{RELEASE}-operator-webhook-tls")
    assert not find(docs, "Service", f"{RELEASE}-operator-webhook")
    container = one(docs, "Deployment", f"{RELEASE}-operator")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container, EnvSources(docs), field_refs={"metadata.namespace": NAMESPACE})
    assert env["TURSO_WEBHOOK_ENABLED"] == "false"
    assert "TURSO_WEBHOOK_CERT_FILE" not in env
    assert "readinessProbe" not in container, "nothing to be ready for without the webhook"


# -- scaling and exposure ---------------------------------------------------------------------------


def test_hpa_targets_the_runtime_deployment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    deployment = one(docs, target["kind"], target["name"])
    assert target["apiVersion"] == deployment["apiVersion"] and target["kind"] == "Deployment"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "runtime"
    assert "replicas" not in deployment["spec"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    ingress = one(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert one(docs, "Service", backend["name"])["spec"]["ports"][0]["name"] == backend["port"]["name"]


def test_helm_test_hook(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for value_set, checks_turso in (("defaults", False), ("turso-server", True)):
        pod = one(rendered[value_set], "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert ("RUNTIME_TURSO_SERVER_TOKEN" in env) is checks_turso


def test_notes_say_what_was_installed() -> None:
    notes = install_notes("--set", "tursoServer.enabled=true")
    assert f"StatefulSet/{RELEASE}-turso" in notes and f"Deployment/{RELEASE}-operator" in notes
    assert "kind: TursoNamespace" in notes
    assert "configmap" not in notes.lower() or f"{RELEASE}-runtime" in notes
    local = install_notes()
    assert "local mode" in local and "tursoServer.enabled=true" in local
    # How to read the admin keys, generated or given.
    for key in ("GATEWAY_API_KEY", "PROXY_API_KEY"):
        line = next(line for line in local.splitlines() if f"{{.data.{key}}}" in line)
        assert f"kubectl get secret -n {NAMESPACE} {RELEASE}-runtime" in line and "generated" in line
    given = install_notes("--set-string", "plugins.proxy.apiKey=k")
    assert "given in values" in next(line for line in given.splitlines() if "{.data.PROXY_API_KEY}" in line)


def test_prometheus_monitors_only_when_asked_and_they_select_the_right_pods() -> None:
    for values in VALUE_SETS.values():
        docs = render(values)
        assert not find(docs, "ServiceMonitor") and not find(docs, "PodMonitor"), "off by default"
    on = {"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.release": "kube-prom"}
    local = render(on)
    assert find(local, "PodMonitor") == [], "no operator, no PodMonitor"
    assert [m["metadata"]["name"] for m in find(local, "ServiceMonitor")] == [RELEASE], "no turso-server"
    docs = render({**on, "tursoServer.enabled": "true", "metrics.serviceMonitor.interval": "15s"})
    monitor, service = one(docs, "ServiceMonitor", RELEASE), one(docs, "Service", RELEASE)
    assert monitor["metadata"]["labels"]["release"] == "kube-prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert any(port["name"] == "http" for port in service["spec"]["ports"])
    pod_monitor = one(docs, "PodMonitor")
    operator = one(docs, "Deployment", f"{RELEASE}-operator")
    pod_labels = operator["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for c in containers(operator) for p in c.get("ports", [])}
    assert ports["metrics"] == 9090  # the operator's TURSO_METRICS_PORT default
    with pytest.raises(HelmError):
        render({**on, "metrics.serviceMonitor.interval": "soon"})


def test_the_turso_server_monitor_scrapes_the_admin_port_with_the_metrics_secret() -> None:
    """turso-server's /metrics wants TURSO_METRICS_TOKEN: Prometheus reads it from the Secret."""
    on = {
        "tursoServer.enabled": "true",
        "metrics.serviceMonitor.enabled": "true",
        "metrics.serviceMonitor.labels.release": "kube-prom",
        "metrics.serviceMonitor.interval": "20s",
        "tursoServer.auth.metricsToken": "scrape-me-please-0123456789",
    }
    docs = render(on)
    monitor = one(docs, "ServiceMonitor", f"{RELEASE}-turso")
    assert monitor["metadata"]["labels"]["release"] == "kube-prom"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/component"] == "turso-server"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "admin",
        "path": "/metrics",
        "interval": "20s",
        "authorization": {
            "type": "Bearer",
            "credentials": {"name": f"{RELEASE}-turso-metrics", "key": "token"},
        },
    }
    # The Secret it names holds the token the server reads as TURSO_METRICS_TOKEN.
    token = decoded(one(docs, "Secret", f"{RELEASE}-turso-metrics"))["token"]
    server = containers(one(docs, "StatefulSet", f"{RELEASE}-turso"))[0]
    assert container_env(server, EnvSources(docs))["TURSO_METRICS_TOKEN"] == token
    # The selector picks turso-server's Services, and of them only the admin one has the port.
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(s["metadata"]["name"] for s in services) == [f"{RELEASE}-turso", f"{RELEASE}-turso-admin"]
    with_port = [
        s["metadata"]["name"] for s in services if "admin" in {p["name"] for p in s["spec"]["ports"]}
    ]
    assert with_port == [f"{RELEASE}-turso-admin"]
    statefulset = one(docs, "StatefulSet", f"{RELEASE}-turso")
    assert selector.items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    # The token itself is in no other object: not the monitor, not a ConfigMap, not the values.
    for doc in docs:
        if doc["kind"] != "Secret":
            assert "scrape-me-please-0123456789" not in yaml.safe_dump(doc), (
                doc["kind"],
                doc["metadata"]["name"],
            )
    assert "scrape-me-please" not in yaml.safe_dump(monitor)
    # The admin port stays fenced to the operator; extraAdminFrom lets the Prometheus pods in.
    prom = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    peer = r"tursoServer.networkPolicy.extraAdminFrom[0].namespaceSelector.matchLabels"
    opened = render({**on, rf"{peer}.kubernetes\.io/metadata\.name": "monitoring"})
    admin_rule = one(opened, "NetworkPolicy")["spec"]["ingress"][1]
    assert prom in admin_rule["from"]


def test_the_turso_server_monitor_credentials_open_the_real_metrics_endpoint(tmp_path: Path) -> None:
    """What Prometheus would send (the Secret key the monitor names) against a real turso-server
    started with the env the StatefulSet gets: 200 on /metrics, 403 on every other admin route."""
    docs = render({"tursoServer.enabled": "true", "metrics.serviceMonitor.enabled": "true"})
    (endpoint,) = one(docs, "ServiceMonitor", f"{RELEASE}-turso")["spec"]["endpoints"]
    ref = endpoint["authorization"]["credentials"]
    token = decoded(one(docs, "Secret", ref["name"]))[ref["key"]]
    server_env = container_env(containers(one(docs, "StatefulSet", f"{RELEASE}-turso"))[0], EnvSources(docs))
    metrics_env = {"TURSO_METRICS_TOKEN": server_env["TURSO_METRICS_TOKEN"]}
    with TursoServer(tmp_path / "data", extra_env=metrics_env) as server:

        def get(path: str, bearer: str) -> int:
            request = urllib.request.Request(
                f"{server.admin_url}{path}", headers={"Authorization": f"Bearer {bearer}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    assert "turso_server_admin_requests_total" in resp.read().decode()
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                with exc:
                    return int(exc.code)

        assert get(endpoint["path"], token) == 200
        assert get("/v1/namespaces", token) == 403
        assert get(endpoint["path"], "not-the-token") == 401


def _operator_env(values: dict[str, str]) -> dict[str, str]:
    docs = render({"tursoServer.enabled": "true", **values})
    (deployment,) = [
        d
        for d in find(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    (container,) = containers(deployment)
    env = {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}
    return {**env, "POD_NAMESPACE": NAMESPACE}  # a fieldRef: the release's namespace


def test_the_token_lifetime_reaches_the_operator_which_reads_it() -> None:
    default = _operator_env({})
    assert default["TURSO_TOKEN_LIFETIME"] == "0"
    assert OperatorConfig.from_env(default).token_lifetime == 0.0
    for given, seconds in (("24h", 86400.0), ("1d12h", 129600.0), ("3600", 3600.0)):
        env = _operator_env({"operator.tokenLifetime": given})
        assert env["TURSO_TOKEN_LIFETIME"] == given
        assert OperatorConfig.from_env(env).token_lifetime == seconds
    with pytest.raises(HelmError, match="tokenLifetime"):
        render({"tursoServer.enabled": "true", "operator.tokenLifetime": "soon"})
    with pytest.raises(HelmError, match="tokenLifetime"):  # past the operator's 36500d
        render({"tursoServer.enabled": "true", "operator.tokenLifetime": str(36500 * 86400 + 1)})


def test_numeric_durations_from_a_values_file_render_in_a_form_each_part_parses(tmp_path: Path) -> None:
    """YAML numbers reach the templates as float64, which toString prints as 2.592e+06: the
    operator, turso-server and the runtime's plugins must each get plain digits they accept."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "tursoServer": {
                    "enabled": True,
                    "gcInterval": 2592000,
                    "autoIdleDuration": 1209600.5,
                    "archiveRetention": 31536000,
                },
                "operator": {"tokenLifetime": 2592000},
                "plugins": {
                    "keyval": {"sweepInterval": 2592000, "queue": {"lockDuration": 1000000.25}},
                    "turso": {"leaseTtl": 0.05, "writeTimeout": 10},
                },
            }
        )
    )
    docs = render(extra=["-f", str(values)])

    operator_container = next(
        c
        for d in find(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
        for c in containers(d)
    )
    operator_env = {e["name"]: str(e["value"]) for e in operator_container["env"] if "value" in e}
    assert operator_env["TURSO_TOKEN_LIFETIME"] == "2592000"
    config = OperatorConfig.from_env({**operator_env, "POD_NAMESPACE": NAMESPACE})
    assert config.token_lifetime == 2592000.0

    server_container = containers(one(docs, "StatefulSet", f"{RELEASE}-turso"))[0]
    server_env = container_env(server_container, EnvSources(docs))
    assert (server_env["TURSO_GC_INTERVAL"], server_env["TURSO_AUTO_IDLE_DURATION"]) == (
        "2592000",
        "1209600.5",
    )
    assert server_env["TURSO_ARCHIVE_RETENTION"] == "31536000"
    server = load_config(
        {}, {**server_env, "TURSO_DATA_DIR": str(tmp_path / "turso"), "TURSODB_BIN": sys.executable}
    )
    assert (server.gc_interval, server.auto_idle_duration) == (2592000.0, 1209600.5)
    assert server.archive_retention == 31536000.0

    runtime = one(docs, "ConfigMap", f"{RELEASE}-runtime")["data"]
    expected = {
        "KEYVAL_SWEEP_INTERVAL": "2592000",
        "KEYVAL_QUEUE_LOCK_DURATION": "1000000.25",
        "TURSO_LEASE_TTL": "0.05",
        "TURSO_WRITE_TIMEOUT": "10",
    }
    assert {name: runtime[name] for name in expected} == expected
    for manifest in discover([BUILTIN_DIR]):
        names = {setting.env for setting in manifest.settings} & set(expected)
        if names:  # raises PluginConfigError on a value the runtime cannot read
            resolve_settings(manifest.settings, manifest.options, {n: runtime[n] for n in names})
