"""The gateway's behaviour: request counters, CORS, rate limiting, shell settings and history.

Called by ``_routes`` (admin API) and ``_plugin`` (lifecycle). Raises :class:`ApiError` with a
stable code for everything a client can get wrong. Storage is optional: without the turso plugin
the gateway serves env-only data and refuses writes with 503 ``GATEWAY_STORAGE_DISABLED``.

Per request (root middleware, outermost plugin): count it; answer a CORS preflight whose
``Origin`` a rule covers (204, never rate limited); then take a rate-limit token (429 with
``Retry-After`` when none is left). Just before any response's headers go out (the response
hook, which also sees proxied, streamed and WebSocket responses) the CORS and
``X-RateLimit-*`` headers are added.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .._errors import ApiError
from .._http import api_key_matches, error_body
from ._config import BASENAME_PATTERN, GatewayConfig
from ._cors import CorsRule, match_rule, parse_cors_rule, preflight_headers, response_headers
from ._ratelimit import Decision, RateLimiter, client_ip, rate_limit_key
from ._store import SHELL_DIR_SETTING, GatewayStore, MetricsSnapshot, ShellRoute

SOURCE_ENV = "env"
SOURCE_TURSO = "turso"

STORAGE_DISABLED = "GATEWAY_STORAGE_DISABLED"
INVALID_BASENAME = "GATEWAY_INVALID_BASENAME"
ENV_EXCLUDE = "GATEWAY_ENV_EXCLUDE"
INVALID_LIMIT = "GATEWAY_INVALID_LIMIT"
UNAUTHORIZED = "GATEWAY_UNAUTHORIZED"
RATE_LIMITED = "GATEWAY_RATE_LIMITED"
RATE_LIMIT_DISABLED = "GATEWAY_RATE_LIMIT_DISABLED"
CACHE_DISABLED = "GATEWAY_CACHE_DISABLED"
CORS_RULE_NOT_FOUND = "GATEWAY_CORS_RULE_NOT_FOUND"
SHELL_DIR_REQUIRED = "SHELL_DIR_REQUIRED"
SHELL_DIR_INVALID = "GATEWAY_SHELL_DIR_INVALID"
SHELL_ROUTE_INVALID = "SHELL_ROUTE_INVALID"

SOURCE_OVERRIDE = "override"
SOURCE_DEFAULT = "default"
#: Rate-limited requests the gateway remembers for ``/logs`` (newest kept).
REQUEST_LOG_SIZE = 100
_ROUTE_HOST = re.compile(r"(\*\.)?[a-z0-9._-]+")  # matched whole (fullmatch)
DECISION_KEY = web.RequestKey("gateway_rate_limit", Decision)

log = logging.getLogger("buntime.plugin.gateway")

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
        self.limiter = RateLimiter(config.rate_limit) if config.rate_limit is not None else None
        self._rate_limit_excludes = [
            re.compile(p) for p in (config.rate_limit.exclude_paths if config.rate_limit else ())
        ]
        self.request_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        #: Without storage the manifest/env CORS seed applies in memory only.
        self._memory_cors: tuple[CorsRule, ...] = ()
        if store is None and config.cors is not None:
            self._memory_cors = (
                CorsRule.from_seed(config.cors, rule_id=str(uuid.uuid4()), created_at=now_ms()),
            )
        self.stopping = asyncio.Event()
        self._last_snapshot: tuple[int, int, int] | None = None

    @property
    def storage_enabled(self) -> bool:
        return self.store is not None

    def _require_store(self) -> GatewayStore:
        if self.store is None:
            raise ApiError(
                "gateway persistence is disabled (no turso plugin)", code=STORAGE_DISABLED, status=503
            )
        return self.store

    async def start(self) -> None:
        """What ``on_init`` does once storage is up: seed the first CORS rule if there is none."""
        if self.store is not None and self.config.cors is not None and not self.store.cors_rules:
            seed = CorsRule.from_seed(self.config.cors, rule_id=str(uuid.uuid4()), created_at=now_ms())
            if await self.store.seed_cors_rule(seed):
                log.info("seeded CORS rule %s (%s)", seed.name, ", ".join(seed.origins))

    # -- requests -----------------------------------------------------------------------------
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Root middleware: count, answer CORS preflights, rate limit."""
        started = time.monotonic()
        self.counters.seen(client_ip(request))
        origin = request.headers.get("Origin")
        if origin and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            rule = match_rule(origin, self.cors_rules)
            if rule is not None:
                requested = request.headers.get("Access-Control-Request-Headers")
                return web.Response(status=204, headers=preflight_headers(origin, rule, requested))
        if self.limiter is not None and not any(p.search(request.path) for p in self._rate_limit_excludes):
            decision = self.limiter.check(rate_limit_key(request, self.limiter.config))
            request[DECISION_KEY] = decision
            if not decision.allowed:
                self.counters.block()
                self._log_request(request, 429, started, rate_limited=True)
                return self._too_many(decision)
        return await handler(request)

    def _too_many(self, decision: Decision) -> web.Response:
        assert self.limiter is not None
        headers = {
            "Retry-After": str(decision.retry_after),
            "X-RateLimit-Limit": str(self.limiter.config.requests),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(now_ms() + decision.retry_after * 1000),
        }
        body = {**error_body(RATE_LIMITED, "Too Many Requests")}
        return web.json_response(body, status=429, headers=headers)

    def _log_request(self, request: web.Request, status: int, started: float, *, rate_limited: bool) -> None:
        timestamp = now_ms()
        self.request_log.append(
            {
                "id": f"{timestamp}-{uuid.uuid4().hex[:6]}",
                "timestamp": timestamp,
                "ip": client_ip(request),
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration": round((time.monotonic() - started) * 1000, 3),
                "rateLimited": rate_limited,
            }
        )

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Response hook: CORS headers for a covered ``Origin``, ``X-RateLimit-*`` when limited."""
        origin = request.headers.get("Origin")
        if origin and "Access-Control-Allow-Origin" not in response.headers:
            rule = match_rule(origin, self.cors_rules)
            if rule is not None:
                for name, value in response_headers(origin, rule).items():
                    if name.lower() == "vary":
                        response.headers.add(name, value)
                    else:
                        response.headers[name] = value
        decision = request.get(DECISION_KEY)
        if decision is not None and self.limiter is not None and response.status != 429:
            response.headers["X-RateLimit-Limit"] = str(self.limiter.config.requests)
            response.headers["X-RateLimit-Remaining"] = str(decision.remaining)

    def authorize(self, presented: str | None) -> None:
        """Constant-time ``X-API-Key`` check; a refusal counts as a blocked request."""
        expected = self.config.api_key
        if expected is None:
            return
        if not api_key_matches(presented, expected):
            self.counters.block()
            raise ApiError("missing or invalid X-API-Key", code=UNAUTHORIZED, status=401)

    # -- shell excludes -----------------------------------------------------------------------
    def excluded_basenames(self) -> frozenset[str]:
        """Env and persisted excludes: the apps a shell must not wrap."""
        persisted = self.store.excludes if self.store is not None else {}
        return frozenset(self.config.env_excludes) | frozenset(persisted)

    def list_excludes(self) -> list[dict[str, Any]]:
        """Upstream's order and shape: env excludes first (``{basename, source: "env"}``, no
        ``addedAt``), then persisted ones by basename with the stored ``addedAt`` (upstream
        reported the time of the request instead)."""
        listed: list[dict[str, Any]] = [
            {"basename": basename, "source": SOURCE_ENV} for basename in self.config.env_excludes
        ]
        if self.store is not None:
            env = frozenset(self.config.env_excludes)
            listed.extend(
                {"basename": basename, "source": SOURCE_TURSO, "addedAt": added_at}
                for basename, added_at in sorted(self.store.excludes.items())
                if basename not in env
            )
        return listed

    @staticmethod
    def _validate_basename(basename: Any) -> str:
        if isinstance(basename, str):
            basename = basename.strip()
        if not isinstance(basename, str) or not basename:
            raise ApiError("basename is required", code=INVALID_BASENAME, status=400)
        if not BASENAME_PATTERN.fullmatch(basename):
            raise ApiError("Invalid basename format", code=INVALID_BASENAME, status=400)
        return basename

    async def add_exclude(self, raw: Any) -> dict[str, Any]:
        """``{added, basename, source: "turso", addedAt}``; ``added`` is false (and ``addedAt``
        the stored time) when it was already excluded, as upstream answers: 200 either way."""
        basename = self._validate_basename(raw)
        if basename in self.config.env_excludes:
            raise ApiError("Already excluded via environment", code=ENV_EXCLUDE, status=400)
        store = self._require_store()
        added_at = now_ms()
        added = await store.add_exclude(basename, added_at)
        if not added:
            added_at = store.excludes.get(basename, added_at)
        return {"added": added, "basename": basename, "source": SOURCE_TURSO, "addedAt": added_at}

    async def remove_exclude(self, raw: Any) -> dict[str, Any]:
        """``{removed, basename}``; ``removed`` is false when it was not excluded."""
        basename = self._validate_basename(raw)
        if basename in self.config.env_excludes:
            raise ApiError("Cannot remove environment-based exclude", code=ENV_EXCLUDE, status=400)
        removed = await self._require_store().remove_exclude(basename)
        return {"removed": removed, "basename": basename}

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
                f"limit must be an integer from 1 to {self.config.metrics_retention}",
                code=INVALID_LIMIT,
                status=400,
            )
        return limit

    async def history(self, limit: int) -> list[MetricsSnapshot]:
        return [] if self.store is None else await self.store.history(limit)

    def _take(self) -> MetricsSnapshot:
        snapshot = self.counters.take()
        if self.limiter is not None:  # upstream's activeBuckets: the limiter's live buckets
            snapshot = MetricsSnapshot(
                snapshot.timestamp,
                snapshot.total_requests,
                snapshot.blocked_requests,
                snapshot.allowed_requests,
                len(self.limiter.buckets),
            )
        return snapshot

    async def record_snapshot(self) -> MetricsSnapshot:
        store = self._require_store()
        stored = await store.record_snapshot(self._take())
        self.counters.recorded(stored.timestamp)
        self._last_snapshot = (stored.total_requests, stored.blocked_requests, stored.active_buckets)
        return stored

    async def run_snapshots(self) -> None:
        """Every ``snapshot_interval``: record a snapshot unless nothing changed since the last one.

        Upstream wrote (and, in sync mode, pushed) a row every second even on an idle pod; an
        unchanged snapshot adds nothing a chart cannot draw from the previous one. Also sweeps
        idle rate-limit buckets about once a minute.
        """
        interval = self.config.snapshot_interval
        last_sweep = time.monotonic()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            if self.limiter is not None and time.monotonic() - last_sweep >= 60:
                self.limiter.sweep()
                last_sweep = time.monotonic()
            current = (
                self.counters.total,
                self.counters.blocked,
                len(self.limiter.buckets) if self.limiter else 0,
            )
            if self.store is None or current == self._last_snapshot:
                continue
            try:
                await self.record_snapshot()
            except Exception:  # a storage hiccup must not end the loop
                log.exception("periodic metrics snapshot failed")

    # -- CORS rules ---------------------------------------------------------------------------
    @property
    def cors_rules(self) -> tuple[CorsRule, ...]:
        return self.store.cors_rules if self.store is not None else self._memory_cors

    async def create_cors_rule(self, body: Any) -> CorsRule:
        rule = parse_cors_rule(body, rule_id=str(uuid.uuid4()), created_at=now_ms())
        await self._require_store().save_cors_rule(rule)
        return rule

    async def update_cors_rule(self, rule_id: str, body: Any) -> CorsRule:
        store = self._require_store()
        parse_cors_rule(body, rule_id=rule_id, created_at=0)  # validate before the transaction
        rule = await store.update_cors_rule(
            rule_id, lambda created_at: parse_cors_rule(body, rule_id=rule_id, created_at=created_at)
        )
        if rule is None:
            raise ApiError("Rule not found", code=CORS_RULE_NOT_FOUND, status=404)
        return rule

    async def delete_cors_rule(self, rule_id: str) -> bool:
        return await self._require_store().delete_cors_rule(rule_id)

    # -- shell ----------------------------------------------------------------------------------
    @property
    def shell_dir(self) -> str | None:
        """The override (``gateway_settings.shell_dir``) when set, else the manifest/env seed."""
        override = self.store.settings.get(SHELL_DIR_SETTING) if self.store is not None else None
        return override or self.config.shell_dir

    @property
    def shell_source(self) -> str:
        has_override = self.store is not None and SHELL_DIR_SETTING in self.store.settings
        return SOURCE_OVERRIDE if has_override else SOURCE_DEFAULT

    @staticmethod
    def _existing_dir(raw: Any, code: str, required: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise ApiError(required, code=code, status=400)
        directory = raw.strip()
        try:
            exists = Path(directory).is_dir()
        except OSError:  # one the OS refuses to look up (ENAMETOOLONG, EACCES) is not a directory either
            exists = False
        if not exists:
            raise ApiError(f"Shell directory does not exist: {directory}", code=SHELL_DIR_INVALID, status=400)
        return directory

    async def set_shell_dir(self, raw: Any) -> dict[str, Any]:
        directory = self._existing_dir(raw, SHELL_DIR_REQUIRED, "A shell directory is required")
        await self._require_store().set_setting(SHELL_DIR_SETTING, directory, now_ms())
        return {"dir": directory, "source": SOURCE_OVERRIDE}

    async def reset_shell_dir(self) -> dict[str, Any]:
        await self._require_store().delete_setting(SHELL_DIR_SETTING)
        return {"dir": self.shell_dir, "source": SOURCE_DEFAULT, "enabled": self.shell_dir is not None}

    def shell_routes(self) -> list[dict[str, Any]]:
        routes: tuple[ShellRoute, ...] = self.store.shell_routes if self.store is not None else ()
        return [route.as_json() for route in routes]

    async def save_shell_route(self, body: dict[str, Any]) -> dict[str, Any]:
        raw_host, raw_dir = body.get("host"), body.get("dir")
        host = raw_host.strip().lower() if isinstance(raw_host, str) else ""
        if not host or not isinstance(raw_dir, str) or not raw_dir.strip():
            raise ApiError("host and dir are required", code=SHELL_ROUTE_INVALID, status=400)
        if not _ROUTE_HOST.fullmatch(host):
            raise ApiError(f"Invalid host: {raw_host}", code=SHELL_ROUTE_INVALID, status=400)
        directory = self._existing_dir(raw_dir, SHELL_ROUTE_INVALID, "host and dir are required")
        await self._require_store().save_shell_route(host, directory, now_ms())
        return {"host": host, "dir": directory}

    async def delete_shell_route(self, raw: str) -> bool:
        return await self._require_store().delete_shell_route(raw.strip().lower())

    def _shell_json(self, *, excludes: bool) -> dict[str, Any] | None:
        if self.shell_dir is None:
            return None
        shell: dict[str, Any] = {"enabled": True, "dir": self.shell_dir, "source": self.shell_source}
        shell["seedDir"] = self.config.shell_dir
        if excludes:
            shell["excludes"] = self.list_excludes()
        return shell

    # -- rate limit, logs, stats ------------------------------------------------------------------
    def require_limiter(self) -> RateLimiter:
        if self.limiter is None:
            raise ApiError("Rate limiting not enabled", code=RATE_LIMIT_DISABLED, status=400)
        return self.limiter

    def logs(
        self, *, limit: int, ip: str | None, rate_limited: bool | None, status_range: int | None
    ) -> list[Any]:
        entries = [
            entry
            for entry in reversed(self.request_log)
            if (ip is None or entry["ip"] == ip)
            and (rate_limited is None or entry["rateLimited"] is rate_limited)
            and (status_range is None or entry["status"] // 100 == status_range)
        ]
        return entries[: max(0, limit)]

    def log_stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for entry in self.request_log:
            by_status[str(entry["status"])] = by_status.get(str(entry["status"]), 0) + 1
        total = len(self.request_log)
        durations = [float(entry["duration"]) for entry in self.request_log]
        return {
            "total": total,
            "rateLimited": sum(1 for entry in self.request_log if entry["rateLimited"]),
            "byStatus": by_status,
            "avgDuration": sum(durations) / total if total else 0,
        }

    def _rate_limit_json(self) -> dict[str, Any] | None:
        return self.config.rate_limit.as_json() if self.config.rate_limit is not None else None

    def stats(self) -> dict[str, Any]:
        rules = self.cors_rules
        return {
            "rateLimit": {
                "enabled": self.limiter is not None,
                "metrics": self.limiter.metrics() if self.limiter is not None else None,
                "config": self._rate_limit_json(),
            },
            "cors": {"enabled": bool(rules), "rulesCount": len(rules)},
            "cache": {"enabled": False},
            "shell": {
                "enabled": self.shell_dir is not None,
                "dir": self.shell_dir,
                "excludesCount": len(self.excluded_basenames()) if self.shell_dir is not None else 0,
            },
            "logs": self.log_stats(),
        }

    def config_json(self) -> dict[str, Any]:
        shell = None
        if self.shell_dir is not None:
            shell = {"dir": self.shell_dir, "envExcludes": list(self.config.env_excludes)}
        return {
            "rateLimit": self._rate_limit_json(),
            "cors": [rule.as_json() for rule in self.cors_rules],
            "cache": None,
            "shell": shell,
        }

    def sse_payload(self) -> str:
        """One ``/sse`` event: live metrics, CORS rules, shell state and the latest 10 log lines."""
        rate_limit = None
        if self.limiter is not None:
            assert self.config.rate_limit is not None
            config = self.config.rate_limit
            rate_limit = {
                "metrics": self.limiter.metrics(),
                "config": {"requests": config.requests, "window": config.window_text, "keyBy": config.key_by},
            }
        rules = self.cors_rules
        return json.dumps(
            {
                "timestamp": now_ms(),
                "rateLimit": rate_limit,
                "cors": {"enabled": bool(rules), "rules": [rule.as_json() for rule in rules]},
                "shell": self._shell_json(excludes=True),
                "recentLogs": self.logs(limit=10, ip=None, rate_limited=None, status_range=None),
            }
        )

    async def clear_history(self) -> int:
        return await self._require_store().clear_history()
