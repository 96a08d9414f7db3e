"""Health reports of the Turso service (plain dataclasses, JSON-ready through ``as_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

HealthStatus = Literal["ok", "degraded", "down"]


@dataclass(frozen=True)
class NamespaceHealth:
    """One namespace: where its data lives and how its replica is syncing (no token, ever)."""

    replica_path: str
    sync_url: str | None = None
    last_push: float | None = None
    last_pull: float | None = None
    revision: str | None = None
    pending_operations: int = 0
    last_sync_error: str | None = None


@dataclass(frozen=True)
class TursoHealth:
    """The service's health. One rule ties the fields together:

    * ``status="ok"``: ``ok`` and ``usable`` are True; every open database answers and its last
      sync worked.
    * ``status="degraded"``: ``ok`` is False, ``usable`` True; a replica serves reads but its
      last sync failed (turso-server unreachable: writes wait, then fail).
    * ``status="down"``: both False; a probe failed, or nothing has been opened yet.

    Readiness follows ``usable``; ``buntime turso health`` exits 0 for ``ok``, 3 for
    ``degraded`` and 1 for ``down``.
    """

    ok: bool
    usable: bool
    status: HealthStatus
    connected: bool
    mode: str
    topology: str
    local_path: str
    executor: str = "thread"
    namespaces: dict[str, NamespaceHealth] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
