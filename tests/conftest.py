"""Suite-wide fixtures: real tursodb sync servers and a path router for multi-tenant mode.

Feeds in: temporary directories and free loopback ports. Checks nothing by itself.
Leaves unmocked: everything — tursodb is the pinned binary from ``.tools/bin`` and every client is
real pyturso; there is no fake engine or fake server anywhere in the suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.tursodb import NamespaceRouter, SyncServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Control-plane tests run last: the quick suites report first, the slow cluster after."""
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


@pytest.fixture
def sync_server(tmp_path: Path) -> Iterator[SyncServer]:
    """A real ``tursodb --sync-server`` on a free port, with its own database file."""
    server = SyncServer(tmp_path / "server" / "remote.db").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[NamespaceRouter]:
    """``/<namespace>/...`` routed to one real tursodb child per namespace."""
    routed = await NamespaceRouter(tmp_path / "router").start()
    try:
        yield routed
    finally:
        await routed.stop()
