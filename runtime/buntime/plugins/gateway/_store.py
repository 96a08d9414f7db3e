"""The gateway's tables in namespace ``gateway``: metrics history, shell excludes, CORS rules,
settings (the ``shell_dir`` override) and per-host shell routes.

Called by ``_gateway``. Everything but the metrics history is cached in memory (CORS rules are
read on every request) and the cache follows pulls from other replicas; the metrics history is
only read by the admin API, so it is queried directly. The caches only serve reads: every
write decides on the stored rows inside its transaction, which is one
``service.transaction()`` (serializable across pods in sync mode, pushed at commit).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...turso import Database, TursoService
from .._errors import ApiError
from .._storage import PluginStore
from ._cors import CorsRule, check_tokens

SHELL_DIR_SETTING = "shell_dir"

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
CREATE TABLE IF NOT EXISTS gateway_cors_rules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    origins TEXT NOT NULL,
    methods TEXT NOT NULL,
    allowed_headers TEXT NOT NULL,
    exposed_headers TEXT NOT NULL,
    credentials INTEGER NOT NULL,
    max_age INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_shell_routes (
    host TEXT PRIMARY KEY,
    dir TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""

_UPSERT_CORS = (
    "INSERT INTO gateway_cors_rules(id, name, origins, methods, allowed_headers, exposed_headers, "
    "credentials, max_age, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "name = excluded.name, origins = excluded.origins, methods = excluded.methods, "
    "allowed_headers = excluded.allowed_headers, exposed_headers = excluded.exposed_headers, "
    "credentials = excluded.credentials, max_age = excluded.max_age"
)


def _cors_row(rule: CorsRule) -> list[Any]:
    return [
        rule.id,
        rule.name,
        json.dumps(list(rule.origins)),
        json.dumps(list(rule.methods)),
        json.dumps(list(rule.allowed_headers)),
        json.dumps(list(rule.exposed_headers)),
        1 if rule.credentials else 0,
        rule.max_age,
        rule.created_at,
    ]


def _row_cors(row: Mapping[str, Any]) -> CorsRule:
    """A stored rule; its header names are checked again (they go into every covered response)."""
    return check_tokens(
        CorsRule(
            id=str(row["id"]),
            name=str(row["name"]),
            origins=tuple(json.loads(row["origins"])),
            methods=tuple(json.loads(row["methods"])),
            allowed_headers=tuple(json.loads(row["allowed_headers"])),
            exposed_headers=tuple(json.loads(row["exposed_headers"])),
            credentials=bool(row["credentials"]),
            max_age=int(row["max_age"]),
            created_at=int(row["created_at"]),
        )
    )


@dataclass(frozen=True)
class ShellRoute:
    """A tenant host (exact or ``*.domain``) served by its own shell directory."""

    host: str
    dir: str
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "dir": self.dir, "createdAt": self.created_at}


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
        self.cors_rules: tuple[CorsRule, ...] = ()
        self.settings: dict[str, str] = {}
        self.shell_routes: tuple[ShellRoute, ...] = ()
        self._log = logger
        self._store = PluginStore(service, NAMESPACE, load=self._load, logger=logger)

    async def start(self) -> None:
        await self._store.start(SCHEMA)

    async def aclose(self) -> None:
        await self._store.aclose()

    async def _load(self, db: Database) -> None:
        rows = await db.all("SELECT basename, added_at FROM gateway_shell_excludes ORDER BY basename")
        self.excludes = {str(row["basename"]): int(row["added_at"]) for row in rows}
        rules: list[CorsRule] = []
        for row in await db.all("SELECT * FROM gateway_cors_rules ORDER BY created_at, id"):
            try:
                rules.append(_row_cors(row))
            except (ValueError, TypeError, ApiError) as exc:  # one bad row must not hide the others
                self._log.warning("skipping invalid CORS rule %s: %s", row["id"], exc)
        self.cors_rules = tuple(rules)
        rows = await db.all("SELECT key, value FROM gateway_settings")
        self.settings = {str(row["key"]): str(row["value"]) for row in rows}
        rows = await db.all("SELECT host, dir, created_at FROM gateway_shell_routes ORDER BY host")
        self.shell_routes = tuple(
            ShellRoute(str(r["host"]), str(r["dir"]), int(r["created_at"])) for r in rows
        )

    # -- CORS rules ---------------------------------------------------------------------------
    async def seed_cors_rule(self, rule: CorsRule) -> bool:
        """Insert ``rule`` only if no rule exists yet (on any replica); ``True`` if it was."""

        async def seed(db: Database) -> bool:
            if await db.get("SELECT id FROM gateway_cors_rules LIMIT 1") is not None:
                return False
            await db.run(_UPSERT_CORS, _cors_row(rule))
            return True

        return await self._store.write(seed)

    async def save_cors_rule(self, rule: CorsRule) -> None:
        await self._store.write(lambda db: db.run(_UPSERT_CORS, _cors_row(rule)))

    async def update_cors_rule(self, rule_id: str, build: Any) -> CorsRule | None:
        """``build(created_at)`` makes the new rule from the stored one's creation time."""

        async def update(db: Database) -> CorsRule | None:
            row = await db.get("SELECT created_at FROM gateway_cors_rules WHERE id = ?", [rule_id])
            if row is None:
                return None
            rule: CorsRule = build(int(row["created_at"]))
            await db.run(_UPSERT_CORS, _cors_row(rule))
            return rule

        return await self._store.write(update)

    async def delete_cors_rule(self, rule_id: str) -> bool:
        async def delete(db: Database) -> bool:
            return (await db.run("DELETE FROM gateway_cors_rules WHERE id = ?", [rule_id])).changes > 0

        return await self._store.write(delete)

    # -- settings and shell routes ------------------------------------------------------------
    async def set_setting(self, key: str, value: str, updated_at: int) -> None:
        await self._store.write(
            lambda db: db.run(
                "INSERT INTO gateway_settings(key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [key, value, updated_at],
            )
        )

    async def delete_setting(self, key: str) -> None:
        await self._store.write(lambda db: db.run("DELETE FROM gateway_settings WHERE key = ?", [key]))

    async def save_shell_route(self, host: str, directory: str, created_at: int) -> None:
        await self._store.write(
            lambda db: db.run(
                "INSERT INTO gateway_shell_routes(host, dir, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(host) DO UPDATE SET dir = excluded.dir",
                [host, directory, created_at],
            )
        )

    async def delete_shell_route(self, host: str) -> bool:
        async def delete(db: Database) -> bool:
            return (await db.run("DELETE FROM gateway_shell_routes WHERE host = ?", [host])).changes > 0

        return await self._store.write(delete)

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
        """The newest ``limit`` snapshots, newest first (upstream's order)."""
        db = await self._store.read()
        rows = await db.all(
            "SELECT timestamp, total_requests, blocked_requests, allowed_requests, active_buckets "
            "FROM gateway_metrics_history ORDER BY timestamp DESC LIMIT ?",
            [limit],
        )
        return [MetricsSnapshot(**{key: int(value) for key, value in row.items()}) for row in rows]

    async def clear_history(self) -> int:
        async def delete(db: Database) -> int:
            return (await db.run("DELETE FROM gateway_metrics_history")).changes

        return await self._store.write(delete, reload=False)
