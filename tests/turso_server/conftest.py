"""Fixtures for turso-server: a real server process in front of real tursodb children.

What goes in: the ``turso-server`` console script from the venv, started as a subprocess per test
(each test picks its own environment: tokens, limits, GC durations) on free loopback ports, with a
fresh data directory under ``tmp_path``; the pinned ``tursodb`` from ``.tools/bin``; and real
``turso.sync`` (pyturso) replicas talking to it through the proxy. What is checked: convergence,
isolation, auth, hostile input, supervision, restore, GC, backups, limits and metrics, through the
server's public HTTP surface and its files on disk. Nothing is mocked: no fake tursodb, no
in-process app. Raw HTTP goes through :func:`raw_request` (a bare socket) so hostile request
targets reach the server byte for byte. Teardown stops the server and kills, by pid, any tursodb
children a deliberately killed server left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.turso_server.support import (
    ADMIN_TOKEN,
    DATA_TOKEN,
    PORT_SLICE,
    SERVER_SCRIPT,
    SIGNING_KEY,
    TURSODB,
    ServerFactory,
    ServerProcess,
    kill_pid,
    next_port_slice,
)


@pytest.fixture(scope="session")
def tursodb_bin() -> Path:
    if not TURSODB.exists():
        pytest.fail(f"{TURSODB} is missing: run `make tools`")
    if not SERVER_SCRIPT.exists():
        pytest.fail(f"{SERVER_SCRIPT} is missing: run `make venv`")
    return TURSODB


@pytest.fixture
def start_server(tmp_path: Path, tursodb_bin: Path) -> Iterator[ServerFactory]:
    """``start_server(**env)`` starts a server; ``data_dir=`` reuses a directory (restart tests)."""
    servers: list[ServerProcess] = []

    def factory(
        *, data_dir: Path | None = None, wait_ready: bool = True, command: list[str] | None = None, **env: str
    ) -> ServerProcess:
        directory = data_dir or tmp_path / "srv" / "data"
        slice_start = next_port_slice()
        base_env = {
            "TURSO_DATA_DIR": str(directory),
            "TURSODB_BIN": str(tursodb_bin),
            "TURSO_BACKEND_PORT_START": str(slice_start),
            "TURSO_BACKEND_PORT_END": str(slice_start + PORT_SLICE - 1),
            "TURSO_AUTH_TOKEN": DATA_TOKEN,
            "TURSO_ADMIN_TOKEN": ADMIN_TOKEN,
            "TURSO_TOKEN_SIGNING_KEY": SIGNING_KEY,
            "TURSO_STARTUP_TIMEOUT": "10s",
            "TURSO_SHUTDOWN_GRACE": "2s",
            "TURSO_ACCESS_FLUSH_INTERVAL": "200ms",
        }
        server = ServerProcess(directory, {**base_env, **env}, command)
        servers.append(server)
        return server.start(wait_ready=wait_ready)

    try:
        yield factory
    finally:
        for server in servers:
            leftovers = server.child_pids()
            server.stop()
            for pid in leftovers.values():
                kill_pid(pid, server.data_dir)


@pytest.fixture
def server(start_server: ServerFactory) -> ServerProcess:
    """A server with the default test settings (tokens on, auto-provision on)."""
    return start_server()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``replicas(url, token=..., name=...)`` opens a pyturso sync replica; all closed at teardown."""
    import turso.sync

    opened: list[Any] = []
    counter = itertools.count()
    root = tmp_path / "replicas"
    root.mkdir()

    def open_replica(url: str, *, token: str | None = DATA_TOKEN, name: str | None = None) -> Any:
        path = root / f"{name or 'replica'}-{next(counter)}.db"
        connection = turso.sync.connect(str(path), url, auth_token=token, isolation_level=None)
        opened.append(connection)
        return connection

    try:
        yield open_replica
    finally:
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.close()
        shutil.rmtree(root, ignore_errors=True)
