"""Gateway settings: manifest options, overridden by non-empty environment variables.

Called by ``_plugin`` at ``on_init``; every variable here is declared in the manifest's
``config:`` schema so the chart generator exposes it. Durations (``snapshotInterval``,
``sseInterval``, ``rateLimit.window``) use the runtime's parser: ``500ms``, ``5s``, ``1m``,
``1h``, ``1d`` or a bare number of seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...turso import TursoConfigError, parse_interval

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
BASENAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")

KeyBy = Literal["ip", "user"]
KEY_BY: tuple[KeyBy, ...] = ("ip", "user")


class GatewayConfigError(ValueError):
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


def _duration(env: Mapping[str, str], name: str, option: Any, default: float) -> tuple[float, str]:
    raw = env.get(name, "").strip() or ("" if option is None else str(option).strip())
    if not raw:
        return default, ""
    try:
        return parse_interval(raw, name=name), raw
    except TursoConfigError as exc:
        raise GatewayConfigError(str(exc)) from exc


def _words(raw: Any) -> tuple[str, ...]:
    """A list, or a comma/space separated string, as trimmed non-empty items."""
    items = raw if isinstance(raw, list) else re.split(r"[\s,]+", str(raw or ""))
    return tuple(str(item).strip() for item in items if str(item).strip())


def _section(options: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise GatewayConfigError(f"gateway option '{name}' must be a mapping")
    return value


def _rate_limit(options: Mapping[str, Any], env: Mapping[str, str]) -> RateLimitConfig | None:
    section = _section(options, "rateLimit") or {}
    raw_requests = env.get(ENV_RATE_LIMIT_REQUESTS, "").strip() or section.get("requests", 0)
    try:
        requests = int(raw_requests)
    except (TypeError, ValueError):
        requests = -1
    if requests < 0:
        raise GatewayConfigError(
            f"{ENV_RATE_LIMIT_REQUESTS} must be a whole number, 0 to disable (got {raw_requests!r})"
        )
    if requests == 0:
        return None
    window, text = _duration(env, ENV_RATE_LIMIT_WINDOW, section.get("window"), 60.0)
    if window <= 0:
        raise GatewayConfigError(f"{ENV_RATE_LIMIT_WINDOW} must be positive")
    raw_key_by = env.get(ENV_RATE_LIMIT_KEY_BY, "").strip() or str(section.get("keyBy", "ip"))
    key_by = next((k for k in KEY_BY if k == raw_key_by), None)
    if key_by is None:
        raise GatewayConfigError(
            f"{ENV_RATE_LIMIT_KEY_BY} must be one of {', '.join(KEY_BY)} (got {raw_key_by!r})"
        )
    raw_excludes = env.get(ENV_RATE_LIMIT_EXCLUDE_PATHS, "").strip() or section.get("excludePaths") or []
    excludes = _words(raw_excludes)
    for pattern in excludes:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise GatewayConfigError(
                f"rate limit exclude path {pattern!r} is not a valid regex: {exc}"
            ) from exc
    return RateLimitConfig(
        requests=requests,
        window=window,
        window_text=text or DEFAULT_RATE_LIMIT_WINDOW,
        key_by=key_by,
        exclude_paths=excludes,
    )


def _cors(options: Mapping[str, Any], env: Mapping[str, str]) -> CorsSeed | None:
    section = _section(options, "cors")
    env_origin = env.get(ENV_CORS_ORIGIN, "").strip()
    env_credentials = env.get(ENV_CORS_CREDENTIALS, "").strip().lower()
    # Only an origin turns the seed on: the chart always sets GATEWAY_CORS_CREDENTIALS.
    if not env_origin and not (section and section.get("origin")):
        return None
    section = section or {}
    origins = _words(env_origin or section.get("origin") or "*")
    credentials = env_credentials == "true" if env_credentials else bool(section.get("credentials", False))
    try:
        max_age = int(section.get("maxAge", DEFAULT_CORS_MAX_AGE))
    except (TypeError, ValueError) as exc:
        raise GatewayConfigError("gateway option cors.maxAge must be a whole number of seconds") from exc
    return CorsSeed(
        origins=origins,
        methods=tuple(m.upper() for m in _words(section.get("methods"))) or DEFAULT_CORS_METHODS,
        allowed_headers=_words(section.get("allowedHeaders") or section.get("headers")),
        exposed_headers=_words(section.get("exposedHeaders")),
        credentials=credentials,
        max_age=max_age,
    )


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
    snapshot_interval, _ = _duration(
        env, ENV_SNAPSHOT_INTERVAL, options.get("snapshotInterval"), DEFAULT_SNAPSHOT_INTERVAL
    )
    sse_interval, _ = _duration(env, ENV_SSE_INTERVAL, options.get("sseInterval"), DEFAULT_SSE_INTERVAL)
    if sse_interval <= 0:
        raise GatewayConfigError(f"{ENV_SSE_INTERVAL} must be positive")
    shell_dir = env.get(ENV_SHELL_DIR, "").strip() or str(options.get("shellDir") or "").strip()
    return GatewayConfig(
        env_excludes=_excludes(raw_excludes),
        metrics_retention=retention,
        api_key=env.get(ENV_API_KEY, "").strip() or None,
        snapshot_interval=snapshot_interval,
        sse_interval=sse_interval,
        shell_dir=shell_dir or None,
        rate_limit=_rate_limit(options, env),
        cors=_cors(options, env),
    )
