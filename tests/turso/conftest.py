"""Fixtures for the Turso service tests.

Feeds in: a local-mode service on a fresh file per test. Checks: nothing by itself.
Leaves unmocked: the engine (real pyturso, real MVCC file) — tests count rows in real databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from buntime.turso import TursoService, resolve_config


@pytest.fixture
async def local_service(tmp_path: Path) -> AsyncIterator[TursoService]:
    service = TursoService(resolve_config(env={"TURSO_LOCAL_PATH": str(tmp_path / "local" / "runtime.db")}))
    try:
        yield service
    finally:
        await service.close()
