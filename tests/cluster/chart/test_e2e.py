"""The whole stack on one machine, every process configured from what the chart renders.

1. ``helm template`` with the in-cluster turso-server; the env of the turso-server StatefulSet
   and of the operator Deployment is resolved against the rendered Secrets (the generated tokens),
   exactly as the kubelet would build it.
2. turso-server and the operator run as processes with that env. Only what a pod network gives
   for free is replaced: listen addresses and Service URLs become loopback ports, the data dir a
   temp dir, and the webhook serves a loopback certificate (the API server cannot reach a Service
   without kube-proxy). The chart's MutatingWebhookConfiguration is applied with just its
   clientConfig pointed there: its selectors and policies are the chart's.
3. ``examples/tursonamespace.yaml`` is applied with kubectl; the operator provisions the database
   and writes the Secret.
4. Two Pods are created from ``examples/app.yaml``'s template; the API server calls the webhook,
   which injects the connection. Two ``buntime serve`` processes stand in for them, configured
   from the env stored in those Pods, resolved against the Secret the operator wrote; each gets
   its own directory for the injected ``/data/turso`` volume.
5. A key written through one (keyval ``PUT``) is read through the other.

The release renders with its defaults, so the app pods get a token scoped to their one database;
the injected ``TURSO_NAMESPACE`` makes the runtime keep all its plugins' namespaces in it. The
release's own runtime pods get their tokens from the Secret the operator writes beside itself
(scoped to the runtime's plugin databases and to its workers' ``worker-*``), read back from the
API server: they open those databases and are 403 on a TursoNamespace's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.rendering import (
    NAMESPACE,
    RELEASE,
    ROOT,
    EnvSources,
    container_env,
    containers,
    decoded,
    one,
    render,
)
from tests.support.controlplane import ControlPlane
from tests.support.operator import CRD_FILE, OperatorProcess, kubectl, wait_for, wait_ready
from tests.support.ports import free_port
from tests.support.tursodb import wait_listening
from tests.support.tursoserver import TursoServer, post_status

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VALUES = {"tursoServer.enabled": "true"}
DATA_MOUNT = "/data/turso"
FIELD_REFS = {"metadata.namespace": NAMESPACE}
#: What a pod network provides and a process on loopback must get instead.
TURSO_LOCAL_KEYS = (
    "TURSO_DATA_ADDR",
    "TURSO_ADMIN_ADDR",
    "TURSO_DATA_DIR",
    "TURSODB_BIN",
    "TURSO_BACKEND_PORT_START",
    "TURSO_BACKEND_PORT_END",
)
OPERATOR_LOCAL_KEYS = (
    "TURSO_SERVER_URL",
    "TURSO_SERVER_ADMIN_URL",
    "TURSO_WEBHOOK_PORT",
    "TURSO_WEBHOOK_CERT_FILE",
    "TURSO_WEBHOOK_KEY_FILE",
    "TURSO_LIVENESS_PORT",
)


class ChartTursoServer(TursoServer):
    """turso-server with the chart's env (tokens included), on loopback ports and a temp dir."""

    def __init__(self, data_dir: Path, chart_env: dict[str, str]) -> None:
        super().__init__(data_dir)
        self.chart_env = chart_env
        self.data_token = chart_env["TURSO_AUTH_TOKEN"]
        self.admin_token = chart_env["TURSO_ADMIN_TOKEN"]

    def env(self) -> dict[str, str]:
        local = super().env()
        return {**self.chart_env, **{key: local[key] for key in TURSO_LOCAL_KEYS}}


class Runtime:
    """``buntime serve`` standing in for one pod: its env, its own /data/turso, a loopback port."""

    def __init__(self, name: str, pod_env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = workdir / name / "data-turso"
        self.data_dir.mkdir(parents=True)
        self.log = workdir / name / "serve.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TURSO_", "RUNTIME_", "BUNTIME_"))}
        # The pod's volume mount, moved: every path under /data/turso points into this pod's dir.
        mapped = {k: v.replace(DATA_MOUNT, str(self.data_dir)) for k, v in pod_env.items()}
        self.env = {**base, **mapped, "BUNTIME_HOST": "127.0.0.1", "BUNTIME_PORT": str(self.port)}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Runtime:
        with open(self.log, "ab") as out:
            binary = Path(sys.executable).with_name("buntime")
            self.proc = subprocess.Popen(
                [str(binary), "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_listening(self.port, 60, proc=self.proc)
            wait_for(lambda: self.get("/api/health/ready")[0] == 200, timeout=30)
        except BaseException:
            self.stop()  # a runtime that never got ready must not outlive the test
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render(VALUES)


@pytest.fixture(scope="module")
def turso(chart: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    sts = one(chart, "StatefulSet", f"{RELEASE}-turso")
    (container,) = containers(sts)
    chart_env = container_env(container, EnvSources(chart), field_refs=FIELD_REFS)
    with ChartTursoServer(tmp_path_factory.mktemp("turso") / "data", chart_env) as server:
        yield server


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    chart: list[dict[str, Any]],
    turso: TursoServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    kubectl(control_plane, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl(control_plane, "wait", "--for=condition=Established", "crd/tursonamespaces.turso.buntime.io")
    deployment = one(chart, "Deployment", f"{RELEASE}-operator")
    (container,) = containers(deployment)
    chart_env = container_env(container, EnvSources(chart), field_refs=FIELD_REFS)
    overrides = {k: v for k, v in chart_env.items() if k not in OPERATOR_LOCAL_KEYS}
    process = OperatorProcess(control_plane, turso, tmp_path_factory.mktemp("operator"), **overrides).start()
    # The chart's webhook configuration, reaching the operator on loopback with its test certificate.
    webhook = one(chart, "MutatingWebhookConfiguration")
    url = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    name = webhook["metadata"]["name"]
    try:
        for hook in webhook["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{process.webhook_port}{path}",
                "caBundle": base64.b64encode(process.ca_pem).decode(),
            }
        control_plane.request("DELETE", f"{url}/{name}")
        status, body = control_plane.request("POST", url, webhook)
        assert status == 201, body
        yield process
    finally:
        control_plane.request("DELETE", f"{url}/{name}")
        process.stop()
        print(process.tail())


def create_pods_from(cp: ControlPlane, namespace: str, deployment: dict[str, Any], count: int) -> list[str]:
    """What the ReplicaSet controller would do (there is none here): Pods from the template."""
    template = deployment["spec"]["template"]
    names = []
    for index in range(count):
        name = f"{deployment['metadata']['name']}-{index}"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name},
               "spec": template["spec"]}  # fmt: skip
        status, body = cp.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        assert status == 201, body
        names.append(name)
    return names


def test_chart_rendered_turso_server_uses_the_generated_tokens(
    chart: list[dict[str, Any]], turso: TursoServer
) -> None:
    tokens = decoded(one(chart, "Secret", f"{RELEASE}-turso-auth"))
    assert turso.env()["TURSO_AUTH_TOKEN"] == tokens["TURSO_AUTH_TOKEN"]
    request = urllib.request.Request(f"{turso.admin_url}/v1/namespaces")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(request, timeout=5)
    assert denied.value.code == 401
    request.add_header("Authorization", f"Bearer {tokens['TURSO_ADMIN_TOKEN']}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


def test_write_through_one_pod_read_through_the_other(
    control_plane: ControlPlane, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    status, body = control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    assert status == 201, body

    # The example as shipped, with a database name of its own: database claims are cluster-wide,
    # and other tests on this shared control plane may have claimed the example's name.
    tns = yaml.safe_load((ROOT / "examples" / "tursonamespace.yaml").read_text())
    tns["spec"]["database"] = f"{tns['metadata']['name']}-{namespace}"
    manifest = tmp_path / "tursonamespace.yaml"
    manifest.write_text(yaml.safe_dump(tns))
    kubectl(control_plane, "apply", "-n", namespace, "-f", str(manifest))
    name = tns["metadata"]["name"]

    resource = wait_ready(control_plane, namespace, name, timeout=60)
    secret_name = resource["status"]["secretName"]

    app = next(d for d in yaml.safe_load_all((ROOT / "examples" / "app.yaml").read_text()) if d)
    pods = create_pods_from(control_plane, namespace, app, 2)

    secrets = EnvSources()
    status, secret = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
    assert status == 200, secret
    secrets.add(secret)
    runtimes: list[Runtime] = []
    try:
        for pod_name in pods:
            status, pod = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
            assert status == 200, pod
            assert pod["metadata"]["annotations"]["turso.buntime.io/injected"] == name
            (container,) = pod["spec"]["containers"]
            assert any(m["mountPath"] == DATA_MOUNT for m in container["volumeMounts"])
            env = container_env(container, secrets, field_refs={"metadata.namespace": namespace})
            assert env["TURSO_SERVER_URL"] == operator.env["TURSO_SERVER_URL"]
            assert "TURSO_SERVER_ADMIN_TOKEN" not in env
            assert operator.env["TURSO_SERVER_ADMIN_TOKEN"] not in env.values()
            # Its tokens are files of the Secret volume the webhook mounted.
            assert "TURSO_SERVER_TOKEN" not in env and "TURSO_SERVER_TOKEN_FILE" in env
            env = _token_volume(env, secrets, tmp_path / f"{pod_name}-token", secret_name)
            runtimes.append(Runtime(pod_name, env, tmp_path).start())

        writer, reader = runtimes
        for runtime in runtimes:
            # The token is scoped to the TursoNamespace's database, and so is the runtime (the
            # unauthenticated readiness body names no URL: the log says where each replica syncs).
            log = runtime.log.read_text()
            assert "topology: single-tenant" in log, runtime.tail()
            syncs = set(
                re.findall(r"Turso replica opened \([a-z]+ writes\): [^\s\"]+ <-> (https?://[^\s\"]+)", log)
            )
            assert syncs == {f"{env['TURSO_SERVER_URL']}/{resource['status']['database']}"}, runtime.tail()

        key, value = f"e2e/{uuid.uuid4().hex[:8]}", {"written-by": writer.name, "at": time.time()}
        status, body = writer.request("PUT", f"/keyval/api/keys/{key}", value)
        assert status == 200, (body, writer.tail())

        def read_back() -> Any:
            status, body = reader.get(f"/keyval/api/keys/{key}")
            return body if status == 200 else None

        entry = wait_for(read_back, timeout=45, interval=0.5)
        assert entry["value"] == value
    finally:
        for runtime in runtimes:
            runtime.stop()


def _release_sources(control_plane: ControlPlane, chart: list[dict[str, Any]]) -> EnvSources:
    """The rendered objects plus the runtime's Secret as the operator wrote it to the API server."""
    sources = EnvSources(chart)
    path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-runtime-turso"

    def written() -> dict[str, Any] | None:
        status, secret = control_plane.request("GET", path)
        return secret if status == 200 else None

    sources.add(wait_for(written, timeout=60))
    return sources


def _token_volume(
    env: dict[str, str], sources: EnvSources, directory: Path, secret: str = f"{RELEASE}-runtime-turso"
) -> dict[str, str]:
    """A pod's token Secret volume, moved like /data/turso: ``env`` with each ``*_TOKEN_FILE`` it
    sets naming a file of ``directory`` that holds that key of the operator-written ``secret``."""
    directory.mkdir(parents=True)
    moved = dict(env)
    for name in ("TURSO_SERVER_TOKEN_FILE", "RUNTIME_TURSO_SERVER_TOKEN_FILE"):
        if name in env:
            key = Path(env[name]).name
            (directory / key).write_text(sources.secrets[secret][key])
            moved[name] = str(directory / key)
    return moved


def _volume_token(env: dict[str, str], name: str, sources: EnvSources) -> str:
    """The token the file ``env[name]`` of the runtime's Secret volume holds."""
    return sources.secrets[f"{RELEASE}-runtime-turso"][Path(env[name]).name]


def _ensure_namespace(control_plane: ControlPlane, name: str) -> None:
    status, body = control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status in (201, 409), body


def test_the_runtime_databases_are_explicit_before_the_runtime_has_a_token(
    control_plane: ControlPlane, chart: list[dict[str, Any]], turso: TursoServer, operator: OperatorProcess
) -> None:
    """Auto-provisioned by the runtime's first request instead, the GC archived them once idle past
    tursoServer.autoIdleDuration, and with autoProvision=false they never existed."""
    _ensure_namespace(control_plane, NAMESPACE)
    _release_sources(control_plane, chart)  # the Secret is written after the databases are made
    (container,) = containers(one(chart, "Deployment", f"{RELEASE}-operator"))
    scope = container_env(container, EnvSources(chart), field_refs=FIELD_REFS)["TURSO_RUNTIME_NAMESPACES"]
    for database in scope.split(","):
        status, view = turso.admin("GET", f"/v1/namespaces/{database}")
        assert status == 200, (database, view)
        assert (view["origin"], view["locked"], view["owner"]) == ("explicit", True, f"runtime:{NAMESPACE}")


def test_release_runtime_tokens_open_only_the_runtime_databases(
    control_plane: ControlPlane, chart: list[dict[str, Any]], turso: TursoServer, operator: OperatorProcess,
    tmp_path: Path,
) -> None:  # fmt: skip
    """What the runtime pods get opens their own databases, and no TursoNamespace's."""
    _ensure_namespace(control_plane, NAMESPACE)  # the operator retries until it can write there
    _ensure_namespace(control_plane, team := f"team-{uuid.uuid4().hex[:8]}")
    sources = _release_sources(control_plane, chart)
    runtime = next(c for c in containers(one(chart, "Deployment", RELEASE)) if c["name"] == "runtime")
    env = container_env(runtime, sources, field_refs=FIELD_REFS)
    hook_env = container_env(containers(one(chart, "Pod"))[0], sources)
    # The plugins' token is the file of a volume of that Secret (TURSO_SERVER_TOKEN_FILE).
    assert "TURSO_SERVER_TOKEN" not in env and env["TURSO_SERVER_TOKEN_FILE"].endswith("/TURSO_SERVER_TOKEN")
    plugins = sources.secrets[f"{RELEASE}-runtime-turso"]["TURSO_SERVER_TOKEN"]
    assert "RUNTIME_TURSO_SERVER_TOKEN" not in env
    workers = _volume_token(env, "RUNTIME_TURSO_SERVER_TOKEN_FILE", sources)
    assert hook_env["RUNTIME_TURSO_SERVER_TOKEN"] == workers
    credentials = set(decoded(one(chart, "Secret", f"{RELEASE}-turso-auth")).values())
    assert not credentials & {plugins, workers}, "neither is the global data or admin token"

    # Another team's database, provisioned by the operator from a TursoNamespace.
    tns = {"apiVersion": "turso.buntime.io/v1alpha1", "kind": "TursoNamespace",
           "metadata": {"name": "ledger"}, "spec": {"database": f"ledger-{team}"}}  # fmt: skip
    manifest = tmp_path / "tns.yaml"
    manifest.write_text(yaml.safe_dump(tns))
    kubectl(control_plane, "apply", "-n", team, "-f", str(manifest))
    wait_ready(control_plane, team, "ledger", timeout=60)
    for token, namespace, expected in [
        (plugins, "keyval", 200),
        (plugins, "runtime", 200),
        (plugins, f"ledger-{team}", 403),
        (plugins, "worker-orders", 403),
        (workers, "worker-orders", 200),
        (workers, hook_env["TEST_TURSO_NAMESPACE"], 200),
        (workers, "keyval", 403),
        (workers, f"ledger-{team}", 403),
    ]:
        assert post_status(f"{turso.url}/{namespace}/pull-updates", token) == expected, (namespace, expected)

    # A TursoNamespace for one of the runtime's databases is refused, and archives nothing.
    def keyval_created_at() -> str:
        status, view = turso.admin("GET", "/v1/namespaces/keyval")
        assert status == 200, view
        return str(view["createdAt"])

    created_at = keyval_created_at()
    tns = {**tns, "metadata": {"name": "grab"}, "spec": {"database": "keyval"}}
    manifest.write_text(yaml.safe_dump(tns))
    kubectl(control_plane, "apply", "-n", team, "-f", str(manifest))

    def refused() -> bool:
        status, body = control_plane.request(
            "GET", f"/apis/turso.buntime.io/v1alpha1/namespaces/{team}/tursonamespaces/grab"
        )
        return status == 200 and (body.get("status") or {}).get("phaseReason") == "ReservedDatabase"

    wait_for(refused, timeout=30)
    status, _ = control_plane.request("GET", f"/api/v1/namespaces/{team}/secrets/grab-turso")
    assert status == 404, "no Secret for a reserved database"
    kubectl(control_plane, "delete", "-n", team, "tursonamespace/grab", "--wait=true", "--timeout=30s")
    assert keyval_created_at() == created_at, "the runtime's database was not archived"


def test_release_runtime_and_the_helm_test_hook_against_the_real_server(
    control_plane: ControlPlane, chart: list[dict[str, Any]], turso: TursoServer, operator: OperatorProcess,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The hook Pod's own script, with its rendered env, against a runtime and turso-server."""
    _ensure_namespace(control_plane, NAMESPACE)
    sources = _release_sources(control_plane, chart)
    pod = one(chart, "Pod")
    (container,) = containers(pod)
    env = container_env(container, sources)
    runtime_env = container_env(
        next(c for c in containers(one(chart, "Deployment", RELEASE)) if c["name"] == "runtime"),
        sources,
        field_refs=FIELD_REFS,
    )
    runtime_env = {**runtime_env, "TURSO_SERVER_URL": turso.url, "RUNTIME_TURSO_SERVER_URL": turso.url}
    runtime_env = _token_volume(runtime_env, sources, tmp_path / "turso-token")
    runtime = Runtime("release-runtime", runtime_env, tmp_path).start()
    try:
        # The release's own runtime, configured from its ConfigMap and Secret refs, is multi-tenant.
        assert "topology: multi-tenant" in runtime.log.read_text(), runtime.tail()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TURSO_", "RUNTIME_"))}
        env = {**base, **env, "RUNTIME_URL": runtime.url, "RUNTIME_TURSO_SERVER_URL": turso.url,
               "TEST_SCRATCH_DIR": str(tmp_path / "hook")}  # fmt: skip
        command = [sys.executable if c == "python" else c for c in container["command"]]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok: runtime is ready" in result.stdout
        assert "ok: database round trip through turso-server" in result.stdout
    finally:
        runtime.stop()
