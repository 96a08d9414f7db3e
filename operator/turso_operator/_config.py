"""Operator configuration from the environment; a bad value stops the start with its name.

Every variable has one row in :data:`SETTINGS` (name, default, help), which both
:meth:`OperatorConfig.from_env` (its defaults) and ``buntime-operator --help`` are built from, so
the help cannot leave a variable out. Called by ``cli`` and ``_handlers``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._constants import INSTANCE_LABEL, RENEW_FRACTION_DIVISOR, FailurePolicy
from ._durations import duration_seconds
from ._errors import OperatorConfigError

#: Log levels and formats the CLI accepts (``TURSO_LOG_LEVEL``/``--log-level`` and the format).
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "text")
#: ``TURSO_INSTANCE``: a DNS label short enough that ``finalizer-<instance>`` is a valid name part.
INSTANCE_MAX = 53
INSTANCE_PATTERN = re.compile(rf"^[a-z0-9]([-a-z0-9]{{0,{INSTANCE_MAX - 2}}}[a-z0-9])?$")
#: ``TURSO_TOKEN_LIFETIME``'s lower bound: a renewed token reaches running pods only when the
#: kubelet refreshes their Secret volume (about a minute or two, longer on a busy node), and the
#: old token must outlive that; with a third of the lifetime left at renewal, 10m leaves 3m20s.
MIN_TOKEN_LIFETIME_SECONDS = 600.0
MIN_TOKEN_LIFETIME_TEXT = "10m"
#: Its upper bound, 100 years: turso-server refuses an ``expiresIn`` that ends in the year 10000
#: or later (``datetime`` stops there), so a longer one would fail every mint instead of startup.
MAX_TOKEN_LIFETIME_SECONDS = 36500 * 86400.0
MAX_TOKEN_LIFETIME_TEXT = "36500d"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (``""`` = unset), help, and whether it is required."""

    env: str
    default: str
    help: str
    required: bool = False
    flag: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting("TURSO_SERVER_URL", "", "turso-server's data URL, written into app Secrets", required=True),
    Setting("TURSO_SERVER_ADMIN_URL", "", "turso-server's admin API URL", required=True),
    Setting("TURSO_SERVER_ADMIN_TOKEN", "", "bearer token for the admin API (secret)"),
    Setting(
        "TURSO_SERVER_TOKEN",
        "",
        "shared data token (opens every database), handed out only when turso-server mints no scoped "
        "tokens; unset, such a server is refused (secret)",
    ),
    Setting("TURSO_WATCH_NAMESPACES", "", "comma-separated namespaces to watch; empty = cluster-wide"),
    Setting(
        "TURSO_INSTANCE",
        "",
        f"serve only TursoNamespaces labelled {INSTANCE_LABEL}=<this> (a DNS label of at most "
        f"{INSTANCE_MAX} characters); empty = those without the label",
    ),
    Setting("TURSO_RESYNC_SECONDS", "60", "drift-repair period (a duration)"),
    Setting(
        "TURSO_TOKEN_LIFETIME",
        "0",
        "lifetime of the data tokens the operator mints (a duration, at least "
        f"{MIN_TOKEN_LIFETIME_TEXT}, more than three resync periods, at most {MAX_TOKEN_LIFETIME_TEXT}); "
        "renewed with a third of it left; 0 = they never expire",
    ),
    Setting("POD_NAMESPACE", "", "the operator's namespace (its pods are never injected)"),
    Setting("TURSO_OPERATOR_NAMESPACE", "", "the operator's namespace when POD_NAMESPACE is unset"),
    Setting("TURSO_WEBHOOK_ENABLED", "true", "serve the pod-injection webhook (true or false)"),
    Setting("TURSO_WEBHOOK_PORT", "9443", "webhook port"),
    Setting("TURSO_WEBHOOK_HOST", "", "webhook host name the API server calls"),
    Setting(
        "TURSO_WEBHOOK_CERT_FILE", "", "webhook TLS certificate; without it kopf makes a self-signed one"
    ),
    Setting("TURSO_WEBHOOK_KEY_FILE", "", "webhook TLS key"),
    Setting(
        "TURSO_WEBHOOK_TIMEOUT",
        "10",
        "the webhook's timeoutSeconds (a duration); its TursoNamespace lookup gets half of it",
    ),
    Setting(
        "TURSO_INJECT_FAILURE_POLICY",
        FailurePolicy.FAIL,
        f"the webhook's failurePolicy: {FailurePolicy.FAIL} or {FailurePolicy.IGNORE}",
    ),
    Setting("TURSO_LIVENESS_PORT", "8080", "port of /healthz"),
    Setting("TURSO_METRICS_PORT", "9090", "port of the Prometheus /metrics endpoint"),
    Setting(
        "TURSO_LIVENESS_GRACE_SECONDS",
        "30",
        "added to three resync periods before a quiet watch fails liveness",
    ),
    Setting("TURSO_REQUEST_TIMEOUT", "10", "turso-server admin calls and the operator's own Secret calls"),
    Setting("TURSO_KUBE_REQUEST_TIMEOUT", "60", "each of kopf's Kubernetes API requests"),
    Setting(
        "TURSO_RUNTIME_SECRET",
        "",
        "Secret (in the operator's namespace) to keep the runtime's scoped tokens in; empty = none",
    ),
    Setting(
        "TURSO_RUNTIME_NAMESPACES",
        "",
        "comma-separated databases (or prefixes*) of the runtime's plugins; the named ones are created",
    ),
    Setting(
        "TURSO_RUNTIME_WORKER_NAMESPACES",
        "",
        "comma-separated databases (or prefixes*) of its worker apps; the named ones are created",
    ),
    Setting("TURSO_LOG_LEVEL", "info", "debug, info, warning or error", flag="--log-level"),
    Setting(
        "TURSO_LOG_FORMAT",
        "auto",
        "json (one object per line), text, or auto: text when stderr is a terminal, else json",
        flag="--log-format",
    ),
)
SETTINGS_BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}


@dataclass(frozen=True)
class OperatorConfig:
    """Where turso-server is and how often to look again. Tokens are kept out of ``repr``."""

    server_url: str
    admin_url: str
    admin_token: str | None = field(default=None, repr=False)
    data_token: str | None = field(default=None, repr=False)
    watch_namespaces: tuple[str, ...] = ()
    #: Which TursoNamespaces are ours: those labelled with it, or (``""``) those without the label.
    instance: str = ""
    resync_seconds: float = 60.0
    #: Seconds a minted data token lives (``expiresIn``); 0: no expiry. Renewed once less than a
    #: third of it is left (``RENEW_FRACTION_DIVISOR``), so ``resync_seconds`` must be shorter than that.
    token_lifetime: float = 0.0
    operator_namespace: str | None = None
    webhook_port: int = 9443
    webhook_host: str | None = None
    webhook_cert_file: str | None = None
    webhook_key_file: str | None = None
    #: What the API server waits for the webhook: the webhook's own lookup must end well before,
    #: so the refusal (or the Ignore warning) says why instead of "context deadline exceeded".
    webhook_timeout: float = 10.0
    webhook_enabled: bool = True
    inject_failure_policy: str = FailurePolicy.FAIL
    liveness_port: int = 8080
    metrics_port: int = 9090
    liveness_grace_seconds: float = 30.0
    request_timeout: float = 10.0
    kube_request_timeout: float = 60.0
    #: The release runtime's credentials: a Secret in ``operator_namespace`` with one token scoped
    #: to ``runtime_scope`` (its plugins' databases) and one to ``worker_scope`` (its worker apps).
    runtime_credentials: str | None = None
    runtime_scope: tuple[str, ...] = ()
    worker_scope: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, "").strip() or SETTINGS_BY_ENV[name].default

        def number(name: str) -> float:
            raw = get(name)
            try:
                value = duration_seconds(raw)
            except ValueError as exc:
                raise OperatorConfigError(f"{name}: {exc}") from None
            if value <= 0:
                raise OperatorConfigError(f"{name} must be positive (got {raw!r})")
            return value

        def port(name: str) -> int:
            raw = get(name)
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
        policy = get("TURSO_INJECT_FAILURE_POLICY")
        if policy not in FailurePolicy.ALL:
            raise OperatorConfigError(
                f"TURSO_INJECT_FAILURE_POLICY must be {' or '.join(FailurePolicy.ALL)} (got {policy!r})"
            )
        enabled = get("TURSO_WEBHOOK_ENABLED").lower()
        if enabled not in ("true", "false"):
            raise OperatorConfigError(f"TURSO_WEBHOOK_ENABLED must be true or false (got {enabled!r})")
        watch = _names(get("TURSO_WATCH_NAMESPACES"))
        instance = get("TURSO_INSTANCE")
        if instance and not INSTANCE_PATTERN.match(instance):
            raise OperatorConfigError(
                f"TURSO_INSTANCE must be a DNS label of at most {INSTANCE_MAX} characters (got {instance!r})"
            )
        resync_seconds = number("TURSO_RESYNC_SECONDS")
        token_lifetime = _token_lifetime(get("TURSO_TOKEN_LIFETIME"), resync_seconds)
        runtime_credentials = get("TURSO_RUNTIME_SECRET") or None
        runtime_scope = _names(get("TURSO_RUNTIME_NAMESPACES"))
        if runtime_credentials and not runtime_scope:
            raise OperatorConfigError(
                "TURSO_RUNTIME_SECRET needs TURSO_RUNTIME_NAMESPACES (the token's scope)"
            )
        if runtime_credentials and not (get("POD_NAMESPACE") or get("TURSO_OPERATOR_NAMESPACE")):
            raise OperatorConfigError("TURSO_RUNTIME_SECRET needs POD_NAMESPACE (where to write it)")
        return cls(
            server_url=server_url,
            admin_url=admin_url,
            admin_token=get("TURSO_SERVER_ADMIN_TOKEN") or None,
            data_token=get("TURSO_SERVER_TOKEN") or None,
            watch_namespaces=watch,
            instance=instance,
            resync_seconds=resync_seconds,
            token_lifetime=token_lifetime,
            operator_namespace=get("POD_NAMESPACE") or get("TURSO_OPERATOR_NAMESPACE") or None,
            webhook_port=port("TURSO_WEBHOOK_PORT"),
            webhook_host=get("TURSO_WEBHOOK_HOST") or None,
            webhook_cert_file=get("TURSO_WEBHOOK_CERT_FILE") or None,
            webhook_key_file=get("TURSO_WEBHOOK_KEY_FILE") or None,
            webhook_timeout=number("TURSO_WEBHOOK_TIMEOUT"),
            webhook_enabled=enabled == "true",
            inject_failure_policy=policy,
            liveness_port=port("TURSO_LIVENESS_PORT"),
            metrics_port=port("TURSO_METRICS_PORT"),
            liveness_grace_seconds=number("TURSO_LIVENESS_GRACE_SECONDS"),
            request_timeout=number("TURSO_REQUEST_TIMEOUT"),
            kube_request_timeout=number("TURSO_KUBE_REQUEST_TIMEOUT"),
            runtime_credentials=runtime_credentials,
            runtime_scope=runtime_scope,
            worker_scope=_names(get("TURSO_RUNTIME_WORKER_NAMESPACES")),
        )


def _token_lifetime(raw: str, resync_seconds: float) -> float:
    """``TURSO_TOKEN_LIFETIME`` in seconds: 0, or at least the minimum and more than three resync
    periods (the drift loop, which renews, must look at least once within the last third), and at
    most the maximum turso-server can sign."""
    try:
        lifetime = duration_seconds(raw)
    except ValueError as exc:
        raise OperatorConfigError(f"TURSO_TOKEN_LIFETIME: {exc}") from None
    if lifetime == 0:
        return 0.0
    if lifetime < MIN_TOKEN_LIFETIME_SECONDS:
        raise OperatorConfigError(
            f"TURSO_TOKEN_LIFETIME must be 0 (no expiry) or at least {MIN_TOKEN_LIFETIME_TEXT}, so the "
            f"kubelet refreshes a renewed token in running pods before the old one expires (got {raw!r})"
        )
    if lifetime > MAX_TOKEN_LIFETIME_SECONDS:
        raise OperatorConfigError(
            f"TURSO_TOKEN_LIFETIME must be at most {MAX_TOKEN_LIFETIME_TEXT} (100 years; turso-server "
            f"refuses tokens that expire in the year 10000 or later), or 0 for no expiry (got {raw!r})"
        )
    if resync_seconds * RENEW_FRACTION_DIVISOR >= lifetime:
        raise OperatorConfigError(
            f"TURSO_RESYNC_SECONDS ({resync_seconds:g}s) must be shorter than a third of "
            f"TURSO_TOKEN_LIFETIME ({raw}): tokens are renewed in their last third, by the drift loop"
        )
    return lifetime


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())
