"""Fixtures for the chart tests that need no cluster: rendered manifests and the chart's files.

Feeds in: ``helm template`` output of the pinned helm for every value set in
``rendering.VALUE_SETS`` (rendered once per session), and the chart's values.yaml, schema and
Rancher questions as files.
Checks: nothing by itself.
Leaves unmocked: helm itself (templates, ``values.schema.json`` validation, ``fail`` guards) and
the Kubernetes 1.34 OpenAPI schemas shipped by ``kubernetes-validate``; server-side checks live in
``tests/cluster/chart/``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART, VALUE_SETS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every value set rendered once: {set id: documents}."""
    return {name: render(values) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded
