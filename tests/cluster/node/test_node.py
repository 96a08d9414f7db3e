"""The node itself: Ready, pods run, Service names resolve, and the machine stays as it was.

A pod on the project image checks from the inside what the chart's pods rely on: the
``kubernetes`` Service (through kube-proxy to the API server on the bridge address), cluster DNS,
and that nothing outside the bridge is reachable (no default route, the fence drops the rest).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support.node import BRIDGE, GATEWAY, NODE_NAME, Node, leftover_iptables_chains

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PROBE = r"""
import json, socket, ssl, urllib.request
out = {}
out["dns"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
auth = {"Authorization": "Bearer " + token}
req = urllib.request.Request("https://kubernetes.default.svc/version", headers=auth)
with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
    out["version"] = json.loads(resp.read())["gitVersion"]
try:
    socket.create_connection(("192.0.2.1", 80), timeout=3).close()
    out["outside"] = "reachable"
except OSError as exc:
    out["outside"] = type(exc).__name__
try:
    socket.gethostbyname("deb.debian.org")
    out["external_dns"] = "resolved"
except OSError as exc:
    out["external_dns"] = type(exc).__name__
print(json.dumps(out))
"""


def test_the_node_is_ready_on_the_bridge(node: Node) -> None:
    nodes = json.loads(node.kubectl("get", "nodes", "-o", "json"))["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE_NAME]
    addresses = {a["type"]: a["address"] for a in nodes[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == GATEWAY
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.12"


def test_a_pod_reaches_the_api_server_and_dns_but_nothing_outside(node: Node) -> None:
    ns = f"probe-{uuid.uuid4().hex[:8]}"
    node.kubectl("create", "namespace", ns)
    node.kubectl(
        "run", "probe", "-n", ns, f"--image={node.image}", "--image-pull-policy=IfNotPresent",
        "--restart=Never", "--command", "--", "python", "-c", PROBE,
    )  # fmt: skip
    node.kubectl("wait", "-n", ns, "pod/probe", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s")
    result = json.loads(node.kubectl("logs", "-n", ns, "probe").strip().splitlines()[-1])
    assert result["dns"] == "10.0.0.1"
    assert result["version"] == "v1.34.12"
    assert result["outside"] in {"OSError", "TimeoutError", "ConnectionRefusedError"} or (
        result["outside"] != "reachable"
    )
    assert result["external_dns"] != "resolved"
    node.kubectl("delete", "namespace", ns, "--wait=false")


def test_the_machine_settings_do_not_move(node: Node) -> None:
    # kubelet and kube-proxy would rewrite these; the harness shadows or disables every write.
    assert node.sysctl_drift() == {}
    # Only the harness's own chains and the bridge exist, and they are all named to be found.
    assert any(chain.endswith(":BUNTIME-FENCE") for chain in leftover_iptables_chains())
    assert any(chain.endswith(":KUBE-SERVICES") for chain in leftover_iptables_chains())
    assert Path("/sys/class/net", BRIDGE).is_dir()
    # kubelet's volume mounts reach containerd through the shared bind mount of its root dir.
    assert (node.workdir / "kubelet").is_dir()
