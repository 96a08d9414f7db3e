"""Liveness fails when the watch stream goes quiet, and recovers when it flows again.

A control plane of its own: the test freezes kube-apiserver (SIGSTOP), which no shared fixture
may see.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import CRD_FILE, OperatorProcess, apply_tns, kubectl, wait_for, wait_ready
from tests.support.tursoserver import TursoServer

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def own_plane() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        kubectl(cp, "apply", "-f", str(CRD_FILE))
        kubectl(cp, "wait", "--for=condition=Established", "crd/tursonamespaces.turso.buntime.io")
        yield cp


def test_liveness_fails_on_a_stale_watch_and_recovers(own_plane: ControlPlane, tmp_path: Path) -> None:
    with TursoServer(tmp_path / "turso") as server:
        operator = OperatorProcess(
            own_plane,
            server,
            tmp_path,
            TURSO_RESYNC_SECONDS="1",
            TURSO_LIVENESS_GRACE_SECONDS="1",
            TURSO_WEBHOOK_ENABLED="false",
        )
        operator.webhook_port = operator.liveness_port  # no webhook listener to wait for
        operator.start()
        apiserver = own_plane._apiserver  # type: ignore[attr-defined]
        try:
            own_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": "live"}})
            apply_tns(own_plane, "live", "db")
            # The probe only judges a watch that has delivered objects: wait until this one was seen.
            wait_ready(own_plane, "live", "db", timeout=30)
            wait_for(lambda: operator.healthz() == 200, timeout=30)
            apiserver.send_signal(signal.SIGSTOP)  # the watch stream goes silent, the process lives
            try:
                wait_for(lambda: operator.healthz() != 200, timeout=40, interval=1)
            finally:
                apiserver.send_signal(signal.SIGCONT)
            wait_for(lambda: operator.healthz() == 200, timeout=60, interval=1)
        finally:
            operator.stop()
