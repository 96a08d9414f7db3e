"""Benchmark of the runtime server over real loopback HTTP, measured in one run.

* server overhead: ``GET /api/health/live`` (no plugin work) — requests/s with 16 clients, p50/p95
* cached read: ``GET /gateway/admin/shell/excludes`` (in-memory cache, no SQL)
* write: ``POST`` + ``DELETE`` of a shell exclude (one Turso transaction each), sequential p50/p95
* proxy overhead: ``GET`` through a proxy rule vs the same ``GET`` straight to the upstream
* across replicas: time from a ``POST`` on replica A until replica B serves it (two ``buntime serve``
  processes, ``TURSO_SYNC_INTERVAL=0.3s``, a real ``tursodb --sync-server``), p50/p95

The load generator, the runtime and the upstream share one process and one event loop, so the
in-process figures are a lower bound for what the server alone can do; compare rows, not hosts.

Run: ``make bench`` or ``python -m bench.bench_runtime_http``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from bench._util import percentile, report
from buntime.plugins import BUILTIN_DIR, PluginHost, discover
from buntime.server import build_app
from tests.server.support import RuntimeProcess, http
from tests.support.tursodb import SyncServer

N_REQUESTS = int(os.environ.get("BENCH_HTTP_REQUESTS", "4000"))
N_WRITES = int(os.environ.get("BENCH_HTTP_WRITES", "300"))
N_LAG = int(os.environ.get("BENCH_HTTP_LAG_SAMPLES", "20"))
CONCURRENCY = 16
SYNC_INTERVAL = 0.3
PLUGINS = ("@buntime/plugin-turso", "@buntime/plugin-gateway", "@buntime/plugin-proxy")


async def echo(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def listen(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def load(session: aiohttp.ClientSession, url: str, n: int) -> tuple[float, list[float]]:
    """``n`` GETs from ``CONCURRENCY`` workers; return (requests/s, per-request latencies)."""
    latencies: list[float] = []
    per_worker = n // CONCURRENCY

    async def worker() -> None:
        for _ in range(per_worker):
            start = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(latencies) / (time.perf_counter() - start), latencies


def row(label: str, rate: float, latencies: list[float], unit: str = "req/s") -> tuple[str, str]:
    p50, p95 = percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000
    return label, f"{rate:8.0f} {unit}   p50 {p50:6.2f} ms   p95 {p95:6.2f} ms"


async def sequential(fn: Callable[[int], Awaitable[None]], n: int) -> list[float]:
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        await fn(i)
        latencies.append(time.perf_counter() - start)
    return latencies


async def in_process(tmp: Path) -> None:
    upstream_app = web.Application()
    upstream_app.router.add_get("/{tail:.*}", echo)
    upstream_runner, upstream_url = await listen(upstream_app)
    env = {"TURSO_LOCAL_PATH": str(tmp / "local" / "runtime.db")}
    host = PluginHost([m for m in discover([BUILTIN_DIR]) if m.name in PLUGINS], env=env)
    runner, url = await listen(await build_app(env, host=host))
    rows: list[tuple[str, str]] = []
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{url}/redirects/admin/rules", json={"pattern": "^/svc/", "target": upstream_url}
            ) as response:
                assert response.status == 201
            await load(session, f"{url}/api/health/live", 400)  # warm up
            live = f"{url}/api/health/live"
            rows.append(row("GET /api/health/live", *await load(session, live, N_REQUESTS)))
            excludes = f"{url}/gateway/admin/shell/excludes"
            rows.append(row("GET shell excludes (cached)", *await load(session, excludes, N_REQUESTS)))
            direct = await load(session, f"{upstream_url}/svc/x", N_REQUESTS)
            proxied = await load(session, f"{url}/svc/x", N_REQUESTS)
            rows.append(row("GET upstream directly", *direct))
            rows.append(row("GET through a proxy rule", *proxied))
            overhead = percentile(proxied[1], 50) / percentile(direct[1], 50)
            rows.append(("proxy p50 / direct p50", f"{overhead:8.2f}x"))

            async def write(i: int) -> None:
                async with session.post(excludes, json={"basename": f"bench-{i}"}) as created:
                    assert created.status == 200 and (await created.json())["added"]
                async with session.delete(f"{excludes}/bench-{i}") as deleted:
                    assert deleted.status == 200 and (await deleted.json())["removed"]

            latencies = await sequential(write, N_WRITES)
            pairs = len(latencies) / sum(latencies)
            rows.append(row("POST+DELETE exclude (2 txns)", pairs, latencies, "pair/s"))
    finally:
        await runner.cleanup()
        await upstream_runner.cleanup()
    report(f"runtime HTTP, local mode, {CONCURRENCY} concurrent clients", rows)


def across_replicas(tmp: Path) -> None:
    server = SyncServer(tmp / "sync" / "remote.db").start()
    replicas: list[RuntimeProcess] = []
    try:
        for name in ("a", "b"):
            env = {
                "TURSO_LOCAL_PATH": str(tmp / name / "runtime.db"),
                "TURSO_SYNC_URL": server.url,
                "TURSO_SYNC_INTERVAL": f"{SYNC_INTERVAL}s",
            }
            replicas.append(RuntimeProcess(env, tmp / f"{name}.log").start(probe="live"))
        a, b = replicas
        lags: list[float] = []
        for i in range(N_LAG):
            basename = f"lag-{i}"
            start = time.perf_counter()
            assert http("POST", f"{a.url}/gateway/admin/shell/excludes", {"basename": basename})[0] == 200
            while True:
                _, body = http("GET", f"{b.url}/gateway/admin/shell/excludes")
                if any(item["basename"] == basename for item in body):
                    break
                time.sleep(0.005)
            lags.append(time.perf_counter() - start)
        report(
            f"cross-replica visibility (POST on A -> served by B), sync interval {SYNC_INTERVAL}s",
            [
                ("p50", f"{percentile(lags, 50) * 1000:7.0f} ms"),
                ("p95", f"{percentile(lags, 95) * 1000:7.0f} ms"),
                ("max", f"{max(lags) * 1000:7.0f} ms"),
                ("p50 / sync interval", f"{percentile(lags, 50) / SYNC_INTERVAL:7.2f}x"),
            ],
        )
    finally:
        for runtime in replicas:
            runtime.stop()
        server.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as raw:
        tmp = Path(raw)
        asyncio.run(in_process(tmp))
        across_replicas(tmp)


if __name__ == "__main__":
    main()
