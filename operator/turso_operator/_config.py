"""Operator configuration from the environment; a bad value stops the start with its name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._durations import duration_seconds


class OperatorConfigError(ValueError):
    """The environment does not describe a usable operator configuration."""


@dataclass(frozen=True)
class OperatorConfig:
    """Where turso-server is and how often to look again. Tokens are kept out of ``repr``."""

    server_url: str
    admin_url: str
    admin_token: str | None = field(default=None, repr=False)
    data_token: str | None = field(default=None, repr=False)
    watch_namespaces: tuple[str, ...] = ()
    resync_seconds: float = 60.0
    operator_namespace: str | None = None
    webhook_port: int = 9443
    webhook_host: str | None = None
    webhook_cert_file: str | None = None
    webhook_key_file: str | None = None
    webhook_enabled: bool = True
    inject_failure_policy: str = "Fail"
    liveness_port: int = 8080
    liveness_grace_seconds: float = 30.0
    request_timeout: float = 10.0
    kube_request_timeout: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return env.get(name, default).strip()

        def number(name: str, default: str) -> float:
            raw = get(name, default)
            try:
                value = duration_seconds(raw)
            except ValueError as exc:
                raise OperatorConfigError(f"{name}: {exc}") from None
            if value <= 0:
                raise OperatorConfigError(f"{name} must be positive (got {raw!r})")
            return value

        def port(name: str, default: str) -> int:
            raw = get(name, default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise OperatorConfigError(f"{name} must be a TCP port (got {raw!r})")
            return int(raw)

        server_url = get("TURSO_SERVER_URL").rstrip("/")
        if not server_url:
            raise OperatorConfigError("TURSO_SERVER_URL is required (the data URL apps connect to)")
        admin_url = get("TURSO_SERVER_ADMIN_URL").rstrip("/")
        if not admin_url:
            raise OperatorConfigError("TURSO_SERVER_ADMIN_URL is required (turso-server's admin port)")
        for name, url in (("TURSO_SERVER_URL", server_url), ("TURSO_SERVER_ADMIN_URL", admin_url)):
            if not url.startswith(("http://", "https://")):
                raise OperatorConfigError(f"{name} must be an http(s) URL (got {url!r})")
        policy = get("TURSO_INJECT_FAILURE_POLICY", "Fail")
        if policy not in ("Fail", "Ignore"):
            raise OperatorConfigError(f"TURSO_INJECT_FAILURE_POLICY must be Fail or Ignore (got {policy!r})")
        enabled = get("TURSO_WEBHOOK_ENABLED", "true").lower()
        if enabled not in ("true", "false"):
            raise OperatorConfigError(f"TURSO_WEBHOOK_ENABLED must be true or false (got {enabled!r})")
        watch = tuple(ns.strip() for ns in get("TURSO_WATCH_NAMESPACES").split(",") if ns.strip())
        return cls(
            server_url=server_url,
            admin_url=admin_url,
            admin_token=get("TURSO_SERVER_ADMIN_TOKEN") or None,
            data_token=get("TURSO_SERVER_TOKEN") or None,
            watch_namespaces=watch,
            resync_seconds=number("TURSO_RESYNC_SECONDS", "60"),
            operator_namespace=get("POD_NAMESPACE") or get("TURSO_OPERATOR_NAMESPACE") or None,
            webhook_port=port("TURSO_WEBHOOK_PORT", "9443"),
            webhook_host=get("TURSO_WEBHOOK_HOST") or None,
            webhook_cert_file=get("TURSO_WEBHOOK_CERT_FILE") or None,
            webhook_key_file=get("TURSO_WEBHOOK_KEY_FILE") or None,
            webhook_enabled=enabled == "true",
            inject_failure_policy=policy,
            liveness_port=port("TURSO_LIVENESS_PORT", "8080"),
            liveness_grace_seconds=number("TURSO_LIVENESS_GRACE_SECONDS", "30"),
            request_timeout=number("TURSO_REQUEST_TIMEOUT", "10"),
            kube_request_timeout=number("TURSO_KUBE_REQUEST_TIMEOUT", "60"),
        )
