"""KeyVal benchmark: ``set``/``get`` ops/s through the Kv API and HTTP against straight pyturso.

Run with ``python bench/bench_keyval.py`` (about a minute). Each path gets its own fresh local
MVCC file in one temporary directory:

* **pyturso** — the same statements the Kv store issues, on a same-shaped table, called
  directly: ``BEGIN CONCURRENT; INSERT OR REPLACE ...; COMMIT`` per set and one ``SELECT`` by
  key per get, with keys and values encoded up front (the engine's cost and nothing else);
* **service** — the same statements through the host's :class:`~buntime.turso.TursoService`
  on the Kv's own table, without the KeyVal layer (``run_transaction()`` per set — BEGIN,
  INSERT and COMMIT in one engine-thread hop, as the Kv does — and ``connect().get()`` per
  get): what the service's engine-thread hop costs by itself;
* **service tx** — the same sets through the async ``transaction()`` (one hop for BEGIN and
  the INSERT, one for COMMIT), for comparison; its get column repeats the service's;
* **api** — ``await kv.set(...)`` / ``await kv.get(...)`` on a real PluginHost (turso + keyval);
* **http** — ``PUT``/``GET /keyval/api/keys/...`` over loopback to an in-process aiohttp server.

Every path after pyturso runs twice: on the default engine thread, and with
``TURSO_EXECUTOR=inline`` (rows marked ``inline``: statements on the event loop, no thread hop).
Sequential calls measure per-operation overhead; the ``xN`` rows run N concurrent callers.
The ratio is pyturso ops/s divided by the path's ops/s (1.0 = no overhead; the goal for the
API path is <= 1.3); ``api/service`` isolates what the KeyVal layer adds on top of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

import turso
from buntime.plugins import BUILTIN_DIR, PluginHost, load_manifest
from buntime.plugins.keyval import KEYVAL_PLUGIN_NAME, KeyValPlugin, Kv, encode_key
from buntime.turso import BlockingDatabase, Database, TursoService

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv_entries (key BLOB PRIMARY KEY, value BLOB NOT NULL, "
    "versionstamp TEXT NOT NULL, expires_at INTEGER)"
)
SET_SQL = "INSERT OR REPLACE INTO kv_entries(key, value, versionstamp, expires_at) VALUES (?, ?, ?, ?)"
GET_SQL = (
    "SELECT value, versionstamp, expires_at FROM kv_entries "
    "WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
)
VALUE = {"name": "Ada Lovelace", "age": 36, "tags": ["math", "engines"]}


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_raw(path: Path, sets: int, gets: int) -> tuple[float, float]:
    conn = turso.connect(str(path), isolation_level=None)
    conn.autocommit = True
    conn.execute("PRAGMA journal_mode = mvcc").fetchone()
    conn.execute(SCHEMA)
    keys = [encode_key(("bench", i)) for i in range(max(sets, 1))]
    value = json.dumps(VALUE, separators=(",", ":")).encode()
    start = time.perf_counter()
    for i in range(sets):
        conn.execute("BEGIN CONCURRENT")
        conn.execute(SET_SQL, [keys[i], value, f"{i:020x}", None])
        conn.execute("COMMIT")
    set_rate = rate(sets, time.perf_counter() - start)
    now = int(time.time() * 1000)
    start = time.perf_counter()
    for i in range(gets):
        conn.execute(GET_SQL, [keys[i % sets], now]).fetchone()
    get_rate = rate(gets, time.perf_counter() - start)
    conn.close()
    return set_rate, get_rate


async def timed(n: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> float:
    """ops/s of ``n`` calls of ``op(i)`` spread over ``concurrency`` sequential workers."""

    async def worker(offset: int) -> None:
        for i in range(offset, n, concurrency):
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return rate(n, time.perf_counter() - start)


async def bench_service(service: TursoService, sets: int, gets: int) -> dict[str, tuple[float, float]]:
    """The Kv's own statements on the Kv's own table and service, minus the KeyVal layer."""
    keys = [encode_key(("service", i)) for i in range(max(sets, 1))]
    value = json.dumps(VALUE, separators=(",", ":")).encode()

    async def put(i: int) -> None:
        def fn(db: BlockingDatabase) -> None:
            db.run(SET_SQL, [keys[i], value, f"{i:020x}", None])

        await service.run_transaction(fn, namespace="keyval")

    async def put_tx(i: int) -> None:
        async def fn(db: Database) -> None:
            await db.run(SET_SQL, [keys[i], value, f"{i:020x}", None])

        await service.transaction(fn, namespace="keyval")

    db = await service.connect("keyval")
    now = int(time.time() * 1000)
    set_rate = await timed(sets, 1, put)
    get_rate = await timed(gets, 1, lambda i: db.get(GET_SQL, [keys[i % sets], now]))
    tx_rate = await timed(sets, 1, put_tx)
    return {"service": (set_rate, get_rate), "service tx": (tx_rate, get_rate)}


async def bench_paths(
    directory: Path, sets: int, gets: int, concurrency: int, executor: str
) -> dict[str, tuple[float, float]]:
    """Every path on one host whose service uses ``executor``; inline rows get an ``inline`` suffix."""
    results = await _bench_paths(directory / executor, sets, gets, concurrency, executor)
    suffix = "" if executor == "thread" else f" {executor}"
    return {f"{name}{suffix}": rates for name, rates in results.items()}


async def _bench_paths(
    directory: Path, sets: int, gets: int, concurrency: int, executor: str
) -> dict[str, tuple[float, float]]:
    env = {
        "TURSO_EXECUTOR": executor,
        "TURSO_LOCAL_PATH": str(directory / "api" / "runtime.db"),
        "KEYVAL_SWEEP_INTERVAL": "0",
        "KEYVAL_QUEUE_CLEANUP_INTERVAL": "0",
    }
    manifests = [load_manifest(BUILTIN_DIR / name / "manifest.yaml") for name in ("turso", "keyval")]
    host = PluginHost(manifests, env=env)
    await host.start()
    if not host.ready:
        raise SystemExit(f"plugins failed: {host.failed} {host.skipped}")
    results: dict[str, tuple[float, float]] = {}
    try:
        kv = host.get_plugin(KEYVAL_PLUGIN_NAME)
        assert isinstance(kv, Kv)
        results.update(await bench_service(kv.service, sets, gets))

        async def kv_set(i: int, c: int) -> None:
            await kv.set(["api", c, i], VALUE)

        async def kv_get(i: int, c: int) -> None:
            await kv.get(["api", c, i % sets])

        for c in (1, concurrency):
            label = "api" if c == 1 else f"api x{c}"
            set_rate = await timed(sets, c, functools.partial(kv_set, c=c))
            get_rate = await timed(gets, c, functools.partial(kv_get, c=c))
            results[label] = (set_rate, get_rate)

        plugin = next(p.plugin for p in host.loaded if p.manifest.name == KEYVAL_PLUGIN_NAME)
        assert isinstance(plugin, KeyValPlugin)
        app = web.Application()
        subapp = plugin.routes()
        assert subapp is not None
        app.add_subapp("/keyval", subapp)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}/keyval/api/keys/http"
        body = json.dumps(VALUE)
        headers = {"Content-Type": "application/json"}
        try:
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def put(i: int, c: int) -> None:
                    async with session.put(f"{base}/{c}/{i}", data=body, headers=headers) as r:
                        assert r.status == 200, await r.text()
                        await r.read()

                async def get(i: int, c: int) -> None:
                    async with session.get(f"{base}/{c}/{i % sets}") as r:
                        assert r.status == 200, await r.text()
                        await r.read()

                for c in (1, concurrency):
                    label = "http" if c == 1 else f"http x{c}"
                    set_rate = await timed(sets, c, functools.partial(put, c=c))
                    get_rate = await timed(gets, c, functools.partial(get, c=c))
                    results[label] = (set_rate, get_rate)
        finally:
            await runner.cleanup()
    finally:
        await host.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", type=int, default=600, help="set operations per path (default 600)")
    parser.add_argument("--gets", type=int, default=5000, help="get operations per path (default 5000)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="callers in the concurrent rows (default 8)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default 3)")
    args = parser.parse_args(argv)

    rounds: list[dict[str, tuple[float, float]]] = []
    started = time.perf_counter()
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-keyval-") as tmp:
            directory = Path(tmp)
            raw = bench_raw(directory / "raw.db", args.sets, args.gets)
            paths = {
                name: rates
                for executor in ("thread", "inline")
                for name, rates in asyncio.run(
                    bench_paths(directory, args.sets, args.gets, args.concurrency, executor)
                ).items()
            }
            rounds.append({"pyturso": raw, **paths})
        print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - started:.1f}s)", file=sys.stderr)

    names = list(rounds[0])
    median = {
        name: (
            statistics.median(rd[name][0] for rd in rounds),
            statistics.median(rd[name][1] for rd in rounds),
        )
        for name in names
    }
    raw_set, raw_get = median["pyturso"]
    print(f"\nKeyVal benchmark: {args.sets} sets / {args.gets} gets per path, median of {args.rounds} rounds")
    print(f"{'path':<18} {'set ops/s':>10} {'get ops/s':>10} {'set ratio':>10} {'get ratio':>10}")
    for name in names:
        set_rate, get_rate = median[name]
        ratios = f"{raw_set / set_rate:>9.2f}x {raw_get / get_rate:>9.2f}x"
        print(f"{name:<18} {set_rate:>10.0f} {get_rate:>10.0f} {ratios}")
    print("ratio = pyturso ops/s / path ops/s (lower is better; goal for 'api' <= 1.3x)")
    for suffix in ("", " inline"):
        svc_set, svc_get = median[f"service{suffix}"]
        api_set, api_get = median[f"api{suffix}"]
        layer = f"set {svc_set / api_set:.2f}x, get {svc_get / api_get:.2f}x"
        print(f"KeyVal layer alone{suffix} (service ops/s / api ops/s): {layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
