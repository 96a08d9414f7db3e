"""Plugin settings: the manifest options, overridden by non-empty environment variables.

=====================  ================================  =======  ===============================
option                 env                               default  meaning
=====================  ================================  =======  ===============================
``sweepInterval``      ``KEYVAL_SWEEP_INTERVAL``         60s      TTL sweep period (0 disables)
``queue.lockDuration`` ``KEYVAL_QUEUE_LOCK_DURATION``    30s      lease of a dequeued message
``queue.cleanupInterval`` ``KEYVAL_QUEUE_CLEANUP_INTERVAL`` 60s   stale-lease sweep period (0 disables)
``metrics.persistent`` ``KEYVAL_METRICS_PERSISTENT``     false    add operation counts to ``kv_metrics``
``metrics.flushInterval`` ``KEYVAL_METRICS_FLUSH_INTERVAL`` 30s   how often they are added (and at stop)
=====================  ================================  =======  ===============================

Durations are ``500ms``, ``5s``, ``1m`` or a bare number of seconds (as ``TURSO_SYNC_INTERVAL``).
Every one is declared in the manifest's ``config`` block, so the chart generator exposes it.
Called by the plugin at ``on_init``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...turso import TursoConfigError, parse_interval
from ._errors import KeyValConfigError

ENV_SWEEP_INTERVAL = "KEYVAL_SWEEP_INTERVAL"
ENV_QUEUE_LOCK_DURATION = "KEYVAL_QUEUE_LOCK_DURATION"
ENV_QUEUE_CLEANUP_INTERVAL = "KEYVAL_QUEUE_CLEANUP_INTERVAL"
DEFAULT_SWEEP_INTERVAL = 60.0
DEFAULT_QUEUE_LOCK_DURATION = 30.0
DEFAULT_QUEUE_CLEANUP_INTERVAL = 60.0
ENV_METRICS_PERSISTENT = "KEYVAL_METRICS_PERSISTENT"
ENV_METRICS_FLUSH_INTERVAL = "KEYVAL_METRICS_FLUSH_INTERVAL"
DEFAULT_METRICS_FLUSH_INTERVAL = 30.0
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class KeyValSettings:
    """Resolved settings, in seconds."""

    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    queue_lock_duration: float = DEFAULT_QUEUE_LOCK_DURATION
    queue_cleanup_interval: float = DEFAULT_QUEUE_CLEANUP_INTERVAL
    metrics_persistent: bool = False
    metrics_flush_interval: float = DEFAULT_METRICS_FLUSH_INTERVAL

    @property
    def metrics_flush_every(self) -> float:
        """The flush period the store runs (0: persistence off)."""
        return self.metrics_flush_interval if self.metrics_persistent else 0.0


def _duration(env: Mapping[str, str], name: str, option: object, default: float) -> float:
    raw = env.get(name, "").strip() or ("" if option is None else str(option).strip())
    if not raw:
        return default
    try:
        return parse_interval(raw, name=name)
    except TursoConfigError as exc:
        raise KeyValConfigError(str(exc)) from exc


def _flag(env: Mapping[str, str], name: str, option: object, default: bool) -> bool:
    raw = env.get(name, "").strip() or ("" if option is None else str(option).strip())
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise KeyValConfigError(f"{name} must be true or false (got {raw!r})")


def resolve_settings(options: Mapping[str, Any], env: Mapping[str, str]) -> KeyValSettings:
    """Settings from the manifest options and the environment (env wins)."""
    queue = options.get("queue") or {}
    if not isinstance(queue, Mapping):
        raise KeyValConfigError("the keyval 'queue' option must be a mapping")
    metrics = options.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise KeyValConfigError("the keyval 'metrics' option must be a mapping")
    settings = KeyValSettings(
        sweep_interval=_duration(
            env, ENV_SWEEP_INTERVAL, options.get("sweepInterval"), DEFAULT_SWEEP_INTERVAL
        ),
        queue_lock_duration=_duration(
            env, ENV_QUEUE_LOCK_DURATION, queue.get("lockDuration"), DEFAULT_QUEUE_LOCK_DURATION
        ),
        queue_cleanup_interval=_duration(
            env, ENV_QUEUE_CLEANUP_INTERVAL, queue.get("cleanupInterval"), DEFAULT_QUEUE_CLEANUP_INTERVAL
        ),
        metrics_persistent=_flag(env, ENV_METRICS_PERSISTENT, metrics.get("persistent"), False),
        metrics_flush_interval=_duration(
            env, ENV_METRICS_FLUSH_INTERVAL, metrics.get("flushInterval"), DEFAULT_METRICS_FLUSH_INTERVAL
        ),
    )
    if settings.queue_lock_duration <= 0:
        raise KeyValConfigError(f"{ENV_QUEUE_LOCK_DURATION} must be positive")
    if settings.metrics_persistent and settings.metrics_flush_interval <= 0:
        raise KeyValConfigError(
            f"{ENV_METRICS_FLUSH_INTERVAL} must be positive with {ENV_METRICS_PERSISTENT}"
        )
    return settings
