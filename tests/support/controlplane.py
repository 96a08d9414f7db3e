"""A throwaway Kubernetes control plane (etcd + kube-apiserver) for tests.

Why: buntime talks to Kubernetes, and fakes drift from the real API
(validation, RBAC, resourceVersion semantics, watch). Like controller-runtime's
envtest, this starts a genuine kube-apiserver on an etcd it owns, with no
kubelet or controller-manager, so tests hit real API behaviour in a few
seconds. Stdlib only; certificates come from the ``openssl`` CLI, or from the
``cryptography`` package when no ``openssl`` binary is on PATH.

The binaries are built by ``hack/build-control-plane.sh`` into
``<repo>/.tools/bin/``; override them with ``KUBE_APISERVER_BIN``/``ETCD_BIN``.

Without a controller-manager nothing reconciles: namespaces deleted stay
``Terminating``, no ServiceAccount tokens or default ServiceAccounts are made
(so the ServiceAccount admission plugin is off), and Pods are never scheduled.

Run ``python -m tests.support.controlplane`` for an interactive cluster.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from tests.support.ports import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
BUILD_SCRIPT = "hack/build-control-plane.sh"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# First address of the service range: the in-cluster "kubernetes" Service.
KUBERNETES_SERVICE_IP = "10.0.0.1"
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"

_STOP_GRACE_SECONDS = 10.0
_LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (missing binary, crash, timeout)."""


def find_binary(name: str, env_var: str) -> Path:
    """Locate ``name``: ``$env_var`` if set, else ``<repo>/.tools/bin/<name>``."""
    override = os.environ.get(env_var)
    path = Path(override) if override else TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = f"${env_var}" if override else "the default location"
        raise ControlPlaneError(
            f"{name} binary not found at {path} ({source}). "
            f"Build it with `bash {BUILD_SCRIPT}` (cached after the first run), "
            f"or point {env_var} at an existing {name} binary."
        )
    return path


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _load_prctl() -> Any:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent: the pre-exec hook runs between fork and exec, where
# loading libraries is unsafe.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Child pre-exec hook: get SIGTERM when the thread that spawned us exits.

    So a killed pytest does not leave etcd/kube-apiserver running. Start the
    control plane from a long-lived thread (pytest fixtures run on the main one).
    """
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


# --------------------------------------------------------------------------
# Certificates


_SERVER_SANS = (
    f"IP:127.0.0.1,IP:{KUBERNETES_SERVICE_IP},DNS:localhost,DNS:kubernetes,"
    "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    "DNS:kubernetes.default.svc.cluster.local"
)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _make_pki_openssl(pki: Path, extra_ips: tuple[str, ...] = ()) -> None:
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=buntime-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kube-apiserver",
        cwd=pki,
    )  # fmt: skip
    (pki / "server.ext").write_text(
        f"subjectAltName={','.join([_SERVER_SANS, *(f'IP:{ip}' for ip in extra_ips)])}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "3650",
        "-extfile", "server.ext",
        cwd=pki,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _make_pki_cryptography(pki: Path, extra_ips: tuple[str, ...] = ()) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("buntime-test-ca"))
        .issuer_name(name("buntime-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_key(pki / "ca.key", ca_key)
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(KUBERNETES_SERVICE_IP)),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
    ]
    sans += [
        x509.DNSName(dns)
        for dns in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kube-apiserver"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_key(pki / "server.key", server_key)
    (pki / "server.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))

    sa_key = ec.generate_private_key(ec.SECP256R1())
    write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def make_pki(pki: Path, backend: str | None = None, extra_ips: tuple[str, ...] = ()) -> None:
    """Write ca.{crt,key}, server.{crt,key} and sa.{key,pub} into ``pki``.

    ``backend`` is ``"openssl"``, ``"cryptography"`` or None (openssl CLI if on
    PATH, else the cryptography package). ``extra_ips`` are added to the server
    certificate's SANs (the node harness's bridge address).
    """
    pki.mkdir(parents=True, exist_ok=True)
    if backend is None:
        backend = "openssl" if shutil.which("openssl") else "cryptography"
    if backend == "openssl":
        _make_pki_openssl(pki, extra_ips)
    elif backend == "cryptography":
        _make_pki_cryptography(pki, extra_ips)
    else:
        raise ValueError(f"unknown PKI backend {backend!r}")
    for key in pki.glob("*.key"):
        key.chmod(0o600)


# --------------------------------------------------------------------------
# Control plane


class ControlPlane:
    """etcd + kube-apiserver on loopback ports, in a private temp dir.

    Use as a context manager (or call :meth:`start`/:meth:`stop`)::

        with ControlPlane() as cp:
            subprocess.run(["kubectl", "get", "ns"], env={**os.environ, **cp.env()})

    Authentication is a static bearer token for user ``admin`` in group
    ``system:masters``; authorization is RBAC, so anonymous requests are denied
    (except the public health/version endpoints).
    """

    def __init__(
        self,
        *,
        start_timeout: float = 60.0,
        keep_dir: bool = False,
        extra_apiserver_args: Mapping[str, str] | None = None,
        pki_backend: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self.keep_dir = keep_dir
        self.extra_apiserver_args = dict(extra_apiserver_args or {})
        self.pki_backend = pki_backend
        self._dir: Path | None = None
        self._token = ""
        self._apiserver_port = 0
        self._etcd_port = 0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._logs: list[BinaryIO] = []

    # -- public properties ---------------------------------------------------

    @property
    def workdir(self) -> Path:
        """The private temp dir (certs, etcd data, logs, kubeconfig)."""
        if self._dir is None:
            raise ControlPlaneError("control plane is not started")
        return self._dir

    @property
    def url(self) -> str:
        """Base URL of the API server, e.g. ``https://127.0.0.1:43121``."""
        return f"https://{self.host}:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._etcd_port}"

    @property
    def token(self) -> str:
        """Bearer token of the ``admin`` user (group ``system:masters``)."""
        return self._token

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "etcd.log"

    def env(self) -> dict[str, str]:
        """Environment variables that point clients (kubectl, client libs) here."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSL context that trusts only this control plane's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "",
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """Call the API; return ``(status, decoded JSON or text)``.

        ``token=""`` (default) uses the admin token; ``token=None`` sends no
        credentials. HTTP error statuses are returned, not raised.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        bearer = self._token if token == "" else token
        if bearer:
            req.add_header("Authorization", f"Bearer {bearer}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            with err:
                status, raw = err.code, err.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd then kube-apiserver and wait until ``/readyz`` is 200."""
        if self._dir is not None:
            raise ControlPlaneError("control plane already started")
        etcd_bin = find_binary("etcd", "ETCD_BIN")
        apiserver_bin = find_binary("kube-apiserver", "KUBE_APISERVER_BIN")
        self._dir = Path(tempfile.mkdtemp(prefix="buntime-cp-"))
        try:
            extra_ips = () if self.host == "127.0.0.1" else (self.host,)
            make_pki(self.workdir / "pki", self.pki_backend, extra_ips)
            self._token = secrets.token_hex(24)
            tokens = self.workdir / "tokens.csv"
            tokens.write_text(f'{self._token},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n')
            tokens.chmod(0o600)
            # Ports are probed then released, so another process can grab one in
            # between; retry the whole start a few times when that happens.
            for attempt in range(3):
                self._apiserver_port, self._etcd_port, peer_port = free_ports(3)
                try:
                    self._start_etcd(etcd_bin, peer_port)
                    self._start_apiserver(apiserver_bin)
                    self._wait_ready()
                    break
                except _PortInUse:
                    self._terminate_processes()
                    if attempt == 2:
                        raise
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; remove the temp dir unless ``keep_dir``."""
        self._terminate_processes()
        if self._dir is not None:
            if self.keep_dir:
                print(f"control plane files kept in {self._dir}", file=sys.stderr)
            else:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- internals -------------------------------------------------------------

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log = open(log_path, "wb")  # noqa: SIM115 - closed in _terminate_processes
        self._logs.append(log)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # Ctrl-C in a terminal must not hit the children
            # Only a pre-resolved prctl() runs between fork and exec, so the
            # usual preexec_fn-with-threads hazard (locks held at fork) is moot.
            preexec_fn=_die_with_parent if _PRCTL is not None else None,  # noqa: PLW1509
        )

    def _start_etcd(self, etcd_bin: Path, peer_port: int) -> None:
        data_dir = self.workdir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(etcd_bin),
            "--name=default",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # throwaway data: durability is not the point
            "--log-level=warn",
        ]
        self._etcd = self._spawn(argv, self.etcd_log)
        deadline = time.monotonic() + min(self.start_timeout, 30.0)
        while time.monotonic() < deadline:
            self._check_alive(self._etcd, "etcd", self.etcd_log)
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp,
            ):
                if json.loads(resp.read()).get("health") == "true":
                    return
            time.sleep(0.1)
        raise ControlPlaneError(
            f"etcd not healthy at {self.etcd_url} after {min(self.start_timeout, 30.0)}s; "
            f"last log lines:\n{_tail(self.etcd_log)}"
        )

    def _start_apiserver(self, apiserver_bin: Path) -> None:
        pki = self.workdir / "pki"
        args: dict[str, str] = {
            "etcd-servers": self.etcd_url,
            "bind-address": self.host,
            "advertise-address": self.host,
            "secure-port": str(self._apiserver_port),
            "cert-dir": str(pki),
            "tls-cert-file": str(pki / "server.crt"),
            "tls-private-key-file": str(pki / "server.key"),
            "client-ca-file": str(pki / "ca.crt"),
            "token-auth-file": str(self.workdir / "tokens.csv"),
            "service-account-key-file": str(pki / "sa.pub"),
            "service-account-signing-key-file": str(pki / "sa.key"),
            "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
            "authorization-mode": "RBAC",
            "service-cluster-ip-range": SERVICE_CLUSTER_IP_RANGE,
            # No controller-manager creates ServiceAccounts/tokens, so the
            # plugin would reject every Pod.
            "disable-admission-plugins": "ServiceAccount",
            "allow-privileged": "true",
            # The lease reconciler would publish 127.0.0.1 as the "kubernetes"
            # Endpoints, which validation rejects (loopback) every 10s.
            "endpoint-reconciler-type": "none",
            "profiling": "false",
        }
        args.update(self.extra_apiserver_args)
        argv = [str(apiserver_bin), *(f"--{k}={v}" for k, v in args.items())]
        self._apiserver = self._spawn(argv, self.apiserver_log)

    def _write_kubeconfig(self) -> None:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        # JSON is valid YAML, so every kubeconfig reader accepts it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "buntime-test",
                    "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self._token}}],
            "contexts": [
                {
                    "name": "buntime-test",
                    "context": {
                        "cluster": "buntime-test",
                        "user": ADMIN_USER,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "buntime-test",
            "preferences": {},
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2) + "\n")
        self.kubeconfig.chmod(0o600)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = "no response"
        while time.monotonic() < deadline:
            self.check_running()
            try:
                status, body = self.request("GET", "/readyz", timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}: {str(body)[-500:]}"
            except (OSError, ssl.SSLError) as err:
                last = repr(err)
            time.sleep(0.25)
        raise ControlPlaneError(
            f"kube-apiserver at {self.url} not ready after {self.start_timeout}s "
            f"(last /readyz: {last}); last log lines:\n{_tail(self.apiserver_log)}"
        )

    def check_running(self) -> None:
        """Raise :class:`ControlPlaneError` (with log tail) if a process has exited."""
        if self._etcd is None or self._apiserver is None:
            raise ControlPlaneError("control plane is not running")
        self._check_alive(self._etcd, "etcd", self.etcd_log)
        self._check_alive(self._apiserver, "kube-apiserver", self.apiserver_log)

    def _check_alive(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        code = proc.poll()
        if code is None:
            return
        tail = _tail(log)
        if "address already in use" in tail:
            raise _PortInUse(f"{name}: port taken")
        raise ControlPlaneError(f"{name} exited with code {code}; last log lines:\n{tail}")

    def _terminate_processes(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._apiserver = self._etcd = None
        for log in self._logs:
            log.close()
        self._logs.clear()


class _PortInUse(ControlPlaneError):
    """A probed port was taken before the process bound it."""


# --------------------------------------------------------------------------
# `python -m tests.support.controlplane` (backs `make cluster`)


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set (the ``main()`` of a harness that runs until Ctrl-C)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def run_until(stop: threading.Event, check: Callable[[], None], errors: tuple[type[Exception], ...]) -> int:
    """Check the harness every second until ``stop``; 1 (after saying why) when a check fails."""
    while not stop.wait(1.0):
        try:
            check()
        except errors as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.controlplane",
        description="Run a local etcd + kube-apiserver until Ctrl-C.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) on exit")
    opts = parser.parse_args(argv)
    stop = stop_on_signals()
    try:
        cp = ControlPlane(keep_dir=opts.keep).start()
    except ControlPlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        kubectl = TOOLS_BIN / "kubectl"
        kubectl_cmd = str(kubectl) if kubectl.exists() else "kubectl"
        print(f"kube-apiserver ready at {cp.url} (etcd {cp.etcd_url})")
        print(f"logs: {cp.apiserver_log}, {cp.etcd_log}")
        print()
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print()
        print("try:")
        print(f"  {kubectl_cmd} get namespaces")
        print(f"  {kubectl_cmd} create configmap demo --from-literal=hello=world")
        print(f"  {kubectl_cmd} api-resources")
        print(f"  curl --cacert {cp.ca_file} -H 'Authorization: Bearer {cp.token}' {cp.url}/readyz")
        print()
        print("Ctrl-C to stop.", flush=True)
        return run_until(stop, cp.check_running, (ControlPlaneError,))
    finally:
        print("stopping control plane...", file=sys.stderr)
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
