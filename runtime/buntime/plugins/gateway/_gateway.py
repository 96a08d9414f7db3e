"""The gateway's behaviour: request counters, shell excludes and metrics history.

Called by ``_routes`` (admin API) and ``_plugin`` (lifecycle). Raises :class:`ApiError` with a
stable code for everything a client can get wrong. Storage is optional: without the turso plugin
the gateway serves env-only data and refuses writes with 503 ``GATEWAY_STORAGE_DISABLED``.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .._http import ApiError
from ._config import BASENAME_PATTERN, GatewayConfig
from ._store import GatewayStore, MetricsSnapshot

SOURCE_ENV = "env"
SOURCE_TURSO = "turso"

STORAGE_DISABLED = "GATEWAY_STORAGE_DISABLED"
INVALID_BASENAME = "GATEWAY_INVALID_BASENAME"
ENV_EXCLUDE = "GATEWAY_ENV_EXCLUDE"
ALREADY_EXCLUDED = "GATEWAY_ALREADY_EXCLUDED"
EXCLUDE_NOT_FOUND = "GATEWAY_EXCLUDE_NOT_FOUND"
INVALID_LIMIT = "GATEWAY_INVALID_LIMIT"
UNAUTHORIZED = "GATEWAY_UNAUTHORIZED"

DEFAULT_HISTORY_LIMIT = 60
#: Distinct clients tracked between snapshots; past this the count saturates (bounded memory).
MAX_TRACKED_CLIENTS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


class RequestCounters:
    """Requests seen by the runtime since start; ``blocked`` are the ones the gateway refused.

    ``active_buckets`` counts distinct client addresses since the previous snapshot (the unit a
    per-client rate limiter would keep a bucket for).
    """

    def __init__(self) -> None:
        self.total = 0
        self.blocked = 0
        self._clients: set[str] = set()
        self._last_timestamp = 0

    @property
    def allowed(self) -> int:
        return self.total - self.blocked

    def block(self) -> None:
        self.blocked += 1

    def seen(self, client: str | None) -> None:
        self.total += 1
        if client and len(self._clients) < MAX_TRACKED_CLIENTS:
            self._clients.add(client)

    def recorded(self, timestamp: int) -> None:
        """The store moved a snapshot's timestamp past another replica's: keep ours increasing."""
        self._last_timestamp = max(self._last_timestamp, timestamp)

    def take(self) -> MetricsSnapshot:
        """A snapshot of now; timestamps strictly increase within the process (they are the key)."""
        self._last_timestamp = max(now_ms(), self._last_timestamp + 1)
        snapshot = MetricsSnapshot(
            timestamp=self._last_timestamp,
            total_requests=self.total,
            blocked_requests=self.blocked,
            allowed_requests=self.allowed,
            active_buckets=len(self._clients),
        )
        self._clients.clear()
        return snapshot


class Gateway:
    """What the admin API and other plugins use. Parameters:

    * **config** — resolved :class:`GatewayConfig`.
    * **store** — the gateway's :class:`GatewayStore`, or ``None`` when persistence is disabled.
    """

    def __init__(self, config: GatewayConfig, store: GatewayStore | None) -> None:
        self.config = config
        self.store = store
        self.counters = RequestCounters()

    @property
    def storage_enabled(self) -> bool:
        return self.store is not None

    def _require_store(self) -> GatewayStore:
        if self.store is None:
            raise ApiError(503, STORAGE_DISABLED, "gateway persistence is disabled (no turso plugin)")
        return self.store

    # -- requests -----------------------------------------------------------------------------
    async def count_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Root middleware: every request through the runtime counts towards the snapshots."""
        self.counters.seen(request.remote)
        return await handler(request)

    def authorize(self, presented: str | None) -> None:
        """Constant-time ``X-API-Key`` check; a refusal counts as a blocked request."""
        expected = self.config.api_key
        if expected is None:
            return
        if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
            self.counters.block()
            raise ApiError(401, UNAUTHORIZED, "missing or invalid X-API-Key")

    # -- shell excludes -----------------------------------------------------------------------
    def excluded_basenames(self) -> frozenset[str]:
        """Env and persisted excludes: the apps a shell must not wrap."""
        persisted = self.store.excludes if self.store is not None else {}
        return frozenset(self.config.env_excludes) | frozenset(persisted)

    def list_excludes(self) -> list[dict[str, Any]]:
        """Env excludes (``addedAt`` null) merged with persisted ones, sorted by basename."""
        merged: dict[str, dict[str, Any]] = {}
        if self.store is not None:
            for basename, added_at in self.store.excludes.items():
                merged[basename] = {"basename": basename, "source": SOURCE_TURSO, "addedAt": added_at}
        for basename in self.config.env_excludes:  # env wins: it cannot be removed
            merged[basename] = {"basename": basename, "source": SOURCE_ENV, "addedAt": None}
        return [merged[name] for name in sorted(merged)]

    @staticmethod
    def _validate_basename(basename: Any) -> str:
        if not isinstance(basename, str) or not BASENAME_PATTERN.match(basename):
            raise ApiError(400, INVALID_BASENAME, "basename must match ^[a-zA-Z0-9_-]+$")
        return basename

    async def add_exclude(self, raw: Any) -> dict[str, Any]:
        basename = self._validate_basename(raw)
        if basename in self.config.env_excludes:
            raise ApiError(400, ENV_EXCLUDE, f"{basename} is already excluded via environment")
        store = self._require_store()
        added_at = now_ms()
        if not await store.add_exclude(basename, added_at):
            raise ApiError(409, ALREADY_EXCLUDED, f"{basename} is already excluded")
        return {"basename": basename, "source": SOURCE_TURSO, "addedAt": added_at}

    async def remove_exclude(self, raw: Any) -> None:
        basename = self._validate_basename(raw)
        if basename in self.config.env_excludes:
            raise ApiError(400, ENV_EXCLUDE, f"cannot remove environment-based exclude {basename}")
        if not await self._require_store().remove_exclude(basename):
            raise ApiError(404, EXCLUDE_NOT_FOUND, f"{basename} is not excluded")

    # -- metrics history ----------------------------------------------------------------------
    def parse_limit(self, raw: str | None) -> int:
        if raw is None or raw == "":
            return min(DEFAULT_HISTORY_LIMIT, self.config.metrics_retention)
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= self.config.metrics_retention:
            raise ApiError(
                400, INVALID_LIMIT, f"limit must be an integer from 1 to {self.config.metrics_retention}"
            )
        return limit

    async def history(self, limit: int) -> list[MetricsSnapshot]:
        return [] if self.store is None else await self.store.history(limit)

    async def record_snapshot(self) -> MetricsSnapshot:
        store = self._require_store()
        stored = await store.record_snapshot(self.counters.take())
        self.counters.recorded(stored.timestamp)
        return stored

    async def clear_history(self) -> int:
        return await self._require_store().clear_history()
