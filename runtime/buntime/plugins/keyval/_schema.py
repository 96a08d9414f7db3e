"""The KeyVal schema and its migrations, applied in one exclusive transaction at start-up.

``kv_schema_version`` records applied versions, so a restart (or a second pod) re-runs nothing;
every statement is also ``IF NOT EXISTS`` so a half-recorded version is harmless. DDL needs an
exclusive transaction under MVCC, and going through ``run_transaction()`` pushes it in sync mode.
Search tables (``kv_fts_*``) are created at run time by search (``_search.py``), which owns
their DDL. Called by the storage core at open.

Times are epoch milliseconds everywhere (``expires_at``, queue and DLQ times); upstream stored
entry expiry in seconds, which made TTLs under a second expire at once.
"""

from __future__ import annotations

import time

from ...turso import BlockingDatabase, TursoService

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS kv_entries (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    versionstamp TEXT NOT NULL,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS idx_kv_expires ON kv_entries(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_queue (
    id TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    ready_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 4,
    backoff_schedule TEXT,
    keys_if_undelivered TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    locked_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_queue_ready ON kv_queue(status, ready_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_queue_locked ON kv_queue(locked_until) WHERE status = 'processing';
CREATE TABLE IF NOT EXISTS kv_dlq (
    id TEXT PRIMARY KEY,
    original_id TEXT NOT NULL,
    value BLOB NOT NULL,
    error_message TEXT,
    attempts INTEGER NOT NULL,
    original_created_at INTEGER NOT NULL,
    failed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_dlq_failed_at ON kv_dlq(failed_at);
CREATE TABLE IF NOT EXISTS kv_indexes (
    prefix BLOB PRIMARY KEY,
    fields TEXT NOT NULL,
    tokenize TEXT NOT NULL DEFAULT 'unicode61',
    table_name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""

#: Counters every pod reads and bumps inside its write transaction (see ``Kv._write``): the last
#: versionstamp handed out (20 hex digits, so text order is number order; seeded from the entries
#: already stored) and the generation of ``kv_indexes`` (bumped by every index create/remove).
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS kv_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO kv_meta(name, value)
    SELECT 'versionstamp', COALESCE(max(versionstamp), '') FROM kv_entries;
INSERT OR IGNORE INTO kv_meta(name, value) VALUES ('indexes', '0');
"""

#: A dead letter keeps its message's retry policy, so a requeue restores it (upstream requeued
#: with the default schedule: a message enqueued with 3 attempts came back with 4).
SCHEMA_V3 = """
ALTER TABLE kv_dlq ADD COLUMN backoff_schedule TEXT;
ALTER TABLE kv_dlq ADD COLUMN max_attempts INTEGER;
ALTER TABLE kv_dlq ADD COLUMN keys_if_undelivered TEXT;
"""

#: Persisted per-operation metrics, upstream's table (``id`` is the operation name, latency in
#: milliseconds); every pod adds its own increments, so a row is the total over all pods.
SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS kv_metrics (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    latency_sum REAL NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_metrics_operation ON kv_metrics(operation);
"""

#: (version, script); append new versions, never edit an applied one.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, SCHEMA_V1),
    (2, SCHEMA_V2),
    (3, SCHEMA_V3),
    (4, SCHEMA_V4),
)
LATEST_VERSION = MIGRATIONS[-1][0]


async def migrate(service: TursoService, namespace: str) -> list[int]:
    """Apply the pending migrations; return the versions applied now (empty when up to date)."""

    def apply(db: BlockingDatabase) -> list[int]:
        db.exec(
            "CREATE TABLE IF NOT EXISTS kv_schema_version "
            "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        row = db.get("SELECT max(version) AS version FROM kv_schema_version")
        current = int(row["version"]) if row and row["version"] is not None else 0
        applied: list[int] = []
        for version, script in MIGRATIONS:
            if version > current:
                db.exec(script)
                db.run(
                    "INSERT OR IGNORE INTO kv_schema_version(version, applied_at) VALUES (?, ?)",
                    [version, int(time.time() * 1000)],
                )
                applied.append(version)
        return applied

    return await service.run_transaction(apply, namespace=namespace, type="exclusive")
