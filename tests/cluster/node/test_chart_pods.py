"""The chart on running pods: install, the mission, failures, upgrade and uninstall, in order.

The tests share one release (module scope) and run in file order, each starting from where the
previous one left the cluster:

1. ``helm install`` with ``tursoServer.enabled=true`` and ``runtime.replicaCount=2`` on the
   project image: every pod Running and Ready, ``helm test`` passes.
2. ``examples/tursonamespace.yaml`` becomes Ready; ``examples/app.yaml``'s pods are injected by
   the webhook (the API server calls it through its Service) and start; the app writes and reads
   through turso-server by its Service name.
3. A keyval write through one runtime pod is read through the other.
4. Deleting the turso-server pod: the StatefulSet brings it back on the same volume, nothing
   committed is lost. Deleting a runtime pod mid-traffic: its replacement serves every
   acknowledged write.
5. ``helm upgrade`` with a changed value rolls the runtime while a client keeps writing: zero
   failed requests, no acknowledged write lost.
6. ``helm uninstall`` removes the workloads and keeps the CRD, the turso volume and its keys.

All traffic comes from a client pod on the project image (``kubectl exec``), through Service
names and pod IPs, as an app in the cluster would send it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chart.rendering import CHART, ROOT, helm_env
from tests.support.node import TOOLS_BIN, ExternalCluster, Node
from tests.support.operator import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

RELEASE = "buntime"
NAMESPACE = "buntime-system"
APP_NAMESPACE = "buntime-e2e"
TNS = "orders"
RUNTIME = "app.kubernetes.io/component=runtime"
TURSO = "app.kubernetes.io/component=turso-server"

# Runs in the client pod: PUT keys until /tmp/stop-<run> appears; print what was acknowledged.
WRITE_LOOP = r"""
import json, os, sys, time, urllib.request
base, run, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
acked, failed, i, start = [], [], 0, time.monotonic()
while not os.path.exists("/tmp/stop-" + run) and time.monotonic() - start < limit:
    key, i = f"{run}-{i}", i + 1
    req = urllib.request.Request(base + "/keyval/api/keys/" + key, data=json.dumps({"n": i}).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            if 200 <= resp.status < 300:
                acked.append(key)
            else:
                failed.append(f"{key}: HTTP {resp.status}")
    except Exception as exc:
        failed.append(f"{key}: {exc!r}")
    time.sleep(0.05)
print(json.dumps({"acked": acked, "failed": failed}))
"""

# Runs in the client pod: GET every key on stdin (JSON list) until all are there or time is up.
READ_ALL = r"""
import json, sys, time, urllib.error, urllib.request
base, limit = sys.argv[1], float(sys.argv[2])
missing, deadline = set(json.load(sys.stdin)), time.monotonic() + limit
while missing and time.monotonic() < deadline:
    for key in sorted(missing):
        try:
            with urllib.request.urlopen(base + "/keyval/api/keys/" + key, timeout=10) as resp:
                if resp.status == 200:
                    missing.discard(key)
        except (OSError, urllib.error.HTTPError):
            pass
    if missing:
        time.sleep(1)
print(json.dumps(sorted(missing)))
"""


@dataclass
class Release:
    node: Node | ExternalCluster
    env: dict[str, str]

    def helm(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(TOOLS_BIN / "helm"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        return self.node.kubectl(*args, input=input, timeout=timeout)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args))

    def client(self, script: str, *args: str, input: str = "", timeout: float = 300) -> str:
        """Run a Python script in the client pod; its last stdout line."""
        out = self.kubectl(
            "exec", "-i", "-n", NAMESPACE, "client", "--", "python", "-c", script, *args,
            input=input, timeout=timeout,
        )  # fmt: skip
        return out.strip().splitlines()[-1]

    def start_writes(self, base: str, run: str, limit: float = 600) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(TOOLS_BIN / "kubectl"), "exec", "-n", NAMESPACE, "client", "--",
             "python", "-c", WRITE_LOOP, base, run, str(limit)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop_writes(self, proc: subprocess.Popen[str], run: str) -> dict[str, list[str]]:
        self.kubectl("exec", "-n", NAMESPACE, "client", "--", "touch", f"/tmp/stop-{run}")
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        result: dict[str, list[str]] = json.loads(out.strip().splitlines()[-1])
        return result

    def write_for(self, base: str, run: str, seconds: float) -> dict[str, list[str]]:
        """Write for ``seconds``; the keys acknowledged and the requests that failed."""
        out, _err = self.start_writes(base, run, limit=seconds).communicate(timeout=seconds + 120)
        result: dict[str, list[str]] = json.loads(out.strip().splitlines()[-1])
        return result

    def missing(self, base: str, keys: list[str], limit: float = 120) -> list[str]:
        found: list[str] = json.loads(self.client(READ_ALL, base, str(limit), input=json.dumps(keys)))
        return found

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod.get("status", {}).get("phase") == "Running" and conditions.get("Ready") == "True"


def resolve(release: Release, namespace: str, env: dict[str, Any]) -> str:
    """An env entry's value, reading ``valueFrom.secretKeyRef`` as kubelet does."""
    if "value" in env:
        return str(env["value"])
    ref = env["valueFrom"]["secretKeyRef"]
    secret = release.get("secret", "-n", namespace, ref["name"])
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def runtime_url() -> str:
    return f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:8000"


def pod_url(pod: dict[str, Any]) -> str:
    return f"http://{pod['status']['podIP']}:8000"


def wait_until(what: str, predicate: Any, timeout: float = 180, interval: float = 2) -> Any:
    """:func:`wait_for` at a pod's pace (seconds between looks, minutes in all)."""
    return wait_for(predicate, timeout, interval, what=what)


def install_args(node: Node | ExternalCluster) -> list[str]:
    repository, _, tag = node.image.rpartition(":")
    return [
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=IfNotPresent",
        "--set", "tursoServer.enabled=true", "--set", "runtime.replicaCount=2",
        "--set", "tursoServer.persistence.size=1Gi",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def release(cluster: Node | ExternalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    env = helm_env(cluster.env(), home=tmp_path_factory.mktemp("helm"))
    rel = Release(cluster, env)
    yield rel
    # A failed test leaves its release: take it away so the session's node stops cleanly.
    subprocess.run(
        [str(TOOLS_BIN / "helm"), "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--ignore-not-found"],
        env=env, capture_output=True, timeout=300,
    )  # fmt: skip


def test_install_runs_every_pod_ready_and_helm_test_passes(release: Release) -> None:
    release.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        *install_args(release.node), "--wait", "--timeout", "8m",
    )  # fmt: skip
    pods = release.pods(NAMESPACE, f"app.kubernetes.io/instance={RELEASE}")
    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    assert components == ["operator", "runtime", "runtime", "turso-server"], components
    assert all(ready(p) for p in pods), [(p["metadata"]["name"], p["status"]) for p in pods if not ready(p)]
    for pod in pods:
        for status in pod["status"]["containerStatuses"]:
            assert status["image"].endswith(release.node.image.rsplit("/", 1)[-1])
    # The turso-server volume was provisioned and bound.
    (pvc,) = release.get("pvc", "-n", NAMESPACE)["items"]
    assert pvc["status"]["phase"] == "Bound"
    out = release.helm("test", RELEASE, "--namespace", NAMESPACE, "--logs", "--timeout", "5m")
    assert "ok: database round trip through turso-server" in out, out
    # The client pod every later test sends its traffic from.
    release.kubectl(
        "run", "client", "-n", NAMESPACE, f"--image={release.node.image}", "--image-pull-policy=IfNotPresent",
        "--restart=Never", "--labels=app.kubernetes.io/name=e2e-client",
        '--overrides={"spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":10001}}}',
        "--command", "--", "python", "-c", "import time; time.sleep(10**9)",
    )  # fmt: skip
    release.kubectl("wait", "-n", NAMESPACE, "pod/client", "--for=condition=Ready", "--timeout=120s")


def test_the_example_app_is_injected_and_uses_turso_server(release: Release) -> None:
    release.kubectl("create", "namespace", APP_NAMESPACE)
    release.kubectl("apply", "-n", APP_NAMESPACE, "-f", str(ROOT / "examples" / "tursonamespace.yaml"))
    release.kubectl(
        "wait", "-n", APP_NAMESPACE, f"tursonamespace/{TNS}", "--for=condition=Ready", "--timeout=180s"
    )
    app = (ROOT / "examples" / "app.yaml").read_text()
    image_line = next(line for line in app.splitlines() if line.strip().startswith("image:"))
    app = app.replace(image_line, image_line.split("image:")[0] + f"image: {release.node.image}")
    release.kubectl("apply", "-n", APP_NAMESPACE, "-f", "-", input=app)
    release.kubectl("rollout", "status", "-n", APP_NAMESPACE, "deployment/orders-app", "--timeout=300s")
    pods = release.pods(APP_NAMESPACE, "app.kubernetes.io/name=orders-app")
    assert len(pods) == 2 and all(ready(p) for p in pods)
    for pod in pods:
        env = {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}
        # Injected by the webhook: the connection, from the Secret the operator wrote.
        assert {"TURSO_SERVER_URL", "TURSO_SERVER_TOKEN_FILE", "TURSO_NAMESPACE"} <= set(env), sorted(env)
        mounts = {v["mountPath"] for v in pod["spec"]["containers"][0]["volumeMounts"]}
        assert {"/data/turso", "/var/run/secrets/buntime/turso"} <= mounts, mounts
    url = resolve(release, APP_NAMESPACE, env["TURSO_SERVER_URL"])
    assert resolve(release, APP_NAMESPACE, env["TURSO_NAMESPACE"]) == TNS
    # turso-server by its Service name (resolved by the cluster DNS in the pod).
    assert url.startswith(f"http://{RELEASE}-turso.{NAMESPACE}.svc"), url
    key = f"app-{uuid.uuid4().hex[:8]}"
    first, second = pods
    put = f"""
import json, urllib.request
req = urllib.request.Request("{pod_url(first)}/keyval/api/keys/{key}", data=json.dumps({{"v": 1}}).encode(),
                             method="PUT", headers={{"Content-Type": "application/json"}})
print(urllib.request.urlopen(req, timeout=10).status)
"""
    assert release.client(put).startswith("2")
    assert release.missing(pod_url(second), [key]) == []


def test_a_write_through_one_runtime_pod_is_read_through_the_other(release: Release) -> None:
    pods = release.pods(NAMESPACE, RUNTIME)
    assert len(pods) == 2
    run = f"pair-{uuid.uuid4().hex[:6]}"
    result = release.write_for(pod_url(pods[0]), run, 3)
    assert result["acked"] and not result["failed"], result
    assert release.missing(pod_url(pods[1]), result["acked"]) == []


def test_turso_server_comes_back_on_its_volume_with_every_commit(release: Release) -> None:
    run = f"turso-{uuid.uuid4().hex[:6]}"
    result = release.write_for(runtime_url(), run, 5)
    assert result["acked"] and not result["failed"], result
    (before,) = release.pods(NAMESPACE, TURSO)
    (pvc,) = release.get("pvc", "-n", NAMESPACE)["items"]
    release.kubectl("delete", "pod", "-n", NAMESPACE, before["metadata"]["name"], "--wait=true")

    def back() -> dict[str, Any] | None:
        pods = release.pods(NAMESPACE, TURSO)
        return (
            pods[0]
            if pods and ready(pods[0]) and pods[0]["metadata"]["uid"] != before["metadata"]["uid"]
            else None
        )

    after = wait_until("turso-server back", back)
    (pvc_after,) = release.get("pvc", "-n", NAMESPACE)["items"]
    assert pvc_after["spec"]["volumeName"] == pvc["spec"]["volumeName"]
    claim = next(v for v in after["spec"]["volumes"] if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # A fresh runtime replica pulls from the restarted server: every acknowledged write is there.
    release.kubectl("rollout", "restart", "-n", NAMESPACE, f"deployment/{RELEASE}")
    release.kubectl("rollout", "status", "-n", NAMESPACE, f"deployment/{RELEASE}", "--timeout=300s")
    assert release.missing(runtime_url(), result["acked"]) == []


def test_a_runtime_pod_deleted_mid_traffic_is_replaced_with_every_acknowledged_write(
    release: Release,
) -> None:
    run = f"kill-{uuid.uuid4().hex[:6]}"
    victim = release.pods(NAMESPACE, RUNTIME)[0]
    proc = release.start_writes(runtime_url(), run)
    time.sleep(5)
    release.kubectl("delete", "pod", "-n", NAMESPACE, victim["metadata"]["name"], "--wait=true")

    def replaced() -> list[dict[str, Any]] | None:
        pods = [p for p in release.pods(NAMESPACE, RUNTIME) if ready(p)]
        names = {p["metadata"]["name"] for p in pods}
        return pods if len(pods) == 2 and victim["metadata"]["name"] not in names else None

    pods = wait_until("a replacement runtime pod", replaced)
    time.sleep(3)
    result = release.stop_writes(proc, run)
    assert result["acked"], result
    survivors = {p["metadata"]["uid"] for p in release.pods(NAMESPACE, RUNTIME) if p is not victim}
    replacement = max(pods, key=lambda p: str(p["metadata"]["creationTimestamp"]))
    assert replacement["metadata"]["uid"] in survivors
    assert release.missing(pod_url(replacement), result["acked"]) == []


def test_helm_upgrade_rolls_the_runtime_without_a_failed_request(release: Release) -> None:
    before = {p["metadata"]["name"] for p in release.pods(NAMESPACE, RUNTIME)}
    run = f"upgrade-{uuid.uuid4().hex[:6]}"
    proc = release.start_writes(runtime_url(), run)
    time.sleep(3)
    release.helm(
        "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *install_args(release.node),
        "--set", "runtime.logLevel=DEBUG", "--wait", "--timeout", "8m",
    )  # fmt: skip
    release.kubectl("rollout", "status", "-n", NAMESPACE, f"deployment/{RELEASE}", "--timeout=300s")
    after = {p["metadata"]["name"] for p in release.pods(NAMESPACE, RUNTIME)}
    time.sleep(3)
    result = release.stop_writes(proc, run)
    assert not (before & after), "the upgrade did not replace the runtime pods"
    assert result["failed"] == [], result["failed"][:20]
    assert len(result["acked"]) > 20
    assert release.missing(runtime_url(), result["acked"]) == []


def test_helm_uninstall_removes_the_workloads_and_keeps_crd_volume_and_keys(release: Release) -> None:
    (pvc,) = release.get("pvc", "-n", NAMESPACE)["items"]
    # The example app first: its TursoNamespace finalizer needs the operator.
    release.kubectl("delete", "namespace", APP_NAMESPACE, "--wait=true", timeout=300)
    release.kubectl("delete", "pod", "-n", NAMESPACE, "client", "--wait=false")
    release.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    for kind in ("deployments", "statefulsets", "services", "configmaps"):
        left = [
            o["metadata"]["name"]
            for o in release.get(kind, "-n", NAMESPACE)["items"]
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
        ]
        assert left == [], (kind, left)
    hooks = release.get("mutatingwebhookconfigurations")["items"]
    assert not [
        h for h in hooks if h["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE
    ]
    # Kept: the CRD, the turso volume (StatefulSet retention: Retain) and the keys that open it.
    release.kubectl("get", "crd", "tursonamespaces.turso.buntime.io")
    (kept,) = release.get("pvc", "-n", NAMESPACE)["items"]
    assert kept["metadata"]["uid"] == pvc["metadata"]["uid"] and kept["status"]["phase"] == "Bound"
    secrets = [s["metadata"]["name"] for s in release.get("secrets", "-n", NAMESPACE)["items"]]
    assert any(name.endswith("-turso-auth") or "turso" in name for name in secrets), secrets
    if isinstance(release.node, Node):  # the harness's provisioner: the data is on disk
        volume = Path(release.node.workdir / "volumes" / kept["spec"]["volumeName"])
        assert volume.is_dir() and any(volume.iterdir())
