"""Consistent snapshots of a live namespace, taken with ``VACUUM INTO`` on its own child.

tursodb holds the database file locked, so nothing else may open it. The snapshot is therefore
taken by the child itself: the statement goes through the child's ``POST /v2/pipeline`` (a
Hrana-style ``{"requests":[{"type":"execute","stmt":{"sql":...}}]}`` request, straight to
``127.0.0.1:<port>`` on one of its warm connections, not through the proxy). Verified against
tursodb 0.7.0: ``VACUUM INTO`` works there *without* ``--experimental-vacuum`` (that flag gates
in-place ``VACUUM``), writes a complete single-file database (journal mode WAL, plus an empty
``-wal`` file beside it) in one read transaction, so concurrent pushes never tear it. Each backup
gets its own temporary directory under the namespace's ``backups/`` (inside the one directory its
Landlock-confined child may write; no same-second collisions), every check happens before the
admin handler sends a byte, and the directory is removed after streaming or on any failure. Used by
``_admin``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._errors import BackupError, UpstreamError
from ._layout import DataLayout, archive_stamp
from ._logging import get_logger
from ._names import validate_name
from ._state import utcnow
from ._supervisor import Supervisor
from ._upstream import exchange
from ._warm import WarmConnections

PIPELINE_ROUTE = "/v2/pipeline"
JSON_CONTENT_TYPE = "application/json"
SQLITE_MAGIC = b"SQLite format 3\x00"
BACKUP_CONTENT_TYPE = "application/vnd.sqlite3"
CHUNK_SIZE = 256 * 1024

log = get_logger("backup")


@dataclass(frozen=True)
class Snapshot:
    """A finished snapshot file, to be streamed and then discarded."""

    path: Path
    filename: str
    size: int

    @property
    def directory(self) -> Path:
        return self.path.parent


def sql_string(value: str) -> str:
    """``value`` as a single-quoted SQL literal."""
    return "'" + value.replace("'", "''") + "'"


class Backups:
    """Takes and cleans up snapshots under ``namespaces/<name>/backups/``.

    Usage::

        backups = Backups(supervisor, timeout=1800)
        await backups.start()                              # removes leftovers of a crash
        snapshot = await backups.snapshot("app")           # 404/503/500 errors before any byte
        try: ...stream snapshot.path...
        finally: await backups.discard(snapshot)

    Parameters:

    * ``supervisor`` - for a lease on the namespace's child port.
    * ``timeout`` - ceiling for the ``VACUUM INTO`` request in seconds; ``0`` means none.
    """

    def __init__(self, supervisor: Supervisor, *, timeout: float) -> None:
        self._supervisor = supervisor
        self._layout: DataLayout = supervisor.layout
        self._timeout = timeout or None

    async def start(self) -> None:
        await asyncio.to_thread(self._reset_directory)

    async def snapshot(self, name: str) -> Snapshot:
        validate_name(name)
        stamp = archive_stamp(utcnow())
        workdir: Path | None = None
        try:
            async with self._supervisor.lease(name) as warm:
                # The child is running, so its directory (and backups/) exists.
                workdir = Path(
                    await asyncio.to_thread(
                        tempfile.mkdtemp, prefix=f"{name}-{stamp}-", dir=self._layout.backups_dir(name)
                    )
                )
                dest = workdir / f"{name}.db"
                await self._vacuum_into(name, warm, dest)
            size = await asyncio.to_thread(_check_sqlite_file, dest)
        except BaseException:
            if workdir is not None:
                await asyncio.to_thread(shutil.rmtree, workdir, True)
            raise
        return Snapshot(path=dest, filename=f"{name}-{stamp}.db", size=size)

    async def discard(self, snapshot: Snapshot) -> None:
        await asyncio.to_thread(shutil.rmtree, snapshot.directory, True)

    async def _vacuum_into(self, name: str, warm: WarmConnections, dest: Path) -> None:
        request = {"requests": [{"type": "execute", "stmt": {"sql": f"VACUUM INTO {sql_string(str(dest))}"}}]}
        try:
            async with asyncio.timeout(self._timeout):
                response = await exchange(
                    warm.host,
                    warm.port,
                    method="POST",
                    target=PIPELINE_ROUTE,
                    headers=[("Content-Type", JSON_CONTENT_TYPE)],
                    body=json.dumps(request).encode(),
                    sock=await warm.take(),
                )
                try:
                    text = (await response.read()).decode("utf-8", errors="replace")
                finally:
                    response.close()
        except UpstreamError as exc:
            raise BackupError(f"tursodb pipeline request failed: {exc.detail}") from exc
        except TimeoutError as exc:
            # The child would go on writing the snapshot (or wait on a statement ahead of it) while
            # every request of the namespace waits: restarted, as the proxy does (its file is removed).
            restarted = self._supervisor.restart_hung(name, warm, waited=self._timeout or 0.0)
            raise BackupError(
                "VACUUM INTO did not finish within TURSO_UPSTREAM_TIMEOUT"
                + ("; tursodb is being restarted" if restarted else "")
            ) from exc
        if response.status != 200:
            raise BackupError(f"tursodb pipeline returned {response.status}: {text[:300]}")
        try:
            first = json.loads(text)["results"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackupError(f"unexpected pipeline reply: {text[:300]}") from exc
        if first.get("type") == "error":
            error = first.get("error") or {}
            raise BackupError(f"VACUUM INTO failed: {error.get('message')} ({error.get('code')})")

    def _reset_directory(self) -> None:
        for leftover in self._layout.backup_leftovers():
            log.warning("removing leftover backup", extra={"path": str(leftover)})
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _check_sqlite_file(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
        size = path.stat().st_size
    except OSError as exc:
        raise BackupError(f"snapshot file missing after VACUUM INTO: {exc.strerror}") from exc
    if magic != SQLITE_MAGIC:
        raise BackupError("snapshot is not an SQLite database")
    return size
