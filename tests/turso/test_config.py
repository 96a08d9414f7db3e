"""Config resolution: the precedence table of the README, exactly."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import (
    DEFAULT_LOCAL_PATH,
    TursoConfigError,
    TursoService,
    TursoUnavailableError,
    parse_interval,
    resolve_config,
)


def test_defaults_to_local_mode_at_the_default_path() -> None:
    cfg = resolve_config(env={})
    assert (cfg.mode, cfg.topology, cfg.local_path) == ("local", "local", DEFAULT_LOCAL_PATH)
    assert cfg.sync_url is None and cfg.server_url is None


def test_server_url_selects_multi_tenant_and_wins_over_everything() -> None:
    cfg = resolve_config(
        {"sync": {"url": "http://cfg-sync"}},
        env={
            "TURSO_SERVER_URL": "http://turso:8080/",
            "TURSO_SERVER_TOKEN": "tok",
            "TURSO_SYNC_URL": "http://other",
        },
    )
    assert cfg.topology == "multi-tenant" and cfg.mode == "sync"
    assert cfg.server_url == "http://turso:8080"  # trailing slash stripped
    assert cfg.sync_url is None
    assert cfg.auth_token == "tok"


def test_sync_url_alone_is_enough_for_single_tenant() -> None:
    cfg = resolve_config(env={"TURSO_SYNC_URL": "http://sync:8080//", "TURSO_SYNC_AUTH_TOKEN": "s3"})
    assert (cfg.mode, cfg.topology, cfg.sync_url, cfg.auth_token) == (
        "sync",
        "single-tenant",
        "http://sync:8080",
        "s3",
    )


@pytest.mark.parametrize(
    ("config", "env", "named"),
    [
        ({}, {"TURSO_MODE": "local", "TURSO_SYNC_URL": "http://sync"}, "TURSO_SYNC_URL"),
        ({}, {"TURSO_MODE": "local", "TURSO_SYNC_AUTH_TOKEN": "t"}, "TURSO_SYNC_AUTH_TOKEN"),
        ({}, {"TURSO_MODE": "local", "TURSO_SERVER_URL": "http://turso:8080"}, "TURSO_SERVER_URL"),
        ({}, {"TURSO_MODE": "local", "TURSO_SERVER_TOKEN": "t"}, "TURSO_SERVER_TOKEN"),
        ({}, {"TURSO_MODE": "local", "TURSO_NAMESPACE": "orders"}, "TURSO_NAMESPACE"),
        ({"mode": "local"}, {"TURSO_SYNC_URL": "http://sync"}, "TURSO_SYNC_URL"),
        ({"sync": {"url": "${URL}"}}, {"TURSO_MODE": "local", "URL": "http://sync"}, "TURSO_SYNC_URL"),
    ],
)
def test_local_mode_beside_a_sync_only_setting_refuses_to_start(
    config: dict[str, Any], env: dict[str, str], named: str
) -> None:
    # It used to drop the URL silently and run on a pod-local file.
    with pytest.raises(TursoConfigError) as info:
        resolve_config(config, env=env)
    message = str(info.value)
    assert info.value.code == "TURSO_MODE_CONFLICT"
    assert message.startswith(f"TURSO_MODE=local contradicts {named}") and "\n" not in message


def test_the_conflict_names_every_sync_only_setting_given() -> None:
    with pytest.raises(TursoConfigError, match=r"contradicts TURSO_SYNC_URL \(and TURSO_SYNC_AUTH_TOKEN\)"):
        resolve_config(
            env={"TURSO_MODE": "local", "TURSO_SYNC_URL": "http://s", "TURSO_SYNC_AUTH_TOKEN": "t"}
        )


def test_local_mode_alone_and_blank_sync_settings_are_fine() -> None:
    cfg = resolve_config(env={"TURSO_MODE": "local", "TURSO_SYNC_URL": "  ", "TURSO_SERVER_URL": ""})
    assert cfg.topology == "local"


def test_sync_tuning_in_local_mode_is_accepted_and_warned_about_once_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``TURSO_WRITE_MODE=offline`` (or another sync tuning value) without a sync URL does nothing:
    one warning line names each such setting and its value when the service starts. Values equal
    to the default, which the chart renders in every mode, change nothing and are not named."""
    env = {
        "TURSO_WRITE_MODE": "offline",
        "TURSO_SYNC_INTERVAL": "1s",
        "TURSO_LEASE_TTL": "5s",  # the default
        "TURSO_WRITE_TIMEOUT": "2s",
    }
    for config, given in (
        ({}, env),
        ({"writeMode": "offline", "syncInterval": "1s", "writeTimeout": "2s"}, {}),
    ):
        cfg = resolve_config(config, env=given)
        assert cfg.mode == "local"
        assert cfg.ignored == ("TURSO_SYNC_INTERVAL=1s", "TURSO_WRITE_MODE=offline", "TURSO_WRITE_TIMEOUT=2s")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="buntime.turso"):
            TursoService(cfg)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "ignored in local mode" in warnings[0]
        assert "TURSO_WRITE_MODE=offline" in warnings[0] and "TURSO_LEASE_TTL" not in warnings[0]
    chart_defaults = {
        "TURSO_SYNC_INTERVAL": "5s",
        "TURSO_WRITE_MODE": "serializable",
        "TURSO_LEASE_TTL": "5s",
        "TURSO_WRITE_TIMEOUT": "10s",
        "TURSO_EXECUTOR": "thread",
    }
    for defaults in (chart_defaults, {"TURSO_MODE": "local", **chart_defaults}, {}):
        assert resolve_config(env=defaults).ignored == ()
    sync = resolve_config(env={"TURSO_SYNC_URL": "http://sync:8080/db", **env})
    assert sync.ignored == () and sync.write_mode == "offline"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="buntime.turso"):
        TursoService(resolve_config(env=chart_defaults))
    assert not caplog.records


def test_sync_mode_without_url_is_a_clear_error() -> None:
    with pytest.raises(TursoConfigError) as info:
        resolve_config(env={"TURSO_MODE": "sync"})
    assert info.value.code == "TURSO_SYNC_URL_REQUIRED"
    assert "TURSO_SYNC_URL" in str(info.value)


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(TursoConfigError) as info:
        resolve_config({"mode": "remote"}, env={})
    assert info.value.code == "INVALID_TURSO_MODE" and "remote" in str(info.value)


def test_env_beats_config_and_config_is_substituted() -> None:
    env = {"DB_DIR": "/srv/db", "HOST": "turso.svc", "TOK": "t0k"}
    cfg = resolve_config(
        {"localPath": "${DB_DIR}/rt.db", "server": {"url": "http://${HOST}:8080", "authToken": "${TOK}"}},
        env=env,
    )
    assert cfg.local_path == "/srv/db/rt.db"
    assert cfg.server_url == "http://turso.svc:8080" and cfg.auth_token == "t0k"
    cfg = resolve_config({"localPath": "${DB_DIR}/rt.db"}, env={**env, "TURSO_LOCAL_PATH": " /env.db "})
    assert cfg.local_path == "/env.db"


def test_a_config_value_that_substitutes_to_blank_counts_as_unset() -> None:
    """Upstream kept the "" an unset ``${VAR}`` gives (a localPath of "" opened a database at
    an empty path): here a blank result falls through to the default like a missing value."""
    for blank in ("${NOT_SET_ANYWHERE}", "  ", ""):
        cfg = resolve_config({"localPath": blank, "mode": blank}, env={})
        assert cfg.local_path == "./data/turso/runtime.db" and cfg.mode == "local", blank
        cfg = resolve_config({"server": {"url": blank}, "sync": {"url": blank}}, env={})
        assert cfg.server_url is None and cfg.sync_url is None and cfg.mode == "local", blank


def test_blank_env_values_do_not_count() -> None:
    cfg = resolve_config({"mode": "sync", "sync": {"url": "http://cfg"}}, env={"TURSO_MODE": "  "})
    assert cfg.sync_url == "http://cfg"


def test_tokens_never_appear_in_repr() -> None:
    cfg = resolve_config(env={"TURSO_SERVER_URL": "http://x", "TURSO_SERVER_TOKEN": "very-secret"})
    assert "very-secret" not in repr(cfg)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("5", 5.0), ("2.5s", 2.5), ("500ms", 0.5), ("1m", 60.0), ("0", 0.0)]
)
def test_sync_interval_durations(raw: str, seconds: float) -> None:
    assert parse_interval(raw) == seconds
    assert resolve_config(env={"TURSO_SYNC_INTERVAL": raw}).sync_interval == seconds


def test_bad_sync_interval_names_the_variable() -> None:
    with pytest.raises(TursoConfigError, match="TURSO_SYNC_INTERVAL"):
        resolve_config(env={"TURSO_SYNC_INTERVAL": "soon"})


def test_a_pinned_namespace_keeps_every_namespace_in_one_database() -> None:
    cfg = resolve_config(
        env={
            "TURSO_SERVER_URL": "http://turso:8080/",
            "TURSO_SERVER_TOKEN": "scoped",
            "TURSO_NAMESPACE": "orders",
        }
    )
    assert (cfg.topology, cfg.sync_url, cfg.auth_token) == (
        "single-tenant",
        "http://turso:8080/orders",
        "scoped",
    )
    with pytest.raises(TursoConfigError, match="TURSO_NAMESPACE"):
        resolve_config(env={"TURSO_SERVER_URL": "http://turso:8080", "TURSO_NAMESPACE": "../etc"})


def test_executor_defaults_to_thread_and_inline_is_local_only() -> None:
    assert resolve_config(env={}).executor == "thread"
    assert resolve_config(env={"TURSO_EXECUTOR": " inline "}).executor == "inline"
    assert resolve_config({"executor": "${EXEC}"}, env={"EXEC": "inline"}).executor == "inline"
    with pytest.raises(TursoConfigError, match="'thread' or 'inline'") as bad:
        resolve_config(env={"TURSO_EXECUTOR": "process"})
    assert bad.value.code == "INVALID_TURSO_EXECUTOR"
    for url in ({"TURSO_SYNC_URL": "http://sync"}, {"TURSO_SERVER_URL": "http://turso:8080"}):
        with pytest.raises(TursoConfigError, match="local mode only") as sync:
            resolve_config(env={**url, "TURSO_EXECUTOR": "inline"})
        assert sync.value.code == "INVALID_TURSO_EXECUTOR"


@pytest.mark.parametrize(
    ("variable", "url", "sent"),
    [
        ("TURSO_SYNC_URL", "libsql://db.example.com", "https://db.example.com"),
        ("TURSO_SYNC_URL", "https://db.example.com:8443/ns/", "https://db.example.com:8443/ns"),
        ("TURSO_SERVER_URL", "http://turso-server:8080/", "http://turso-server:8080"),
        ("TURSO_SERVER_URL", "libsql://turso-server:8080", "https://turso-server:8080"),
        ("TURSO_SYNC_URL", "HTTP://db.example.com", "http://db.example.com"),
        ("TURSO_SERVER_URL", "LibSQL://turso-server:8080", "https://turso-server:8080"),
    ],
)
def test_a_sync_or_server_url_is_normalised_to_the_scheme_it_is_sent_over(
    variable: str, url: str, sent: str
) -> None:
    config = resolve_config(env={variable: url})
    assert (config.server_url if variable == "TURSO_SERVER_URL" else config.sync_url) == sent


@pytest.mark.parametrize("variable", ["TURSO_SYNC_URL", "TURSO_SERVER_URL"])
@pytest.mark.parametrize(
    "url",
    [
        "turso-server:8080",  # no scheme: it used to send the token to localhost:80
        "db.example.com",
        "ftp://db.example.com",
        "turso://db.example.com",
        "http://",
        "http://h:99999",
        "http://h:0",
        "http://user:s3cr3t@h:8080",
        "http://h:8080/?token=x",
        "http://h:8080/ns#x",
        "http://h :8080",
    ],
)
def test_a_sync_or_server_url_that_is_not_http_or_https_with_a_host_is_refused_at_config_time(
    variable: str, url: str
) -> None:
    with pytest.raises(TursoConfigError) as info:
        resolve_config(env={variable: url})
    assert info.value.code == f"INVALID_{variable}"
    assert variable in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TURSO_SYNC_INTERVAL", "1ms"),
        ("TURSO_SYNC_INTERVAL", "99ms"),
        ("TURSO_WRITE_TIMEOUT", "0"),
        ("TURSO_WRITE_TIMEOUT", "50ms"),
        ("TURSO_LEASE_TTL", "10ms"),
        ("TURSO_LEASE_TTL", "61s"),
    ],
)
def test_a_duration_setting_out_of_its_bounds_is_refused(variable: str, value: str) -> None:
    with pytest.raises(TursoConfigError, match=variable) as info:
        resolve_config(env={variable: value})
    assert info.value.code == f"INVALID_{variable}"


@pytest.mark.parametrize(
    ("url", "variable"),
    [("TURSO_SERVER_URL", "TURSO_SERVER_TOKEN"), ("TURSO_SYNC_URL", "TURSO_SYNC_AUTH_TOKEN")],
)
def test_a_token_file_is_kept_as_a_path_and_never_beside_the_token(url: str, variable: str) -> None:
    base = {url: "http://server:8080"}
    cfg = resolve_config(env={**base, f"{variable}_FILE": "/var/run/secrets/turso/token"})
    assert (cfg.auth_token, cfg.auth_token_file) == (None, "/var/run/secrets/turso/token")
    with pytest.raises(TursoConfigError) as info:
        resolve_config(env={**base, variable: "secret-value", f"{variable}_FILE": "/run/token"})
    assert info.value.code == "TURSO_TOKEN_CONFLICT"
    assert variable in str(info.value) and f"{variable}_FILE" in str(info.value)
    assert "secret-value" not in str(info.value)
    section = "server" if url == "TURSO_SERVER_URL" else "sync"
    with pytest.raises(TursoConfigError) as info:  # the config's authToken counts as the token too
        resolve_config(
            {section: {"authToken": "secret-value"}}, env={**base, f"{variable}_FILE": "/run/token"}
        )
    assert info.value.code == "TURSO_TOKEN_CONFLICT"
    assert (
        resolve_config(env={**base, variable: "x", f"{variable}_FILE": " "}).auth_token == "x"
    )  # blank: unset


def test_local_mode_beside_a_token_file_refuses_to_start() -> None:
    with pytest.raises(TursoConfigError) as info:
        resolve_config(env={"TURSO_MODE": "local", "TURSO_SERVER_TOKEN_FILE": "/run/token"})
    assert info.value.code == "TURSO_MODE_CONFLICT" and "TURSO_SERVER_TOKEN_FILE" in str(info.value)


def test_the_token_source_rereads_a_replaced_file_and_keeps_the_last_token_while_it_is_missing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = resolve_config(
        env={"TURSO_SERVER_URL": "http://s", "TURSO_SERVER_TOKEN_FILE": str(path)}
    ).token_source()
    assert source() == "first" and "first" not in repr(source)
    (tmp_path / "new").write_text("second")
    os.replace(tmp_path / "new", path)  # same size class, new inode
    assert source() == "second"
    path.unlink()
    assert source() == "second"  # a swap in progress: the last token, not none
    with pytest.raises(TursoUnavailableError) as info:
        resolve_config(
            env={"TURSO_SERVER_URL": "http://s", "TURSO_SERVER_TOKEN_FILE": str(tmp_path / "missing")}
        ).token_source()()
    assert info.value.code == "TURSO_TOKEN_FILE_UNREADABLE"
