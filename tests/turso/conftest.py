"""Fixtures for the Turso service tests.

Feeds in: a local-mode service on a fresh file per test, with each executor; a real turso-server
(``server``) for the sync-mode tests. Checks: nothing by itself.
Leaves unmocked: the engine (real pyturso, real MVCC file) — tests count rows in real databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from buntime.turso import TursoService, resolve_config
from tests.support.tursoserver import TursoServer


def _local(tmp_path: Path, executor: str) -> TursoService:
    env = {"TURSO_LOCAL_PATH": str(tmp_path / "local" / "runtime.db"), "TURSO_EXECUTOR": executor}
    return TursoService(resolve_config(env=env))


@pytest.fixture(params=["thread", "inline"])
async def local_service(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[TursoService]:
    """Local mode with each executor: the same contract must hold on both."""
    service = _local(tmp_path, request.param)
    try:
        yield service
    finally:
        await service.aclose()


@pytest.fixture
async def threaded_service(tmp_path: Path) -> AsyncIterator[TursoService]:
    """Local mode on the engine thread, for tests of what happens while a job is queued there."""
    service = _local(tmp_path, "thread")
    try:
        yield service
    finally:
        await service.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TursoServer]:
    """A real turso-server for the test, stopped after it."""
    with TursoServer(tmp_path / "server") as started:
        yield started
