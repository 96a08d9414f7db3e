"""Fixtures for the gateway plugin (``buntime.plugins.gateway``).

Feeds in: HTTP requests to the real runtime app (turso + gateway) on a fresh local database per
test, with ``GATEWAY_*`` variables set per test. Checks: every admin route, its status codes and
error codes, what lands in the real ``gateway`` tables, retention, restart, and the mode
without the turso plugin.
Leaves unmocked: the plugin host, the Turso engine (tests read the tables back with SQL) and the
HTTP stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.support import local_env


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return local_env(tmp_path)
