"""The three command lines: ``buntime``, ``turso-server`` and ``buntime-operator``.

Feeds in: bad flags and bad settings, and ``--help``. Checks: a bad input exits with status 2 and
exactly one line on stderr (no traceback), and each ``--help`` is generated from its part's
settings table (every variable listed, no reStructuredText markup). Leaves unmocked: the installed
console scripts, run as subprocesses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from buntime._settings import SETTINGS as RUNTIME_SETTINGS
from buntime.plugins import BUILTIN_DIR, discover
from tests.turso_server.support import TURSODB
from turso_operator._config import SETTINGS as OPERATOR_SETTINGS
from turso_server import SETTINGS as SERVER_SETTINGS

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
OPERATOR_ENV = {"TURSO_SERVER_URL": "http://t:8080", "TURSO_SERVER_ADMIN_URL": "http://t:8081"}


def _run(program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(BIN / program), *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def _server_env(tmp_path: Path) -> dict[str, str]:
    return {"TURSO_DATA_DIR": str(tmp_path), "TURSODB_BIN": str(TURSODB), "TURSO_INSECURE_DEV": "true"}


BAD_INPUTS = [
    ("buntime", ["--log-level", "bogus", "serve"], {}, "--log-level"),
    ("buntime", ["--log-format", "xml", "serve"], {}, "--log-format"),
    ("buntime", ["serve"], {"BUNTIME_LOG_LEVEL": "loud"}, "BUNTIME_LOG_LEVEL"),
    ("buntime", ["serve", "--port", "eighty"], {}, "--port"),
    ("buntime", ["serve", "--nope"], {}, "--nope"),
    ("buntime", [], {}, "COMMAND"),
    ("buntime", ["turso", "health"], {"TURSO_SYNC_INTERVAL": "1y"}, "TURSO_SYNC_INTERVAL"),
    (
        "buntime",
        ["turso", "health"],
        {"TURSO_MODE": "local", "TURSO_SYNC_URL": "http://127.0.0.1:9"},
        "TURSO_MODE=local contradicts TURSO_SYNC_URL",
    ),
    ("buntime-operator", ["--log-level", "bogus"], OPERATOR_ENV, "--log-level"),
    ("buntime-operator", [], {**OPERATOR_ENV, "TURSO_LOG_FORMAT": "xml"}, "TURSO_LOG_FORMAT"),
    ("buntime-operator", [], {}, "TURSO_SERVER_URL"),
    ("buntime-operator", [], {**OPERATOR_ENV, "TURSO_RESYNC_SECONDS": "soon"}, "TURSO_RESYNC_SECONDS"),
    ("buntime-operator", ["--nope"], OPERATOR_ENV, "--nope"),
    ("turso-server", ["--log-level", "bogus"], "server", "TURSO_LOG_LEVEL"),
    ("turso-server", ["--log-format", "xml"], "server", "TURSO_LOG_FORMAT"),
    ("turso-server", ["--nope"], "server", "--nope"),
]


@pytest.mark.parametrize(
    ("program", "args", "env", "named"), BAD_INPUTS, ids=[f"{p}-{n}" for p, _, _, n in BAD_INPUTS]
)
def test_bad_input_is_one_line_and_status_2(
    tmp_path: Path, program: str, args: list[str], env: dict[str, str] | str, named: str
) -> None:
    result = _run(program, *args, env=_server_env(tmp_path) if env == "server" else env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0] and lines[0].startswith(program), lines[0]


def _unusable(tmp_path: Path) -> list[tuple[list[str], dict[str, str]]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return [
        # a fresh replica whose server is unreachable (nothing listens on port 1)
        (
            ["turso", "health"],
            {"TURSO_SYNC_URL": "http://127.0.0.1:1/db", "TURSO_LOCAL_PATH": str(tmp_path / "r.db")},
        ),
        # a local path under a file: its directory cannot be created
        (["turso", "health"], {"TURSO_LOCAL_PATH": str(blocker / "x.db")}),
        (["turso", "sql", "runtime", "SELECT 1"], {"TURSO_LOCAL_PATH": str(blocker / "x.db")}),
    ]


@pytest.mark.parametrize(
    "case", range(3), ids=["unreachable-replica", "health-path-under-file", "sql-path-under-file"]
)
def test_a_database_that_cannot_be_opened_is_down_status_1_and_one_line(tmp_path: Path, case: int) -> None:
    """README: ``turso health`` exits 1 when down (2 is a bad setting), never with a traceback."""
    args, env = _unusable(tmp_path)[case]
    result = _run("buntime", *args, env=env)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("buntime: error [TURSO_UNAVAILABLE]"), result.stderr


def test_a_local_file_is_ok_status_0(tmp_path: Path) -> None:
    result = _run("buntime", "turso", "health", env={"TURSO_LOCAL_PATH": str(tmp_path / "ok.db")})
    assert result.returncode == 0, result.stderr
    assert '"status": "ok"' in result.stdout


def test_buntime_help_lists_every_setting_without_markup() -> None:
    result = _run("buntime", "--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and ":class:" not in result.stdout
    plugin_envs = [field.env for m in discover([BUILTIN_DIR]) for field in m.settings]
    for name in [s.env for s in RUNTIME_SETTINGS] + plugin_envs:
        assert name in result.stdout, name
    for sub in ("serve", "turso", "demo"):
        assert _run("buntime", sub, "--help").returncode == 0


def test_operator_help_lists_every_setting() -> None:
    result = _run("buntime-operator", "--help")
    assert result.returncode == 0
    for setting in OPERATOR_SETTINGS:
        assert setting.env in result.stdout, setting.env
    assert "[required]" in result.stdout


def test_turso_server_help_lists_every_setting() -> None:
    result = _run("turso-server", "--help")
    assert result.returncode == 0
    for setting in SERVER_SETTINGS:
        assert setting.env in result.stdout and setting.flag in result.stdout, setting.env


def test_every_variable_the_runtime_reads_is_in_its_settings_table() -> None:
    # Any quoted upper-case name the code hands to an environment read: env.get("X"), _env(env, "X"),
    # os.environ["X"], ENV_X = "X", getenv("X"); the worker's RUNTIME_TURSO_* included.
    read = re.compile(
        r"""(?:_env\(env, |env\.get\(|environ\.get\(|environ\[|getenv\(|ENV_[A-Z_]+ = )"""
        r""""((?:BUNTIME|TURSO|RUNTIME_TURSO)_[A-Z_]+)\""""
    )
    sources = sorted((ROOT / "runtime" / "buntime").rglob("*.py"))  # every module, not a chosen few
    names = {m for path in sources for m in read.findall(path.read_text())}
    assert names, "the pattern no longer finds the reads"
    worker = {"RUNTIME_TURSO_SERVER_URL", "RUNTIME_TURSO_SERVER_TOKEN", "RUNTIME_TURSO_SERVER_TOKEN_FILE"}
    assert worker | {"RUNTIME_TURSO_DIR"} <= names, names
    assert names <= {s.env for s in RUNTIME_SETTINGS}, names - {s.env for s in RUNTIME_SETTINGS}


def test_every_variable_the_operator_reads_is_in_its_settings_table() -> None:
    read = re.compile(r"""(?:get|number|port)\("([A-Z_]+)"\)""")
    names = set(read.findall((ROOT / "operator" / "turso_operator" / "_config.py").read_text()))
    assert names and names <= {s.env for s in OPERATOR_SETTINGS}
