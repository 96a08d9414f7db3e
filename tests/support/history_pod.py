"""One "pod" of the history test: seeded random operations against a real turso-server.

``python -m tests.support.history_pod <server-url> <token> <replica-dir> <pod> <seed> <seconds> <log>``

Runs ``WORKERS`` concurrent tasks on one :class:`TursoService` (its own replica) for ``seconds``
and appends one JSON line per event to ``log``: ``invoke`` before an operation, then ``ok`` (the
service acknowledged it), ``fail`` (an error that says nothing was applied) or ``unknown``
(:class:`TursoCommitUnknownError`). A SIGKILL leaves the last invokes without an outcome: unknown
too. Operations, all read-modify-write inside one ``transaction()``:

* ``insert uid`` — a unique row;
* ``inc k uid`` — read counter ``k``, write it back plus one, and log ``uid`` in ``incs``;
* ``cas k uid`` — read key ``k``'s version, write version + 1, and log ``(k, version, uid)``;
* ``enqueue mid`` / ``dequeue`` (lease one ready message to this pod) / ``ack mid``.

With ``HISTORY_FREEZE_FLAG`` set, the pod also plays a pod stalled in the middle of a push: once
that file exists, the next batch it pushes under a lease stops the whole process (a SIGSTOP
directed at the sending thread) just before it is sent, after every check of the lease the
replica makes; thawed (SIGCONT), the batch goes out with the token it had, and the pod logs the
answer (``{"op": "pod", "status": THAWED_PUSH, "http": <status>}``). Only turso-server's fence
stands between that batch and the writes other pods made meanwhile.

With ``HISTORY_KILL_FLAG`` set, the pod plays a pod killed in the middle of a push: once that file
exists, the next batch it pushes under a lease is sent in full and the process SIGKILLs itself
before it reads the reply (the server applies the batch; nobody learns the outcome), so that its
last operations are unknown and its replica, restarted, holds commits the server has but the
replica never saw acknowledged.

The checker is ``tests/integration/test_history.py``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from buntime.turso import (
    Database,
    TursoCommitUnknownError,
    TursoError,
    TursoService,
    _transport,
    resolve_config,
)

NS = "history"
THAWED_PUSH = "thawed-push"  # the event a pod logs about the batch it sent after the push freeze
WORKERS = 3
COUNTERS = 3
CAS_KEYS = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS ins(id INTEGER PRIMARY KEY, uid TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters(k INTEGER PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS incs(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, uid TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cas(k INTEGER PRIMARY KEY, version INTEGER NOT NULL, uid TEXT);
CREATE TABLE IF NOT EXISTS cas_log(id INTEGER PRIMARY KEY, k INTEGER, version INTEGER, uid TEXT);
CREATE TABLE IF NOT EXISTS q(id INTEGER PRIMARY KEY, mid TEXT NOT NULL, state TEXT NOT NULL,
                             owner TEXT, acks INTEGER NOT NULL DEFAULT 0)
"""


class History:
    def __init__(self, path: str, pod: str) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole run
        self.pod = pod

    def log(self, **event: Any) -> None:
        self._file.write(json.dumps({"pod": self.pod, "t": time.time(), **event}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


def freeze_before_a_fenced_push(flag: str, history: History) -> None:
    """Wrap the replica's HTTP send: the first fenced batch after ``flag`` appears stops the pod."""
    send = _transport._send

    def stalled_send(request: urllib.request.Request) -> _transport._Reply:
        body = request.data if isinstance(request.data, bytes) else b""
        fenced_batch = _transport.FENCED in request.full_url and b"COMMIT" in body
        if not fenced_batch:
            return send(request)
        try:
            os.unlink(flag)
        except FileNotFoundError:
            return send(request)
        # Directed at this thread, so that it stops before its next instruction (all threads do):
        # a SIGSTOP sent to the process is taken by the main thread, and this one could still
        # send the batch before the stop reached it. The checker thaws us (SIGCONT).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        try:
            reply = send(request)
        except urllib.error.HTTPError as exc:
            history.log(op="pod", status=THAWED_PUSH, http=exc.code)
            raise
        history.log(op="pod", status=THAWED_PUSH, http=reply.status)
        return reply

    _transport._send = stalled_send


def die_during_a_fenced_push(flag: str) -> None:
    """Wrap the replica's HTTP send: the first fenced batch after ``flag`` appears goes out in full,
    then the process SIGKILLs itself before it reads the reply."""
    send = _transport._send
    getresponse = http.client.HTTPConnection.getresponse
    armed = threading.local()

    def dying_getresponse(self: http.client.HTTPConnection) -> http.client.HTTPResponse:
        if getattr(armed, "on", False):
            os.kill(os.getpid(), signal.SIGKILL)
        return getresponse(self)

    def dying_send(request: urllib.request.Request) -> _transport._Reply:
        body = request.data if isinstance(request.data, bytes) else b""
        if not (_transport.FENCED in request.full_url and b"COMMIT" in body):
            return send(request)
        try:
            os.unlink(flag)
        except FileNotFoundError:
            return send(request)
        armed.on = True  # the request is written by the time http.client asks for its reply
        return send(request)

    http.client.HTTPConnection.getresponse = dying_getresponse  # type: ignore[method-assign]
    _transport._send = dying_send


async def setup(service: TursoService) -> None:
    async def create(db: Database) -> None:
        await db.exec(SCHEMA)
        for k in range(COUNTERS):
            await db.run("INSERT OR IGNORE INTO counters(k, v) VALUES (?, 0)", [k])
        for k in range(CAS_KEYS):
            await db.run("INSERT OR IGNORE INTO cas(k, version) VALUES (?, 0)", [k])

    await service.transaction(create, namespace=NS, type="exclusive", max_retries=50)


async def op_insert(db: Database, uid: str) -> None:
    await db.run("INSERT INTO ins(uid) VALUES (?)", [uid])


async def op_inc(db: Database, k: int, uid: str) -> None:
    row = await db.get("SELECT v FROM counters WHERE k = ?", [k])
    assert row is not None
    await db.run("UPDATE counters SET v = ? WHERE k = ?", [int(row["v"]) + 1, k])
    await db.run("INSERT INTO incs(k, uid) VALUES (?, ?)", [k, uid])


async def op_cas(db: Database, k: int, uid: str) -> int:
    row = await db.get("SELECT version FROM cas WHERE k = ?", [k])
    assert row is not None
    version = int(row["version"]) + 1
    result = await db.run(
        "UPDATE cas SET version = ?, uid = ? WHERE k = ? AND version = ?", [version, uid, k, version - 1]
    )
    if result.changes != 1:
        raise AssertionError("check-and-set lost its own check inside a transaction")
    await db.run("INSERT INTO cas_log(k, version, uid) VALUES (?, ?, ?)", [k, version, uid])
    return version


async def op_enqueue(db: Database, mid: str) -> None:
    await db.run("INSERT INTO q(mid, state) VALUES (?, 'ready')", [mid])


async def op_dequeue(db: Database, pod: str) -> str | None:
    row = await db.get("SELECT mid FROM q WHERE state = 'ready' ORDER BY id LIMIT 1")
    if row is None:
        return None
    await db.run("UPDATE q SET state = 'leased', owner = ? WHERE mid = ?", [pod, row["mid"]])
    return str(row["mid"])


async def op_ack(db: Database, mid: str, pod: str) -> bool:
    result = await db.run(
        "UPDATE q SET state = 'acked', acks = acks + 1 WHERE mid = ? AND owner = ? AND state = 'leased'",
        [mid, pod],
    )
    return result.changes == 1


def plan(kind: str, uid: str, k: int, pod: str, mid: str | None) -> Callable[[Database], Awaitable[Any]]:
    """The transaction body of one operation."""
    if kind == "insert":
        return lambda db: op_insert(db, uid)
    if kind == "inc":
        return lambda db: op_inc(db, k, uid)
    if kind == "cas":
        return lambda db: op_cas(db, k, uid)
    if kind == "enqueue":
        return lambda db: op_enqueue(db, uid)
    if kind == "dequeue":
        return lambda db: op_dequeue(db, pod)
    assert mid is not None
    return lambda db: op_ack(db, mid, pod)


async def worker(
    service: TursoService, history: History, rng: random.Random, name: str, until: float
) -> None:
    seq = 0
    leased: list[str] = []
    while time.monotonic() < until:
        seq += 1
        uid = f"{name}-{seq}"
        kind = rng.choice(["insert", "inc", "cas", "enqueue", "dequeue", "ack"])
        if kind == "ack" and not leased:
            kind = "dequeue"
        k = rng.randrange(COUNTERS if kind == "inc" else CAS_KEYS)
        mid = leased.pop(0) if kind == "ack" else None
        event: dict[str, Any] = {"op": kind, "uid": uid, "k": k, "mid": mid}
        history.log(status="invoke", **event)
        try:
            result = await service.transaction(
                plan(kind, uid, k, history.pod, mid), namespace=NS, max_retries=8
            )
        except TursoCommitUnknownError as exc:
            history.log(status="unknown", error=exc.code, **event)
            continue
        except TursoError as exc:
            history.log(status="fail", error=exc.code, **event)
            await asyncio.sleep(0.05)
            continue
        if kind == "dequeue" and result is not None:
            leased.append(result)
        history.log(status="ok", result=result, **event)


async def main(url: str, token: str, replica_dir: str, pod: str, seed: int, seconds: float, log: str) -> None:
    history = History(log, pod)
    if flag := os.environ.get("HISTORY_FREEZE_FLAG"):
        freeze_before_a_fenced_push(flag, history)
    if flag := os.environ.get("HISTORY_KILL_FLAG"):
        die_during_a_fenced_push(flag)
    env = {
        "TURSO_SERVER_URL": url,
        "TURSO_SERVER_TOKEN": token,
        "TURSO_LOCAL_PATH": os.path.join(replica_dir, "runtime.db"),
        "TURSO_SYNC_INTERVAL": "0.5s",
        "TURSO_WRITE_TIMEOUT": "3s",
        # Short, so that the checker's pause of a pod past its lease costs the others little.
        "TURSO_LEASE_TTL": os.environ.get("HISTORY_LEASE_TTL", "5s"),
        # The checker's own self-test: the old last-push-wins path must be caught.
        "TURSO_WRITE_MODE": os.environ.get("HISTORY_WRITE_MODE", "serializable"),
    }
    service = TursoService(resolve_config(env=env))
    deadline = time.monotonic() + 30
    while True:  # the server may be down while this pod (re)starts
        try:
            await setup(service)
            break
        except TursoError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    until = time.monotonic() + seconds
    rng = random.Random(f"{seed}-{pod}")
    await asyncio.gather(
        *(
            worker(service, history, random.Random(rng.random()), f"{pod}.{os.getpid()}.w{i}", until)
            for i in range(WORKERS)
        )
    )
    await service.aclose()
    history.log(status="done", op="pod")


if __name__ == "__main__":
    url, token, replica_dir, pod, seed, seconds, log = sys.argv[1:8]
    asyncio.run(main(url, token, replica_dir, pod, int(seed), float(seconds), log))
