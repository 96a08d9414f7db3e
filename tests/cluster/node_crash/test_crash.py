"""A SIGKILLed node run leaves shims, containers, mounts, chains and the bridge; the next start cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.node import (
    BRIDGE,
    STATE_FILE,
    TOOLS_BIN,
    Node,
    _cgroup_dirs,
    _mount_points_under,
    _pids_referencing,
    leftover_iptables_chains,
    missing_prerequisites,
    read_images_env,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[3]


def test_the_next_start_removes_what_a_killed_run_left() -> None:
    missing = missing_prerequisites()
    if missing:
        pytest.skip(f"cannot run a node here: {'; '.join(missing)}")
    if os.environ.get("BUNTIME_E2E_KUBECONFIG"):
        pytest.skip("testing an external cluster (BUNTIME_E2E_KUBECONFIG): no harness to check")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.node"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        kubeconfig = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("export KUBECONFIG="):
                kubeconfig = line.strip().split("=", 1)[1]
                break
        assert kubeconfig, "the node never became Ready"
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        kubectl = [str(TOOLS_BIN / "kubectl")]
        pause = read_images_env()["PAUSE_IMAGE"]
        subprocess.run(
            [*kubectl, "run", "sleeper", f"--image={pause}", "--restart=Never"], env=env, check=True
        )
        subprocess.run(
            [*kubectl, "wait", "pod/sleeper", "--for=condition=Ready", "--timeout=120s"], env=env, check=True
        )
        workdir = Path(json.loads(STATE_FILE.read_text())["workdir"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(2)
    # What a crash leaves: the pod's shim and container, holding the node's mount namespace
    # (with the container's mounts, invisible here), the bridge and the chains.
    shims = _pids_referencing(workdir)
    assert shims, "expected containerd's shims to outlive the killed run"
    assert os.readlink(f"/proc/{shims[0]}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert not _mount_points_under(workdir)
    assert Path("/sys/class/net", BRIDGE).exists()
    assert leftover_iptables_chains()

    with Node() as node:
        # Started cleanly on top of the leftovers, which are gone.
        assert not workdir.exists()
        assert not _pids_referencing(workdir)
        assert node.kubectl("get", "pods", "-A", "-o", "name").strip() == ""
    assert not _pids_referencing(workdir)
    assert not _mount_points_under(workdir)
    assert not Path("/sys/class/net", BRIDGE).exists()
    assert leftover_iptables_chains() == []
    assert _cgroup_dirs() == []
    assert not STATE_FILE.exists()
