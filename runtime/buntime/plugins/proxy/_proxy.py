"""The proxy's behaviour: rule lookup, the request middleware and the rule operations.

Called by ``_routes`` (admin API) and ``_plugin``. Static rules come first in match order, then
dynamic rules by ``order``; the first *enabled* rule whose pattern is found in the request path
wins. The middleware fails open: a bug in matching lets the request through unproxied, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter

from .._http import ApiError
from ._config import ProxyConfig
from ._forward import Forwarder
from ._rules import INVALID_REORDER, STATIC_ID_PREFIX, ProxyRule, RuleError, parse_rule
from ._store import ProxyStore

STORAGE_DISABLED = "PROXY_STORAGE_DISABLED"
RULE_NOT_FOUND = "PROXY_RULE_NOT_FOUND"
RULE_READ_ONLY = "PROXY_RULE_READ_ONLY"

OUTCOME_PROXIED = "proxied"
OUTCOME_REDIRECTED = "redirected"

log = logging.getLogger("buntime.plugin.proxy")


def _invalid(exc: RuleError) -> ApiError:
    return ApiError(400, exc.code, str(exc))


class Proxy:
    """Rules and forwarding. Parameters:

    * **config** — resolved :class:`ProxyConfig` (static rules, timeout).
    * **store** — the :class:`ProxyStore` of dynamic rules, or ``None`` without storage.
    * **metrics** — the registry ``buntime_proxy_requests_total`` is registered in.
    """

    def __init__(self, config: ProxyConfig, store: ProxyStore | None, *, metrics: CollectorRegistry) -> None:
        self.config = config
        self.store = store
        self.forwarder = Forwarder(timeout=config.timeout)
        self.admin_app: web.Application | None = None  # set by the plugin; never proxied
        self._requests = Counter(
            "buntime_proxy_requests",
            "Requests handled by a proxy rule, by rule id and outcome.",
            ["rule", "outcome"],
            registry=metrics,
        )

    async def aclose(self) -> None:
        if self.store is not None:
            self.store.close()
        await self.forwarder.aclose()

    # -- matching -----------------------------------------------------------------------------
    @property
    def rules(self) -> tuple[ProxyRule, ...]:
        """Every rule in match order: static, then dynamic."""
        dynamic = self.store.rules if self.store is not None else ()
        return self.config.static_rules + dynamic

    def match(self, raw_path: str) -> ProxyRule | None:
        return next((r for r in self.rules if r.enabled and r.compiled.search(raw_path)), None)

    async def intercept(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Root middleware: proxy or redirect requests an enabled rule matches."""
        if self.admin_app is not None and self.admin_app in request.match_info.apps:
            return await handler(request)  # the admin API must stay reachable whatever the rules
        try:
            rule = self.match(request.rel_url.raw_path)
        except Exception:  # fail open: serve the request as if no rule matched
            log.exception("proxy rule matching failed for %s", request.rel_url.raw_path)
            rule = None
        if rule is None:
            return await handler(request)
        outcome = OUTCOME_REDIRECTED if rule.redirect is not None else OUTCOME_PROXIED
        self._requests.labels(rule=rule.id, outcome=outcome).inc()
        return await self.forwarder.handle(request, rule)

    # -- rule operations (admin API) ----------------------------------------------------------
    def _require_store(self) -> ProxyStore:
        if self.store is None:
            raise ApiError(503, STORAGE_DISABLED, "Dynamic rules not enabled (plugin-turso not configured)")
        return self.store

    def _dynamic_id(self, rule_id: str) -> str:
        if rule_id.startswith(STATIC_ID_PREFIX):
            raise ApiError(403, RULE_READ_ONLY, f"rule {rule_id} is static (from the manifest) and read-only")
        return rule_id

    def get(self, rule_id: str) -> ProxyRule:
        rule = next((r for r in self.rules if r.id == rule_id), None)
        if rule is None:
            raise ApiError(404, RULE_NOT_FOUND, f"rule {rule_id} not found")
        return rule

    async def create(self, data: Mapping[str, Any]) -> ProxyRule:
        store = self._require_store()
        try:
            return await store.create(data)
        except RuleError as exc:
            raise _invalid(exc) from exc

    async def update(self, rule_id: str, data: Mapping[str, Any]) -> ProxyRule:
        """Merge ``data`` over the stored rule (``id`` and ``order`` are not changed here)."""
        rule_id = self._dynamic_id(rule_id)
        store = self._require_store()

        def merge(current: ProxyRule) -> ProxyRule:
            merged = {**current.as_json(), **data}
            return parse_rule(merged, rule_id=current.id, order=current.order)

        try:
            rule = await store.change(rule_id, merge)
        except RuleError as exc:
            raise _invalid(exc) from exc
        if rule is None:
            raise ApiError(404, RULE_NOT_FOUND, f"rule {rule_id} not found")
        return rule

    async def toggle(self, rule_id: str) -> ProxyRule:
        rule_id = self._dynamic_id(rule_id)
        rule = await self._require_store().change(rule_id, lambda r: r.with_changes(enabled=not r.enabled))
        if rule is None:
            raise ApiError(404, RULE_NOT_FOUND, f"rule {rule_id} not found")
        return rule

    async def delete(self, rule_id: str) -> None:
        rule_id = self._dynamic_id(rule_id)
        if not await self._require_store().delete(rule_id):
            raise ApiError(404, RULE_NOT_FOUND, f"rule {rule_id} not found")

    async def reorder(self, ids: Any) -> tuple[ProxyRule, ...]:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, INVALID_REORDER, "ids must be a list of rule ids")
        for rule_id in ids:
            self._dynamic_id(rule_id)
        store = self._require_store()
        try:
            return self.config.static_rules + await store.reorder(ids)
        except RuleError as exc:
            raise _invalid(exc) from exc
