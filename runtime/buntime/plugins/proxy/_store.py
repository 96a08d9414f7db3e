"""Dynamic proxy rules in namespace ``proxy``, table ``proxy_rules``, cached in memory.

Called by ``_proxy``. Every change runs in one transaction that reads the current rows first, so
ordering and existence checks see what other replicas already pushed; the cache (``rules``) is
rebuilt after each write and after every pull that brought changes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ...turso import Database, TursoService
from .._errors import ApiError
from .._json import client_json
from .._storage import PluginStore
from ._rules import INVALID_REORDER, ProxyRule, RuleError, parse_rule

NAMESPACE = "proxy"
#: The most stored rules: every proxied request tries each rule in turn.
MAX_RULES = 1000
TOO_MANY_RULES = "PROXY_TOO_MANY_RULES"

SCHEMA = """
CREATE TABLE IF NOT EXISTS proxy_rules (
    id TEXT PRIMARY KEY,
    rule_order INTEGER NOT NULL,
    rule_json TEXT NOT NULL
);
"""

_SELECT = "SELECT id, rule_order, rule_json FROM proxy_rules ORDER BY rule_order ASC, id ASC"
_UPSERT = (
    "INSERT INTO proxy_rules(id, rule_order, rule_json) VALUES (?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET rule_order = excluded.rule_order, rule_json = excluded.rule_json"
)


def _row_rule(row: Mapping[str, Any]) -> ProxyRule:
    # client_json: a row stored before lone surrogates were refused (a rewrite that 500ed on every
    # request it matched) is skipped at load like any invalid row, and a PUT of it is a 400.
    return parse_rule(
        client_json(row["rule_json"]), rule_id=str(row["id"]), order=int(row["rule_order"]), stored=True
    )


class ProxyStore:
    """SQL for dynamic rules; ``rules`` is the cached list in match order."""

    def __init__(self, service: TursoService, *, logger: logging.Logger) -> None:
        self.rules: tuple[ProxyRule, ...] = ()
        self._log = logger
        self._store = PluginStore(service, NAMESPACE, load=self._load, logger=logger)

    async def start(self) -> None:
        await self._store.start(SCHEMA)

    async def aclose(self) -> None:
        await self._store.aclose()

    async def _load(self, db: Database) -> None:
        rules: list[ProxyRule] = []
        for row in await db.all(_SELECT):
            try:
                rules.append(_row_rule(row))
            except (ValueError, TypeError) as exc:  # one bad row must not hide the others
                self._log.warning("skipping invalid proxy rule %s: %s", row["id"], exc)
        self.rules = tuple(rules)

    async def create(
        self, data: Mapping[str, Any], *, check: Callable[[ProxyRule], ProxyRule] = lambda rule: rule
    ) -> ProxyRule:
        """Validate ``data`` (and ``check`` it) and append it (order = max + 1) under a fresh id."""
        rule_id = str(uuid.uuid4())

        async def insert(db: Database) -> ProxyRule:
            row = await db.get(
                "SELECT COALESCE(MAX(rule_order), -1) + 1 AS next, COUNT(*) AS n FROM proxy_rules"
            )
            if row and int(row["n"]) >= MAX_RULES:  # counted in the transaction: exact across pods
                raise ApiError(f"at most {MAX_RULES} rules are stored", code=TOO_MANY_RULES, status=409)
            rule = check(parse_rule(data, rule_id=rule_id, order=int(row["next"]) if row else 0))
            await db.run(_UPSERT, [rule.id, rule.order, rule.stored_json()])
            return rule

        return await self._store.write(insert)

    async def change(self, rule_id: str, fn: Callable[[ProxyRule], ProxyRule]) -> ProxyRule | None:
        """Replace rule ``rule_id`` with ``fn(current)``; ``None`` when no such rule exists."""

        async def update(db: Database) -> ProxyRule | None:
            row = await db.get("SELECT id, rule_order, rule_json FROM proxy_rules WHERE id = ?", [rule_id])
            if row is None:
                return None
            rule = fn(_row_rule(row))
            await db.run(_UPSERT, [rule.id, rule.order, rule.stored_json()])
            return rule

        return await self._store.write(update)

    async def delete(self, rule_id: str) -> bool:
        async def delete(db: Database) -> bool:
            return (await db.run("DELETE FROM proxy_rules WHERE id = ?", [rule_id])).changes > 0

        return await self._store.write(delete)

    async def reorder(self, ids: list[str]) -> list[str]:
        """Give each rule its index in ``ids``, which must list every stored id exactly once.

        Decided on the stored rows, in the transaction (never on this pod's cache, which may not
        have a rule another pod just made yet). Returns the ids no stored rule has, in the order
        given, and then changes nothing; an id missing or listed twice is a :class:`RuleError`.
        """

        async def apply(db: Database) -> list[str]:
            stored = {str(row["id"]): row for row in await db.all(_SELECT)}
            unknown = [rule_id for rule_id in ids if rule_id not in stored]
            if unknown:
                return unknown
            if len(ids) != len(set(ids)) or set(ids) != set(stored):
                missing = sorted(set(stored) - set(ids))
                unknown = sorted(set(ids) - set(stored))
                raise RuleError(
                    "ids must list every dynamic rule exactly once"
                    f" (missing: {missing or 'none'}, unknown: {unknown or 'none'})",
                    code=INVALID_REORDER,
                )
            for order, rule_id in enumerate(ids):
                rule = _row_rule(stored[rule_id]).with_changes(order=order)
                await db.run(_UPSERT, [rule.id, rule.order, rule.stored_json()])
            return []

        return await self._store.write(apply)
