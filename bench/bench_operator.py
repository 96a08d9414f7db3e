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
                ],
            )
        finally:
            operator.stop()
            server.stop()


if __name__ == "__main__":
    main()
