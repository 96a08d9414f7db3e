"""``helm install``, ``upgrade`` and ``uninstall`` against the real kube-apiserver.

Pods never run here (no kubelet), so nothing waits for readiness; what is checked is what Helm
and the API server do: every object is created and accepted, ``lookup`` keeps the generated
tokens, the runtime's admin API keys and the webhook CA across an upgrade (an admin key given
in values wins over the kept one), the upgrade updates the CRD (a template, not Helm's
``crds/``), and uninstall leaves the CRD (``crds.keep``) and the token Secret.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART, KUBECTL, RELEASE, helm
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

CRD = "tursonamespaces.turso.buntime.io"
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "CustomResourceDefinition",
}


def get(env: dict[str, str], kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    args = [str(KUBECTL), "get", kind, name, "-o", "json"]
    if namespace and kind not in CLUSTER_SCOPED:
        args += ["-n", namespace]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    loaded = json.loads(result.stdout)
    assert isinstance(loaded, dict)
    return loaded


def data(env: dict[str, str], name: str, namespace: str) -> dict[str, str]:
    secret = get(env, "secret", name, namespace)
    assert secret is not None, name
    return dict(secret["data"])


def test_install_upgrade_uninstall(control_plane: ControlPlane, helm_kube_env: dict[str, str]) -> None:
    env = helm_kube_env
    namespace = "chart-install"
    install = ["--namespace", namespace, "--set", "tursoServer.enabled=true"]
    if get(env, "crd", CRD, None) is not None:
        # Applied from deploy/crds/ by another test, like a CRD an older chart installed from
        # crds/: the documented hand-over to the release (chart README, "CRDs").
        for args in (
            ["label", "crd", CRD, "app.kubernetes.io/managed-by=Helm", "--overwrite"],
            ["annotate", "crd", CRD, "--overwrite",
             f"meta.helm.sh/release-name={RELEASE}", f"meta.helm.sh/release-namespace={namespace}"],
        ):  # fmt: skip
            done = subprocess.run([str(KUBECTL), *args], capture_output=True, text=True, env=env, timeout=30)
            assert done.returncode == 0, done.stderr
    try:
        helm("install", RELEASE, str(CHART), "--create-namespace", *install, env=env)

        # Every object of the release exists on the server (hooks only run on `helm test`).
        manifest = [
            d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE, "-n", namespace, env=env)) if d
        ]
        kinds = {d["kind"] for d in manifest}
        assert {"Deployment", "StatefulSet", "Service", "Secret", "ConfigMap", "NetworkPolicy", "ClusterRole",
                "ClusterRoleBinding", "MutatingWebhookConfiguration", "ServiceAccount"} <= kinds  # fmt: skip
        for doc in manifest:
            live = get(env, doc["kind"], doc["metadata"]["name"], namespace)
            assert live is not None, f"{doc['kind']}/{doc['metadata']['name']} was not created"
            assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert [d for d in manifest if d["kind"] == "CustomResourceDefinition"], "the CRD is a template"
        assert get(env, "crd", CRD, None) is not None

        tokens = data(env, f"{RELEASE}-turso-auth", namespace)
        assert set(tokens) == {"TURSO_AUTH_TOKEN", "TURSO_ADMIN_TOKEN", "TURSO_TOKEN_SIGNING_KEY"}
        tls = data(env, f"{RELEASE}-operator-webhook-tls", namespace)
        webhook = get(env, "mutatingwebhookconfiguration", f"{RELEASE}-operator", None)
        assert webhook is not None
        assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == tls["ca.crt"]
        # A default install closes both admin APIs: their keys are generated into the runtime Secret.
        keys = data(env, f"{RELEASE}-runtime", namespace)
        assert {"GATEWAY_API_KEY", "PROXY_API_KEY"} <= set(keys)
        assert all(len(base64.b64decode(keys[k])) == 48 for k in ("GATEWAY_API_KEY", "PROXY_API_KEY"))

        # An upgrade that changes something keeps every generated secret (lookup); a key given in
        # values replaces the generated one.
        helm(
            "upgrade", RELEASE, str(CHART), *install,
            "--set", "runtime.replicaCount=2", "--set", "commonLabels.upgraded=yes",
            "--set-string", "plugins.gateway.apiKey=given-gateway-key", env=env,
        )  # fmt: skip
        assert data(env, f"{RELEASE}-turso-auth", namespace) == tokens
        upgraded = data(env, f"{RELEASE}-runtime", namespace)
        assert upgraded["PROXY_API_KEY"] == keys["PROXY_API_KEY"]
        assert base64.b64decode(upgraded["GATEWAY_API_KEY"]) == b"given-gateway-key"
        assert data(env, f"{RELEASE}-operator-webhook-tls", namespace) == tls
        webhook = get(env, "mutatingwebhookconfiguration", f"{RELEASE}-operator", None)
        assert webhook is not None and webhook["webhooks"][0]["clientConfig"]["caBundle"] == tls["ca.crt"]
        runtime = get(env, "deployment", RELEASE, namespace)
        assert runtime is not None and runtime["spec"]["replicas"] == 2
        status = json.loads(helm("status", RELEASE, "-n", namespace, "-o", "json", env=env))
        assert status["version"] == 2
        # helm upgrade updates the CRD like every other object of the release.
        crd = get(env, "crd", CRD, None)
        assert crd is not None and crd["metadata"]["labels"]["upgraded"] == "yes"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        helm("uninstall", RELEASE, "-n", namespace, env=env)
        assert get(env, "deployment", RELEASE, namespace) is None
        assert get(env, "mutatingwebhookconfiguration", f"{RELEASE}-operator", None) is None
        assert get(env, "clusterrole", f"{RELEASE}-operator", None) is None
        # The CRD (crds.keep) and the token Secret are kept on purpose (resource-policy).
        assert get(env, "crd", CRD, None) is not None
        assert data(env, f"{RELEASE}-turso-auth", namespace) == tokens

        # A reinstall adopts the kept Secret and serves with the same tokens.
        helm("install", RELEASE, str(CHART), *install, env=env)
        assert data(env, f"{RELEASE}-turso-auth", namespace) == tokens
    finally:
        helm("uninstall", RELEASE, "-n", namespace, env=env, check=False)
        # The webhook has no endpoints here: never leave it behind for other tests' pods.
        control_plane.request(
            "DELETE",
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}-operator",
        )


def test_a_second_release_serving_the_same_tursonamespaces_is_refused(
    control_plane: ControlPlane, helm_kube_env: dict[str, str]
) -> None:
    """Two operators for the same instance over overlapping namespaces would fight over every
    TursoNamespace: the second install fails, saying so; with an instance of its own it installs."""
    env = helm_kube_env
    common = ["--create-namespace", "--set", "tursoServer.enabled=true", "--set", "crds.enabled=false"]
    try:
        helm("install", "prod", str(CHART), "-n", "chart-prod", *common, env=env)
        helm("upgrade", "prod", str(CHART), "-n", "chart-prod", *common[1:], env=env)  # not its own rival
        refused = helm("install", "staging", str(CHART), "-n", "chart-staging", *common, env=env, check=False)
        assert "release prod in namespace chart-prod already runs a TursoNamespace operator" in refused
        assert "operator.instance" in refused
        assert get(env, "deployment", "staging-buntime-operator", "chart-staging") is None
        narrowed = [*common, "--set", "operator.watchNamespaces[0]=team-a"]
        refused = helm(
            "install", "staging", str(CHART), "-n", "chart-staging", *narrowed, env=env, check=False
        )
        assert "already runs a TursoNamespace operator" in refused, "prod watches team-a too"
        own = [*common, "--set", "operator.instance=staging"]
        helm("install", "staging", str(CHART), "-n", "chart-staging", *own, env=env)
        role = get(env, "clusterrole", "staging-buntime-operator", None)
        assert role is not None and role["metadata"]["annotations"]["turso.buntime.io/instance"] == "staging"
    finally:
        helm("uninstall", "staging", "-n", "chart-staging", env=env, check=False)
        helm("uninstall", "prod", "-n", "chart-prod", env=env, check=False)
