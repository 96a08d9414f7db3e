"""Render the chart with the pinned helm and read what it produced (shared by the chart tests).

``render`` runs ``helm template`` and returns the documents; ``container_env`` resolves a
container's ``env``/``envFrom`` against rendered (or live) ConfigMaps and Secrets, the way the
kubelet would, so tests can start real processes with exactly the environment a pod would get.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "buntime"
CRD_FILE = ROOT / "deploy" / "crds" / "tursonamespaces.turso.buntime.io.yaml"
TOOLS = ROOT / ".tools" / "bin"
HELM = TOOLS / "helm"
KUBECTL = TOOLS / "kubectl"
KUBE_VERSION = "1.34.0"
RELEASE = "buntime"
NAMESPACE = "buntime-system"

#: The value sets every render/validation test runs: (id, --set flags).
VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "turso-server": {"tursoServer.enabled": "true"},
    "single-tenant-sync": {
        "plugins.turso.mode": "sync",
        "plugins.turso.sync.url": "http://turso.example:8080/buntime",
        "plugins.turso.sync.authToken": "sync-secret-token",
    },
    "webhook-off": {"tursoServer.enabled": "true", "operator.webhook.enabled": "false"},
    "everything": {
        "tursoServer.enabled": "true",
        "runtime.ingress.enabled": "true",
        "runtime.ingress.className": "nginx",
        "runtime.autoscaling.enabled": "true",
        "runtime.autoscaling.targetMemoryUtilizationPercentage": "75",
        "runtime.podDisruptionBudget.enabled": "true",
        "runtime.replicaCount": "3",
        "operator.watchNamespaces[0]": "team-a",
        "operator.watchNamespaces[1]": "team-b",
        "plugins.gateway.apiKey": "gateway-key",
    },
}


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""


def helm_env(extra: Mapping[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """helm's environment: its caches and config in ``home`` (never the developer's ~/.config)."""
    env = dict(os.environ)
    if home is not None:
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env[var] = str(home / sub)
    env.update(extra or {})
    return env


def helm(*args: str, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, env=dict(env or helm_env()), timeout=timeout
    )
    if check and result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout if check else result.stdout + result.stderr


def install_notes(*flags: str) -> str:
    """The NOTES a ``helm install --dry-run=client`` of the chart prints with ``flags``."""
    out = helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", *flags)
    return out.split("NOTES:", 1)[1]


def set_flags(values: Mapping[str, str]) -> list[str]:
    flags: list[str] = []
    for key, value in values.items():
        flags += [
            "--set-string" if key.endswith(("authToken", "apiKey", "Token")) else "--set",
            f"{key}={value}",
        ]
    return flags


def render(
    values: Mapping[str, str] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
    include_tests: bool = True,
) -> list[dict[str, Any]]:
    """``helm template`` → the documents (the CRD is a template: ``crds.enabled``)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if not include_tests:
        args.append("--skip-tests")
    out = helm(*args, *set_flags(values or {}), *extra)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        dict(d) for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod, Deployment, StatefulSet, Job..."""
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    return dict(obj["spec"]["template"]["spec"])


def containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


class EnvSources:
    """ConfigMaps and Secrets by name (rendered or read from the API server)."""

    def __init__(self, docs: Sequence[Mapping[str, Any]] = ()) -> None:
        self.config_maps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        for doc in docs:
            self.add(doc)

    def add(self, doc: Mapping[str, Any]) -> None:
        if doc.get("kind") == "ConfigMap":
            self.config_maps[doc["metadata"]["name"]] = dict(doc.get("data") or {})
        elif doc.get("kind") == "Secret":
            self.secrets[doc["metadata"]["name"]] = decoded(doc)


def container_env(
    container: Mapping[str, Any],
    sources: EnvSources,
    *,
    field_refs: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom in order (each key after its
    ``prefix``; a missing ``optional`` object gives nothing), then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref, objects = (
            (source["configMapRef"], sources.config_maps)
            if "configMapRef" in source
            else (source["secretRef"], sources.secrets)
        )
        if ref["name"] not in objects and ref.get("optional"):
            continue
        prefix = source.get("prefix") or ""
        env.update({f"{prefix}{key}": value for key, value in objects[ref["name"]].items()})
    for entry in container.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = str(entry["value"])
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref or "configMapKeyRef" in ref:
            kind, objects = (
                ("secretKeyRef", sources.secrets)
                if "secretKeyRef" in ref
                else ("configMapKeyRef", sources.config_maps)
            )
            key_ref = ref[kind]
            data = objects.get(key_ref["name"], {})
            if key_ref["key"] in data:
                env[name] = data[key_ref["key"]]
            elif not key_ref.get("optional"):
                # The kubelet refuses to start such a container (CreateContainerConfigError).
                raise AssertionError(f"{name}: {kind} {key_ref['name']}/{key_ref['key']} is missing")
        elif "fieldRef" in ref:
            env[name] = (field_refs or {})[ref["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"unsupported valueFrom in {entry}")
    return env
