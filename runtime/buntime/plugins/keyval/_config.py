"""KeyVal settings: the manifest's ``config`` block as resolved by the host, in seconds.

=========================  =================================  =======  ======================================
option                     env                                default  meaning
=========================  =================================  =======  ======================================
``sweepInterval``          ``KEYVAL_SWEEP_INTERVAL``          60s      TTL sweep period (0 disables)
``queue.lockDuration``     ``KEYVAL_QUEUE_LOCK_DURATION``     30s      lease of a dequeued message (> 0)
``queue.cleanupInterval``  ``KEYVAL_QUEUE_CLEANUP_INTERVAL``  60s      stale-lease sweep period (0 disables)
``metrics.persistent``     ``KEYVAL_METRICS_PERSISTENT``      false    add operation counts to ``kv_metrics``
``metrics.flushInterval``  ``KEYVAL_METRICS_FLUSH_INTERVAL``  30s      how often they are added (and at stop)
=========================  =================================  =======  ======================================

The types, the duration grammar and the bounds are declared once, in ``manifest.yaml``; the host's
resolver (``buntime.plugins._settings``) applies them and names the variable in every error. This
module maps the resolved values onto :class:`KeyValSettings` and checks what one field cannot say
(a positive flush interval when persistence is on). Called by the plugin at ``on_init``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .._manifest import Manifest, load_manifest
from .._settings import Settings
from .._settings import resolve_settings as resolve_manifest_settings
from ._errors import KeyValConfigError

ENV_SWEEP_INTERVAL = "KEYVAL_SWEEP_INTERVAL"
ENV_QUEUE_LOCK_DURATION = "KEYVAL_QUEUE_LOCK_DURATION"
ENV_QUEUE_CLEANUP_INTERVAL = "KEYVAL_QUEUE_CLEANUP_INTERVAL"
ENV_METRICS_PERSISTENT = "KEYVAL_METRICS_PERSISTENT"
ENV_METRICS_FLUSH_INTERVAL = "KEYVAL_METRICS_FLUSH_INTERVAL"
DEFAULT_SWEEP_INTERVAL = 60.0
DEFAULT_QUEUE_LOCK_DURATION = 30.0
DEFAULT_QUEUE_CLEANUP_INTERVAL = 60.0
DEFAULT_METRICS_FLUSH_INTERVAL = 30.0


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

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyValSettings:
        """From the host-resolved ``ctx.settings`` (a missing or blank value keeps the default)."""

        def seconds(key: str, default: float) -> float:
            value = settings.get(key)
            return default if value is None or value == "" else float(value)

        resolved = cls(
            sweep_interval=seconds("sweepInterval", DEFAULT_SWEEP_INTERVAL),
            queue_lock_duration=seconds("queue.lockDuration", DEFAULT_QUEUE_LOCK_DURATION),
            queue_cleanup_interval=seconds("queue.cleanupInterval", DEFAULT_QUEUE_CLEANUP_INTERVAL),
            metrics_persistent=settings.get("metrics.persistent") is True,
            metrics_flush_interval=seconds("metrics.flushInterval", DEFAULT_METRICS_FLUSH_INTERVAL),
        )
        if resolved.metrics_persistent and resolved.metrics_flush_interval <= 0:
            raise KeyValConfigError(
                f"{ENV_METRICS_FLUSH_INTERVAL} must be more than 0s with {ENV_METRICS_PERSISTENT}=true",
                variable=ENV_METRICS_FLUSH_INTERVAL,
            )
        return resolved


@cache
def manifest() -> Manifest:
    """This plugin's own ``manifest.yaml``."""
    return load_manifest(Path(__file__).with_name("manifest.yaml"))


def resolve_settings(options: Mapping[str, Any], env: Mapping[str, str]) -> KeyValSettings:
    """What the host hands the plugin, for callers outside it: the manifest's settings resolved."""
    return KeyValSettings.from_settings(resolve_manifest_settings(manifest().settings, options, env))
