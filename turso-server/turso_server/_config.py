"""Server settings from flags and the environment, validated once at startup.

Every setting has one row in :data:`SETTINGS` (environment name, flag, default, help), which both
``load_config`` and the CLI's ``--help`` are built from, so the two cannot drift. Precedence is
flag, then environment, then default. Upstream silently fell back to the default on a value it
could not parse; here every invalid value is a :class:`ConfigError` that names the variable and the
flag, raised before anything listens. Secrets are read from the environment or from a file given by
flag (never a flag value: argv is visible to every local user). Called by ``cli`` only.
"""

from __future__ import annotations

import hmac
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from ._confine import describe_unavailable, landlock_abi
from ._durations import parse_duration
from ._errors import ConfigError
from ._sizes import format_size, parse_size

MIN_SIGNING_KEY_BYTES = 32
MIN_REQUEST_BYTES = 64 * 1024
MIN_CHILD_MEMORY = 64 * 1024 * 1024  # a nonzero TURSO_CHILD_MEMORY_LIMIT below this starts no child
LEASE_TTL_MIN, LEASE_TTL_MAX = 0.05, 60.0  # seconds: what a lease may last, asked for or by default
LEASE_WAIT_MAX = 60.0  # seconds a lease request or a plain push may wait for the lease
_TRUE = frozenset({"1", "t", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "f", "false", "no", "n", "off"})
_T = TypeVar("_T")
_ADDR = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>\d{1,5})$")


class Kind(StrEnum):
    """How a setting's text is parsed; also decides the flag's shape in ``--help``."""

    ADDR = "addr"
    PATH = "path"
    EXECUTABLE = "executable"
    PORT = "port"
    COUNT = "count"
    SIZE = "size"
    BOOL = "bool"
    SWITCH = "switch"
    DURATION = "duration"
    SECRET = "secret"
    LOG_LEVEL = "log-level"
    LOG_FORMAT = "auto|json|text"
    LANDLOCK = "auto|require|off"


class LandlockMode(StrEnum):
    """``TURSO_CHILD_LANDLOCK``: confine children when the kernel can, always, or never."""

    AUTO = "auto"
    REQUIRE = "require"
    OFF = "off"


@dataclass(frozen=True)
class Setting:
    """One configurable value: its environment variable, flag, default and help text."""

    env: str
    flag: str
    default: str
    help: str
    kind: Kind

    @property
    def label(self) -> str:
        """How errors name the setting: ``TURSO_GC_INTERVAL (--gc-interval)``."""
        return f"{self.env} ({self.flag})"


SETTINGS: tuple[Setting, ...] = (
    Setting("TURSO_DATA_ADDR", "--data-addr", ":8080", "data listener, [host]:port", Kind.ADDR),
    Setting("TURSO_ADMIN_ADDR", "--admin-addr", ":8081", "admin listener, [host]:port", Kind.ADDR),
    Setting("TURSO_DATA_DIR", "--data-dir", "/var/lib/turso", "databases, state and archives", Kind.PATH),
    Setting("TURSODB_BIN", "--tursodb-bin", "/usr/local/bin/tursodb", "tursodb executable", Kind.EXECUTABLE),
    Setting("TURSO_BACKEND_PORT_START", "--backend-port-start", "9000", "first child port", Kind.PORT),
    Setting("TURSO_BACKEND_PORT_END", "--backend-port-end", "9999", "last child port (inclusive)", Kind.PORT),
    Setting(
        "TURSO_AUTH_TOKEN",
        "--auth-token-file",
        "",
        "global data-port bearer token (flag: a file holding it)",
        Kind.SECRET,
    ),
    Setting(
        "TURSO_ADMIN_TOKEN",
        "--admin-token-file",
        "",
        "admin-port bearer token (flag: a file holding it)",
        Kind.SECRET,
    ),
    Setting(
        "TURSO_METRICS_TOKEN",
        "--metrics-token-file",
        "",
        "read-only bearer token for GET /metrics on the admin port (flag: a file holding it)",
        Kind.SECRET,
    ),
    Setting(
        "TURSO_TOKEN_SIGNING_KEY",
        "--token-signing-key-file",
        "",
        f"HMAC key (>= {MIN_SIGNING_KEY_BYTES} bytes) for namespace-scoped tokens; empty disables them",
        Kind.SECRET,
    ),
    Setting(
        "TURSO_MAX_NAMESPACES",
        "--max-namespaces",
        "256",
        "stored namespaces allowed; 0 = no limit",
        Kind.COUNT,
    ),
    Setting(
        "TURSO_ALLOW_AUTO_PROVISION",
        "--allow-auto-provision",
        "true",
        "create unknown namespaces on first data request",
        Kind.BOOL,
    ),
    Setting("TURSO_STARTUP_TIMEOUT", "--startup-timeout", "5s", "wait for a child to listen", Kind.DURATION),
    Setting("TURSO_GC_INTERVAL", "--gc-interval", "1h", "GC sweep period; 0 disables GC", Kind.DURATION),
    Setting(
        "TURSO_AUTO_IDLE_DURATION",
        "--auto-idle-duration",
        "168h",
        "archive auto namespaces idle this long; 0 disables",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_ARCHIVE_RETENTION",
        "--archive-retention",
        "720h",
        "delete archives older than this; 0 keeps them",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_UPSTREAM_TIMEOUT",
        "--upstream-timeout",
        "30m",
        "ceiling for one proxied request or backup, else its child is restarted; 0 = none",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_LEASE_TTL",
        "--lease-ttl",
        "5s",
        "default life of a write lease a replica does not renew, 0.05s-60s"
        " (clients may ask 0-60s; below 0.05s is rounded up)",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_LEASE_WAIT",
        "--lease-wait",
        "10s",
        "default wait for a busy write lease, also for plain pushes (at most 60s)",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_PUSH_CURSORS",
        "--push-cursors",
        "true",
        "answer a sync client's cursor read from what tursodb last reported (one request per push)",
        Kind.BOOL,
    ),
    Setting(
        "TURSO_CLIENT_RECEIVE_TIMEOUT",
        "--client-receive-timeout",
        "5m",
        "a data-port client must send its whole request body within this (else 408); 0 = none",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_CLIENT_SEND_TIMEOUT",
        "--client-send-timeout",
        "5m",
        "a data-port client must take its whole reply within this (else it is cut off); 0 = none",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_SPOOL_MEMORY",
        "--spool-memory",
        "64Mi",
        "memory for replies held until slow clients take them (each at most 1Mi)",
        Kind.SIZE,
    ),
    Setting(
        "TURSO_SPOOL_DISK",
        "--spool-disk",
        "1Gi",
        "disk (<data dir>/_spool) for the replies past that; a reply that fits neither is 503",
        Kind.SIZE,
    ),
    Setting(
        "TURSO_SHUTDOWN_GRACE",
        "--shutdown-grace",
        "5s",
        "SIGTERM-to-SIGKILL grace for children",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_RESTART_BACKOFF_MAX",
        "--restart-backoff-max",
        "30s",
        "cap of the crash-restart backoff",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_ACCESS_FLUSH_INTERVAL",
        "--access-flush-interval",
        "10s",
        "debounce for persisting last-access times",
        Kind.DURATION,
    ),
    Setting(
        "TURSO_MAX_REQUEST_BYTES",
        "--max-request-bytes",
        "256Mi",
        "largest data-port request body accepted (admin bodies: 64 KiB)",
        Kind.SIZE,
    ),
    Setting(
        "TURSO_INSECURE_DEV",
        "--insecure-dev",
        "false",
        "allow empty tokens (auth off on that port); development only",
        Kind.SWITCH,
    ),
    Setting("TURSO_LOG_LEVEL", "--log-level", "info", "debug, info, warning or error", Kind.LOG_LEVEL),
    Setting(
        "TURSO_LOG_FORMAT",
        "--log-format",
        "auto",
        "json (one object per line on stderr), text, or auto: text when stderr is a terminal, else json",
        Kind.LOG_FORMAT,
    ),
    Setting(
        "TURSO_CHILD_LANDLOCK",
        "--child-landlock",
        "auto",
        "confine each tursodb child with Landlock: auto (warn if the kernel cannot), require, off",
        Kind.LANDLOCK,
    ),
    Setting(
        "TURSO_CHILD_MEMORY_LIMIT",
        "--child-memory-limit",
        "0",
        "RLIMIT_DATA of each tursodb child (bytes, or with Ki/Mi/Gi: 1Gi); a statement past it fails"
        " or crashes its child, which is restarted; 0 = no limit",
        Kind.SIZE,
    ),
)
SETTINGS_BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}


@dataclass(frozen=True)
class ListenAddress:
    """A listener address; ``host`` ``None`` means every interface (``:8080``)."""

    host: str | None
    port: int

    def __str__(self) -> str:
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    """Validated settings; durations are seconds and ``0`` means disabled where the table says so."""

    data_addr: ListenAddress
    admin_addr: ListenAddress
    data_dir: Path
    tursodb_bin: Path
    backend_port_start: int
    backend_port_end: int
    max_namespaces: int
    allow_auto_provision: bool
    startup_timeout: float
    gc_interval: float
    auto_idle_duration: float
    archive_retention: float
    upstream_timeout: float
    lease_ttl: float
    lease_wait: float
    push_cursors: bool
    client_receive_timeout: float
    client_send_timeout: float
    spool_memory: int
    spool_disk: int
    shutdown_grace: float
    restart_backoff_max: float
    access_flush_interval: float
    max_request_bytes: int
    insecure_dev: bool
    log_level: str
    log_format: str = "auto"
    child_landlock: LandlockMode = LandlockMode.AUTO
    child_memory_limit: int = 0  # bytes of RLIMIT_DATA per child; 0 = none
    auth_token: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)
    token_signing_key: str = field(default="", repr=False)

    @property
    def data_auth_enabled(self) -> bool:
        return bool(self.auth_token or self.token_signing_key)

    @property
    def admin_auth_enabled(self) -> bool:
        return bool(self.admin_token)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured credential: what the log formatters redact (``_logging``)."""
        return tuple(
            secret
            for secret in (self.auth_token, self.admin_token, self.metrics_token, self.token_signing_key)
            if secret
        )


def load_config(flags: Mapping[str, str | None], env: Mapping[str, str]) -> ServerConfig:
    """Build the config from ``flags`` (keyed by environment name; ``None`` = not given) and ``env``.

    Secret flags carry a *file path*; the file's content (trailing newline dropped) is the value.
    """
    raw: dict[str, str] = {}
    for setting in SETTINGS:
        flag_value = flags.get(setting.env)
        if flag_value is not None and setting.kind is Kind.SECRET:
            raw[setting.env] = _read_secret_file(setting, flag_value)
        elif flag_value is not None:
            raw[setting.env] = flag_value
        else:
            env_value = env.get(setting.env, "")
            raw[setting.env] = env_value if env_value.strip() else setting.default

    def get(env_name: str, parse: Callable[[Setting, str], _T]) -> _T:
        setting = SETTINGS_BY_ENV[env_name]
        return parse(setting, raw[env_name])

    port_start = get("TURSO_BACKEND_PORT_START", _port)
    port_end = get("TURSO_BACKEND_PORT_END", _port)
    if port_start > port_end:
        raise ConfigError(
            f"TURSO_BACKEND_PORT_START ({port_start}) must not exceed TURSO_BACKEND_PORT_END ({port_end})"
        )
    insecure_dev = get("TURSO_INSECURE_DEV", _bool)
    auth_token = get("TURSO_AUTH_TOKEN", _secret)
    admin_token = get("TURSO_ADMIN_TOKEN", _secret)
    metrics_token = get("TURSO_METRICS_TOKEN", _secret)
    signing_key = get("TURSO_TOKEN_SIGNING_KEY", _secret)
    # Each secret opens something the others do not (the signing key mints data tokens): one
    # reused for another would hand its holder both. Compared, never shown.
    secrets = {
        "TURSO_AUTH_TOKEN": auth_token,
        "TURSO_ADMIN_TOKEN": admin_token,
        "TURSO_METRICS_TOKEN": metrics_token,
        "TURSO_TOKEN_SIGNING_KEY": signing_key,
    }
    named = [(name, value) for name, value in secrets.items() if value]
    for index, (name, value) in enumerate(named):
        for other, other_value in named[index + 1 :]:
            if hmac.compare_digest(value.encode(), other_value.encode()):
                raise ConfigError(f"{name} and {other} must differ: each opens what the other does not")
    if signing_key and len(signing_key.encode()) < MIN_SIGNING_KEY_BYTES:
        raise ConfigError(
            f"{SETTINGS_BY_ENV['TURSO_TOKEN_SIGNING_KEY'].label} must be at least "
            f"{MIN_SIGNING_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        )
    if not insecure_dev and not (auth_token or signing_key):
        raise ConfigError(
            "TURSO_AUTH_TOKEN is empty and TURSO_TOKEN_SIGNING_KEY is unset, so the data port would have "
            "no auth: set one of them, or pass --insecure-dev (TURSO_INSECURE_DEV=true) for development"
        )
    if not insecure_dev and not admin_token:
        raise ConfigError(
            "TURSO_ADMIN_TOKEN is empty, so the admin port would have no auth: set it, or pass "
            "--insecure-dev (TURSO_INSECURE_DEV=true) for development"
        )
    startup_timeout = get("TURSO_STARTUP_TIMEOUT", _duration)
    if startup_timeout <= 0:
        raise ConfigError(f"{SETTINGS_BY_ENV['TURSO_STARTUP_TIMEOUT'].label} must be greater than 0")
    lease_ttl, lease_wait = get("TURSO_LEASE_TTL", _duration), get("TURSO_LEASE_WAIT", _duration)
    if not LEASE_TTL_MIN <= lease_ttl <= LEASE_TTL_MAX:
        label = SETTINGS_BY_ENV["TURSO_LEASE_TTL"].label
        raise ConfigError(f"{label} must be {LEASE_TTL_MIN:g}s-{LEASE_TTL_MAX:g}s, got {lease_ttl:g}s")
    if lease_wait > LEASE_WAIT_MAX:
        label = SETTINGS_BY_ENV["TURSO_LEASE_WAIT"].label
        raise ConfigError(f"{label} must be at most {LEASE_WAIT_MAX:g}s, got {lease_wait:g}s")
    return ServerConfig(
        data_addr=get("TURSO_DATA_ADDR", _addr),
        admin_addr=get("TURSO_ADMIN_ADDR", _addr),
        data_dir=get("TURSO_DATA_DIR", _data_dir),
        tursodb_bin=get("TURSODB_BIN", _executable),
        backend_port_start=port_start,
        backend_port_end=port_end,
        max_namespaces=get("TURSO_MAX_NAMESPACES", _count),
        allow_auto_provision=get("TURSO_ALLOW_AUTO_PROVISION", _bool),
        startup_timeout=startup_timeout,
        gc_interval=get("TURSO_GC_INTERVAL", _duration),
        auto_idle_duration=get("TURSO_AUTO_IDLE_DURATION", _duration),
        archive_retention=get("TURSO_ARCHIVE_RETENTION", _duration),
        upstream_timeout=get("TURSO_UPSTREAM_TIMEOUT", _duration),
        lease_ttl=lease_ttl,
        lease_wait=lease_wait,
        push_cursors=get("TURSO_PUSH_CURSORS", _bool),
        client_receive_timeout=get("TURSO_CLIENT_RECEIVE_TIMEOUT", _duration),
        client_send_timeout=get("TURSO_CLIENT_SEND_TIMEOUT", _duration),
        spool_memory=get("TURSO_SPOOL_MEMORY", _bytes),
        spool_disk=get("TURSO_SPOOL_DISK", _bytes),
        shutdown_grace=get("TURSO_SHUTDOWN_GRACE", _duration),
        restart_backoff_max=get("TURSO_RESTART_BACKOFF_MAX", _duration),
        access_flush_interval=get("TURSO_ACCESS_FLUSH_INTERVAL", _duration),
        max_request_bytes=get("TURSO_MAX_REQUEST_BYTES", _bytes),
        insecure_dev=insecure_dev,
        log_level=get("TURSO_LOG_LEVEL", _log_level),
        log_format=get("TURSO_LOG_FORMAT", _log_format),
        child_landlock=get("TURSO_CHILD_LANDLOCK", _landlock),
        child_memory_limit=get("TURSO_CHILD_MEMORY_LIMIT", _memory_limit),
        auth_token=auth_token,
        admin_token=admin_token,
        metrics_token=metrics_token,
        token_signing_key=signing_key,
    )


# --- parsers: each takes the setting (for the error message) and its raw text ---------------------


def _addr(setting: Setting, value: str) -> ListenAddress:
    match = _ADDR.match(value.strip())
    port = int(match.group("port")) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise ConfigError(
            f"{setting.label} must look like ':8080', '127.0.0.1:8080' or '[::1]:8080', got {value!r}"
        )
    host = match.group("v6") or match.group("host") or None
    return ListenAddress(host=host, port=port)


def _data_dir(setting: Setting, value: str) -> Path:
    path = Path(value).expanduser().absolute()
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{setting.label}: cannot create {str(path)!r}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting.label}: {str(path)!r} is not writable")
    return path


def _executable(setting: Setting, value: str) -> Path:
    found = shutil.which(value) if os.sep not in value else value
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise ConfigError(f"{setting.label}: {value!r} is not an executable file")
    return Path(found).absolute()


def _port(setting: Setting, value: str) -> int:
    number = _int(setting, value)
    if not 1 <= number <= 65535:
        raise ConfigError(f"{setting.label} must be a port between 1 and 65535, got {value!r}")
    return number


def _count(setting: Setting, value: str) -> int:
    number = _int(setting, value)
    if number < 0:
        raise ConfigError(f"{setting.label} must be 0 or more, got {value!r}")
    return number


def _size(setting: Setting, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{setting.label}: {exc}") from None


def _bytes(setting: Setting, value: str) -> int:
    size = _size(setting, value)
    if size < MIN_REQUEST_BYTES:
        minimum = format_size(MIN_REQUEST_BYTES)
        raise ConfigError(f"{setting.label} must be at least {minimum}, got {value[:40]!r}")
    return size


def _memory_limit(setting: Setting, value: str) -> int:
    size = _size(setting, value)
    if 0 < size < MIN_CHILD_MEMORY:
        minimum = format_size(MIN_CHILD_MEMORY)
        raise ConfigError(f"{setting.label} must be 0 (no limit) or at least {minimum}, got {value[:40]!r}")
    return size


def _int(setting: Setting, value: str) -> int:
    try:
        return int(value.strip(), 10)
    except ValueError:
        raise ConfigError(f"{setting.label} must be an integer, got {value!r}") from None


def _bool(setting: Setting, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{setting.label} must be true or false, got {value!r}")


def _duration(setting: Setting, value: str) -> float:
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise ConfigError(f"{setting.label}: {exc}") from None


def _secret(setting: Setting, value: str) -> str:
    # Never echo the value: it is a credential.
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ConfigError(f"{setting.label} contains whitespace or control characters")
    return value


def _log_level(setting: Setting, value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"{setting.label} must be debug, info, warning or error, got {value!r}")
    return lowered


def _log_format(setting: Setting, value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in {"auto", "json", "text"}:
        raise ConfigError(f"{setting.label} must be auto, json or text, got {value!r}")
    return lowered


def _landlock(setting: Setting, value: str) -> LandlockMode:
    try:
        mode = LandlockMode(value.strip().lower())
    except ValueError:
        raise ConfigError(f"{setting.label} must be auto, require or off, got {value!r}") from None
    if mode is LandlockMode.REQUIRE and landlock_abi() == 0:
        raise ConfigError(f"{setting.label} is require, but {describe_unavailable()}")
    return mode


def _read_secret_file(setting: Setting, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting.flag}: cannot read {path!r}: {exc}") from exc
