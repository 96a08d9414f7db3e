"""Resolve the Turso service configuration from the environment and an optional config mapping.

A pure function: it reads only the mapping and env it is given. Precedence, per field: a
non-empty env value, then the config value (after ``${VAR}`` substitution), then the default.

=============================  ==========================================  ==========================
what is set                    mode                                        token
=============================  ==========================================  ==========================
``TURSO_SERVER_URL``           multi-tenant sync: ``<url>/<namespace>``    ``TURSO_SERVER_TOKEN``
``TURSO_SYNC_URL``             single-tenant sync (the URL alone is enough) ``TURSO_SYNC_AUTH_TOKEN``
neither                        local file at ``TURSO_LOCAL_PATH``           —
=============================  ==========================================  ==========================

Either token may instead come from a file, ``TURSO_SERVER_TOKEN_FILE`` or
``TURSO_SYNC_AUTH_TOKEN_FILE`` (a Secret volume's key), read again whenever it changes
(``_tokens``); a token and its ``_FILE`` together are a startup error (``TURSO_TOKEN_CONFLICT``).
With ``TURSO_NAMESPACE`` beside ``TURSO_SERVER_URL`` (what the operator injects into a pod whose
token is scoped to one database) every namespace lives in ``<url>/<TURSO_NAMESPACE>``.
``TURSO_MODE=local`` beside a setting that only means something with a sync server
(``TURSO_SYNC_URL``, ``TURSO_SYNC_AUTH_TOKEN``, ``TURSO_SERVER_URL``, ``TURSO_SERVER_TOKEN``,
``TURSO_NAMESPACE``, the tokens' ``_FILE`` forms) is a startup error naming both
(``TURSO_MODE_CONFLICT``): it used to drop the URL silently and run on a pod-local file.
``TURSO_MODE=sync`` without any URL, or any other mode, is a startup error too. The sync tuning
settings (``TURSO_SYNC_INTERVAL``, ``TURSO_WRITE_MODE``, ``TURSO_LEASE_TTL``,
``TURSO_WRITE_TIMEOUT``) change nothing about where data lives, and a chart or an env file shared
by every mode sets them everywhere: in local mode they are accepted, and those given a value other
than their default are listed in ``TursoConfig.ignored``, which ``TursoService`` logs as one warning
when it starts (a value equal to the default changes nothing in any mode, so it is not listed). Every URL goes
through :func:`normalize_url` here and nowhere else (``libsql://`` is sent as ``https://``; anything
but an ``http(s)`` URL with a host is refused), and the choices (``TURSO_MODE``, ``TURSO_EXECUTOR``,
``TURSO_WRITE_MODE``) are spelled exactly as listed, like the turso manifest's enums, so ``buntime
serve`` and ``buntime turso health`` accept the same environment. ``TURSO_EXECUTOR`` (``thread``,
the default, or ``inline``) says where a local file's statements run; a replica always has a thread,
since its push and pull are network calls, so ``inline`` with a sync URL is an error (its statements
run on the loop while that thread is idle: ``_backends.ReplicaBackend._on_conn``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from ._durations import duration_seconds
from ._errors import InvalidNamespaceError, TursoConfigError
from ._namespaces import validate_namespace
from ._tokens import TokenSource

DEFAULT_LOCAL_PATH = "./data/turso/runtime.db"
DEFAULT_SYNC_INTERVAL = 5.0
DEFAULT_LEASE_TTL = 5.0
DEFAULT_WRITE_TIMEOUT = 10.0
#: Bounds (seconds) of the duration settings; a sync interval is ``0`` (off) or at least the minimum.
MIN_SYNC_INTERVAL = 0.1
LEASE_TTL_BOUNDS = (0.05, 60.0)
MIN_WRITE_TIMEOUT = 0.1
#: The schemes a sync or server URL may use, and the one each is sent over: ``libsql://`` means
#: TLS, as in upstream's clients (``normalize()`` rewrites it to ``https://``).
URL_SCHEMES = {"http": "http", "https": "https", "libsql": "https"}

TursoMode = Literal["local", "sync"]
Topology = Literal["local", "single-tenant", "multi-tenant"]
Executor = Literal["thread", "inline"]
EXECUTORS: tuple[Executor, ...] = ("thread", "inline")
WriteMode = Literal["serializable", "offline"]
WRITE_MODES: tuple[WriteMode, ...] = ("serializable", "offline")

_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class WritePolicy:
    """How a replica writes: ``serializable`` under turso-server's lease, or ``offline``."""

    mode: WriteMode = "serializable"
    lease_ttl: float = DEFAULT_LEASE_TTL
    write_timeout: float = DEFAULT_WRITE_TIMEOUT


@dataclass(frozen=True)
class TursoConfig:
    """The resolved configuration. Tokens are excluded from ``repr`` so they never reach logs."""

    mode: TursoMode
    local_path: str
    sync_url: str | None = None
    server_url: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    #: A file holding the token instead (``TURSO_SERVER_TOKEN_FILE``/``TURSO_SYNC_AUTH_TOKEN_FILE``),
    #: read again whenever it changes (:class:`~._tokens.TokenSource`); exclusive with ``auth_token``.
    auth_token_file: str | None = None
    sync_interval: float = DEFAULT_SYNC_INTERVAL
    executor: Executor = "thread"
    write_mode: WriteMode = "serializable"
    lease_ttl: float = DEFAULT_LEASE_TTL
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    #: Local mode: the sync tuning settings given with a value other than their default
    #: (``TURSO_WRITE_MODE=offline``, ...), which do nothing here; ``TursoService`` logs them once.
    ignored: tuple[str, ...] = ()

    def token_source(self) -> TokenSource:
        """The one reader of the token that every request of this config sends."""
        return TokenSource(token=self.auth_token, path=self.auth_token_file)

    @property
    def write_policy(self) -> WritePolicy:
        return WritePolicy(self.write_mode, self.lease_ttl, self.write_timeout)

    @property
    def topology(self) -> Topology:
        if self.server_url:
            return "multi-tenant"
        return "single-tenant" if self.mode == "sync" else "local"


def _substitute(value: object, env: Mapping[str, str]) -> str:
    """``${VAR}`` substitution for config values; an unset variable becomes ``""``."""
    if value is None:
        return ""
    return _VAR.sub(lambda m: env.get(m.group(1), ""), str(value)).strip()


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise TursoConfigError(f"Turso config '{name}' must be a mapping", code="INVALID_TURSO_CONFIG")
    return value


def parse_interval(raw: str, *, name: str = "TURSO_SYNC_INTERVAL") -> float:
    """Parse a duration (``5``, ``2.5s``, ``500ms``, ``1h30m``, ``1d12h``) into seconds; ``0`` disables.

    The grammar is the one of turso-server and the operator (``_durations``); the error names ``name``.
    """
    try:
        return duration_seconds(raw)
    except ValueError as exc:
        raise TursoConfigError(f"{name}: {exc}", code=f"INVALID_{name}") from None


_Choice = TypeVar("_Choice", bound=str)


def _choose(raw: str, choices: tuple[_Choice, ...], variable: str) -> _Choice:
    """One of ``choices`` (the first is the default for a blank value), spelled exactly as listed:
    the rule of the plugin settings table and of the chart's schema enums (``plugins._settings``)."""
    text = raw.strip() or choices[0]
    for choice in choices:
        if text == choice:
            return choice
    listed = " or ".join(f"'{choice}'" for choice in choices)
    raise TursoConfigError(f"{variable} must be {listed} (got {raw!r})", code=f"INVALID_{variable}")


def _bounded(seconds: float, raw: str, name: str, low: float, high: float | None) -> float:
    if seconds < low or (high is not None and seconds > high):
        span = f"between {low:g}s and {high:g}s" if high is not None else f"at least {low:g}s"
        raise TursoConfigError(f"{name} must be {span} (got {raw!r})", code=f"INVALID_{name}")
    return seconds


def normalize_url(raw: str, name: str, *, label: str | None = None) -> str:
    """A sync or server URL as it is sent: ``http(s)://host[:port][/path]``, no trailing ``/``.

    ``libsql://`` becomes ``https://`` (:data:`URL_SCHEMES`), in any case (``HTTP://`` is
    ``http://``); any other scheme, no scheme, no
    host, a bad port, userinfo (``user:pw@``: never sent, and it would leak into reports), a query
    or a fragment is a :class:`TursoConfigError` with code ``INVALID_<name>`` that names ``label``
    (where the value came from; ``name`` by default), never echoing the value, which may hold a
    password.
    """

    def refuse(why: str) -> TursoConfigError:
        return TursoConfigError(
            f"{label or name} must be an http://, https:// or libsql:// URL with a host: {why}",
            code=f"INVALID_{name}",
        )

    text = raw.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise refuse("it contains white space or control characters")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()  # RFC 3986: a scheme is case-insensitive; it is sent in lower case
    if not sep or scheme not in URL_SCHEMES:
        raise refuse(f"the scheme is {scheme!r}" if sep else "it has no scheme")
    parts = urllib.parse.urlsplit(text)
    if "@" in parts.netloc:
        raise refuse("it holds userinfo (user:password@); put the token in the token setting")
    if parts.query or parts.fragment or "?" in rest or "#" in rest:
        raise refuse("it has a query or fragment")
    if not parts.hostname:
        raise refuse("the host is missing")
    try:
        port = parts.port
    except ValueError:
        raise refuse("the port is not a number from 1 to 65535") from None
    if port == 0:
        raise refuse("the port is not a number from 1 to 65535")
    return f"{URL_SCHEMES[scheme]}://{parts.netloc}{parts.path}".rstrip("/")


def parse_write_mode(raw: str) -> WriteMode:
    """``serializable`` (default) or ``offline``."""
    return _choose(raw, WRITE_MODES, "TURSO_WRITE_MODE")


def parse_executor(raw: str) -> Executor:
    """``thread`` (default) or ``inline``."""
    return _choose(raw, EXECUTORS, "TURSO_EXECUTOR")


def resolve_config(
    config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> TursoConfig:
    """Resolve a :class:`TursoConfig`; raise :class:`TursoConfigError` on a bad combination."""
    config = config or {}
    env = os.environ if env is None else env

    local_path = (
        _env(env, "TURSO_LOCAL_PATH") or _substitute(config.get("localPath"), env) or DEFAULT_LOCAL_PATH
    )
    raw_interval = _env(env, "TURSO_SYNC_INTERVAL") or _substitute(config.get("syncInterval"), env)
    interval = parse_interval(raw_interval) if raw_interval else DEFAULT_SYNC_INTERVAL
    if interval:
        _bounded(interval, raw_interval, "TURSO_SYNC_INTERVAL", MIN_SYNC_INTERVAL, None)

    executor = parse_executor(_env(env, "TURSO_EXECUTOR") or _substitute(config.get("executor"), env))
    resolved = _resolve_topology(config, env, local_path=local_path, interval=interval)
    if executor == "inline" and resolved.mode != "local":
        raise TursoConfigError(
            "TURSO_EXECUTOR=inline applies to local mode only: a replica's push and pull are network "
            "calls that must not block the event loop (unset TURSO_EXECUTOR or use 'thread')",
            code="INVALID_TURSO_EXECUTOR",
        )
    write_mode = parse_write_mode(_env(env, "TURSO_WRITE_MODE") or _substitute(config.get("writeMode"), env))
    raw_ttl = _env(env, "TURSO_LEASE_TTL") or _substitute(config.get("leaseTtl"), env)
    lease_ttl = parse_interval(raw_ttl, name="TURSO_LEASE_TTL") if raw_ttl else DEFAULT_LEASE_TTL
    raw_timeout = _env(env, "TURSO_WRITE_TIMEOUT") or _substitute(config.get("writeTimeout"), env)
    write_timeout = (
        parse_interval(raw_timeout, name="TURSO_WRITE_TIMEOUT") if raw_timeout else DEFAULT_WRITE_TIMEOUT
    )
    _bounded(lease_ttl, raw_ttl, "TURSO_LEASE_TTL", *LEASE_TTL_BOUNDS)
    _bounded(write_timeout, raw_timeout, "TURSO_WRITE_TIMEOUT", MIN_WRITE_TIMEOUT, None)
    ignored: tuple[str, ...] = ()
    if resolved.mode == "local":
        tuning = (
            ("TURSO_SYNC_INTERVAL", raw_interval, interval != DEFAULT_SYNC_INTERVAL),
            ("TURSO_WRITE_MODE", write_mode, write_mode != WRITE_MODES[0]),
            ("TURSO_LEASE_TTL", raw_ttl, lease_ttl != DEFAULT_LEASE_TTL),
            ("TURSO_WRITE_TIMEOUT", raw_timeout, write_timeout != DEFAULT_WRITE_TIMEOUT),
        )
        ignored = tuple(f"{name}={raw}" for name, raw, changed in tuning if changed)
    return replace(
        resolved,
        executor=executor,
        write_mode=write_mode,
        lease_ttl=lease_ttl,
        write_timeout=write_timeout,
        ignored=ignored,
    )


#: Settings that only mean something with a sync server: ``TURSO_MODE=local`` beside one of them
#: is a contradiction, never a silent override. (variable, config section, config key)
SYNC_ONLY_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("TURSO_SERVER_URL", "server", "url"),
    ("TURSO_SERVER_TOKEN", "server", "authToken"),
    ("TURSO_SERVER_TOKEN_FILE", "server", "authTokenFile"),
    ("TURSO_NAMESPACE", "server", "namespace"),
    ("TURSO_SYNC_URL", "sync", "url"),
    ("TURSO_SYNC_AUTH_TOKEN", "sync", "authToken"),
    ("TURSO_SYNC_AUTH_TOKEN_FILE", "sync", "authTokenFile"),
)


def _token(
    env: Mapping[str, str], section: Mapping[str, Any], variable: str
) -> tuple[str | None, str | None]:
    """``(token, token file)`` of ``variable`` and ``<variable>_FILE`` (config ``authToken`` /
    ``authTokenFile``): at most one of them may be set (``TURSO_TOKEN_CONFLICT``), never guessed
    which wins. The file is not read here (this function reads only env and config)."""
    token = _env(env, variable) or _substitute(section.get("authToken"), env)
    path = _env(env, f"{variable}_FILE") or _substitute(section.get("authTokenFile"), env)
    if token and path:
        raise TursoConfigError(
            f"{variable} and {variable}_FILE are both set: give the token or the file that holds it, "
            f"not both (unset one of them)",
            code="TURSO_TOKEN_CONFLICT",
        )
    return token or None, path or None


def _refuse_local_with_sync_settings(config: Mapping[str, Any], env: Mapping[str, str], mode: str) -> None:
    if mode != "local":
        return
    given = [
        name
        for name, section, key in SYNC_ONLY_SETTINGS
        if _env(env, name) or _substitute(_section(config, section).get(key), env)
    ]
    if given:
        also = f" (and {', '.join(given[1:])})" if given[1:] else ""
        raise TursoConfigError(
            f"TURSO_MODE=local contradicts {given[0]}{also}: local mode never syncs, so it would be "
            f"ignored; unset TURSO_MODE (a URL alone selects sync) or unset {', '.join(given)}",
            code="TURSO_MODE_CONFLICT",
        )


def _resolve_topology(
    config: Mapping[str, Any], env: Mapping[str, str], *, local_path: str, interval: float
) -> TursoConfig:
    """Pick local, single-tenant or multi-tenant from the URLs and ``TURSO_MODE``."""
    sync_cfg, server_cfg = _section(config, "sync"), _section(config, "server")
    mode = _env(env, "TURSO_MODE") or _substitute(config.get("mode"), env)
    if mode not in ("", "local", "sync"):
        raise TursoConfigError(
            f"Unsupported Turso mode {mode!r}: use 'local' or 'sync' (TURSO_MODE)",
            code="INVALID_TURSO_MODE",
        )
    _refuse_local_with_sync_settings(config, env, mode)
    server_url = _env(env, "TURSO_SERVER_URL") or _substitute(server_cfg.get("url"), env)
    if server_url:
        server_url = normalize_url(server_url, "TURSO_SERVER_URL")
        token, token_file = _token(env, server_cfg, "TURSO_SERVER_TOKEN")
        pinned = _env(env, "TURSO_NAMESPACE") or _substitute(server_cfg.get("namespace"), env)
        if pinned:
            # A pod given one database by the operator (its token is scoped to it): every
            # namespace of this process lives in that one database, like single-tenant sync.
            try:
                validate_namespace(pinned)
            except InvalidNamespaceError as exc:
                raise TursoConfigError(f"TURSO_NAMESPACE: {exc}", code="INVALID_TURSO_NAMESPACE") from exc
            return TursoConfig(
                mode="sync",
                local_path=local_path,
                sync_url=f"{server_url}/{pinned}",
                auth_token=token,
                auth_token_file=token_file,
                sync_interval=interval,
            )
        return TursoConfig(
            mode="sync",
            local_path=local_path,
            server_url=server_url,
            auth_token=token,
            auth_token_file=token_file,
            sync_interval=interval,
        )

    sync_url = _env(env, "TURSO_SYNC_URL") or _substitute(sync_cfg.get("url"), env)
    if not sync_url and mode != "sync":
        return TursoConfig(mode="local", local_path=local_path, sync_interval=interval)
    if not sync_url:
        raise TursoConfigError(
            "Turso sync mode requires a URL: set TURSO_SYNC_URL (single-tenant) or "
            "TURSO_SERVER_URL (multi-tenant), or sync.url in the plugin config",
            code="TURSO_SYNC_URL_REQUIRED",
        )
    token, token_file = _token(env, sync_cfg, "TURSO_SYNC_AUTH_TOKEN")
    return TursoConfig(
        mode="sync",
        local_path=local_path,
        sync_url=normalize_url(sync_url, "TURSO_SYNC_URL"),
        auth_token=token,
        auth_token_file=token_file,
        sync_interval=interval,
    )
