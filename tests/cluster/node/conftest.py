"""Fixtures for the tests on a node that runs pods (``tests.support.node``).

Feeds in: the node binaries (``hack/build-node.sh``), containerd/runc/CNI from Debian
(``hack/install-node-deps.sh``) and the images ``hack/build-images.sh`` built with buildah: the
project image from the repository's Dockerfile, on Debian bases.
Checks: nothing by itself; the node fixture stops with an error if a component dies.
Leaves unmocked: everything between ``helm install`` and a running container — kube-apiserver,
controller-manager, scheduler, kubelet, containerd, runc, the CNI bridge, kube-proxy's iptables
rules, CoreDNS, the chart, the image, the operator's webhook called by the API server through its
Service, turso-server on a provisioned volume. Only the volume provisioner is the harness's own
(hostPath directories, since no storage driver can be installed here).

When the machine cannot run a node (not root, no cgroups, packages or images missing), every test
here is skipped with the reason ``Node`` gives; anything else that goes wrong is a failure.
With ``BUNTIME_E2E_KUBECONFIG`` and ``BUNTIME_E2E_IMAGE`` set (``hack/kind-e2e.sh``), the chart
tests run against that cluster instead, and the tests of the harness itself are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node import ExternalCluster, Node, NodeUnavailable, external_cluster_from_env

_RUNNING: list[Node] = []


@pytest.fixture(scope="session")
def cluster() -> Iterator[Node | ExternalCluster]:
    """One control plane + node for this folder (about 15 s to Ready, 20 s to tear down).

    Stopped after this folder's last test (``pytest_runtest_teardown`` below), so the node (a
    second API server, kubelet, pods) is gone before the other cluster tests start theirs, and
    the machine-wide lock is free for ``tests/cluster/node_crash``. (A package-scoped fixture
    would need an ``__init__.py`` here; without one pytest widens it to the session.)
    """
    external = external_cluster_from_env()
    if external is not None:
        yield external
        return
    try:
        started = Node().start()
    except NodeUnavailable as exc:
        pytest.skip(f"cannot run a node here: {exc}")
    _RUNNING.append(started)
    try:
        yield started
    finally:
        if started in _RUNNING:
            _RUNNING.remove(started)
            started.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    here = Path(__file__).parent
    if nextitem is None or here not in Path(nextitem.path).parents:
        while _RUNNING:
            _RUNNING.pop().stop()


@pytest.fixture
def node(cluster: Node | ExternalCluster) -> Node:
    """The harness's own node (tests of the harness itself skip on an external cluster)."""
    if not isinstance(cluster, Node):
        pytest.skip("testing an external cluster (BUNTIME_E2E_KUBECONFIG): no harness to check")
    return cluster
