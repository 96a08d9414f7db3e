"""Garbage collection of namespaces and archives, every ``TURSO_GC_INTERVAL``.

A sweep archives (through :meth:`Supervisor.destroy`, so under the namespace's lock) every
namespace that is not locked and either outlived its TTL (counted from creation) or is an auto
namespace idle past ``TURSO_AUTO_IDLE_DURATION``; the decision is re-checked under the lock, so a
namespace touched in between survives. Then archive directories (``archive/<name>.<UTC stamp>[-n]``)
older than ``TURSO_ARCHIVE_RETENTION`` are deleted; names that do not parse are never touched.
An interval of ``0`` disables the loop (upstream's Go ticker panicked on it), and a failing sweep
is logged and retried next time, never fatal. Started by ``_app`` after the restore.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from ._durations import format_duration, parse_duration
from ._errors import ApiError
from ._logging import get_logger
from ._metrics import Metrics
from ._state import NamespaceRecord, Origin, StateStore, utcnow
from ._supervisor import Supervisor

log = get_logger("gc")


class GcReason(StrEnum):
    """Why a namespace was archived (also the metric label)."""

    TTL_EXPIRED = "ttl_expired"
    AUTO_IDLE = "auto_idle"


@dataclass(frozen=True)
class GcPolicy:
    """Durations in seconds; ``0`` disables that rule."""

    auto_idle: float
    archive_retention: float


@dataclass
class GcReport:
    archived: dict[str, GcReason] = field(default_factory=dict)
    purged: list[Path] = field(default_factory=list)


def archive_reason(record: NamespaceRecord, now: datetime, policy: GcPolicy) -> GcReason | None:
    """Why ``record`` should be archived at ``now``, or ``None`` to keep it."""
    if record.locked:
        return None
    if record.ttl:
        try:
            ttl = parse_duration(record.ttl).total_seconds()
        except ValueError:
            ttl = 0.0  # an unparseable stored TTL keeps the namespace
        if ttl > 0 and (now - record.created_at).total_seconds() > ttl:
            return GcReason.TTL_EXPIRED
    idle = (now - record.last_access_at).total_seconds()
    if record.origin is Origin.AUTO and policy.auto_idle > 0 and idle > policy.auto_idle:
        return GcReason.AUTO_IDLE
    return None


class GarbageCollector:
    """Periodic sweeps over the store and the archive directory.

    Parameters:

    * ``store``, ``supervisor``, ``metrics`` - the server's shared objects.
    * ``policy`` - idle and retention limits.
    * ``interval`` - seconds between sweeps; ``0`` disables :meth:`run`.
    """

    def __init__(
        self,
        store: StateStore,
        supervisor: Supervisor,
        metrics: Metrics,
        *,
        policy: GcPolicy,
        interval: float,
    ) -> None:
        self._store = store
        self._supervisor = supervisor
        self._metrics = metrics
        self._policy = policy
        self.interval = interval

    async def run(self) -> None:
        """Sweep now, then every ``interval``; errors are logged, never raised."""
        if self.interval <= 0:
            log.info("gc disabled (TURSO_GC_INTERVAL=0)")
            return
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("gc sweep failed; retrying next interval")
            await asyncio.sleep(self.interval)

    async def sweep(self, now: datetime | None = None) -> GcReport:
        report = GcReport()
        moment = now or utcnow()
        for record in self._store.records():
            reason = archive_reason(record, moment, self._policy)
            if reason is None:
                continue
            try:
                archived = await self._supervisor.destroy(
                    record.name,
                    only_if=lambda current: (
                        archive_reason(current, now or utcnow(), self._policy) is not None
                    ),
                )
            except ApiError as exc:  # e.g. removed meanwhile; the next sweep sees the truth
                log.warning("gc archive failed", extra={"namespace": record.name, "error": exc.detail})
                continue
            if archived is None:
                continue
            report.archived[record.name] = reason
            self._metrics.gc_archived.labels(reason.value).inc()
            log.info(
                "gc archive",
                extra={
                    "namespace": record.name,
                    "reason": reason.value,
                    "ttl": record.ttl,
                    "autoIdle": format_duration(timedelta(seconds=self._policy.auto_idle)),
                    "createdAt": record.created_at.isoformat(),
                    "lastAccessAt": record.last_access_at.isoformat(),
                    "archive": str(archived),
                },
            )
        if self._policy.archive_retention > 0:
            report.purged = await asyncio.to_thread(self._purge_archives, moment)
            for path in report.purged:
                self._metrics.archives_purged.inc()
                log.info("archive purged", extra={"path": str(path)})
        return report

    def _purge_archives(self, now: datetime) -> list[Path]:
        purged: list[Path] = []
        for entry, stamp in self._supervisor.layout.archives():
            if (now - stamp).total_seconds() > self._policy.archive_retention:
                shutil.rmtree(entry, ignore_errors=True)
                purged.append(entry)
        return purged
