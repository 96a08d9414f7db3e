"""The operator as a subprocess, its webhook PKI and configuration, and a kubectl helper.

Shared by the operator tests, the chart end-to-end test and ``bench/bench_operator.py``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.controlplane import ControlPlane
from tests.support.ports import free_port
from tests.support.tursodb import ROOT, wait_listening
from tests.support.tursoserver import TursoServer

CRD_FILE = ROOT / "deploy" / "crds" / "tursonamespaces.turso.buntime.io.yaml"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
API_VERSION = "turso.buntime.io/v1alpha1"
API = f"/apis/{API_VERSION}"


def kubectl(cp: ControlPlane, *args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(KUBECTL), *args],
        env={**os.environ, **cp.env()},
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout + result.stderr


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, *, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last value: {last!r})")


def apply_tns(cp: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    """Create a TursoNamespace with ``spec`` (database named after it unless ``database=``)."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "TursoNamespace",
        "metadata": {"name": name},
        "spec": spec,
    }
    status, result = cp.request("POST", f"{API}/namespaces/{namespace}/tursonamespaces", body)
    assert status == 201, result


def get_tns(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    status, body = cp.request("GET", f"{API}/namespaces/{namespace}/tursonamespaces/{name}")
    return body if status == 200 else None


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_ready(cp: ControlPlane, namespace: str, name: str, timeout: float = 30) -> dict[str, Any]:
    """The TursoNamespace once it reports ``Ready=True``."""
    return dict(
        wait_for(
            lambda: (
                (obj := get_tns(cp, namespace, name))
                and condition(obj, "Ready").get("status") == "True"
                and obj
            ),
            timeout,
        )
    )


def make_webhook_pki(directory: Path) -> tuple[Path, Path, bytes]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "buntime-test-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


class OperatorProcess:
    """``buntime-operator`` as a subprocess, restartable with the same configuration.

    Configured as the chart configures it with scoped tokens: no ``TURSO_SERVER_TOKEN`` (the
    shared data token) unless an override gives it."""

    def __init__(self, cp: ControlPlane, turso: TursoServer, workdir: Path, **overrides: str) -> None:
        self.workdir = workdir
        self.cert_file, self.key_file, self.ca_pem = make_webhook_pki(workdir / "webhook-pki")
        self.webhook_port = free_port()
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            **cp.env(),
            "TURSO_SERVER_URL": turso.url,
            "TURSO_SERVER_ADMIN_URL": turso.admin_url,
            "TURSO_SERVER_ADMIN_TOKEN": turso.admin_token,
            "TURSO_RESYNC_SECONDS": "2",
            "TURSO_OPERATOR_NAMESPACE": "buntime-system",
            "TURSO_WEBHOOK_PORT": str(self.webhook_port),
            "TURSO_WEBHOOK_HOST": "127.0.0.1",
            "TURSO_WEBHOOK_CERT_FILE": str(self.cert_file),
            "TURSO_WEBHOOK_KEY_FILE": str(self.key_file),
            "TURSO_LIVENESS_PORT": str(self.liveness_port),
            "TURSO_METRICS_PORT": str(self.metrics_port),
            **overrides,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "operator.log"

    def start(self) -> OperatorProcess:
        out = open(self.log, "ab")  # noqa: SIM115
        binary = Path(sys.executable).with_name("buntime-operator")
        self.proc = subprocess.Popen([str(binary)], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_listening(self.liveness_port, 60, proc=self.proc)
        wait_listening(self.webhook_port, 60, proc=self.proc)
        return self

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def metrics(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def webhook_configuration(url: str, ca_pem: bytes) -> dict[str, Any]:
    """What the chart renders, pointed at loopback instead of a Service."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "buntime-test"},
        "webhooks": [
            {
                "name": "inject.turso.buntime.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 10,
                "clientConfig": {"url": f"{url}/inject-turso", "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                "objectSelector": {
                    "matchExpressions": [{"key": "turso.buntime.io/inject", "operator": "Exists"}]
                },
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
                    ]
                },
            }
        ],
    }
