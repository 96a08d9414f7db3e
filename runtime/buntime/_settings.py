"""The runtime's settings table: every environment variable ``buntime`` reads, with its default.

``buntime --help`` is generated from :data:`SETTINGS` (and from the built-in plugins' manifest
``config`` blocks), so the help cannot leave a variable out: ``tests/test_cli.py`` checks that
every ``BUNTIME_*``/``TURSO_*``/``RUNTIME_TURSO_*`` name the runtime's code reads (``worker`` too)
has a row here. The ``TURSO_*`` rows are what ``turso._config.resolve_config`` reads, the one
parser of those variables (the turso plugin and ``buntime turso health`` both call it). The parsing itself
stays where the value is used (``server._config``, ``turso._config``, ``_logging``); they name
the variable in every error. Imported by ``cli`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Log levels every CLI accepts (case-insensitive), in the order ``--help`` shows them.
LOG_LEVELS = ("debug", "info", "warning", "error")
#: ``json`` (one object per line), ``text`` (for a person), or ``auto``: text on a terminal.
LOG_FORMATS = ("auto", "json", "text")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (as text, ``""`` = unset) and what it does."""

    env: str
    default: str
    help: str
    group: str
    flag: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting("BUNTIME_LOG_LEVEL", "info", "debug, info, warning or error", "logging", "--log-level"),
    Setting(
        "BUNTIME_LOG_FORMAT",
        "auto",
        "json (one object per line), text, or auto: text when stderr is a terminal, else json",
        "logging",
        "--log-format",
    ),
    Setting("BUNTIME_HOST", "0.0.0.0", "serve: listen address", "server", "--host"),
    Setting("BUNTIME_PORT", "8000", "serve: listen port", "server", "--port"),
    Setting(
        "BUNTIME_PLUGIN_DIRS",
        "",
        "serve: extra plugin folders (os.pathsep-separated), after the built-ins",
        "server",
    ),
    Setting(
        "BUNTIME_EVENT_LOOP",
        "uvloop",
        "serve: uvloop (asyncio's loop when uvloop is not installed) or asyncio",
        "server",
    ),
    Setting(
        "TURSO_SERVER_URL",
        "",
        "multi-tenant sync with turso-server: each namespace syncs with <url>/<namespace>",
        "turso",
    ),
    Setting("TURSO_SERVER_TOKEN", "", "bearer token for TURSO_SERVER_URL (secret)", "turso"),
    Setting(
        "TURSO_SERVER_TOKEN_FILE",
        "",
        "a file holding TURSO_SERVER_TOKEN instead, read again when it changes (not beside it)",
        "turso",
    ),
    Setting(
        "TURSO_NAMESPACE",
        "",
        "with TURSO_SERVER_URL: keep every namespace in <url>/<TURSO_NAMESPACE>",
        "turso",
    ),
    Setting(
        "TURSO_SYNC_URL",
        "",
        "single-tenant sync: one replica synced with this http(s):// (or libsql://, sent as https://) URL",
        "turso",
    ),
    Setting("TURSO_SYNC_AUTH_TOKEN", "", "bearer token for TURSO_SYNC_URL (secret)", "turso"),
    Setting(
        "TURSO_SYNC_AUTH_TOKEN_FILE",
        "",
        "a file holding TURSO_SYNC_AUTH_TOKEN instead, read again when it changes (not beside it)",
        "turso",
    ),
    Setting(
        "TURSO_MODE",
        "",
        "local (refused beside a sync/server URL or token) or sync (needs a URL); unset: the URLs decide",
        "turso",
    ),
    Setting(
        "TURSO_LOCAL_PATH", "./data/turso/runtime.db", "local database file, or the replica file", "turso"
    ),
    Setting(
        "TURSO_SYNC_INTERVAL",
        "5s",
        "how often replicas pull (and, with TURSO_WRITE_MODE=offline, push); 0 disables, else at least 100ms",
        "turso",
    ),
    Setting(
        "TURSO_WRITE_MODE", "serializable", "serializable (under turso-server's lease) or offline", "turso"
    ),
    Setting("TURSO_LEASE_TTL", "5s", "life of a dead pod's write lease (50ms to 60s)", "turso"),
    Setting(
        "TURSO_WRITE_TIMEOUT",
        "10s",
        "how long a write waits for the lease or the server (at least 100ms)",
        "turso",
    ),
    Setting("TURSO_EXECUTOR", "thread", "local mode: thread (engine thread) or inline (event loop)", "turso"),
    Setting(
        "RUNTIME_TURSO_SERVER_URL",
        "",
        "workers (open_turso): turso-server URL, namespace <ns> syncs with <url>/<ns>; unset: a local file",
        "worker",
    ),
    Setting(
        "RUNTIME_TURSO_SERVER_TOKEN",
        "",
        "workers: bearer token for RUNTIME_TURSO_SERVER_URL (secret)",
        "worker",
    ),
    Setting(
        "RUNTIME_TURSO_SERVER_TOKEN_FILE",
        "",
        "workers: a file holding RUNTIME_TURSO_SERVER_TOKEN instead, re-read when it changes (not beside it)",
        "worker",
    ),
    Setting("RUNTIME_TURSO_DIR", "./.cache/turso", "workers: where <namespace>.db files live", "worker"),
)
SETTINGS_BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}
