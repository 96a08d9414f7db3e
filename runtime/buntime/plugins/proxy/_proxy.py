"""The proxy's behaviour: rule lookup, the request middleware and the rule operations.

Called by ``_routes`` (admin API) and ``_plugin``. Static rules come first in match order, then
dynamic rules by ``order``; the first *enabled* rule whose pattern is found in the request path
wins. The middleware fails open: a bug in matching lets the request through unproxied, logged.

Reserved paths (every mounted plugin base, the probes, ``/metrics``) are never proxied, whatever
the rules say; the admin API also refuses to create, change or enable a rule whose pattern
matches one of them (409 ``PROXY_RULE_SHADOWS_RESERVED``), so the refusal is visible up front.

With ``PROXY_API_KEY`` set, every admin request must carry it in ``X-API-Key`` (:meth:`Proxy.authorize`,
the gateway's check): a rule sends requests with its headers to any URL the pod can reach, so the
rules API is an open proxy into the cluster for whoever may write it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry

from .._errors import ApiError
from .._http import api_key_matches
from .._reserved import ReservedPaths
from ._config import ProxyConfig
from ._forward import Forwarder, is_websocket_upgrade
from ._metrics import RuleRequests
from ._rules import (
    INVALID_REORDER,
    SHADOWS_RESERVED,
    STATIC_ID_PREFIX,
    ProxyRule,
    RuleError,
    parse_rule,
    require_headers_for_new_origin,
    restore_redacted,
)
from ._store import ProxyStore

STORAGE_DISABLED = "PROXY_STORAGE_DISABLED"
RULE_NOT_FOUND = "PROXY_RULE_NOT_FOUND"
RULE_READ_ONLY = "PROXY_RULE_READ_ONLY"
UNAUTHORIZED = "PROXY_UNAUTHORIZED"

OUTCOME_PROXIED = "proxied"
OUTCOME_REDIRECTED = "redirected"

log = logging.getLogger("buntime.plugin.proxy")


class Proxy:
    """Rules and forwarding. Parameters:

    * **config** — resolved :class:`ProxyConfig` (static rules, timeout).
    * **store** — the :class:`ProxyStore` of dynamic rules, or ``None`` without storage.
    * **metrics** — the registry ``buntime_proxy_requests_total{pattern,outcome}`` is registered in.
    """

    def __init__(
        self,
        config: ProxyConfig,
        store: ProxyStore | None,
        *,
        metrics: CollectorRegistry,
        reserved: ReservedPaths | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.reserved = reserved if reserved is not None else ReservedPaths()
        self.forwarder = Forwarder(timeout=config.timeout)
        self._metrics = metrics
        self._requests = RuleRequests(lambda: self.rules)
        metrics.register(self._requests)

    async def aclose(self) -> None:
        self._metrics.unregister(self._requests)
        if self.store is not None:
            await self.store.aclose()
        await self.forwarder.aclose()

    # -- matching -----------------------------------------------------------------------------
    @property
    def rules(self) -> tuple[ProxyRule, ...]:
        """Every rule in match order: static, then dynamic."""
        dynamic = self.store.rules if self.store is not None else ()
        return self.config.static_rules + dynamic

    def match(self, raw_path: str) -> ProxyRule | None:
        return next((r for r in self.rules if r.enabled and r.compiled.search(raw_path)), None)

    def is_public(self, raw_path: str, method: str) -> bool:
        """Whether the rule that serves ``raw_path`` lists it in ``publicRoutes`` for ``method``.

        What an authentication plugin asks before it demands credentials for a proxied path.
        """
        return any(
            r.enabled and r.compiled.search(raw_path) and r.is_public(raw_path, method) for r in self.rules
        )

    def _route(self, request: web.Request) -> ProxyRule | None:
        raw_path = request.rel_url.raw_path
        rule = self.match(raw_path)
        if rule is None:  # most requests: no rule, so no need to look the path up
            return None
        if self.reserved.owner_of(request.path) is not None or self.reserved.owner_of(raw_path) is not None:
            return None  # plugin APIs, probes and /metrics stay reachable whatever the rules say
        if not rule.ws and is_websocket_upgrade(request):
            return None  # ws: false leaves upgrades to whatever else serves the path
        return rule

    async def intercept(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Root middleware: proxy or redirect requests an enabled rule matches."""
        try:
            rule = self._route(request)
        except Exception:  # fail open: serve the request as if no rule matched
            log.exception("proxy rule matching failed for %s", request.rel_url.raw_path)
            rule = None
        if rule is None:
            return await handler(request)
        outcome = OUTCOME_REDIRECTED if rule.redirect is not None else OUTCOME_PROXIED
        self._requests.inc(rule, outcome)
        return await self.forwarder.handle(request, rule)

    # -- rule operations (admin API) ----------------------------------------------------------
    def authorize(self, presented: str | None) -> None:
        """Constant-time ``X-API-Key`` check of an admin request; no key configured lets all in."""
        expected = self.config.api_key
        if expected is not None and not api_key_matches(presented, expected):
            raise ApiError("missing or invalid X-API-Key", code=UNAUTHORIZED, status=401)

    def _require_store(self) -> ProxyStore:
        if self.store is None:
            raise ApiError(
                "Dynamic rules not enabled (plugin-turso not configured)", code=STORAGE_DISABLED, status=503
            )
        return self.store

    def _dynamic_id(self, rule_id: str) -> str:
        if rule_id.startswith(STATIC_ID_PREFIX):
            raise ApiError(
                f"rule {rule_id} is static (from the manifest) and read-only", code=RULE_READ_ONLY, status=403
            )
        return rule_id

    def _refuse_shadowing(self, rule: ProxyRule) -> ProxyRule:
        """Raise 409 when an enabled ``rule`` would match a reserved path (it could never win)."""
        if not rule.enabled:
            return rule
        shadowed = self.reserved.shadowed_by(rule.compiled)
        if shadowed is not None:
            what = "the runtime's own endpoint" if shadowed.exact else f"the base of {shadowed.owner}"
            raise RuleError(
                f"pattern {rule.pattern!r} matches {shadowed.path} ({what}); rules cannot take over "
                "mounted plugin bases, the health probes or /metrics",
                code=SHADOWS_RESERVED,
            )
        return rule

    def get(self, rule_id: str) -> ProxyRule:
        rule = next((r for r in self.rules if r.id == rule_id), None)
        if rule is None:
            raise ApiError(f"rule {rule_id} not found", code=RULE_NOT_FOUND, status=404)
        return rule

    async def create(self, data: Mapping[str, Any]) -> ProxyRule:
        store = self._require_store()
        return await store.create(data, check=self._refuse_shadowing)

    async def update(self, rule_id: str, data: Mapping[str, Any]) -> ProxyRule:
        """Merge ``data`` over the stored rule (``id`` and ``order`` are not changed here).

        A ``headers`` object replaces the stored one, except that a :data:`REDACTED` value keeps
        the stored value of that header. A ``target`` on another origin (scheme, host, port) needs
        ``headers`` with real values in the same request (409 ``PROXY_HEADERS_REQUIRED``, nothing
        changed): the stored values never follow the rule to another server.
        """
        rule_id = self._dynamic_id(rule_id)
        store = self._require_store()

        def merge(current: ProxyRule) -> ProxyRule:
            merged = {**current.as_json(), **data}
            if "headers" in data:  # a GET answer sent back keeps the values it could not show
                merged["headers"] = restore_redacted(data["headers"], current.headers)
            rule = parse_rule(merged, rule_id=current.id, order=current.order)
            require_headers_for_new_origin(current, rule, data)
            return self._refuse_shadowing(rule)

        rule = await store.change(rule_id, merge)  # a RuleError answers 400 (409: shadows, origin)
        if rule is None:
            raise ApiError(f"rule {rule_id} not found", code=RULE_NOT_FOUND, status=404)
        return rule

    async def toggle(self, rule_id: str) -> ProxyRule:
        rule_id = self._dynamic_id(rule_id)
        store = self._require_store()
        rule = await store.change(
            rule_id, lambda r: self._refuse_shadowing(r.with_changes(enabled=not r.enabled))
        )
        if rule is None:
            raise ApiError(f"rule {rule_id} not found", code=RULE_NOT_FOUND, status=404)
        return rule

    async def delete(self, rule_id: str) -> None:
        rule_id = self._dynamic_id(rule_id)
        if not await self._require_store().delete(rule_id):
            raise ApiError(f"rule {rule_id} not found", code=RULE_NOT_FOUND, status=404)

    async def reorder(self, ids: Any) -> tuple[ProxyRule, ...]:
        """The dynamic rules in their new order (upstream's answer: static rules never move)."""
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError("ids must be a list of rule ids", code=INVALID_REORDER, status=400)
        for rule_id in ids:
            self._dynamic_id(rule_id)
        store = self._require_store()
        unknown = await store.reorder(ids)  # checked on the stored ids, in the transaction
        if unknown:
            raise ApiError(f"Rule not found: {unknown[0]}", code=RULE_NOT_FOUND, status=404)
        return store.rules
