"""``buntime serve`` as a real process: the listening line, SIGTERM, and startup errors."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.server.support import BUNTIME_BIN, RuntimeProcess, http, local_env


def test_serve_prints_its_url_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    runtime = RuntimeProcess(local_env(tmp_path), tmp_path / "serve.log").start(probe="live")
    try:
        status, body = http("GET", f"{runtime.url}/api/health/live")
        assert (status, body) == (200, {"status": "ok"})
    finally:
        code = runtime.stop()
    log = runtime.log()
    assert code == 0, log
    assert f"buntime serve listening on http://127.0.0.1:{runtime.port}" in log
    assert "loop=uvloop" in log  # the default, installed with the server extra
    assert log.index("signal received") < log.index("plugins stopped") < log.index("server stopped")


def test_serve_runs_on_asyncios_loop_when_told_to(tmp_path: Path) -> None:
    env = {**local_env(tmp_path), "BUNTIME_EVENT_LOOP": "asyncio"}
    runtime = RuntimeProcess(env, tmp_path / "asyncio.log").start()
    try:
        assert http("PUT", f"{runtime.url}/keyval/api/keys/a", {"n": 1})[0] == 200
        assert http("GET", f"{runtime.url}/keyval/api/keys/a")[1]["value"] == {"n": 1}
    finally:
        assert runtime.stop() == 0
    assert "loop=asyncio" in runtime.log()


def test_serve_state_survives_a_restart_and_migrations_run_twice(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    runtime = RuntimeProcess(env, tmp_path / "first.log").start(probe="live")
    try:
        status, _ = http("POST", f"{runtime.url}/gateway/admin/shell/excludes", {"basename": "kept"})
        assert status == 200
    finally:
        assert runtime.stop() == 0
    again = RuntimeProcess(env, tmp_path / "second.log").start(probe="live")
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


def test_a_bad_turso_setting_keeps_the_process_up_but_not_ready(tmp_path: Path) -> None:
    # Plugin failures do not kill the server: probes answer, readiness says which plugin failed and
    # the log says why (no traceback).
    runtime = RuntimeProcess({**local_env(tmp_path), "TURSO_MODE": "sideways"}, tmp_path / "bad.log")
    runtime.start(probe="live")
    try:
        status, body = http("GET", f"{runtime.url}/api/health/ready")
    finally:
        assert runtime.stop() == 0
    assert status == 503
    assert (
        body["failed"] == ["@buntime/plugin-turso"]
        and "plugin @buntime/plugin-turso failed" in body["reasons"]
    )
    # The settings table refuses it before the plugin opens anything, naming the variable.
    assert "TURSO_MODE must be one of local, sync (got 'sideways')" in runtime.log()
    assert "Traceback" not in runtime.log()


def test_local_mode_beside_a_sync_url_refuses_to_start_the_turso_plugin(tmp_path: Path) -> None:
    # It used to run on a pod-local file and drop the URL; now nothing opens, the log says why
    # in one line naming both variables, and the host does not retry a configuration.
    env = {**local_env(tmp_path), "TURSO_MODE": "local", "TURSO_SYNC_URL": "http://127.0.0.1:9"}
    runtime = RuntimeProcess(env, tmp_path / "conflict.log").start(probe="live")
    try:
        status, body = http("GET", f"{runtime.url}/api/health/ready")
    finally:
        assert runtime.stop() == 0
    assert status == 503 and body["failed"] == ["@buntime/plugin-turso"]
    log = runtime.log()
    why = log.split("plugin @buntime/plugin-turso failed to start: ", 1)[1]
    assert why.startswith("TURSO_MODE=local contradicts TURSO_SYNC_URL") and "\n" not in why.split('"')[0]
    assert "Traceback" not in log and "will retry" not in log
    assert not (tmp_path / "data" / "runtime.db").exists()  # no local file was opened instead


def test_a_port_in_use_exits_1_after_stopping_plugins(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _serve(local_env(tmp_path), "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "plugins stopped" in result.stderr  # the turso plugin still closed its database


def test_a_keyval_started_late_ends_its_open_watch_stream_at_once_on_sigterm(tmp_path: Path) -> None:
    """The turso plugin fails at boot (its file's directory is blocked by a file), so keyval is
    skipped and started later by recovery; SIGTERM with a watch stream open must not wait for the
    15 s drain (the stream ends first, as on a pod that started normally)."""
    blocker = tmp_path / "blocked"
    blocker.write_text("not a directory")
    env = {"TURSO_LOCAL_PATH": str(blocker / "runtime.db")}
    runtime = RuntimeProcess(env, tmp_path / "late.log").start(probe="live")
    try:
        status, body = http("GET", f"{runtime.url}/api/health/ready")
        assert status == 503 and "@buntime/plugin-keyval" in body["retrying"], body
        blocker.unlink()
        runtime.wait_for("ready", 30)
        assert "plugin @buntime/plugin-keyval recovered" in runtime.log()
        stream = urllib.request.urlopen(f"{runtime.url}/keyval/api/watch?keys=a&initial=true", timeout=30)
        try:
            while not stream.readline().startswith(b"event: change"):
                pass  # the initial entry arrived: the stream is open and served
            started = time.monotonic()
            code = runtime.stop(timeout=30)
            elapsed = time.monotonic() - started
            stream.read()  # the stream ended with its last chunk: not cut off (IncompleteRead)
        finally:
            stream.close()
    finally:
        runtime.stop()
    assert code == 0, runtime.log()
    assert elapsed < 8, f"shutdown took {elapsed:.1f}s:\n{runtime.log()}"


def test_a_broken_plugin_manifest_keeps_the_process_up_but_not_ready(tmp_path: Path) -> None:
    # One bad external manifest must not crash-loop the runtime: the built-ins serve, readiness
    # fails and names the plugin.
    broken = tmp_path / "plugins" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.yaml").write_text("name: broken\nentry: m:c\nbase: 3\n")
    env = {**local_env(tmp_path), "BUNTIME_PLUGIN_DIRS": str(tmp_path / "plugins")}
    runtime = RuntimeProcess(env, tmp_path / "broken.log").start(probe="live")
    try:
        status, body = http("GET", f"{runtime.url}/api/health/ready")
        assert http("PUT", f"{runtime.url}/keyval/api/keys/a", {"n": 1})[0] == 200
    finally:
        assert runtime.stop() == 0
    assert status == 503
    # The unauthenticated body names the plugin's directory and "failed"; the log has the file and why.
    assert body["failed"] == ["broken"] and body["reasons"] == ["plugin broken failed"]
    log_text = (tmp_path / "broken.log").read_text()
    assert str(broken / "manifest.yaml") in log_text and "'base' must be" in log_text
