"""``load_server_config``: defaults, env, flags that win, and clear errors for bad values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from buntime.plugins import BUILTIN_DIR
from buntime.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServerConfigError,
    load_server_config,
    loop_factory,
)


def test_defaults_listen_on_all_interfaces_port_8000_with_builtin_plugins() -> None:
    config = load_server_config({})
    assert (config.host, config.port) == (DEFAULT_HOST, DEFAULT_PORT) == ("0.0.0.0", 8000)
    assert config.plugin_dirs == (BUILTIN_DIR,)
    assert config.event_loop == "uvloop"


def test_env_sets_host_port_and_plugin_dirs(tmp_path: Path) -> None:
    extra = tmp_path / "more"
    extra.mkdir()
    config = load_server_config(
        {"BUNTIME_HOST": "127.0.0.1", "BUNTIME_PORT": "9123", "BUNTIME_PLUGIN_DIRS": str(extra)}
    )
    assert (config.host, config.port, config.plugin_dirs) == ("127.0.0.1", 9123, (BUILTIN_DIR, extra))


def test_flags_win_over_env() -> None:
    config = load_server_config({"BUNTIME_HOST": "127.0.0.1", "BUNTIME_PORT": "9123"}, host="::1", port=0)
    assert (config.host, config.port) == ("::1", 0)


@pytest.mark.parametrize(
    "port", ["http", "-1", "65536", "80.5", "8_000", "+80", "\u0668\u0660\u0660\u0660", "0x50"]
)
def test_a_bad_port_names_the_variable(port: str) -> None:
    with pytest.raises(ServerConfigError, match="BUNTIME_PORT"):
        load_server_config({"BUNTIME_PORT": port})


def test_a_bad_flag_port_names_the_flag() -> None:
    with pytest.raises(ServerConfigError, match="--port"):
        load_server_config({}, port=70000)


def test_a_bad_host_is_refused() -> None:
    with pytest.raises(ServerConfigError, match="BUNTIME_HOST"):
        load_server_config({"BUNTIME_HOST": "http://x"})


def test_a_missing_plugin_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match=r"BUNTIME_PLUGIN_DIRS.*nope"):
        load_server_config({"BUNTIME_PLUGIN_DIRS": str(tmp_path / "nope")})


def test_the_event_loop_is_uvloop_or_asyncio() -> None:
    assert load_server_config({"BUNTIME_EVENT_LOOP": " AsyncIO "}).event_loop == "asyncio"
    with pytest.raises(ServerConfigError, match="BUNTIME_EVENT_LOOP must be one of uvloop, asyncio"):
        load_server_config({"BUNTIME_EVENT_LOOP": "trio"})


def test_uvloop_runs_when_installed_and_asyncios_loop_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None  # asyncio.Runner's default loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: import fails
    assert loop_factory("uvloop") is None
