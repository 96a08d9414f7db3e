"""``open_turso()``: how worker apps get a database of their own namespace.

Workers have no plugin context. The runtime forwards its turso-server connection to them as
``RUNTIME_TURSO_SERVER_URL`` / ``RUNTIME_TURSO_SERVER_TOKEN`` / ``RUNTIME_TURSO_DIR`` (the
operator's webhook injects the same variables into opted-in pods). With a server URL the worker
opens an embedded replica ``<dir>/<ns>.db`` synced with ``<url>/<ns>``; without one it opens a
standalone local MVCC file, and ``push()``/``pull()`` do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .turso._backends import ensure_parent_dir
from .turso._database import _query, _script
from .turso._engine import engine_errors, open_local, open_replica
from .turso._namespaces import validate_namespace

DEFAULT_WORKER_DIR = "./.cache/turso"


class TursoClient:
    """A blocking connection for worker code. Usage::

    with open_turso("tenants") as db:
        db.execute("CREATE TABLE IF NOT EXISTS t(v TEXT)")
        db.execute("INSERT INTO t VALUES (?)", ["x"])
        db.push()
    """

    def __init__(
        self, conn: Any, *, namespace: str, path: str, mode: Literal["local", "sync"], url: str | None
    ):
        self._conn = conn
        self.namespace = namespace
        self.path = path
        self.mode = mode
        self.url = url

    def __enter__(self) -> TursoClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        """Run one statement; rows come back as dicts (empty for writes)."""
        return _query(self._conn, sql, params).rows

    def exec(self, script: str) -> None:
        """Run a script of ``;``-separated statements."""
        _script(self._conn, script)

    def pull(self) -> bool:
        """Fetch other replicas' changes; ``False`` in local mode or when nothing was new."""
        if self.mode != "sync":
            return False
        with engine_errors("pull"):
            return bool(self._conn.pull())

    def push(self) -> None:
        """Send local changes to the server (no-op in local mode)."""
        if self.mode == "sync":
            with engine_errors("push"):
                self._conn.push()

    def close(self) -> None:
        self._conn.close()


def open_turso(
    namespace: str,
    *,
    server_url: str | None = None,
    token: str | None = None,
    dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> TursoClient:
    """Open ``namespace`` for a worker; explicit arguments win over the ``RUNTIME_TURSO_*`` env."""
    env = os.environ if env is None else env
    namespace = validate_namespace(namespace)
    base_dir = dir if dir is not None else (env.get("RUNTIME_TURSO_DIR", "").strip() or DEFAULT_WORKER_DIR)
    path = os.path.join(base_dir, f"{namespace}.db")
    ensure_parent_dir(path)
    url = (
        (server_url if server_url is not None else env.get("RUNTIME_TURSO_SERVER_URL", ""))
        .strip()
        .rstrip("/")
    )
    if not url:
        return TursoClient(open_local(path), namespace=namespace, path=path, mode="local", url=None)
    auth = (token if token is not None else env.get("RUNTIME_TURSO_SERVER_TOKEN", "")).strip() or None
    remote = f"{url}/{namespace}"
    return TursoClient(
        open_replica(path, remote, auth), namespace=namespace, path=path, mode="sync", url=remote
    )
