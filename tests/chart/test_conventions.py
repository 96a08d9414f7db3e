"""The chart follows its ecosystem's conventions (cert-manager's chart is the model).

CRDs are templates behind ``crds.enabled``/``crds.keep``; a namespaced operator gets Roles, not
cluster-wide Secret rights; ``plugins.turso.sync.url`` can never sit next to ``TURSO_MODE=local``;
wrong values stop ``helm template``; Chart.yaml carries what Artifact Hub and Rancher read; NOTES
and the README name only what ships in the chart.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    CRD_FILE,
    NAMESPACE,
    RELEASE,
    HelmError,
    find,
    install_notes,
    one,
    render,
)

CRD_NAME = "tursonamespaces.turso.buntime.io"
SERVER = {"tursoServer.enabled": "true"}


def rules_on(role: dict[str, Any], resource: str) -> list[dict[str, Any]]:
    return [r for r in role.get("rules") or [] if resource in r.get("resources", [])]


# -- CRDs ---------------------------------------------------------------------------------------


def test_the_crd_is_a_template_kept_on_uninstall() -> None:
    crd = one(render(), "CustomResourceDefinition", CRD_NAME)
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # The template carries the source's spec verbatim: one source, no drift.
    assert crd["spec"] == yaml.safe_load(CRD_FILE.read_text())["spec"]
    assert not (CHART / "crds").exists(), "Helm's crds/ folder installs once and never upgrades"


def test_crds_keep_false_and_crds_enabled_false() -> None:
    crd = one(render({"crds.keep": "false"}), "CustomResourceDefinition", CRD_NAME)
    assert "annotations" not in crd["metadata"]
    assert not find(render({"crds.enabled": "false", **SERVER}), "CustomResourceDefinition")


# -- operator RBAC ------------------------------------------------------------------------------


#: Exactly the calls kopf 1.45 and the operator's own client make in a watched namespace.
NAMESPACED_VERBS = {
    ("turso.buntime.io", "tursonamespaces"): {"get", "list", "watch", "patch"},
    ("turso.buntime.io", "tursonamespaces/status"): {"patch"},
    ("", "secrets"): {"get", "create", "update", "delete"},
    ("", "configmaps"): {"get"},  # the webhook: a pod's envFrom ConfigMaps
    ("", "events"): {"create"},
}


def verbs(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_cluster_wide_operator_has_one_cluster_role() -> None:
    docs = render(SERVER)
    role = one(docs, "ClusterRole")
    assert rules_on(role, "secrets")
    assert not rules_on(role, "namespaces"), "cluster-wide, kopf never lists namespaces"
    assert not find(docs, "Role") and not find(docs, "RoleBinding")


def test_watch_namespaces_give_namespaced_roles_and_no_cluster_secret_rights() -> None:
    docs = render(
        {**SERVER, "operator.watchNamespaces[0]": "team-a", "operator.watchNamespaces[1]": "team-b"}
    )
    cluster_role = one(docs, "ClusterRole")
    assert not rules_on(cluster_role, "secrets")
    assert not rules_on(cluster_role, "tursonamespaces")
    assert not rules_on(cluster_role, "namespaces"), "kopf lists namespaces only to watch them all"
    assert rules_on(cluster_role, "customresourcedefinitions")

    roles = {r["metadata"]["namespace"]: r for r in find(docs, "Role")}
    assert set(roles) == {"team-a", "team-b", NAMESPACE}
    for namespace in ("team-a", "team-b"):
        assert verbs(roles[namespace]) == NAMESPACED_VERBS
    # The release namespace only holds the runtime's Secret: read and replaced by name, created
    # (RBAC cannot narrow create by name), never deleted.
    assert roles[NAMESPACE]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [f"{RELEASE}-runtime-turso"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]

    bindings = {b["metadata"]["namespace"]: b for b in find(docs, "RoleBinding")}
    assert set(bindings) == set(roles)
    for namespace, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[namespace]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}
        ]
    # The webhook only asks about pods in namespaces the operator may read.
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    expressions = hook["namespaceSelector"]["matchExpressions"]
    assert {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["team-a", "team-b"],
    } in expressions


def test_a_watched_release_namespace_gets_one_role() -> None:
    docs = render({**SERVER, "operator.watchNamespaces[0]": NAMESPACE})
    (role,) = find(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE and rules_on(role, "tursonamespaces")


# -- the turso mode trap ------------------------------------------------------------------------


def runtime_config(values: dict[str, str]) -> dict[str, str]:
    return dict(one(render(values), "ConfigMap", f"{RELEASE}-runtime")["data"])


@pytest.mark.parametrize(
    "values",
    [
        {"plugins.turso.sync.url": "http://x:8080"},
        {"plugins.turso.mode": "local", "plugins.turso.sync.url": "http://x:8080"},
        {"plugins.turso.mode": "sync", "plugins.turso.sync.url": "http://x:8080"},
    ],
    ids=["url-only", "explicit-local", "explicit-sync"],
)
def test_a_sync_url_always_renders_sync_mode(values: dict[str, str]) -> None:
    data = runtime_config(values)
    assert data["TURSO_SYNC_URL"] == "http://x:8080"
    assert data["TURSO_MODE"] == "sync"


def test_defaults_stay_local() -> None:
    data = runtime_config({})
    assert data["TURSO_MODE"] == "local" and "TURSO_SYNC_URL" not in data


def fails(values: dict[str, str]) -> str:
    with pytest.raises(HelmError) as caught:
        render(values)
    return str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**SERVER, "plugins.turso.sync.url": "http://x:8080"}, "contradict each other"),
        ({"plugins.turso.mode": "sync"}, "needs plugins.turso.sync.url"),
        ({"plugins.turso.sync.url": "http://x:8080", "plugins.turso.executor": "inline"}, "local mode only"),
        ({"plugins.turso.sync.authToken": "t0k"}, "sync.authToken needs plugins.turso.sync.url"),
        ({**SERVER, "plugins.turso.sync.authToken": "t0k"}, "would ignore it"),
    ],
    ids=[
        "url-beside-server",
        "sync-without-url",
        "inline-with-url",
        "token-without-url",
        "token-beside-server",
    ],
)
def test_contradictions_stop_the_render(values: dict[str, str], message: str) -> None:
    assert message in fails(values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"plugins.turso.syncInterval": "1x"}, "syncInterval"),
        ({"plugins.turso.sync.url": "turso.example:8080"}, "url"),
        ({"plugins.turso.mode": "remote"}, "mode"),
        ({"plugins.turso.unknown": "1"}, "unknown"),
        ({"crds.enabled": "yes-please"}, "enabled"),
        ({"crds.bogus": "true"}, "bogus"),
        ({"operator.watchNamespaces[0]": "team-*"}, "watchNamespaces"),
        ({"runtime.replicaCount": "-1"}, "replicaCount"),
    ],
    ids=["duration", "url-scheme", "enum", "plugin-key", "bool", "crds-key", "namespace-glob", "minimum"],
)
def test_the_schema_rejects_wrong_values(values: dict[str, str], where: str) -> None:
    message = fails(values)
    assert "values don't meet the specifications of the schema" in message, message
    assert where in message, message


# -- names --------------------------------------------------------------------------------------

#: Every part on: each name the chart can build is rendered.
EVERY_PART = {
    **SERVER,
    "metrics.serviceMonitor.enabled": "true",
    "runtime.ingress.enabled": "true",
    "runtime.autoscaling.enabled": "true",
    "runtime.podDisruptionBudget.enabled": "true",
}
LONGEST_PREFIX = "p" * 42


def test_the_longest_prefix_renders_every_name_whole_and_distinct() -> None:
    docs = render({**EVERY_PART, "fullnameOverride": LONGEST_PREFIX})
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), sorted(names)
    for kind, name in names:
        assert len(name) <= 63, (kind, name)
        if kind != "CustomResourceDefinition":
            assert name == LONGEST_PREFIX or name.startswith(f"{LONGEST_PREFIX}-"), (kind, name)
    assert f"{LONGEST_PREFIX}-operator-webhook-tls" in {name for _, name in names}
    # A StatefulSet's pods carry controller-revision-hash "<name>-<10 characters>" (a label value).
    assert len(one(docs, "StatefulSet")["metadata"]["name"]) <= 63 - 11
    # The Secret the operator writes at run time is none of the Secrets Helm owns.
    operator = one(docs, "Deployment", f"{LONGEST_PREFIX}-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["TURSO_RUNTIME_SECRET"] == f"{LONGEST_PREFIX}-runtime-turso"
    assert env["TURSO_RUNTIME_SECRET"] not in {d["metadata"]["name"] for d in find(docs, "Secret")}


@pytest.mark.parametrize(
    ("release", "values", "prefix"),
    [
        # 46 characters containing "buntime": the prefix is the release name; cut to 63, the
        # runtime Secret and the operator's runtime-turso Secret used to get one name.
        ("r" * 39 + "buntime", {}, "r" * 39 + "buntime"),
        # 35 characters without it: "<release>-buntime", 43.
        ("r" * 35, {}, "r" * 35 + "-buntime"),
        ("short", {"nameOverride": "n" * 40}, "short-" + "n" * 40),
    ],
    ids=["release-with-chart-name", "release-without-it", "name-override"],
)
def test_a_prefix_too_long_for_the_longest_name_stops_the_render(
    release: str, values: dict[str, str], prefix: str
) -> None:
    for value_set in ({}, EVERY_PART):  # whatever is enabled: enabling a part later never fails
        with pytest.raises(HelmError) as caught:
            render({**value_set, **values}, release=release)
        message = str(caught.value)
        assert f'the resource name prefix "{prefix}" is {len(prefix)} characters, at most 42 fit' in message
        assert f"{prefix}-operator-webhook-tls" in message


def test_the_schema_caps_the_overrides_at_the_longest_prefix() -> None:
    render({"fullnameOverride": LONGEST_PREFIX})
    for key in ("fullnameOverride", "nameOverride"):
        message = fails({key: "p" * 43})
        assert "values don't meet the specifications of the schema" in message, message
        assert key in message, message


# -- metadata, NOTES, README --------------------------------------------------------------------


def test_chart_metadata_for_artifact_hub_and_rancher() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["icon"].startswith("https://")
    assert chart["maintainers"] and all(m.get("name") for m in chart["maintainers"])
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/license"] == "MIT"
    (crd,) = yaml.safe_load(annotations["artifacthub.io/crds"])
    assert crd["name"] == CRD_NAME and crd["kind"] == "TursoNamespace"
    (image,) = yaml.safe_load(annotations["artifacthub.io/images"])
    repository = yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"]
    assert image["image"] == f"{repository}:{chart['appVersion']}"  # the image the chart deploys
    (example,) = yaml.safe_load(annotations["artifacthub.io/crdsExamples"])
    assert example["kind"] == "TursoNamespace"
    # The icon is a file of this repository (raw URL of its default branch).
    path = re.sub(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/", "", chart["icon"])
    assert (CHART.parents[1] / path).is_file(), chart["icon"]


@pytest.mark.parametrize(
    "values", [{}, SERVER, {**SERVER, "crds.enabled": "false"}], ids=["local", "server", "no-crds"]
)
def test_notes_point_only_at_what_ships(values: dict[str, str]) -> None:
    flags = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    notes = install_notes(*flags)
    for outside in ("docs/", "examples/", "hack/", "deploy/"):
        assert outside not in notes, f"NOTES point at {outside}, which is not in the chart"
    assert "README.md" in notes and (CHART / "README.md").is_file()
    assert ("CRD tursonamespaces" in notes) is bool(values)


@pytest.mark.parametrize("instance", ["", "staging"])
def test_the_notes_first_database_carries_the_instance_label_the_operator_serves(instance: str) -> None:
    """With operator.instance set the operator serves only labelled TursoNamespaces
    (docs/operator.md), so the manifest NOTES print carries the label; without it, no label."""
    notes = install_notes("--set", "tursoServer.enabled=true", "--set", f"operator.instance={instance}")
    manifest = yaml.safe_load(notes.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0])
    assert manifest["kind"] == "TursoNamespace"
    labels = manifest["metadata"].get("labels") or {}
    assert labels == ({"turso.buntime.io/instance": instance} if instance else {})


def test_chart_readme_lists_every_value_section() -> None:
    readme = (CHART / "README.md").read_text()
    for section in ("Global", "CRDs", "Runtime", "Turso server", "Operator", "Plugins"):
        assert f"### {section}" in readme, section
    assert "`crds.keep`" in readme and "`plugins.turso.sync.url`" in readme
