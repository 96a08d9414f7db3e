"""Suite-wide fixtures: real turso-servers for sync and multi-tenant mode, and a bare tursodb.

Feeds in: temporary directories and free loopback ports. Checks nothing by itself.
Leaves unmocked: everything — tursodb is the pinned binary from ``.tools/bin`` and every client is
real pyturso; there is no fake engine or fake server anywhere in the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tursodb import SyncServer
from tests.support.tursoserver import SyncEndpoint


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Control-plane tests run last: the quick suites report first, the slow cluster after."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


@pytest.fixture
def sync_server(tmp_path: Path) -> Iterator[SyncEndpoint]:
    """A real turso-server (no auth) whose database ``runtime`` single-tenant replicas sync with."""
    server = SyncEndpoint(tmp_path / "server").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def plain_tursodb(tmp_path: Path) -> Iterator[SyncServer]:
    """A bare ``tursodb --sync-server``: no write leases, so only ``TURSO_WRITE_MODE=offline`` writes."""
    server = SyncServer(tmp_path / "plain" / "remote.db").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def router(tmp_path: Path) -> Iterator[SyncEndpoint]:
    """A real turso-server (no auth) for multi-tenant replicas: ``url`` is the server itself."""
    server = SyncEndpoint(tmp_path / "router", namespace=None).start()
    try:
        yield server
    finally:
        server.kill()
