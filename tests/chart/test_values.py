"""values.yaml, values.schema.json and the Rancher questions agree with each other.

values.yaml documents every key, the schema types every key (``additionalProperties: false``,
so typos fail), and every Rancher question maps to a value that exists with the same default.
The schema is exercised through helm itself, which validates on template/install/upgrade/lint.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART, ROOT, HelmError, render
from turso_server import SIZE_PATTERN

QUESTION_TYPES = {
    "string",
    "multiline",
    "boolean",
    "int",
    "enum",
    "password",
    "storageclass",
    "hostname",
    "secret",
}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_chart", ROOT / "hack" / "generate-chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


def schema() -> dict[str, Any]:
    loaded = json.loads((CHART / "values.schema.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def questions() -> list[dict[str, Any]]:
    data = yaml.safe_load((CHART / "questions.yaml").read_text())
    out: list[dict[str, Any]] = []
    for question in data["questions"]:
        out.append(question)
        out.extend(question.get("subquestions") or [])
    return out


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted}: no such value"
        node = node[part]
    return node


def schema_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in (node.get("properties") or {}).items():
        path = f"{prefix}{key}"
        yield path
        if sub.get("type") == "object":
            yield from schema_paths(sub, f"{path}.")


# -- values.yaml is the documentation --------------------------------------------------------------


def test_every_value_has_a_comment() -> None:
    roots = GENERATOR.parse_values_docs((CHART / "values.yaml").read_text())

    def walk(docs: list[Any]) -> Iterator[Any]:
        for doc in docs:
            yield doc
            if doc.documented_children:
                yield from walk(doc.children)

    missing = [doc.dotted for doc in walk(roots) if not doc.comment]
    assert not missing, f"values without a comment above them: {missing}"
    sections = {doc.section for doc in walk(roots)}
    assert {"Global", "Runtime", "Turso server", "Operator", "Plugins"} <= sections


def test_schema_covers_exactly_the_values(values: dict[str, Any]) -> None:
    root = schema()
    assert root["additionalProperties"] is False
    for path in schema_paths(root):
        if path == "global":
            continue
        lookup(values, path)  # a schema property for a value that does not exist is drift

    def objects(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if "properties" in node:
            yield path, node
            for key, sub in node["properties"].items():
                yield from objects(sub, f"{path}.{key}" if path else key)

    for path, node in objects(root, ""):
        assert node.get("additionalProperties") is False, f"{path or 'root'} accepts unknown keys"
        assert all("description" in sub for sub in node["properties"].values()), path


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("runtime.replicaCount", "two", "string instead of an integer"),
        ("tursoServer.enabled", "yes", "string instead of a boolean"),
        ("runtime.replicas", "2", "unknown key (typo)"),
        ("plugins.turso.mode", "remote", "not one of the manifest's values"),
        ("plugins.gateway.metricsRetention", "many", "string for an int plugin setting"),
        ("plugins.turso.unknown", "x", "unknown plugin setting"),
        ("tursoServer.auth.signingKey", "too-short", "signing key under 32 characters"),
        ("tursoServer.gcInterval", "soon", "not a duration"),
        ("tursoServer.archiveRetention", "5us", "a unit outside the duration grammar"),
        ("tursoServer.childMemoryLimit", "256M", "a decimal suffix outside the size grammar"),
        ("tursoServer.childMemoryLimit", "1.5Gi", "a fraction of a size"),
        ("tursoServer.childMemoryLimit", "-1", "a negative size"),
        ("plugins.turso.syncInterval", "soon", "not a duration (plugin setting)"),
        ("plugins.keyval.queue.lockDuration", "-5", "a negative duration"),
        ("operator.webhook.failurePolicy", "Sometimes", "not Fail or Ignore"),
        ("runtime.service.port", "70000", "port out of range"),
    ],
)
def test_schema_rejects_wrong_values(flag: str, value: str, why: str) -> None:
    with pytest.raises(HelmError, match=r"(?i)schema|values don't meet|validation"):
        render(extra=["--set-string" if value.isalpha() else "--set", f"{flag}={value}"])


def test_schema_accepts_the_documented_shapes() -> None:
    render(
        {"runtime.podDisruptionBudget.enabled": "true", "runtime.podDisruptionBudget.maxUnavailable": "50%"}
    )
    render(
        {
            "tursoServer.enabled": "true",
            "tursoServer.auth.signingKey": "k" * 40,
            "tursoServer.gcInterval": "0",
        }
    )


def test_durations_in_the_one_grammar_pass_the_schema_and_reach_the_env() -> None:
    # tests/test_durations.py checks the patterns; here helm itself applies them (`--set` turns 60
    # into an integer, which the schema takes as seconds).
    docs = render(
        {
            "tursoServer.enabled": "true",
            "tursoServer.gcInterval": "60",
            "tursoServer.archiveRetention": "1d12h",
            "plugins.turso.syncInterval": "1h",
            "plugins.keyval.sweepInterval": "90",
        }
    )
    configmaps = [d for d in docs if d.get("kind") == "ConfigMap"]
    data = {k: v for d in configmaps for k, v in (d.get("data") or {}).items()}
    assert data["TURSO_SYNC_INTERVAL"] == "1h" and data["KEYVAL_SWEEP_INTERVAL"] == "90"
    statefulset = next(d for d in docs if d.get("kind") == "StatefulSet")
    env = {e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TURSO_GC_INTERVAL"] == "60" and env["TURSO_ARCHIVE_RETENTION"] == "1d12h"


@pytest.mark.parametrize(
    ("flag", "value", "env"),
    [
        ("--set-string", "256Mi", "256Mi"),
        ("--set", "268435456", "268435456"),  # an integer, rendered without an exponent
        ("--set", "4294967296", "4294967296"),
    ],
)
def test_the_child_memory_limit_reaches_the_env(flag: str, value: str, env: str) -> None:
    docs = render({"tursoServer.enabled": "true"}, extra=[flag, f"tursoServer.childMemoryLimit={value}"])
    statefulset = next(d for d in docs if d.get("kind") == "StatefulSet")
    rendered = {
        e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert rendered["TURSO_CHILD_MEMORY_LIMIT"] == env


def test_the_child_memory_limit_defaults_to_none_in_the_server_grammar(values: dict[str, Any]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema["properties"]["tursoServer"]["properties"]["childMemoryLimit"]
    assert node["pattern"] == SIZE_PATTERN  # the server's grammar, verbatim
    assert values["tursoServer"]["childMemoryLimit"] == "0"
    docs = render({"tursoServer.enabled": "true"})
    statefulset = next(d for d in docs if d.get("kind") == "StatefulSet")
    rendered = {
        e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert rendered["TURSO_CHILD_MEMORY_LIMIT"] == "0"


# -- Rancher questions -----------------------------------------------------------------------------


def test_every_question_maps_to_a_value_with_the_same_default(values: dict[str, Any]) -> None:
    seen = set()
    for question in questions():
        variable = question["variable"]
        assert variable not in seen, f"{variable} asked twice"
        seen.add(variable)
        value = lookup(values, variable)
        assert not isinstance(value, (dict, list)), f"{variable} is not a scalar value"
        default = question.get("default")
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        assert str(default) == expected, f"{variable}: question default {default!r}, values.yaml {value!r}"
        kind = question.get("type", "string")
        assert kind in QUESTION_TYPES, variable
        if kind == "boolean":
            assert isinstance(value, bool), variable
        if kind == "int":
            assert isinstance(value, int) and not isinstance(value, bool), variable
        if kind == "enum":
            assert str(value) in [str(o) for o in question["options"]], variable
        assert question.get("label"), variable


def test_questions_show_if_names_real_values(values: dict[str, Any]) -> None:
    for question in questions():
        for condition in filter(None, str(question.get("show_if", "")).split("&&")):
            variable, _, expected = condition.partition("=")
            value = lookup(values, variable)
            if isinstance(value, bool):
                assert expected in ("true", "false"), condition


def test_tokens_are_password_questions_and_grouped() -> None:
    by_variable = {q["variable"]: q for q in questions()}
    for variable in (
        "tursoServer.auth.dataToken",
        "tursoServer.auth.adminToken",
        "tursoServer.auth.signingKey",
        "tursoServer.auth.metricsToken",
        "plugins.turso.sync.authToken",
        "plugins.gateway.apiKey",
    ):
        assert by_variable[variable]["type"] == "password", variable
    top = yaml.safe_load((CHART / "questions.yaml").read_text())["questions"]
    assert all(q.get("group") for q in top)
    assert by_variable["tursoServer.persistence.size"]["show_if"] == "tursoServer.enabled=true"


def test_single_tenant_questions_hide_beside_the_in_cluster_server() -> None:
    """Beside turso-server the runtime syncs with it: sync.* would only be refused by the chart."""
    by_variable = {q["variable"]: q for q in questions()}
    for variable in ("plugins.turso.sync.url", "plugins.turso.sync.authToken", "plugins.turso.mode"):
        conditions = by_variable[variable]["show_if"].split("&&")
        assert "tursoServer.enabled=false" in conditions, variable
    assert by_variable["plugins.turso.sync.url"]["show_if"].split("&&")[0] == "plugins.turso.mode=sync"


def test_required_values_are_required_questions() -> None:
    by_variable = {q["variable"]: q for q in questions()}
    for variable in ("image.repository", "tursoServer.persistence.size", "plugins.turso.sync.url"):
        assert by_variable[variable].get("required") is True, variable
    # Optional ones stay optional: empty means "generate" or "unset".
    for variable in (
        "tursoServer.auth.dataToken",
        "tursoServer.auth.metricsToken",
        "runtime.ingress.className",
    ):
        assert not by_variable[variable].get("required"), variable


def test_every_generated_plugin_setting_has_a_question() -> None:
    # A list of objects (plugins.proxy.rules) has no Rancher question type: values.yaml only.
    asked = {q["variable"] for q in questions()}
    for plugin in GENERATOR.load_plugins():
        for field in plugin.fields:
            variable = f"plugins.{plugin.key}.{field.dotted}"
            assert (variable in asked) == (field.type != "list"), variable


def test_app_readme_exists() -> None:
    text = (CHART / "app-readme.md").read_text()
    assert "TursoNamespace" in text


def test_the_default_image_is_this_projects() -> None:
    """Not ghcr.io/djalmajr/buntime (the upstream's TypeScript runtime, which has no `buntime serve`)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == "ghcr.io/djalmajr/buntime-python"
    assert values["image"]["tag"] == ""  # the chart's appVersion
    app = (ROOT / "examples" / "app.yaml").read_text()
    assert f"image: {values['image']['repository']}:{chart['appVersion']}" in app
