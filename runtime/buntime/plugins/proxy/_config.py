"""Proxy settings: the admin API key, static rules and the upstream timeout, as the host resolved them.

Called by ``_plugin`` at ``on_init``. All are declared in ``manifest.yaml``'s ``config`` block
and typed by the host's resolver (``buntime.plugins._settings``): ``apiKey`` is the
``PROXY_API_KEY`` the admin API asks for (empty: no key, the API is open), ``rules`` is a list — the
manifest's ``rules:``, or ``PROXY_RULES`` (a JSON array, what the chart renders from its
``plugins.proxy.rules`` list) when that is set, so a deployment ships rules without a custom
manifest — and ``timeout`` a positive number of seconds. This module validates each rule
(``_rules.parse_rule``); static rules get ids ``static-<i>``, are read-only and never touch
storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .._errors import PluginConfigError
from .._manifest import Manifest, load_manifest
from .._settings import Settings, resolve_settings
from ._rules import STATIC_ID_PREFIX, ProxyRule, RuleError, parse_rule

ENV_API_KEY = "PROXY_API_KEY"
ENV_RULES = "PROXY_RULES"
ENV_TIMEOUT = "PROXY_TIMEOUT"
OPTION_API_KEY = "apiKey"
OPTION_RULES = "rules"
OPTION_TIMEOUT = "timeout"
DEFAULT_TIMEOUT = 30.0


class ProxyConfigError(PluginConfigError):
    """A static rule cannot be used (the plugin fails to start); the message names ``PROXY_RULES``."""

    code = "INVALID_PROXY_RULES"


@dataclass(frozen=True)
class ProxyConfig:
    """Resolved proxy settings; ``timeout`` bounds connecting and each read, in seconds.

    ``api_key`` is what every admin request must send in ``X-API-Key``; ``None`` leaves the admin
    API open (kept out of ``repr``, so a logged config never shows it).
    """

    static_rules: tuple[ProxyRule, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    api_key: str | None = field(default=None, repr=False)


def rule_fields() -> frozenset[str]:
    """The fields a static rule may have: the ``items`` schema of the manifest's ``rules`` setting.

    One list for the chart's schema (``additionalProperties: false``) and the runtime, so a typo
    (``patern``) stops both instead of being dropped by one.
    """
    setting = next(s for s in manifest().settings if s.dotted == OPTION_RULES)
    return frozenset((setting.items or {}).get("properties", {}))


def static_rules(raw: list[Any]) -> tuple[ProxyRule, ...]:
    """Validate the static rules; the first bad one is a :class:`ProxyConfigError` naming it."""
    rules: list[ProxyRule] = []
    allowed = rule_fields()
    for index, item in enumerate(raw):
        unknown = sorted(set(item) - allowed) if isinstance(item, Mapping) else []
        if unknown:
            raise ProxyConfigError(
                f"{ENV_RULES}: rule {index}: unknown field(s) {', '.join(map(str, unknown))} "
                f"(known: {', '.join(sorted(allowed))})",
                variable=ENV_RULES,
            )
        try:
            rules.append(parse_rule(item, rule_id=f"{STATIC_ID_PREFIX}{index}", order=index, read_only=True))
        except RuleError as exc:
            raise ProxyConfigError(
                f"{ENV_RULES}: rule {index}: {exc} ({exc.code})", variable=ENV_RULES
            ) from exc
    return tuple(rules)


def proxy_config(settings: Settings) -> ProxyConfig:
    """:class:`ProxyConfig` from the host-resolved ``ctx.settings``."""
    timeout = settings.get(OPTION_TIMEOUT)
    return ProxyConfig(
        static_rules=static_rules(list(settings.get(OPTION_RULES) or [])),
        timeout=DEFAULT_TIMEOUT if timeout in (None, "") else float(timeout),
        api_key=settings.get(OPTION_API_KEY) or None,
    )


@cache
def manifest() -> Manifest:
    """This plugin's own ``manifest.yaml``."""
    return load_manifest(Path(__file__).with_name("manifest.yaml"))


def resolve_proxy_config(options: Mapping[str, Any], env: Mapping[str, str]) -> ProxyConfig:
    """What the plugin builds at ``on_init``, for callers outside it: resolve, then :func:`proxy_config`."""
    return proxy_config(resolve_settings(manifest().settings, options, env))
