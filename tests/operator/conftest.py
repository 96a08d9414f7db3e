"""Fixtures the operator's tests on a real kube-apiserver share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import CRD_FILE, kubectl


@pytest.fixture(scope="module")
def api() -> Iterator[ControlPlane]:
    """A control plane of the module's own, with the TursoNamespace CRD established."""
    with ControlPlane() as cp:
        kubectl(cp, "apply", "-f", str(CRD_FILE))
        kubectl(cp, "wait", "--for=condition=Established", "crd/tursonamespaces.turso.buntime.io")
        yield cp
