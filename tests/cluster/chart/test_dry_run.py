"""Every rendered object, and the examples, accepted by ``kubectl apply --dry-run=server``.

The API server runs its full validation (OpenAPI, CEL rules of the CRD, admission) without
persisting anything; this catches what the offline OpenAPI check cannot, such as a
TursoNamespace that violates the CRD's rules or an invalid webhook configuration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.rendering import ROOT, VALUE_SETS, render
from tests.support.controlplane import ControlPlane
from tests.support.operator import kubectl

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_chart_passes_server_side_dry_run(
    chart_crd: ControlPlane, fresh_namespace: str, value_set: str, tmp_path: Path
) -> None:
    docs = [d for d in render(VALUE_SETS[value_set], namespace=fresh_namespace)
            if d["kind"] != "CustomResourceDefinition"]  # fmt: skip
    for doc in docs:  # Roles for watched namespaces (team-a, ...) are checked in ours: those do not exist
        if doc["metadata"].get("namespace") not in (None, fresh_namespace):
            doc["metadata"]["namespace"] = fresh_namespace
    manifest = tmp_path / "chart.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    out = kubectl(chart_crd, "apply", "--dry-run=server", "-n", fresh_namespace, "-f", str(manifest))
    assert out.count("(server dry run)") == len(docs), out


def test_examples_pass_server_side_dry_run(chart_crd: ControlPlane, fresh_namespace: str) -> None:
    for example in ("examples/tursonamespace.yaml", "examples/app.yaml"):
        out = kubectl(
            chart_crd, "apply", "--dry-run=server", "-n", fresh_namespace, "-f", str(ROOT / example)
        )
        assert "(server dry run)" in out


def test_the_server_rejects_what_the_crd_forbids(chart_crd: ControlPlane, fresh_namespace: str) -> None:
    """The dry run is a real check: an invalid TursoNamespace fails it."""
    bad = yaml.safe_load((ROOT / "examples" / "tursonamespace.yaml").read_text())
    bad["spec"]["deletionPolicy"] = "Delete"
    out = kubectl(chart_crd, "apply", "--dry-run=server", "-n", fresh_namespace, "-f", "-",
                  input=yaml.safe_dump(bad), check=False)  # fmt: skip
    assert "Unsupported value" in out and "Delete" in out
