"""Proxy settings: static rules and the upstream timeout, from manifest options and env.

Called by ``_plugin`` at ``on_init``. Static rules come from the manifest's ``rules:`` list, or
from ``PROXY_RULES`` (a JSON array) when that is set, so a deployment can ship rules without a
custom manifest. They get ids ``static-<i>``, are read-only and never touch storage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._rules import STATIC_ID_PREFIX, ProxyRule, RuleError, parse_rule

ENV_RULES = "PROXY_RULES"
ENV_TIMEOUT = "PROXY_TIMEOUT"
OPTION_RULES = "rules"
OPTION_TIMEOUT = "timeout"
DEFAULT_TIMEOUT = 30.0


class ProxyConfigError(ValueError):
    """A static rule or setting cannot be used (the plugin fails to start)."""


@dataclass(frozen=True)
class ProxyConfig:
    """Resolved proxy settings; ``timeout`` bounds connecting and each read, in seconds."""

    static_rules: tuple[ProxyRule, ...] = ()
    timeout: float = DEFAULT_TIMEOUT


def _static_rules(raw: Any) -> tuple[ProxyRule, ...]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ProxyConfigError(f"{ENV_RULES} must be a JSON array of rules: {exc}") from exc
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ProxyConfigError(f"proxy '{OPTION_RULES}' must be a list of rules")
    rules: list[ProxyRule] = []
    for index, item in enumerate(raw):
        try:
            rules.append(parse_rule(item, rule_id=f"{STATIC_ID_PREFIX}{index}", order=index, read_only=True))
        except RuleError as exc:
            raise ProxyConfigError(f"static proxy rule {index}: {exc}") from exc
    return tuple(rules)


def resolve_proxy_config(options: Mapping[str, Any], env: Mapping[str, str]) -> ProxyConfig:
    """Resolve :class:`ProxyConfig`; raise :class:`ProxyConfigError` on a bad rule or timeout."""
    raw_rules: Any = env.get(ENV_RULES, "").strip() or options.get(OPTION_RULES)
    raw_timeout: Any = env.get(ENV_TIMEOUT, "").strip() or options.get(OPTION_TIMEOUT, DEFAULT_TIMEOUT)
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        timeout = 0.0
    if timeout <= 0:
        raise ProxyConfigError(f"{ENV_TIMEOUT} must be a positive number of seconds (got {raw_timeout!r})")
    return ProxyConfig(static_rules=_static_rules(raw_rules), timeout=timeout)
