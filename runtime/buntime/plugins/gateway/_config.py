"""Gateway settings: manifest options, overridden by non-empty environment variables.

Called by ``_plugin`` at ``on_init``; every variable here is declared in the manifest's
``config:`` schema so the chart generator exposes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_API_KEY = "GATEWAY_API_KEY"
ENV_SHELL_EXCLUDES = "GATEWAY_SHELL_EXCLUDES"
ENV_METRICS_RETENTION = "GATEWAY_METRICS_RETENTION"
OPTION_SHELL_EXCLUDES = "shellExcludes"
OPTION_METRICS_RETENTION = "metricsRetention"

DEFAULT_METRICS_RETENTION = 3600
BASENAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")


class GatewayConfigError(ValueError):
    """A gateway option or variable cannot be used (the plugin fails to start)."""


@dataclass(frozen=True)
class GatewayConfig:
    """Resolved gateway settings; the API key is kept out of ``repr`` so it never reaches logs."""

    env_excludes: tuple[str, ...] = ()
    metrics_retention: int = DEFAULT_METRICS_RETENTION
    api_key: str | None = field(default=None, repr=False)


def _excludes(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw or "").split(",")
    names = sorted({str(item).strip() for item in items if str(item).strip()})
    bad = [name for name in names if not BASENAME_PATTERN.match(name)]
    if bad:
        raise GatewayConfigError(
            f"{ENV_SHELL_EXCLUDES}: invalid basename(s) {', '.join(bad)} (use letters, digits, - or _)"
        )
    return tuple(names)


def resolve_gateway_config(options: Mapping[str, Any], env: Mapping[str, str]) -> GatewayConfig:
    """Resolve :class:`GatewayConfig`; raise :class:`GatewayConfigError` on a bad value."""
    raw_excludes: Any = env.get(ENV_SHELL_EXCLUDES, "").strip() or options.get(OPTION_SHELL_EXCLUDES, "")
    raw_retention = env.get(ENV_METRICS_RETENTION, "").strip() or options.get(
        OPTION_METRICS_RETENTION, DEFAULT_METRICS_RETENTION
    )
    try:
        retention = int(raw_retention)
    except (TypeError, ValueError):
        retention = 0
    if retention < 1:
        raise GatewayConfigError(
            f"{ENV_METRICS_RETENTION} must be a positive integer (got {raw_retention!r})"
        )
    return GatewayConfig(
        env_excludes=_excludes(raw_excludes),
        metrics_retention=retention,
        api_key=env.get(ENV_API_KEY, "").strip() or None,
    )
