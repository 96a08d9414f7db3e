"""``buntime serve`` as a real process: the listening line, SIGTERM, and startup errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.server.support import BUNTIME_BIN, RuntimeProcess, http, local_env


def test_serve_prints_its_url_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    runtime = RuntimeProcess(local_env(tmp_path), tmp_path / "serve.log").start()
    try:
        status, body = http("GET", f"{runtime.url}/api/health/live")
        assert (status, body) == (200, {"status": "ok"})
    finally:
        code = runtime.stop()
    log = runtime.log()
    assert code == 0, log
    assert f"buntime serve listening on http://127.0.0.1:{runtime.port}" in log
    assert log.index("signal received") < log.index("plugins stopped") < log.index("server stopped")


def test_serve_state_survives_a_restart_and_migrations_run_twice(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    runtime = RuntimeProcess(env, tmp_path / "first.log").start()
    try:
        status, _ = http("POST", f"{runtime.url}/gateway/admin/shell/excludes", {"basename": "kept"})
        assert status == 201
    finally:
        assert runtime.stop() == 0
    again = RuntimeProcess(env, tmp_path / "second.log").start()
    try:
        status, body = http("GET", f"{again.url}/gateway/admin/shell/excludes")
        assert status == 200
        assert "kept" in [item["basename"] for item in body]
    finally:
        assert again.stop() == 0


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUNTIME_BIN), "serve", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_bad_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    result = _serve({**local_env(tmp_path), "BUNTIME_PORT": "eighty"})
    assert result.returncode == 2
    assert "BUNTIME_PORT must be a port number" in result.stderr


def test_a_missing_plugin_dir_is_a_clear_startup_error(tmp_path: Path) -> None:
    result = _serve({**local_env(tmp_path), "BUNTIME_PLUGIN_DIRS": str(tmp_path / "missing")})
    assert result.returncode == 2
    assert "BUNTIME_PLUGIN_DIRS: not a directory" in result.stderr


def test_a_bad_turso_setting_fails_startup_cleanly(tmp_path: Path) -> None:
    # An invalid manifest option or env is reported, never a traceback.
    result = _serve({**local_env(tmp_path), "TURSO_MODE": "sideways", "BUNTIME_PORT": "0"}, "--host", "127.0.0.1")
    assert "Traceback" not in result.stderr
