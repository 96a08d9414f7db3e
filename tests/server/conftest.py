"""Fixtures for the runtime server (``buntime.server``).

Feeds in: env mappings (a fresh local database file per test, sometimes a real
``tursodb --sync-server``), plugin directories written to temp dirs, and real ``buntime serve``
child processes. Checks: config parsing, probes, metrics, plugin mounting and middlewares, and the
process lifecycle (listening line, SIGTERM, exit codes).
Leaves unmocked: the plugin host, the built-in plugins, the Turso engine and the HTTP stack —
requests go over real loopback sockets to the real aiohttp app.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.support import local_env


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)
