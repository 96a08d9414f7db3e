"""Operator at scale: apply 200 TursoNamespace objects at once; time until every one is Ready.

Measured in one run against a real control plane and turso-server: the API's own create time
for the 200 objects is the baseline; readiness per object is timed from its create request.
Prints p50/p95 per object, the total, the ratio to the baseline and the operator's RSS.
Run: ``python -m bench bench_operator`` (needs ``hack/build-control-plane.sh``).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._util import percentile, report
from tests.support.controlplane import ControlPlane
from tests.support.operator import API, CRD_FILE, OperatorProcess, kubectl
from tests.support.tursoserver import TursoServer

COUNT = int(os.environ.get("BENCH_OPERATOR_OBJECTS", "200"))


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_requests(cp: ControlPlane) -> dict[str, int]:
    """Write requests served so far by kube-apiserver, by ``VERB resource`` (its own metrics)."""
    _, text = cp.request("GET", "/metrics", timeout=30)
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
        verb = labels.get("verb", "").strip('"')
        if verb in ("POST", "PATCH", "PUT", "DELETE", "CREATE", "UPDATE"):
            key = f"{verb} {labels.get('resource', '').strip(chr(34))}"
            counts[key] = counts.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as raw, ControlPlane() as cp:
        tmp = Path(raw)
        kubectl(cp, "apply", "-f", str(CRD_FILE))
        kubectl(cp, "wait", "--for=condition=Established", "crd/tursonamespaces.turso.buntime.io")
        server = TursoServer(
            tmp / "turso",
            extra_env={
                "TURSO_MAX_NAMESPACES": "0",
                "TURSO_BACKEND_PORT_START": "10000",
                "TURSO_BACKEND_PORT_END": "10999",
            },
        ).start()
        operator = OperatorProcess(cp, server, tmp, TURSO_RESYNC_SECONDS="300").start()
        try:
            namespace = "bench"
            cp.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
            path = f"{API}/namespaces/{namespace}/tursonamespaces"
            submitted: dict[str, float] = {}

            def create(i: int) -> None:
                name = f"db-{i:03d}"
                body = {
                    "apiVersion": "turso.buntime.io/v1alpha1",
                    "kind": "TursoNamespace",
                    "metadata": {"name": name},
                    "spec": {},
                }
                submitted[name] = time.perf_counter()
                status, _ = cp.request("POST", path, body)
                assert status == 201

            before = api_requests(cp)
            assert operator.proc is not None and cp._apiserver is not None and server.proc is not None
            watched = {
                "operator": operator.proc.pid,
                "kube-apiserver": cp._apiserver.pid,
                "turso-server": server.proc.pid,
            }
            cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            start = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(COUNT)))
            created = time.perf_counter() - start
            ready_at: dict[str, float] = {}
            deadline = start + 600
            while len(ready_at) < COUNT and time.perf_counter() < deadline:
                _, body = cp.request("GET", path, timeout=30)
                now = time.perf_counter()
                for item in body["items"]:
                    name = item["metadata"]["name"]
                    conditions = (item.get("status") or {}).get("conditions") or []
                    if name not in ready_at and any(
                        c["type"] == "Ready" and c["status"] == "True" for c in conditions
                    ):
                        ready_at[name] = now
                time.sleep(0.2)
            total = max(ready_at.values()) - start if ready_at else float("nan")
            per_object = [ready_at[n] - submitted[n] for n in ready_at]
            assert operator.proc is not None
            rss, peak = rss_kib(operator.proc.pid)
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in watched.items()}
            calls = {k: v - before.get(k, 0) for k, v in api_requests(cp).items() if v - before.get(k, 0) > 0}
            _, events = cp.request("GET", f"/api/v1/namespaces/{namespace}/events", timeout=30)
            reasons: dict[str, int] = {}
            for event in events["items"]:
                reasons[event["reason"]] = reasons.get(event["reason"], 0) + event.get("count", 1)
            report(
                f"{COUNT} TursoNamespace objects applied at once",
                [
                    ("ready", f"{len(ready_at)}/{COUNT}"),
                    ("baseline: API create of all objects", f"{created:8.2f} s"),
                    ("total until all Ready", f"{total:8.2f} s"),
                    ("ratio total / baseline", f"{total / created:.1f}x"),
                    ("per object p50", f"{percentile(per_object, 50):8.2f} s"),
                    ("per object p95", f"{percentile(per_object, 95):8.2f} s"),
                    ("operator RSS now / peak", f"{rss / 1024:.0f} MiB / {peak / 1024:.0f} MiB"),
                    ("Events posted per object", f"{sum(reasons.values()) / COUNT:.1f}  {reasons}"),
                    ("API writes per object (all clients)", f"{sum(calls.values()) / COUNT:.1f}  {calls}"),
                    (
                        "CPU seconds during the run (2 cores)",
                        ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()),
                    ),
                ],
            )
        finally:
            operator.stop()
            server.stop()


if __name__ == "__main__":
    main()
