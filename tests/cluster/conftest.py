"""Fixtures for tests that need a real Kubernetes API server.

Feeds in: the etcd and kube-apiserver binaries built by ``hack/build-control-plane.sh``
(``.tools/bin``, or ``ETCD_BIN``/``KUBE_APISERVER_BIN``).
Leaves unmocked: the whole API server — validation, admission, RBAC and storage are the
real Kubernetes 1.34 code; only controllers (no controller-manager, scheduler or kubelet)
are absent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for the whole session (starting one takes a few seconds).

    Shared state: tests must create their own namespaces (unique names) and must not
    rely on deletion finishing — without a namespace controller a deleted namespace
    stays ``Terminating``. Clients can use ``control_plane.env()`` (``KUBECONFIG``),
    or ``control_plane.request()`` for raw REST calls as the ``system:masters`` admin.
    """
    with ControlPlane() as cp:
        yield cp
