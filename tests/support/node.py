"""A single-node Kubernetes that really runs pods, for the cluster tests and ``make node``.

Why: the chart, the image and the operator's webhook only prove themselves on pods that run.
No registry and no Docker engine are reachable here, so this harness assembles a node from
what is: Debian's containerd, runc and CNI plugins (``hack/install-node-deps.sh``), Kubernetes
and CoreDNS built from the Go module proxy (``hack/build-control-plane.sh``,
``hack/build-node.sh``) and images built with buildah on debootstrapped Debian bases
(``hack/build-images.sh``), imported into the harness's own containerd.

What runs, all as children of this process, in one private directory:

- etcd + kube-apiserver (:class:`~tests.support.controlplane.ControlPlane`), listening on the
  bridge address so pods reach it through the ``kubernetes`` Service;
- kube-controller-manager and kube-scheduler;
- containerd with its root, state, socket and CNI config under the directory; the sandbox image is
  the locally built pause image, ``restrict_oom_score_adj`` (no CAP_SYS_RESOURCE here) and
  cgroupfs;
- kubelet, sharing one private mount namespace with containerd (so the volumes it mounts are the
  ones containerd sees, and every mount of either dies with the namespace), in which the
  ``/proc/sys`` files kubelet would rewrite (``vm.overcommit_memory``, ``kernel.panic``,
  ``kernel.panic_on_oops``, ...) are shadowed by regular files, so the shared machine's kernel
  settings never change, and ``/var/lib`` and ``/run`` are empty tmpfs for the paths they
  hard-code there;
- kube-proxy (iptables mode) with every ``--conntrack-*`` at 0 and no localhost NodePorts, so it
  writes no sysctl either;
- CoreDNS on the bridge address (the pods' nameserver), serving ``cluster.local`` only;
- a thread that provisions hostPath PersistentVolumes for the default StorageClass.

Network: pods live on the bridge ``buntime0`` (:data:`SUBNET`), routed only to the Service range,
with no default route and no masquerade to the outside; ``BUNTIME-FENCE`` rules drop anything
that would leave the bridge for another interface (or arrive from one). Forwarding is enabled
on the bridge alone (``net.ipv4.conf.buntime0.forwarding``), not machine-wide.

One node per machine at a time (an flock on :data:`LOCK_FILE`): the bridge, the ``KUBE-*``
chains and port 53 on the bridge address are machine-wide names. :meth:`Node.stop` removes
everything the harness made: processes (and containerd's shims and the containers, found by
their cgroup and by this directory, which takes the mount namespace with them), mounts under the
directory, iptables chains (``KUBE-*``,
``BUNTIME-*``, in every table, v4 and v6), the bridge, the cgroups under :data:`CGROUP_ROOT`,
CNI's cache entries and the directory. The state file :data:`STATE_FILE` names the directory,
so the next start cleans up after a run that crashed or was killed before it could.

Run ``python -m tests.support.node`` (``make node``) for an interactive node.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from tests.support.controlplane import (
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
    ControlPlaneError,
    run_until,
    stop_on_signals,
)
from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
IMAGES_ENV = Path(os.environ.get("BUNTIME_IMAGES_ENV") or REPO_ROOT / ".tools" / "images.env")

NODE_NAME = "buntime-node"
BRIDGE = "buntime0"
SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"
"""The bridge's address: node IP, API server, kubelet and cluster DNS all listen here."""
CNI_NETWORK = "buntime-node"
CGROUP_ROOT = "/buntime-node"
FENCE_CHAIN = "BUNTIME-FENCE"
STORAGE_CLASS = "buntime-hostpath"
PROVISIONER = "buntime.test/hostpath"
CLUSTER_DOMAIN = "cluster.local"

RUN_DIR = Path("/run/buntime-node")
LOCK_FILE = RUN_DIR / "lock"
STATE_FILE = RUN_DIR / "state.json"
CNI_CACHE = Path("/var/lib/cni/results")

DEBIAN_PACKAGES = ("containerd", "runc", "iptables", "buildah", "debootstrap")
BINARIES = ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler", "coredns")
CNI_BIN_DIR = Path("/usr/lib/cni")

# What kubelet's setupKernelTunables writes when a value differs (component-helpers sysctl).
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

# Machine-wide settings the components could touch; sampled at start and compared while running
# and at stop (a test asserts no drift; stop() puts back any value that moved).
WATCHED_SYSCTLS = (
    *KUBELET_SYSCTLS,
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/accept_redirects",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
)

_OWNED_CHAIN_PREFIXES = ("KUBE-", "BUNTIME-")
_STOP_GRACE_SECONDS = 10.0
_LOG_TAIL_LINES = 40


class NodeError(RuntimeError):
    """The node could not be started (missing prerequisite, crash, timeout)."""


class NodeUnavailable(NodeError):
    """A prerequisite is missing on this machine; the message says which and how to get it."""


# --------------------------------------------------------------------------
# Prerequisites


def missing_prerequisites() -> list[str]:
    """Why a node cannot start here (empty when it can): root, packages, binaries, images."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append("needs root (containerd, kubelet, iptables, a bridge)")
    if not Path("/sys/fs/cgroup").is_dir():
        reasons.append("no /sys/fs/cgroup")
    for tool in ("containerd", "runc", "iptables", "iptables-save", "ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            reasons.append(f"{tool} not on PATH (bash hack/install-node-deps.sh)")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN_DIR / plugin).is_file():
            reasons.append(f"CNI plugin {CNI_BIN_DIR / plugin} missing (bash hack/install-node-deps.sh)")
    for name in (*BINARIES, "etcd", "kube-apiserver", "kubectl", "helm"):
        if not os.access(TOOLS_BIN / name, os.X_OK):
            reasons.append(f"{TOOLS_BIN / name} missing (make control-plane node-binaries tools)")
    if not IMAGES_ENV.is_file():
        reasons.append(f"{IMAGES_ENV} missing (make image)")
    else:
        images = read_images_env()
        for key in ("PAUSE_ARCHIVE", "IMAGE_ARCHIVE"):
            if not Path(images.get(key, "")).is_file():
                reasons.append(f"{key}={images.get(key)} from {IMAGES_ENV} missing (make image)")
    return reasons


def read_images_env(path: Path = IMAGES_ENV) -> dict[str, str]:
    """The image names and archives ``hack/build-images.sh`` wrote."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------
# Small process helpers


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Pre-exec hook: SIGKILL when the spawning thread exits (a killed pytest leaves nothing)."""
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _run(*argv: str, check: bool = True, timeout: float = 120, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise NodeError(f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def run_kubectl(
    binary: str, env: dict[str, str], args: tuple[str, ...], *, input: str | None, check: bool, timeout: float
) -> str:
    """``kubectl args`` with ``env`` over ours: stdout, or (``check=False``) stdout and stderr."""
    result = subprocess.run(
        [binary, *args],
        env={**os.environ, **env},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise NodeError(f"kubectl {shlex.join(args)} failed: {result.stderr.strip()}")
    return result.stdout if check else result.stdout + result.stderr


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, NodeError, ControlPlaneError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise NodeError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


# --------------------------------------------------------------------------
# Cleanup, usable without a live Node (a crashed run's leftovers)


def read_sysctls(names: tuple[str, ...] = WATCHED_SYSCTLS) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(OSError):
            out[name] = Path("/proc/sys", name).read_text().strip()
    return out


def _mount_points_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/")
    points: list[str] = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


def unmount_under(root: Path) -> None:
    """Lazily unmount everything mounted at or below ``root``, deepest first."""
    for _ in range(5):
        points = _mount_points_under(root)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    leftover = _mount_points_under(root)
    if leftover:
        print(f"node cleanup: still mounted: {leftover}", file=sys.stderr)


def _pids_referencing(root: Path) -> list[int]:
    """Processes whose command line mentions ``root`` (containerd, its shims, kubelet...)."""
    needle = str(root).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def _cgroup_dirs() -> list[Path]:
    """``<controller mount>/buntime-node`` for every cgroup hierarchy that has one."""
    base = Path("/sys/fs/cgroup")
    candidates = [base / CGROUP_ROOT.lstrip("/")]
    with contextlib.suppress(OSError):
        candidates += [d / CGROUP_ROOT.lstrip("/") for d in base.iterdir() if d.is_dir()]
    return [d for d in candidates if d.is_dir()]


def _walk(top: Path, name: str) -> list[Path]:
    """Every ``name`` under ``top``; cgroups vanish while we look, which is not an error."""
    found: list[Path] = []
    for root, _dirs, files in os.walk(top, onerror=lambda _exc: None):
        if name in files:
            found.append(Path(root, name))
    return found


def kill_cgroups() -> None:
    """SIGKILL every process in the harness's cgroups (the pods' containers), then remove them."""
    for _ in range(20):
        alive = False
        for top in _cgroup_dirs():
            for procs in _walk(top, "cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        alive = True
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        if not alive:
            break
        time.sleep(0.25)
    for top in _cgroup_dirs():
        for _ in range(20):
            dirs = sorted(
                (p.parent for p in _walk(top, "cgroup.procs")), key=lambda p: len(p.parts), reverse=True
            )
            for path in [*dirs, top]:
                with contextlib.suppress(OSError):
                    path.rmdir()
            if not top.exists():
                break
            time.sleep(0.25)
        if top.exists():
            print(f"node cleanup: cgroup {top} could not be removed", file=sys.stderr)


def _iptables_tables(binary: str) -> list[str]:
    names = Path(f"/proc/net/{'ip6' if binary.startswith('ip6') else 'ip'}_tables_names")
    with contextlib.suppress(OSError):
        found = names.read_text().split()
        if found:
            return found
    return ["filter", "nat", "mangle", "raw"]


def remove_iptables_chains() -> None:
    """Delete every ``KUBE-*`` and ``BUNTIME-*`` chain and every rule that jumps to one."""
    for binary in ("iptables", "ip6tables"):
        if shutil.which(binary) is None:
            continue
        for table in _iptables_tables(binary):
            result = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True)
            if result.returncode != 0:
                continue
            ours: list[str] = []
            jumps: list[list[str]] = []
            for line in result.stdout.splitlines():
                if line.startswith(":"):
                    chain = line[1:].split()[0]
                    if chain.startswith(_OWNED_CHAIN_PREFIXES):
                        ours.append(chain)
                elif line.startswith("-A "):
                    words = shlex.split(line)
                    chain = words[1]
                    target = words[words.index("-j") + 1] if "-j" in words else ""
                    if not chain.startswith(_OWNED_CHAIN_PREFIXES) and target.startswith(
                        _OWNED_CHAIN_PREFIXES
                    ):
                        jumps.append(words[1:])
            for rule in jumps:
                subprocess.run([binary, "-w", "-t", table, "-D", *rule], capture_output=True, check=False)
            for chain in ours:
                subprocess.run([binary, "-w", "-t", table, "-F", chain], capture_output=True, check=False)
            for chain in ours:
                subprocess.run([binary, "-w", "-t", table, "-X", chain], capture_output=True, check=False)


def leftover_iptables_chains() -> list[str]:
    """``table:chain`` of every harness-owned chain still present (for the leak checks)."""
    found: list[str] = []
    for binary in ("iptables", "ip6tables"):
        if shutil.which(binary) is None:
            continue
        for table in _iptables_tables(binary):
            result = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True)
            found += [
                f"{binary}/{table}:{line[1:].split()[0]}"
                for line in result.stdout.splitlines()
                if line.startswith(":") and line[1:].startswith(_OWNED_CHAIN_PREFIXES)
            ]
    return found


def cleanup(workdir: Path | None, control_plane_dir: Path | None = None) -> None:
    """Remove everything a node (live or crashed) left: see the module docstring."""
    for owned in (workdir, control_plane_dir):
        if owned is None:
            continue
        for pid in _pids_referencing(owned):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    kill_cgroups()
    if workdir is not None:
        for _ in range(20):
            if not _pids_referencing(workdir):
                break
            time.sleep(0.25)
        unmount_under(workdir)
    remove_iptables_chains()
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    # containerd's CNI library caches each sandbox's result outside our directory:
    # "<network>-<sandbox id>-<ifname>" for our network and for its built-in loopback.
    sandboxes: set[str] = set()
    if workdir is not None:
        for part in ("root", "state"):
            with contextlib.suppress(OSError):
                cri = workdir / "containerd" / part / "io.containerd.grpc.v1.cri" / "sandboxes"
                sandboxes |= {entry.name for entry in cri.iterdir()}
    with contextlib.suppress(OSError):
        for entry in CNI_CACHE.iterdir():
            if entry.name.startswith(f"{CNI_NETWORK}-") or (
                entry.name.startswith("cni-loopback-") and entry.name.split("-")[2] in sandboxes
            ):
                entry.unlink()
    # Removed only when empty: another user of CNI keeps its entries.
    for directory in (CNI_CACHE, CNI_CACHE.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()
    kill_cgroups()
    if workdir is not None and workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
    if control_plane_dir is not None and control_plane_dir.exists():
        shutil.rmtree(control_plane_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# The hostPath provisioner


class HostPathProvisioner(threading.Thread):
    """Provision a hostPath PV for every Pending claim of :data:`STORAGE_CLASS`; reclaim Released ones.

    The PV controller (in kube-controller-manager) waits for an external provisioner named by
    the StorageClass; this thread is it. Volumes are directories under ``root`` (mode 0777, so
    the non-root pods can write; kubelet applies no fsGroup to hostPath), bound through the PV's
    ``claimRef``. The reclaim policy is the StorageClass's.
    """

    def __init__(self, cp: ControlPlane, root: Path, *, interval: float = 0.5) -> None:
        super().__init__(name="hostpath-provisioner", daemon=True)
        self.cp = cp
        self.root = root
        self.interval = interval
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self._provision()
                self._reclaim()
            except (OSError, ValueError, KeyError) as exc:
                self.errors.append(repr(exc))

    def _provision(self) -> None:
        status, claims = self.cp.request("GET", "/api/v1/persistentvolumeclaims")
        if status != 200:
            return
        for pvc in claims["items"]:
            spec, meta = pvc["spec"], pvc["metadata"]
            if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
                continue
            if pvc.get("status", {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
                continue
            name = f"pvc-{meta['uid']}"
            path = self.root / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec["accessModes"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": STORAGE_CLASS,
                    "volumeMode": spec.get("volumeMode", "Filesystem"),
                    "hostPath": {"path": str(path), "type": "Directory"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            self.cp.request("POST", "/api/v1/persistentvolumes", pv)

    def _reclaim(self) -> None:
        status, volumes = self.cp.request("GET", "/api/v1/persistentvolumes")
        if status != 200:
            return
        for pv in volumes["items"]:
            annotations = pv["metadata"].get("annotations") or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if pv.get("status", {}).get("phase") != "Released":
                continue
            if pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete":
                continue
            shutil.rmtree(self.root / pv["metadata"]["name"], ignore_errors=True)
            self.cp.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")


# --------------------------------------------------------------------------
# The node


class Node:
    """A control plane plus one node that runs pods; see the module docstring.

    Usage::

        with Node() as node:
            node.kubectl("get", "nodes")
            node.helm("install", "buntime", "charts/buntime", "--set", f"image.repository=...")

    Parameters:

    - ``start_timeout`` *(optional)*: seconds to wait for the node to be Ready. Default 180.
    - ``keep_dir`` *(optional)*: keep the directory (logs) after :meth:`stop`. Default False.
    """

    def __init__(self, *, start_timeout: float = 180.0, keep_dir: bool = False) -> None:
        self.start_timeout = start_timeout
        self.keep_dir = keep_dir
        self.images: dict[str, str] = {}
        self.cp: ControlPlane | None = None
        self._dir: Path | None = None
        self._lock: TextIO | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[BinaryIO] = []
        self._provisioner: HostPathProvisioner | None = None
        self.kubelet_port = 0
        self._mount_ns = ""
        self.sysctls_at_start: dict[str, str] = {}
        self.sysctls_restored: dict[str, tuple[str, str]] = {}

    # -- paths and clients -----------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._dir is None:
            raise NodeError("node is not started")
        return self._dir

    @property
    def control_plane(self) -> ControlPlane:
        if self.cp is None:
            raise NodeError("node is not started")
        return self.cp

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def image(self) -> str:
        """The project image (``localhost/buntime:<appVersion>-<content hash>``)."""
        return self.images["IMAGE"]

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        binary = str(TOOLS_BIN / "kubectl")
        return run_kubectl(binary, self.env(), args, input=input, check=check, timeout=timeout)

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        sock = self.workdir / "containerd" / "containerd.sock"
        return _run(
            "ctr", "--address", str(sock), "--namespace", "k8s.io", *args, check=check, timeout=timeout
        )

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Node:
        missing = missing_prerequisites()
        if missing:
            raise NodeUnavailable("; ".join(missing))
        self.images = read_images_env()
        self._take_lock()
        try:
            self._cleanup_previous_run()
            self.sysctls_at_start = read_sysctls()
            self._dir = Path(tempfile.mkdtemp(prefix="buntime-node-"))
            (self.workdir / "logs").mkdir()
            self._write_state()
            self._setup_network()
            self._start_mount_namespace()
            self._start_containerd()
            self._import_images()
            self._start_control_plane()
            self._start_controllers()
            self._start_kubelet()
            self._start_kube_proxy()
            self._start_coredns()
            self._create_storage_class()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything and remove every trace (see the module docstring).

        Every step runs even when an earlier one fails; the first failure is raised at the end.
        """
        errors: list[BaseException] = []
        for step in (self._stop_processes, self._remove_traces):
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if self._lock is not None:
            if not errors:
                with contextlib.suppress(OSError):
                    STATE_FILE.unlink()
            self._lock.close()
            self._lock = None
        if errors:
            raise errors[0]

    def _stop_processes(self) -> None:
        if self._provisioner is not None:
            self._provisioner.stop()
            self._provisioner = None
        # kubelet first, so it restarts nothing while the rest goes away.
        for name in ("kubelet", "kube-proxy", "coredns", "kube-scheduler", "kube-controller-manager"):
            self._terminate(name)
        with contextlib.suppress(Exception):
            kill_cgroups()
        self._terminate("containerd")
        self._terminate("mount-namespace")

    def _remove_traces(self) -> None:
        if self.cp is not None:
            self.cp.stop()
            self.cp = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._dir is not None:
            if self.keep_dir:
                logs = Path(tempfile.mkdtemp(prefix="buntime-node-logs-"))
                shutil.copytree(self._dir / "logs", logs, dirs_exist_ok=True)
                print(f"node logs kept in {logs}", file=sys.stderr)
            cleanup(self._dir)
            self._dir = None
        if self.sysctls_at_start:
            self._restore_sysctls()

    def sysctl_drift(self) -> dict[str, tuple[str, str]]:
        """``{name: (at start, now)}`` for every watched machine setting that changed."""
        now = read_sysctls()
        return {
            name: (before, now.get(name, "?"))
            for name, before in self.sysctls_at_start.items()
            if now.get(name) != before
        }

    def _restore_sysctls(self) -> None:
        drift = self.sysctl_drift()
        for name, (before, _now) in drift.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(before + "\n")
        if drift:
            print(f"node: put back machine settings that changed: {drift}", file=sys.stderr)
        self.sysctls_restored = drift

    def check_running(self) -> None:
        """Raise :class:`NodeError` (with the log tail) if a component has exited."""
        if self.cp is not None:
            self.cp.check_running()
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode}:\n{_tail(self.log(name))}")

    # -- steps -------------------------------------------------------------------

    def _write_state(self) -> None:
        state = {"workdir": str(self._dir), "pid": os.getpid()}
        if self.cp is not None:
            state["control_plane"] = str(self.cp.workdir)
        STATE_FILE.write_text(json.dumps(state))

    def _take_lock(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        lock = open(LOCK_FILE, "w")  # noqa: SIM115 - held until stop()
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    lock.close()
                    raise NodeError(f"another node harness holds {LOCK_FILE}") from exc
                time.sleep(2)
        self._lock = lock

    def _cleanup_previous_run(self) -> None:
        """We hold the lock, so whoever wrote the state file is gone: remove what it left."""
        previous: Path | None = None
        previous_cp: Path | None = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(STATE_FILE.read_text())
            previous = Path(state["workdir"])
            previous_cp = Path(state["control_plane"]) if state.get("control_plane") else None
        if previous is not None or Path("/sys/class/net", BRIDGE).exists() or leftover_iptables_chains():
            print(f"node: cleaning up after an earlier run ({previous})", file=sys.stderr)
            cleanup(previous, previous_cp)

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        log = open(self.log(name), "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,  # noqa: PLW1509
        )

    def _terminate(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _setup_network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{GATEWAY}/{SUBNET.split('/')[1]}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Routing between pods and Services happens on this bridge only.
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1\n")
        ipt = ("iptables", "-w")
        _run(*ipt, "-N", FENCE_CHAIN)
        # Nothing from the pods leaves the bridge for another interface, nothing arrives from one.
        _run(*ipt, "-A", FENCE_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        _run(*ipt, "-A", FENCE_CHAIN, "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP")
        _run(*ipt, "-I", "FORWARD", "1", "-j", FENCE_CHAIN)
        _run(*ipt, "-N", f"{FENCE_CHAIN}-IN")
        # From the pods to the host: the API server and DNS yes, kubelet's port no (below).
        _run(*ipt, "-I", "INPUT", "1", "-i", BRIDGE, "-j", f"{FENCE_CHAIN}-IN")

    def _start_mount_namespace(self) -> None:
        """A private mount namespace for containerd, its shims, the containers and kubelet.

        Everything they mount (container root filesystems, shm, network namespaces, kubelet's
        volumes) stays in it and disappears with its last process, also after a crash; kubelet
        and containerd share it, so the volumes kubelet mounts are the ones containerd sees. In
        it, the ``/proc/sys`` files kubelet would rewrite are shadowed by regular files holding
        the values it wants, and ``/var/lib`` and ``/run`` are empty tmpfs, for the paths
        kubelet, containerd and runc hard-code there (``/var/lib/kubelet/device-plugins``, CNI's
        cache in ``/var/lib/cni``, ``/run/containerd/{s,runc}``). A holder process keeps the
        namespace open; the others join it with ``nsenter``.
        """
        shadows = self.workdir / "sysctl"
        shadows.mkdir()
        setup = ["set -eu"]
        for name, desired in KUBELET_SYSCTLS.items():
            current = Path("/proc/sys", name).read_text().strip()
            if current != desired:
                shadow = shadows / name.replace("/", ".")
                shadow.write_text(desired + "\n")
                setup.append(f"mount --bind {shlex.quote(str(shadow))} /proc/sys/{name}")
        ready = self.workdir / "mount-namespace.ready"
        setup += [
            "mount -t tmpfs -o mode=0755,size=64m buntime-node-var-lib /var/lib",
            "mount -t tmpfs -o mode=0755,size=64m buntime-node-run /run",
            "mkdir -p /var/lib/kubelet/device-plugins /run/containerd",
            f": > {shlex.quote(str(ready))}",
            "exec sleep infinity",
        ]
        # --propagation private: nothing mounted in there ever propagates to the machine.
        self._spawn(
            "mount-namespace",
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(setup)],
        )

        def up() -> bool:
            self.check_running()
            return ready.exists()

        _wait("the node's mount namespace", up, timeout=30)
        self._mount_ns = f"/proc/{self._procs['mount-namespace'].pid}/ns/mnt"

    def _in_node_mounts(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--mount={self._mount_ns}", "--", *argv]

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (base / "root").mkdir(parents=True)
        (cni_conf / "10-buntime.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": CNI_NETWORK,
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            # Not a gateway: the bridge plugin would turn on net.ipv4.ip_forward
                            # for the whole machine. The bridge already has GATEWAY, forwarding is
                            # on for it alone, and the route below names the gateway itself.
                            "isGateway": False,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [
                                    [{"subnet": SUBNET, "rangeStart": "10.213.0.10", "gateway": GATEWAY}]
                                ],
                                # Only the Service range goes through the host: no default route.
                                "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE, "gw": GATEWAY}],
                                "dataDir": str(self.workdir / "cni" / "ipam"),
                            },
                        },
                    ],
                },
                indent=2,
            )
        )
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{base / "containerd.sock"}"

[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.images["PAUSE_IMAGE"]}"
  # This machine's processes lack CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""
        (base / "config.toml").write_text(config)
        self._spawn("containerd", self._in_node_mounts(["containerd", "--config", str(base / "config.toml")]))
        sock = base / "containerd.sock"

        def up() -> bool:
            self.check_running()
            return sock.exists() and "Server:" in self.ctr("version", check=False, timeout=10)

        _wait("containerd answering", up, timeout=60)

    def _import_images(self) -> None:
        for archive in ("PAUSE_ARCHIVE", "IMAGE_ARCHIVE"):
            self.ctr("images", "import", self.images[archive])
        listed = self.ctr("images", "list", "--quiet")
        for name in ("PAUSE_IMAGE", "IMAGE"):
            if self.images[name] not in listed.split():
                raise NodeError(f"{self.images[name]} not in containerd after import: {listed}")

    def _start_control_plane(self) -> None:
        self.cp = ControlPlane(
            host=GATEWAY,
            extra_apiserver_args={
                # The controller-manager makes ServiceAccounts and tokens now.
                "disable-admission-plugins": "",
                "enable-admission-plugins": "ServiceAccount",
                # The "kubernetes" Service points at the bridge address, which pods can reach.
                "endpoint-reconciler-type": "lease",
                # The node's name resolves nowhere; its InternalIP is the bridge address.
                "kubelet-preferred-address-types": "InternalIP,Hostname",
            },
        ).start()
        self._write_state()

    def _start_controllers(self) -> None:
        pki = self.control_plane.workdir / "pki"
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(TOOLS_BIN / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--controllers=*",
                # Its default, /usr/libexec/kubernetes/..., would be created on the machine.
                f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",
                "--concurrent-statefulset-syncs=5",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(TOOLS_BIN / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--v=1",
            ],
        )

    def _start_kubelet(self) -> None:
        root = self.workdir / "kubelet"
        (root / "pki").mkdir(parents=True)
        (self.workdir / "resolv.conf").write_text("")
        self.kubelet_port = free_port(GATEWAY)
        _run(
            "iptables",
            "-w",
            "-A",
            f"{FENCE_CHAIN}-IN",
            "-p",
            "tcp",
            "--dport",
            str(self.kubelet_port),
            "-j",
            "DROP",
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": GATEWAY,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            # The API server calls kubelet (logs, exec, port-forward) without a client
            # certificate; the fence keeps pods away from this port.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": CGROUP_ROOT,
            "failSwapOn": False,
            "failCgroupV1": False,
            "makeIPTablesUtilChains": False,
            "clusterDNS": [GATEWAY],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(self.workdir / "resolv.conf"),
            "containerRuntimeEndpoint": f"unix://{self.workdir / 'containerd' / 'containerd.sock'}",
            "podLogsDir": str(self.workdir / "pod-logs"),
            "volumePluginDir": str(root / "volume-plugins"),
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
        }
        (self.workdir / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        argv = [
            str(TOOLS_BIN / "kubelet"),
            f"--config={self.workdir / 'kubelet.yaml'}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}",
            "--v=1",
        ]
        # The pod cgroups' parent must exist in every hierarchy before kubelet starts.
        self._make_cgroup_root()
        self._spawn("kubelet", self._in_node_mounts(argv))

    def _make_cgroup_root(self) -> None:
        base = Path("/sys/fs/cgroup")
        for hierarchy in base.iterdir():
            if not hierarchy.is_dir() or hierarchy.is_symlink() or hierarchy.name == "unified":
                continue
            target = hierarchy / CGROUP_ROOT.lstrip("/")
            target.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (target / knob).write_text((hierarchy / knob).read_text())

    def _start_kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            [
                str(TOOLS_BIN / "kube-proxy"),
                f"--kubeconfig={self.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={SUBNET}",
                # No sysctl writes: conntrack limits and timeouts stay the machine's...
                "--conntrack-max-per-core=0",
                "--conntrack-min=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                # ...and no route_localnet (NodePorts on 127.0.0.1 would need it).
                "--iptables-localhost-nodeports=false",
                f"--nodeport-addresses={GATEWAY}/32",
                # Service traffic is SNATed to the bridge address, so replies from a pod on the
                # same bridge come back through the host (no br_netfilter needed). It never
                # leaves the bridge.
                "--masquerade-all",
                f"--healthz-bind-address=127.0.0.1:{free_port()}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                "--v=1",
            ],
        )

    def _start_coredns(self) -> None:
        ready_port = free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {GATEWAY}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.kubeconfig} buntime-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        )
        self._spawn("coredns", [str(TOOLS_BIN / "coredns"), "-conf", str(corefile)])
        self._coredns_ready = f"http://127.0.0.1:{ready_port}/ready"

    def _create_storage_class(self) -> None:
        volumes = self.workdir / "volumes"
        volumes.mkdir()
        sc = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        status, body = self.control_plane.request("POST", "/apis/storage.k8s.io/v1/storageclasses", sc)
        if status != 201:
            raise NodeError(f"StorageClass: HTTP {status}: {body}")
        self._provisioner = HostPathProvisioner(self.control_plane, volumes)
        self._provisioner.start()

    def _wait_ready(self) -> None:
        import urllib.request

        cp = self.control_plane

        def node_ready() -> bool:
            self.check_running()
            status, node = cp.request("GET", f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return conditions.get("Ready") == "True"

        _wait(f"node {NODE_NAME} Ready", node_ready, timeout=self.start_timeout)

        def default_service_account() -> bool:
            status, _ = cp.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        _wait("the default ServiceAccount", default_service_account, timeout=60)

        def dns_ready() -> bool:
            self.check_running()
            with urllib.request.urlopen(self._coredns_ready, timeout=2) as resp:
                return bool(resp.status == 200)

        _wait("CoreDNS ready", dns_ready, timeout=60)


class ExternalCluster:
    """Someone else's cluster (``hack/kind-e2e.sh``): the same checks, none of the harness.

    Parameters:

    - ``kubeconfig``: the cluster's kubeconfig.
    - ``image``: the project image, already loaded onto every node.
    """

    def __init__(self, *, kubeconfig: Path, image: str) -> None:
        self.kubeconfig = kubeconfig
        self.image = image

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        binary = shutil.which("kubectl") or str(TOOLS_BIN / "kubectl")
        return run_kubectl(binary, self.env(), args, input=input, check=check, timeout=timeout)


def external_cluster_from_env() -> ExternalCluster | None:
    """``BUNTIME_E2E_KUBECONFIG`` + ``BUNTIME_E2E_IMAGE`` name a cluster to test instead of a Node."""
    kubeconfig = os.environ.get("BUNTIME_E2E_KUBECONFIG")
    if not kubeconfig:
        return None
    image = os.environ.get("BUNTIME_E2E_IMAGE")
    if not image:
        raise NodeError("BUNTIME_E2E_KUBECONFIG is set but BUNTIME_E2E_IMAGE (the loaded image) is not")
    return ExternalCluster(kubeconfig=Path(kubeconfig), image=image)


# --------------------------------------------------------------------------
# `python -m tests.support.node` (backs `make node`)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.node",
        description="Run a control plane and one node that runs pods, until Ctrl-C.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs after exit")
    opts = parser.parse_args(argv)
    stop = stop_on_signals()
    try:
        node = Node(keep_dir=opts.keep).start()
    except NodeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        kubectl = TOOLS_BIN / "kubectl"
        print(f"node {NODE_NAME} Ready; API server {node.control_plane.url}; logs in {node.workdir / 'logs'}")
        print()
        print(f"export KUBECONFIG={node.kubeconfig}")
        print()
        print("try:")
        print(f"  {kubectl} get nodes -o wide")
        print(f"  {kubectl} run hello --image={node.image} --restart=Never -- python -c 'print(42)'")
        print(f"  {TOOLS_BIN / 'helm'} install buntime charts/buntime --set image.repository=")
        repo, _, tag = node.image.rpartition(":")
        print(f"      {repo} --set image.tag={tag} --set tursoServer.enabled=true")
        print()
        print("Ctrl-C to stop (removes every process, mount, chain and the bridge).", flush=True)
        return run_until(stop, node.check_running, (NodeError, ControlPlaneError))
    finally:
        print("stopping the node...", file=sys.stderr)
        node.stop()


if __name__ == "__main__":
    sys.exit(main())
