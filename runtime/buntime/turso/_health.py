"""Health reports of the Turso service (plain dataclasses, JSON-ready through ``as_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

HealthStatus = Literal["ok", "degraded", "down"]


@dataclass(frozen=True)
class NamespaceHealth:
    """One namespace: whether it serves, where its data lives and how its replica is syncing.

    ``status``: ``ok``; ``degraded`` (it serves reads, but its last sync failed or the server did
    not answer health's own request to it, ``ReplicaBackend.reach``, or its probe did not answer
    within the health bound because a sync or write holds it); ``down`` (its probe failed: it
    cannot serve, e.g. a replica stuck in a reset, or one whose reads wait for the reset after a
    commit whose outcome is unknown while the server cannot be reached). ``error`` says why, for
    the log and ``buntime turso health``: never put it in an unauthenticated reply
    (:meth:`TursoHealth.public`).
    No token, ever; URLs carry no userinfo (``resolve_config`` refuses it).
    """

    replica_path: str
    status: HealthStatus = "ok"
    error: str | None = None
    sync_url: str | None = None
    last_push: float | None = None
    last_pull: float | None = None
    revision: str | None = None
    pending_operations: int = 0
    last_sync_error: str | None = None


@dataclass(frozen=True)
class TursoHealth:
    """The service's health. One rule ties the fields together:

    * ``status="ok"``: ``ok`` and ``usable`` are True; every open namespace is ``ok``.
    * ``status="degraded"``: ``ok`` is False, ``usable`` True; some namespace is ``degraded``
      (a replica serves reads but its last sync failed: turso-server unreachable, writes wait,
      then fail; or its probe was busy) or ``down`` while another still serves.
    * ``status="down"``: both False; every open namespace is ``down``, or nothing is open yet.

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
        """Everything, for ``buntime turso health`` and the log (paths, URLs, errors)."""
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What an unauthenticated probe may see: the status and each namespace's status word;
        no path, URL or error text."""
        states = {name: entry.status for name, entry in sorted(self.namespaces.items())}
        return {"status": self.status, "namespaces": states}
