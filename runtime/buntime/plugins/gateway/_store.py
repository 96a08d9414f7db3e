"""The gateway's tables in namespace ``gateway``: metrics history and persisted shell excludes.

Called by ``_gateway``. Shell excludes are cached in memory (they are read on every request a
shell would serve) and the cache follows pulls from other replicas; it only serves reads; every
write decides on the stored rows inside its transaction (``ON CONFLICT``, ``changes``). The
metrics history is only read by the admin API, so it is queried directly.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from ...turso import Database, TursoService
from .._storage import PluginStore

NAMESPACE = "gateway"

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_metrics_history (
    timestamp INTEGER PRIMARY KEY,
    total_requests INTEGER NOT NULL,
    blocked_requests INTEGER NOT NULL,
    allowed_requests INTEGER NOT NULL,
    active_buckets INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_shell_excludes (
    basename TEXT PRIMARY KEY,
    added_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class MetricsSnapshot:
    """One row of ``gateway_metrics_history``; ``timestamp`` is epoch milliseconds."""

    timestamp: int
    total_requests: int
    blocked_requests: int
    allowed_requests: int
    active_buckets: int

    def as_json(self) -> dict[str, int]:
        return {
            "timestamp": self.timestamp,
            "totalRequests": self.total_requests,
            "blockedRequests": self.blocked_requests,
            "allowedRequests": self.allowed_requests,
            "activeBuckets": self.active_buckets,
        }


class GatewayStore:
    """SQL for the gateway; ``excludes`` is the cached ``{basename: added_at}``."""

    def __init__(self, service: TursoService, *, retention: int, logger: logging.Logger) -> None:
        self.retention = retention
        self.excludes: dict[str, int] = {}
        self._store = PluginStore(service, NAMESPACE, load=self._load, logger=logger)

    async def start(self) -> None:
        await self._store.start(SCHEMA)

    def close(self) -> None:
        self._store.close()

    async def _load(self, db: Database) -> None:
        rows = await db.all("SELECT basename, added_at FROM gateway_shell_excludes ORDER BY basename")
        self.excludes = {str(row["basename"]): int(row["added_at"]) for row in rows}

    # -- shell excludes -----------------------------------------------------------------------
    async def add_exclude(self, basename: str, added_at: int) -> bool:
        """Persist ``basename``; ``False`` when it already is (on any replica that synced)."""

        async def insert(db: Database) -> bool:
            result = await db.run(
                "INSERT INTO gateway_shell_excludes(basename, added_at) VALUES (?, ?) "
                "ON CONFLICT(basename) DO NOTHING",
                [basename, added_at],
            )
            return result.changes > 0

        return await self._store.write(insert)

    async def remove_exclude(self, basename: str) -> bool:
        async def delete(db: Database) -> bool:
            result = await db.run("DELETE FROM gateway_shell_excludes WHERE basename = ?", [basename])
            return result.changes > 0

        return await self._store.write(delete)

    # -- metrics history ----------------------------------------------------------------------
    async def record_snapshot(self, snapshot: MetricsSnapshot) -> MetricsSnapshot:
        """Insert one snapshot and prune to the newest ``retention`` rows, in one transaction.

        The timestamp is the row's key and every replica records snapshots: two pods recording
        in the same millisecond (or a pod whose clock is behind) must not replace another pod's
        row, so the timestamp moves past the newest stored one, decided in the transaction.
        Returns the snapshot as stored.
        """

        async def insert(db: Database) -> MetricsSnapshot:
            newest = await db.get("SELECT max(timestamp) AS ts FROM gateway_metrics_history")
            stored = snapshot
            if newest is not None and newest["ts"] is not None and int(newest["ts"]) >= snapshot.timestamp:
                stored = dataclasses.replace(snapshot, timestamp=int(newest["ts"]) + 1)
            await db.run(
                "INSERT INTO gateway_metrics_history(timestamp, total_requests, "
                "blocked_requests, allowed_requests, active_buckets) VALUES (?, ?, ?, ?, ?)",
                [
                    stored.timestamp,
                    stored.total_requests,
                    stored.blocked_requests,
                    stored.allowed_requests,
                    stored.active_buckets,
                ],
            )
            await db.run(
                "DELETE FROM gateway_metrics_history WHERE timestamp NOT IN "
                "(SELECT timestamp FROM gateway_metrics_history ORDER BY timestamp DESC LIMIT ?)",
                [self.retention],
            )
            return stored

        return await self._store.write(insert, reload=False)

    async def history(self, limit: int) -> list[MetricsSnapshot]:
        """The newest ``limit`` snapshots, oldest first (the order a chart draws them)."""
        db = await self._store.read()
        rows = await db.all(
            "SELECT timestamp, total_requests, blocked_requests, allowed_requests, active_buckets FROM "
            "(SELECT * FROM gateway_metrics_history ORDER BY timestamp DESC LIMIT ?) ORDER BY timestamp",
            [limit],
        )
        return [MetricsSnapshot(**{key: int(value) for key, value in row.items()}) for row in rows]

    async def clear_history(self) -> int:
        async def delete(db: Database) -> int:
            return (await db.run("DELETE FROM gateway_metrics_history")).changes

        return await self._store.write(delete, reload=False)
