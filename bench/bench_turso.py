"""Benchmark of the Turso service against raw pyturso and stdlib sqlite3, measured in one run.

* one-row insert: ``transaction()`` vs raw pyturso (blocking) and vs pyturso's own ``turso.aio``,
  with the default thread executor and with ``TURSO_EXECUTOR=inline``
* throughput: 4 concurrent callers vs 1 (ours), and raw pyturso 4 threads vs 1 thread
* where the inline gap goes: the library's CPU cost per transaction measured with fsync off, and
  raw pyturso at ``synchronous=FULL`` with that much busy work added per transaction (a control:
  on this VM's disk, a few microseconds of CPU between commits cost far more than themselves)
* the same workload on stdlib sqlite3 at equal durability (``synchronous=FULL`` on both sides)
* replication lag A -> B through a real ``tursodb --sync-server`` (p50/p95)

Run: ``make bench`` or ``python -m bench.bench_turso``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import turso.aio

import turso
from bench._util import percentile, report
from buntime.turso import Database, TursoService, resolve_config
from tests.support.tursodb import SyncServer

N_INSERTS = int(os.environ.get("BENCH_INSERTS", "2000"))
N_THROUGHPUT = int(os.environ.get("BENCH_THROUGHPUT", "2000"))
N_LAG = int(os.environ.get("BENCH_LAG_SAMPLES", "40"))
SCHEMA = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)"


def raw_connect(path: Path, synchronous: str = "FULL") -> turso.Connection:
    conn = turso.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = mvcc").fetchall()
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(SCHEMA)
    return conn


def busy(seconds: float) -> None:
    """Burn CPU for ``seconds`` (stands in for a library's per-transaction Python work)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def insert_loop(
    conn: turso.Connection | sqlite3.Connection, n: int, begin: str, busy_seconds: float = 0.0
) -> float:
    """Seconds for ``n`` one-row insert transactions on a blocking DB-API connection; closes it."""
    start = time.perf_counter()
    for i in range(n):
        conn.execute(begin)
        conn.execute("INSERT INTO t(v) VALUES (?)", (f"v{i}",))
        conn.execute("COMMIT")
        if busy_seconds:
            busy(busy_seconds)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def raw_inserts(path: Path, n: int, synchronous: str = "FULL", busy_seconds: float = 0.0) -> float:
    return insert_loop(raw_connect(path, synchronous), n, "BEGIN CONCURRENT", busy_seconds)


def raw_threads(path: Path, threads: int, n: int) -> float:
    raw_connect(path).close()
    per = n // threads

    def worker() -> None:
        conn = turso.connect(str(path), isolation_level=None)
        for i in range(per):
            while True:
                try:
                    conn.execute("BEGIN CONCURRENT")
                    conn.execute("INSERT INTO t(v) VALUES (?)", (f"v{i}",))
                    conn.execute("COMMIT")
                    break
                except turso.Error:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
        conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start


async def aio_inserts(path: Path, n: int) -> float:
    raw_connect(path).close()
    conn = await turso.aio.connect(str(path), isolation_level=None)
    start = time.perf_counter()
    for i in range(n):
        await conn.execute("BEGIN CONCURRENT")
        await conn.execute("INSERT INTO t(v) VALUES (?)", (f"v{i}",))
        await conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    await conn.close()
    return elapsed


async def service_inserts(
    path: Path,
    n: int,
    callers: int,
    *,
    blocking: bool = False,
    executor: str = "thread",
    synchronous: str = "FULL",
) -> float:
    env = {"TURSO_LOCAL_PATH": str(path), "TURSO_EXECUTOR": executor}
    async with TursoService(resolve_config(env=env)) as service:
        db = await service.connect()
        await db.exec(f"PRAGMA synchronous = {synchronous}")
        await service.transaction(lambda db: db.exec(SCHEMA), type="exclusive")

        async def one(db: Database, i: int) -> None:
            await db.run("INSERT INTO t(v) VALUES (?)", [f"v{i}"])

        async def caller(count: int) -> None:
            for i in range(count):
                if blocking:
                    await service.run_transaction(
                        lambda db, i=i: db.run("INSERT INTO t(v) VALUES (?)", [f"v{i}"]), max_retries=1000
                    )
                else:
                    await service.transaction(lambda db, i=i: one(db, i), max_retries=1000)

        start = time.perf_counter()
        await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
        return time.perf_counter() - start


def sqlite_inserts(path: Path, n: int) -> float:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(SCHEMA)
    return insert_loop(conn, n, "BEGIN")


async def replication_lag(tmp: Path, samples: int, interval: str) -> list[float]:
    server = SyncServer(tmp / "lag-server" / "remote.db").start()
    env = {"TURSO_SYNC_URL": server.url, "TURSO_SYNC_INTERVAL": interval}
    a = TursoService(resolve_config(env={**env, "TURSO_LOCAL_PATH": str(tmp / "lag-a" / "r.db")}))
    b = TursoService(resolve_config(env={**env, "TURSO_LOCAL_PATH": str(tmp / "lag-b" / "r.db")}))
    lags: list[float] = []
    try:
        await a.transaction(lambda db: db.exec(SCHEMA), type="exclusive")
        reader = await b.connect()
        for i in range(samples):
            marker = f"lag-{i}"
            start = time.perf_counter()
            await a.transaction(lambda db, m=marker: db.run("INSERT INTO t(v) VALUES (?)", [m]))
            while True:
                try:
                    if await reader.get("SELECT 1 AS hit FROM t WHERE v = ?", [marker]):
                        break
                except Exception:  # the table itself may not have arrived yet
                    pass
                await asyncio.sleep(0.002)
            lags.append(time.perf_counter() - start)
    finally:
        await a.aclose()
        await b.aclose()
        server.stop()
    return lags


async def interleaved(tmp: Path, n: int, rounds: int) -> dict[str, float]:
    """Median seconds per op of each contender, run in alternating rounds so drift hits all."""
    per_round = n // rounds
    samples: dict[str, list[float]] = {
        "raw": [],
        "aio": [],
        "ours": [],
        "ours_blocking": [],
        "ours_inline": [],
        "ours_inline_blocking": [],
        "sqlite": [],
    }
    for r in range(rounds):
        samples["raw"].append(raw_inserts(tmp / f"raw{r}.db", per_round) / per_round)
        samples["aio"].append(await aio_inserts(tmp / f"aio{r}.db", per_round) / per_round)
        samples["ours"].append(await service_inserts(tmp / f"ours{r}.db", per_round, 1) / per_round)
        samples["ours_blocking"].append(
            await service_inserts(tmp / f"oursb{r}.db", per_round, 1, blocking=True) / per_round
        )
        samples["ours_inline"].append(
            await service_inserts(tmp / f"oursi{r}.db", per_round, 1, executor="inline") / per_round
        )
        samples["ours_inline_blocking"].append(
            await service_inserts(tmp / f"oursib{r}.db", per_round, 1, blocking=True, executor="inline")
            / per_round
        )
        samples["sqlite"].append(sqlite_inserts(tmp / f"lite{r}.db", per_round) / per_round)
    return {name: percentile(values, 50) for name, values in samples.items()}


async def inline_gap(tmp: Path, n: int, rounds: int) -> dict[str, float]:
    """The inline path's CPU cost with fsync off, then raw pyturso at FULL plus that much busy work."""
    per_round = n // rounds
    off: dict[str, list[float]] = {"raw": [], "inline": []}
    for r in range(rounds):
        off["raw"].append(raw_inserts(tmp / f"gap-raw{r}.db", per_round, "OFF") / per_round)
        off["inline"].append(
            await service_inserts(tmp / f"gap-in{r}.db", per_round, 1, executor="inline", synchronous="OFF")
            / per_round
        )
    raw_off, inline_off = percentile(off["raw"], 50), percentile(off["inline"], 50)
    overhead = max(0.0, inline_off - raw_off)
    full: dict[str, list[float]] = {"raw": [], "raw_busy": []}
    for r in range(rounds):
        full["raw"].append(raw_inserts(tmp / f"gap-full{r}.db", per_round) / per_round)
        full["raw_busy"].append(
            raw_inserts(tmp / f"gap-busy{r}.db", per_round, busy_seconds=overhead) / per_round
        )
    return {
        "raw_off": raw_off,
        "inline_off": inline_off,
        "overhead": overhead,
        "raw_full": percentile(full["raw"], 50),
        "raw_busy_full": percentile(full["raw_busy"], 50),
    }


def us(seconds_per_op: float) -> str:
    return f"{seconds_per_op * 1e6:8.1f} us/op"


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="buntime-bench-") as raw_tmp:
        tmp = Path(raw_tmp)
        n = N_INSERTS
        med = await interleaved(tmp, n, rounds=5)
        raw, aio, ours, lite = med["raw"], med["aio"], med["ours"], med["sqlite"]
        ours_blocking, inline, inline_blocking = (
            med["ours_blocking"],
            med["ours_inline"],
            med["ours_inline_blocking"],
        )
        report(
            f"one-row insert transaction, local MVCC, {n} sequential (median of 5 interleaved rounds)",
            [
                ("raw pyturso (blocking)", us(raw)),
                ("pyturso turso.aio", us(aio)),
                ("buntime transaction()", us(ours)),
                ("buntime run_transaction() (one hop)", us(ours_blocking)),
                ("buntime transaction(), TURSO_EXECUTOR=inline", us(inline)),
                ("buntime run_transaction(), TURSO_EXECUTOR=inline", us(inline_blocking)),
                ("ratio transaction() / raw blocking", f"{ours / raw:.2f}x  (goal <= 1.15x)"),
                ("ratio run_transaction() / raw blocking", f"{ours_blocking / raw:.2f}x"),
                ("ratio transaction() inline / raw blocking", f"{inline / raw:.2f}x  (goal <= 1.15x)"),
                ("ratio run_transaction() inline / raw blocking", f"{inline_blocking / raw:.2f}x"),
                ("ratio transaction() / turso.aio", f"{ours / aio:.2f}x"),
            ],
        )
        gap = await inline_gap(tmp, n, rounds=5)
        report(
            "where the inline gap goes (median of 5 interleaved rounds each)",
            [
                ("synchronous=OFF: raw pyturso", us(gap["raw_off"])),
                ("synchronous=OFF: transaction(), inline", us(gap["inline_off"])),
                ("library CPU per transaction (the difference)", us(gap["overhead"])),
                ("synchronous=FULL: raw pyturso", us(gap["raw_full"])),
                ("synchronous=FULL: raw pyturso + that CPU as busy work", us(gap["raw_busy_full"])),
                (
                    "ratio raw+busy / raw at FULL (the floor for any library)",
                    f"{gap['raw_busy_full'] / gap['raw_full']:.2f}x",
                ),
            ],
        )
        report(
            "stdlib sqlite3 at equal durability (WAL, synchronous=FULL on both)",
            [
                ("sqlite3", us(lite)),
                ("raw pyturso", us(raw)),
                ("buntime transaction()", us(ours)),
                ("ratio raw pyturso / sqlite3", f"{raw / lite:.2f}x"),
                ("ratio buntime / sqlite3", f"{ours / lite:.2f}x"),
            ],
        )
        m = N_THROUGHPUT
        one = await service_inserts(tmp / "t1.db", m, 1)
        four = await service_inserts(tmp / "t4.db", m, 4)
        one_b = await service_inserts(tmp / "b1.db", m, 1, blocking=True)
        four_b = await service_inserts(tmp / "b4.db", m, 4, blocking=True)
        one_i = await service_inserts(tmp / "i1.db", m, 1, executor="inline")
        four_i = await service_inserts(tmp / "i4.db", m, 4, executor="inline")
        raw1 = raw_threads(tmp / "r1.db", 1, m)
        raw4 = raw_threads(tmp / "r4.db", 4, m)
        report(
            f"throughput, {m} one-row transactions",
            [
                ("buntime, 1 caller", f"{m / one:8.0f} tx/s"),
                ("buntime, 4 concurrent callers", f"{m / four:8.0f} tx/s"),
                ("ratio 4 callers / 1 caller", f"{one / four:.2f}x  (goal >= 1.0x, no collapse)"),
                ("run_transaction(), 1 caller", f"{m / one_b:8.0f} tx/s"),
                ("run_transaction(), 4 concurrent callers", f"{m / four_b:8.0f} tx/s"),
                ("ratio 4 callers / 1 caller (run_transaction)", f"{one_b / four_b:.2f}x"),
                ("transaction() inline, 1 caller", f"{m / one_i:8.0f} tx/s"),
                ("transaction() inline, 4 concurrent callers", f"{m / four_i:8.0f} tx/s"),
                ("ratio 4 callers / 1 caller (inline)", f"{one_i / four_i:.2f}x"),
                ("raw pyturso, 1 thread", f"{m / raw1:8.0f} tx/s"),
                ("raw pyturso, 4 threads", f"{m / raw4:8.0f} tx/s"),
                ("ratio raw 4 threads / 1 thread", f"{raw1 / raw4:.2f}x"),
            ],
        )
        for interval in ("0.1s", "1s"):
            samples = N_LAG if interval == "0.1s" else N_LAG // 4
            lags = await replication_lag(tmp / interval, samples, interval)
            report(
                f"replication lag A -> B via tursodb --sync-server (TURSO_SYNC_INTERVAL={interval})",
                [
                    ("samples", str(len(lags))),
                    ("p50", f"{percentile(lags, 50) * 1000:8.1f} ms"),
                    ("p95", f"{percentile(lags, 95) * 1000:8.1f} ms"),
                ],
            )


if __name__ == "__main__":
    asyncio.run(main())
