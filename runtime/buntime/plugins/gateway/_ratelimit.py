"""Token-bucket rate limiting per client key, in memory (so per pod).

Called by ``_gateway``'s middleware and the ``/rate-limit/*`` admin routes. A bucket holds up to
``requests`` tokens and refills at ``requests / window`` tokens per second; each request takes
one. Buckets are kept per *pod*: with N replicas behind a load balancer a client can get up to
N times the limit (the counters are deliberately not in Turso: a write per request would cost
more than the request). Keys follow upstream: ``ip:<client>`` or ``user:<sub>``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .._json import client_json
from ._config import RateLimitConfig

#: Past this many buckets, full (idle) ones are dropped first, then the least recently used.
MAX_BUCKETS = 100_000
IDENTITY_HEADER = "X-Identity"


def client_ip(request: web.Request) -> str:
    """The first ``X-Forwarded-For`` hop, else ``X-Real-IP``, else the peer address.

    The runtime sits behind an ingress, so the forwarded address is the client's (upstream
    trusted the same headers; it fell back to one shared ``unknown`` bucket for direct clients,
    where this uses the peer address).
    """
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return forwarded or request.headers.get("X-Real-IP", "").strip() or request.remote or "unknown"


def rate_limit_key(request: web.Request, config: RateLimitConfig) -> str:
    if config.key_by == "user":
        try:
            sub = client_json(request.headers.get(IDENTITY_HEADER, ""))["sub"]
        except (ValueError, KeyError, TypeError):
            sub = None
        if isinstance(sub, str | int) and str(sub):
            return f"user:{sub}"
    return f"ip:{client_ip(request)}"


@dataclass
class Bucket:
    tokens: float
    refilled_at: float
    last_activity_ms: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after: int  # whole seconds until a token is back; 0 when allowed


class RateLimiter:
    """Buckets and the counters behind ``/rate-limit/metrics``. Parameters:

    * **config** — the resolved :class:`RateLimitConfig`.
    """

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.capacity = float(config.requests)
        self.rate = config.requests / config.window
        self.buckets: dict[str, Bucket] = {}
        self.total = 0
        self.blocked = 0

    def _refill(self, bucket: Bucket, now: float) -> None:
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.refilled_at) * self.rate)
        bucket.refilled_at = now

    def _retry_after(self, bucket: Bucket) -> int:
        return 0 if bucket.tokens >= 1 else max(1, math.ceil((1 - bucket.tokens) / self.rate))

    def check(self, key: str) -> Decision:
        now = time.monotonic()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.sweep(force=True)
            bucket = self.buckets[key] = Bucket(self.capacity, now, 0)
        self._refill(bucket, now)
        bucket.last_activity_ms = int(time.time() * 1000)
        self.total += 1
        allowed = bucket.tokens >= 1
        if allowed:
            bucket.tokens -= 1
        else:
            self.blocked += 1
        return Decision(allowed, math.floor(bucket.tokens), self._retry_after(bucket))

    def sweep(self, *, force: bool = False) -> int:
        """Drop buckets that are full again (an idle client); ``force`` also drops the oldest half."""
        now = time.monotonic()
        for bucket in self.buckets.values():
            self._refill(bucket, now)
        idle = [key for key, bucket in self.buckets.items() if bucket.tokens >= self.capacity]
        for key in idle:
            del self.buckets[key]
        if force and len(self.buckets) >= MAX_BUCKETS:
            oldest = sorted(self.buckets, key=lambda k: self.buckets[k].last_activity_ms)
            for key in oldest[: len(oldest) // 2]:
                del self.buckets[key]
        return len(idle)

    def metrics(self) -> dict[str, Any]:
        return {
            "totalRequests": self.total,
            "blockedRequests": self.blocked,
            "allowedRequests": self.total - self.blocked,
            "activeBuckets": len(self.buckets),
            "config": {"capacity": self.config.requests, "windowSeconds": self.config.window},
        }

    def active_buckets(self, limit: int) -> list[dict[str, Any]]:
        """Most recently active first: ``{key, tokens, retryAfter, lastActivity}``."""
        now = time.monotonic()
        for bucket in self.buckets.values():
            self._refill(bucket, now)
        newest = sorted(self.buckets.items(), key=lambda item: -item[1].last_activity_ms)
        return [
            {
                "key": key,
                "tokens": math.floor(bucket.tokens),
                "retryAfter": self._retry_after(bucket),
                "lastActivity": bucket.last_activity_ms,
            }
            for key, bucket in newest[: max(0, limit)]
        ]

    def clear_bucket(self, key: str) -> bool:
        return self.buckets.pop(key, None) is not None

    def clear(self) -> int:
        count = len(self.buckets)
        self.buckets.clear()
        return count
