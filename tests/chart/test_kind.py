"""``hack/kind-e2e.sh``: the chart on a real kind cluster, when this machine can run one.

The script needs a reachable Docker engine and kind (or go, to install kind). Without them the
test is skipped with the reason; ``bash -n`` and the script's pins are checked everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.chart.rendering import ROOT, TOOLS

SCRIPT = ROOT / "hack" / "kind-e2e.sh"


def test_script_parses_and_pins_kind() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert 'KIND_VERSION="v0.33.0"' in text
    assert 'GOBIN="$BIN" go install "sigs.k8s.io/kind@$KIND_VERSION"' in text
    assert os.access(SCRIPT, os.X_OK)


def _skip_reason() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed"
    probe = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "the docker engine is not reachable (`docker info` failed)"
    if not (shutil.which("kind") or (TOOLS / "kind").exists() or shutil.which("go")):
        return "kind is not installed (and go is not there to install it)"
    return None


@pytest.mark.slow
def test_kind_end_to_end() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"kind end to end needs docker and kind: {reason}")
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ok: a write through one pod was read through the other" in result.stderr
