"""Gateway settings: the manifest's ``config`` block as the host resolved it, plus the options
that have no variable (``cors.methods``, ``cors.maxAge``, lists in ``rateLimit.excludePaths``).

Called by ``_plugin`` at ``on_init``. Types, the duration grammar and the bounds of every
variable are declared once in ``manifest.yaml`` and applied by the host's resolver
(``buntime.plugins._settings``); this module checks what a type cannot say (basenames, regexes)
and raises :class:`GatewayConfigError`, which names the variable like the resolver does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from .._errors import PluginConfigError
from .._http import first_non_token
from .._manifest import Manifest, load_manifest
from .._settings import Settings, resolve_settings

ENV_API_KEY = "GATEWAY_API_KEY"
ENV_SHELL_EXCLUDES = "GATEWAY_SHELL_EXCLUDES"
ENV_METRICS_RETENTION = "GATEWAY_METRICS_RETENTION"
ENV_SNAPSHOT_INTERVAL = "GATEWAY_SNAPSHOT_INTERVAL"
ENV_SSE_INTERVAL = "GATEWAY_SSE_INTERVAL"
ENV_SHELL_DIR = "GATEWAY_SHELL_DIR"
ENV_RATE_LIMIT_REQUESTS = "GATEWAY_RATE_LIMIT_REQUESTS"
ENV_RATE_LIMIT_WINDOW = "GATEWAY_RATE_LIMIT_WINDOW"
ENV_RATE_LIMIT_KEY_BY = "GATEWAY_RATE_LIMIT_KEY_BY"
ENV_RATE_LIMIT_EXCLUDE_PATHS = "GATEWAY_RATE_LIMIT_EXCLUDE_PATHS"
ENV_CORS_ORIGIN = "GATEWAY_CORS_ORIGIN"
ENV_CORS_CREDENTIALS = "GATEWAY_CORS_CREDENTIALS"
OPTION_SHELL_EXCLUDES = "shellExcludes"
OPTION_METRICS_RETENTION = "metricsRetention"

DEFAULT_METRICS_RETENTION = 3600
DEFAULT_SNAPSHOT_INTERVAL = 1.0
DEFAULT_SSE_INTERVAL = 1.0
DEFAULT_RATE_LIMIT_WINDOW = "1m"
DEFAULT_CORS_METHODS = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE")
DEFAULT_CORS_MAX_AGE = 86400
#: Matched whole (``fullmatch``): ``$`` would also accept a trailing newline.
BASENAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]+")

KeyBy = Literal["ip", "user"]
KEY_BY: tuple[KeyBy, ...] = ("ip", "user")


class GatewayConfigError(PluginConfigError):
    """A gateway option or variable cannot be used (the plugin fails to start)."""


@dataclass(frozen=True)
class RateLimitConfig:
    """Token bucket per client: ``requests`` per ``window`` (seconds), refilled continuously.

    ``window_text`` is the value as configured (what ``/config`` reports); ``exclude_paths``
    are regular expressions searched in the request path.
    """

    requests: int
    window: float
    window_text: str = DEFAULT_RATE_LIMIT_WINDOW
    key_by: KeyBy = "ip"
    exclude_paths: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "window": self.window_text,
            "keyBy": self.key_by,
            "excludePaths": list(self.exclude_paths),
        }


@dataclass(frozen=True)
class CorsSeed:
    """The manifest/env CORS policy: seeds the first rule when ``gateway_cors_rules`` is empty."""

    origins: tuple[str, ...]
    methods: tuple[str, ...] = DEFAULT_CORS_METHODS
    allowed_headers: tuple[str, ...] = ()
    exposed_headers: tuple[str, ...] = ()
    credentials: bool = False
    max_age: int = DEFAULT_CORS_MAX_AGE


@dataclass(frozen=True)
class GatewayConfig:
    """Resolved gateway settings; the API key is kept out of ``repr`` so it never reaches logs."""

    env_excludes: tuple[str, ...] = ()
    metrics_retention: int = DEFAULT_METRICS_RETENTION
    api_key: str | None = field(default=None, repr=False)
    snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL
    sse_interval: float = DEFAULT_SSE_INTERVAL
    shell_dir: str | None = None
    rate_limit: RateLimitConfig | None = None
    cors: CorsSeed | None = None


def _words(raw: Any) -> tuple[str, ...]:
    """A list, or a comma/space separated string, as trimmed non-empty items."""
    items = raw if isinstance(raw, list) else re.split(r"[\s,]+", str(raw or ""))
    return tuple(str(item).strip() for item in items if str(item).strip())


def _section(options: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise GatewayConfigError(f"gateway option '{name}' must be a mapping", code="INVALID_GATEWAY_CONFIG")
    return value


def _rate_limit(settings: Settings, options: Mapping[str, Any]) -> RateLimitConfig | None:
    requests = int(settings["rateLimit.requests"] or 0)
    if requests == 0:
        return None
    section = _section(options, "rateLimit") or {}
    excludes = _words(settings["rateLimit.excludePaths"] or section.get("excludePaths") or [])
    for pattern in excludes:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise GatewayConfigError(
                f"{ENV_RATE_LIMIT_EXCLUDE_PATHS}: {pattern!r} is not a valid regex: {exc}",
                variable=ENV_RATE_LIMIT_EXCLUDE_PATHS,
            ) from None
    window = settings["rateLimit.window"]
    return RateLimitConfig(
        requests=requests,
        window=float(window) if window != "" else 60.0,
        window_text=settings.text("rateLimit.window") if window != "" else DEFAULT_RATE_LIMIT_WINDOW,
        key_by="user" if settings["rateLimit.keyBy"] == "user" else "ip",
        exclude_paths=excludes,
    )


def _cors(settings: Settings, options: Mapping[str, Any]) -> CorsSeed | None:
    section = _section(options, "cors") or {}
    # Only an origin turns the seed on: the chart always sets GATEWAY_CORS_CREDENTIALS.
    origin = settings["cors.origin"]
    if not origin:
        return None
    try:
        max_age = int(section.get("maxAge", DEFAULT_CORS_MAX_AGE))
    except (TypeError, ValueError):
        raise GatewayConfigError(
            "gateway option cors.maxAge must be a whole number of seconds",
            code="INVALID_GATEWAY_CORS_MAX_AGE",
        ) from None
    seed = CorsSeed(
        origins=_words(origin),
        methods=tuple(m.upper() for m in _words(section.get("methods"))) or DEFAULT_CORS_METHODS,
        allowed_headers=_words(section.get("allowedHeaders") or section.get("headers")),
        exposed_headers=_words(section.get("exposedHeaders")),
        credentials=bool(settings["cors.credentials"]),
        max_age=max_age,
    )
    for option, names in (
        ("cors.methods", seed.methods),
        ("cors.allowedHeaders", seed.allowed_headers),
        ("cors.exposedHeaders", seed.exposed_headers),
    ):
        bad = first_non_token(names)
        if bad is not None:  # it would go into every covered response's headers
            raise GatewayConfigError(
                f"gateway option {option}: {bad!r} is not an HTTP token", code="INVALID_GATEWAY_CORS_HEADER"
            )
    return seed


def _excludes(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw or "").split(",")
    names = sorted({str(item).strip() for item in items if str(item).strip()})
    bad = [name for name in names if not BASENAME_PATTERN.fullmatch(name)]
    if bad:
        raise GatewayConfigError(
            f"{ENV_SHELL_EXCLUDES}: invalid basename(s) {', '.join(bad)} (use letters, digits, - or _)",
            variable=ENV_SHELL_EXCLUDES,
        )
    return tuple(names)


def gateway_config(settings: Settings, options: Mapping[str, Any]) -> GatewayConfig:
    """:class:`GatewayConfig` from the host-resolved ``ctx.settings`` and the plugin's options."""
    snapshot = settings["snapshotInterval"]
    sse = settings["sseInterval"]
    return GatewayConfig(
        env_excludes=_excludes(settings["shellExcludes"]),
        metrics_retention=int(settings["metricsRetention"]),
        api_key=settings["apiKey"] or None,
        snapshot_interval=DEFAULT_SNAPSHOT_INTERVAL if snapshot == "" else float(snapshot),
        sse_interval=DEFAULT_SSE_INTERVAL if sse == "" else float(sse),
        shell_dir=settings["shellDir"] or None,
        rate_limit=_rate_limit(settings, options),
        cors=_cors(settings, options),
    )


@cache
def manifest() -> Manifest:
    """This plugin's own ``manifest.yaml``."""
    return load_manifest(Path(__file__).with_name("manifest.yaml"))


def resolve_gateway_config(options: Mapping[str, Any], env: Mapping[str, str]) -> GatewayConfig:
    """What the plugin builds at ``on_init``, for callers outside it: resolve, then :func:`gateway_config`.

    Raises :class:`~buntime.plugins.PluginConfigError` (a :class:`GatewayConfigError` for the
    checks of this module) naming the variable.
    """
    return gateway_config(resolve_settings(manifest().settings, options, env), options)
