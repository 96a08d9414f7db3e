"""Benchmark turso-server's proxy against the very same tursodb child reached directly.

Run: ``python bench/bench_turso_server.py`` (about 50 seconds on 2 cores; also part of ``python -m bench``).

One turso-server is started with one namespace, and beside it a plain ``tursodb --sync-server``
of the same binary on a database of its own ("direct"): the server keeps its children busy with a
warm connection queued ahead of each request (``turso_server._warm``), so nothing else may talk
to a child it runs. Measured with real pyturso replicas:

* latency: a push (insert + ``push()``) and a pull (``pull()`` on a second replica that has one
  change to fetch), alternating direct/proxied every round so drift hits both alike; p50/p95 and
  the proxied/direct ratio (goal <= 1.2x);
* throughput: 16 client threads, each with its own replica, doing insert+push then pull in a loop,
  in alternating direct/proxied phases; operations per second and the ratio (goal >= 0.85x);
* memory: the server's RSS, and RSS per idle namespace (server growth plus the child's RSS);
* the SQL guard: its CPU time on the pipeline bodies pyturso pushes (1 and 100 rows), against the
  proxied push p50 of the same run (the guard runs inside that figure, so the "without" side is
  the p50 minus the guard's time);
* Landlock: two bare tursodb children side by side, one confined exactly as the supervisor does
  (``turso_server._confine``) and one not: spawn-to-first-answer time, and a ``SELECT 1`` request
  and a real push, alternating.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import turso.sync

from tests.support.ports import free_port
from tests.support.tursodb import SyncServer
from turso_server._confine import Confinement
from turso_server._sqlguard import check_pipeline

REPO = Path(__file__).resolve().parents[1]
TURSODB = REPO / ".tools" / "bin" / "tursodb"
SERVER = Path(sys.executable).with_name("turso-server")
ADMIN_TOKEN = "bench-admin"
DATA_TOKEN = "bench-data"
LATENCY_GOAL = 1.2
THROUGHPUT_GOAL = 0.85
NAMESPACE = "bench"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    data_port: int
    admin_port: int
    data_dir: Path

    def admin(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}",
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def child_pids(self) -> list[int]:
        pids = []
        for pidfile in (self.data_dir / "_state" / "run").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(json.loads(pidfile.read_text())["pid"]))
        return pids


def start_server(root: Path) -> Server:
    data_port, admin_port = free_port(), free_port()
    data_dir = root / "data"
    env = {
        **os.environ,
        "TURSO_DATA_DIR": str(data_dir),
        "TURSODB_BIN": str(TURSODB),
        "TURSO_DATA_ADDR": f"127.0.0.1:{data_port}",
        "TURSO_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "TURSO_BACKEND_PORT_START": "23000",
        "TURSO_BACKEND_PORT_END": "23199",
        "TURSO_AUTH_TOKEN": DATA_TOKEN,
        "TURSO_ADMIN_TOKEN": ADMIN_TOKEN,
        "TURSO_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen([str(SERVER)], env=env, stdout=subprocess.DEVNULL)
    server = Server(process, data_port, admin_port, data_dir)
    deadline = time.monotonic() + 20
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{data_port}/readyz", timeout=1) as response,
        ):
            if response.status == 200:
                return server
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("turso-server did not start")
        time.sleep(0.05)


class Replicas:
    """pyturso replicas in one scratch directory; ``url`` picks direct or proxied."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self.opened: list[Any] = []

    def open(self, url: str) -> Any:
        self.count += 1
        path = self.root / f"replica-{self.count}.db"
        connection = turso.sync.connect(str(path), url, auth_token=DATA_TOKEN, isolation_level=None)
        self.opened.append(connection)
        return connection

    def close(self) -> None:
        for connection in self.opened:
            with contextlib.suppress(Exception):
                connection.close()


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure_latency(
    urls: dict[str, str], replicas: Replicas, rounds: int
) -> dict[str, dict[str, list[float]]]:
    pairs = {mode: (replicas.open(url), replicas.open(url)) for mode, url in urls.items()}
    results: dict[str, dict[str, list[float]]] = {mode: {"push": [], "pull": []} for mode in urls}
    modes = list(urls)
    for index in range(rounds + 5):
        order = modes if index % 2 == 0 else modes[::-1]
        for mode in order:
            writer, reader = pairs[mode]
            writer.execute("INSERT INTO t(v, src) VALUES (?, ?)", (index, mode))
            push = timed(writer.push)
            pull = timed(reader.pull)
            if index >= 5:  # warm-up rounds are not counted
                results[mode]["push"].append(push)
                results[mode]["pull"].append(pull)
    return results


def raw_post(port: int, target: str, body: bytes, token: str) -> float:
    """One request over a fresh socket (as pyturso does); returns the seconds until the full reply."""
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        while sock.recv(65536):
            pass
    return time.perf_counter() - started


def measure_overhead(child_port: int, data_port: int, rounds: int) -> dict[str, list[float]]:
    """A trivial ``SELECT 1`` pipeline request: what one proxy hop adds, without sync-engine noise."""
    body = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'
    samples: dict[str, list[float]] = {"direct": [], "proxied": []}
    for index in range(rounds + 20):
        direct = raw_post(child_port, "/v2/pipeline", body, DATA_TOKEN)
        proxied = raw_post(data_port, f"/{NAMESPACE}/v2/pipeline", body, DATA_TOKEN)
        if index >= 20:
            samples["direct"].append(direct)
            samples["proxied"].append(proxied)
    return samples


def measure_throughput(
    urls: dict[str, str], replicas: Replicas, clients: int, phase: float, phases: int
) -> dict[str, float]:
    pools = {mode: [replicas.open(url) for _ in range(clients)] for mode, url in urls.items()}
    ops = dict.fromkeys(urls, 0)
    seconds = dict.fromkeys(urls, 0.0)
    modes = list(urls)
    for index in range(phases):
        mode = modes[index % len(modes)]
        stop = threading.Event()
        counts = [0] * clients
        errors: list[BaseException] = []

        def work(
            slot: int,
            connection: Any,
            stop: threading.Event = stop,
            counts: list[int] = counts,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                while not stop.is_set():
                    connection.execute("INSERT INTO t(v, src) VALUES (?, ?)", (slot, "load"))
                    connection.push()
                    connection.pull()
                    counts[slot] += 2
            except BaseException as exc:  # reported after the phase
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(pools[mode])]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(phase)
        stop.set()
        for thread in threads:
            thread.join()
        seconds[mode] += time.perf_counter() - started
        ops[mode] += sum(counts)
        if errors:
            raise SystemExit(f"{mode} phase failed: {errors[0]!r}")
    return {mode: ops[mode] / seconds[mode] for mode in urls}


def measure_memory(server: Server, idle_namespaces: int) -> tuple[int, int, float]:
    before = rss_kib(server.process.pid)
    for index in range(idle_namespaces):
        server.admin("POST", f"/v1/namespaces/idle-{index}/create")
    time.sleep(0.5)
    after = rss_kib(server.process.pid)
    children = [pid for pid in server.child_pids() if pid]
    idle_children = sorted(rss_kib(pid) for pid in children)[:idle_namespaces]
    per_namespace = (after - before + sum(idle_children)) / idle_namespaces
    return before, after, per_namespace


def push_body(rows: int) -> bytes:
    """The batch pyturso 0.8.3 sends for a push of ``rows`` inserted rows (captured shape)."""
    upsert = (
        'INSERT INTO "t"("id", "v", "src") VALUES (?,?,?) ON CONFLICT("id") DO UPDATE SET '
        '"id" = excluded."id","v" = excluded."v","src" = excluded."src"'
    )
    sqls = [
        "BEGIN IMMEDIATE",
        "CREATE TABLE IF NOT EXISTS turso_sync_last_change_id "
        "(client_id TEXT PRIMARY KEY, pull_gen INTEGER, change_id INTEGER)",
        *[upsert] * rows,
        "INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id) VALUES (?, ?, ?) "
        "ON CONFLICT(client_id) DO UPDATE SET pull_gen=excluded.pull_gen, change_id=excluded.change_id",
        "COMMIT",
    ]
    arg = {"type": "integer", "value": "1"}
    steps = [
        {
            "condition": {"type": "not", "cond": {"type": "is_autocommit"}} if i else None,
            "stmt": {
                "sql": sql,
                "sql_id": None,
                "args": [arg] * sql.count("?"),
                "named_args": [],
                "want_rows": False,
                "replication_index": None,
            },
        }
        for i, sql in enumerate(sqls)
    ]
    body = {
        "baton": None,
        "requests": [{"type": "batch", "batch": {"steps": steps, "replication_index": None}}],
    }
    return json.dumps(body).encode()


def measure_guard(iterations: int = 2000) -> dict[int, float]:
    """Seconds of CPU per ``check_pipeline`` call, by rows in the push."""
    costs = {}
    for rows in (1, 100):
        body = push_body(rows)
        check_pipeline(body)
        count = max(20, iterations // rows)
        started = time.perf_counter()
        for _ in range(count):
            check_pipeline(body)
        costs[rows] = (time.perf_counter() - started) / count
    return costs


def _spawn(directory: Path, port: int, confinement: Confinement | None) -> subprocess.Popen[bytes]:
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    ruleset = confinement.ruleset(writable=[directory], port=port) if confinement else None
    try:
        return subprocess.Popen(
            [str(TURSODB), str(directory / "db.db"), "--sync-server", f"127.0.0.1:{port}"],
            cwd=directory,
            env={**os.environ, "TMPDIR": str(directory / "tmp")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=ruleset.preexec if ruleset else None,  # noqa: PLW1509 - as the supervisor does
        )
    finally:
        if ruleset:
            ruleset.close()


def _wait_answer(port: int) -> None:
    probe = b"OPTIONS / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(probe)
            if sock.recv(16).startswith(b"HTTP/1."):
                return
        time.sleep(0.005)
    raise SystemExit(f"tursodb on {port} never answered")


Samples = dict[str, dict[str, list[float]]]


def measure_confinement(root: Path, replicas: Replicas, rounds: int, starts: int) -> Samples:
    """Start time, ``SELECT 1`` and push latency of a confined vs an unconfined bare tursodb."""
    confinement = Confinement.detect(TURSODB)
    if not confinement.active:
        return {}
    modes: dict[str, Confinement | None] = {"plain": None, "landlock": confinement}
    samples: Samples = {m: {"start": [], "select": [], "push": []} for m in modes}
    for index in range(starts):
        for mode, conf in modes.items():
            port = free_port()
            started = time.perf_counter()
            child = _spawn(root / f"start-{mode}-{index}", port, conf)
            _wait_answer(port)
            samples[mode]["start"].append(time.perf_counter() - started)
            child.terminate()
            child.wait(timeout=10)
    children, writers = {}, {}
    try:
        for mode, conf in modes.items():
            port = free_port()
            children[mode] = (_spawn(root / f"serve-{mode}", port, conf), port)
            _wait_answer(port)
            writers[mode] = replicas.open(f"http://127.0.0.1:{port}")
            writers[mode].execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, src TEXT)")
            writers[mode].push()
        body = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'
        for index in range(rounds + 5):
            for mode in modes if index % 2 else reversed(list(modes)):
                select = raw_post(children[mode][1], "/v2/pipeline", body, DATA_TOKEN)
                writers[mode].execute("INSERT INTO t(v, src) VALUES (?, ?)", (index, mode))
                push = timed(writers[mode].push)
                if index >= 5:
                    samples[mode]["select"].append(select)
                    samples[mode]["push"].append(push)
    finally:
        for child, _ in children.values():
            child.terminate()
            child.wait(timeout=10)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150, help="latency samples per mode and operation")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for throughput")
    parser.add_argument("--phase", type=float, default=6.0, help="seconds per throughput phase")
    parser.add_argument("--phases", type=int, default=4, help="alternating throughput phases (even)")
    parser.add_argument("--idle", type=int, default=10, help="idle namespaces for the memory figure")
    # parse_known_args: `python -m bench bench_turso_server` leaves the module name in sys.argv.
    args, _ = parser.parse_known_args()
    if not TURSODB.exists() or not SERVER.exists():
        raise SystemExit("run `make venv tools` first")

    root = Path(tempfile.mkdtemp(prefix="bench-turso-server-"))
    server = start_server(root)
    replicas = Replicas(root)
    direct: SyncServer | None = None
    started = time.monotonic()
    try:
        server.admin("POST", f"/v1/namespaces/{NAMESPACE}/create")
        direct = SyncServer(root / "direct" / f"{NAMESPACE}.db").start()
        urls = {
            "direct": direct.url,
            "proxied": f"http://127.0.0.1:{server.data_port}/{NAMESPACE}",
        }
        for url in urls.values():
            setup = replicas.open(url)
            setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, src TEXT)")
            setup.push()

        overhead = measure_overhead(direct.port, server.data_port, args.rounds * 4)
        latency = measure_latency(urls, replicas, args.rounds)
        throughput = measure_throughput(urls, replicas, args.clients, args.phase, args.phases)
        server_rss_before, server_rss_after, per_namespace = measure_memory(server, args.idle)
        guard = measure_guard()
        confinement = measure_confinement(root / "confinement", replicas, args.rounds, starts=20)
    finally:
        replicas.close()
        if direct is not None:
            direct.stop()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    print(f"turso-server benchmark ({args.rounds} samples/op, {args.clients} clients, {os.cpu_count()} CPUs)")
    columns = ("direct p50", "proxied p50", "ratio", "direct p95", "proxied p95", "ratio")
    print(f"{'operation':<10}" + "".join(f"{c:>13}" for c in columns))
    verdicts = []
    for operation in ("push", "pull"):
        direct, proxied = latency["direct"][operation], latency["proxied"][operation]
        row = [operation]
        ratios = []
        for fraction in (0.5, 0.95):
            d, p = percentile(direct, fraction) * 1000, percentile(proxied, fraction) * 1000
            ratios.append(p / d)
            row += [f"{d:.2f} ms", f"{p:.2f} ms", f"{p / d:.2f}x"]
        print(f"{row[0]:<10}" + "".join(f"{cell:>13}" for cell in row[1:]))
        verdicts.append((f"{operation} p50 ratio <= {LATENCY_GOAL}x", ratios[0] <= LATENCY_GOAL))
        verdicts.append((f"{operation} p95 ratio <= {LATENCY_GOAL}x", ratios[1] <= LATENCY_GOAL))
        means = statistics.mean(direct) * 1000, statistics.mean(proxied) * 1000
        print(f"{'':<10}mean direct {means[0]:.2f} ms, proxied {means[1]:.2f} ms")
    direct_raw, proxied_raw = overhead["direct"], overhead["proxied"]
    added = (percentile(proxied_raw, 0.5) - percentile(direct_raw, 0.5)) * 1000
    print(
        f"one request (SELECT 1 pipeline): direct p50 {percentile(direct_raw, 0.5) * 1000:.2f} ms, "
        f"proxied p50 {percentile(proxied_raw, 0.5) * 1000:.2f} ms -> the hop adds {added:.2f} ms"
    )
    ratio = throughput["proxied"] / throughput["direct"]
    print(
        f"throughput: direct {throughput['direct']:.1f} ops/s, proxied {throughput['proxied']:.1f} ops/s, "
        f"ratio {ratio:.2f}x"
    )
    verdicts.append((f"throughput ratio >= {THROUGHPUT_GOAL}x", ratio >= THROUGHPUT_GOAL))
    print(
        f"memory: server RSS {server_rss_before / 1024:.1f} MiB with 1 namespace, "
        f"{server_rss_after / 1024:.1f} MiB with {args.idle + 1}; "
        f"per idle namespace {per_namespace / 1024:.1f} MiB (server growth + tursodb child)"
    )
    push_p50 = percentile(latency["proxied"]["push"], 0.5)
    print(
        f"SQL guard: {guard[1] * 1e6:.0f} us per 1-row push body, {guard[100] * 1e6:.0f} us per 100 rows; "
        f"proxied push p50 {push_p50 * 1000:.2f} ms with the guard vs {(push_p50 - guard[1]) * 1000:.2f} ms "
        f"without -> ratio {push_p50 / (push_p50 - guard[1]):.3f}x"
    )
    if confinement:
        for key, label in (("start", "child start"), ("select", "SELECT 1"), ("push", "push")):
            plain, confined = (percentile(confinement[m][key], 0.5) * 1000 for m in ("plain", "landlock"))
            print(
                f"Landlock, {label} p50: plain {plain:.2f} ms, confined {confined:.2f} ms "
                f"({confined - plain:+.2f} ms, {confined / plain:.2f}x)"
            )
    else:
        print("Landlock: unavailable on this kernel, not measured")
    for label, ok in verdicts:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")
    print(f"elapsed {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
