"""Plugin settings: the manifest options, overridden by non-empty environment variables.

=====================  ================================  =======  ===============================
option                 env                               default  meaning
=====================  ================================  =======  ===============================
``sweepInterval``      ``KEYVAL_SWEEP_INTERVAL``         60s      TTL sweep period (0 disables)
``queue.lockDuration`` ``KEYVAL_QUEUE_LOCK_DURATION``    30s      lease of a dequeued message
``queue.cleanupInterval`` ``KEYVAL_QUEUE_CLEANUP_INTERVAL`` 60s   stale-lease sweep period (0 disables)
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


@dataclass(frozen=True)
class KeyValSettings:
    """Resolved settings, in seconds."""

    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    queue_lock_duration: float = DEFAULT_QUEUE_LOCK_DURATION
    queue_cleanup_interval: float = DEFAULT_QUEUE_CLEANUP_INTERVAL


def _duration(env: Mapping[str, str], name: str, option: object, default: float) -> float:
    raw = env.get(name, "").strip() or ("" if option is None else str(option).strip())
    if not raw:
        return default
    try:
        return parse_interval(raw, name=name)
    except TursoConfigError as exc:
        raise KeyValConfigError(str(exc)) from exc


def resolve_settings(options: Mapping[str, Any], env: Mapping[str, str]) -> KeyValSettings:
    """Settings from the manifest options and the environment (env wins)."""
    queue = options.get("queue") or {}
    if not isinstance(queue, Mapping):
        raise KeyValConfigError("the keyval 'queue' option must be a mapping")
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
    )
    if settings.queue_lock_duration <= 0:
        raise KeyValConfigError(f"{ENV_QUEUE_LOCK_DURATION} must be positive")
    return settings
