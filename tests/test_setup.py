"""The set-up the README promises: ``make run``/``make demo`` need only the venv, and
``hack/install-tools.sh`` off x86_64 installs what it can and says what it skipped.

Feeds in: the real Makefile (``make -n``), a real ``buntime serve`` and ``buntime demo`` started
with a PATH that holds no tursodb, helm or kubectl, and the real install script under a ``uname``
that says ``aarch64`` (with ``TURSODB_BIN`` pointing at the pinned tursodb, so nothing is fetched).
Leaves unmocked: make, bash, the runtime, the install script.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.server.support import RuntimeProcess, http

ROOT = Path(__file__).resolve().parents[1]
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"  # no .tools/bin: no tursodb, helm or kubectl


@pytest.mark.parametrize("target", ["run", "demo"])
def test_make_run_and_demo_do_not_install_the_tools(target: str) -> None:
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("the venv is not built (make venv)")
    plan = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "install-tools" not in plan and f"buntime {'serve' if target == 'run' else 'demo'}" in plan, plan


def test_the_local_runtime_serves_without_tursodb_on_the_path(tmp_path: Path) -> None:
    env = {"PATH": BARE_PATH, "TURSODB_BIN": "", "TURSO_LOCAL_PATH": str(tmp_path / "data" / "runtime.db")}
    runtime = RuntimeProcess(env, tmp_path / "runtime.log").start()
    try:
        url = f"{runtime.url}/keyval/api/keys/demo/greeting"
        assert http("PUT", url, {"hello": "world"})[0] in (200, 201, 204), runtime.log()
        assert http("GET", url)[0] == 200
    finally:
        assert runtime.stop() == 0
    demo = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "buntime"), "demo"],
        env={**os.environ, "PATH": BARE_PATH, "TURSODB_BIN": "", "TURSO_LOCAL_PATH": env["TURSO_LOCAL_PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr


def test_install_tools_off_x86_64_skips_helm_and_kubectl_with_a_message(tmp_path: Path) -> None:
    tursodb = os.environ.get("TURSODB_BIN") or str(ROOT / ".tools" / "bin" / "tursodb")
    if not os.access(tursodb, os.X_OK):
        pytest.skip("no tursodb to hand the script (make tools)")
    shims = tmp_path / "shims"
    shims.mkdir()
    uname = shims / "uname"
    uname.write_text('#!/bin/sh\n[ "$1" = "-m" ] && { echo aarch64; exit 0; }\nexec /usr/bin/uname "$@"\n')
    uname.chmod(0o755)
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "install-tools.sh")],
        env={
            **os.environ,
            "PATH": f"{shims}:{os.environ['PATH']}",
            "TOOLS_BIN": str(tmp_path / "bin"),
            "BUNTIME_CACHE_DIR": str(tmp_path / "cache"),
            "TURSODB_BIN": tursodb,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "helm and kubectl: skipped on aarch64" in result.stderr
    assert (tmp_path / "bin" / "tursodb").exists() and not (tmp_path / "bin" / "helm").exists()
