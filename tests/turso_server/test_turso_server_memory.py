"""TURSO_CHILD_MEMORY_LIMIT: a statement that allocates past it costs only its own namespace.

A tenant with an rw token could run ``SELECT length(zeroblob(900000000))`` (or big ``randomblob``
or ``group_concat`` statements) through ``/v2/pipeline`` and have its child allocate as much as it
asked for, on a host (or pod cgroup) shared with every other namespace and turso-server itself.
With the limit each child's ``RLIMIT_DATA`` is bounded: such a statement crashes its child (tursodb
aborts on the failed allocation), the client gets the proxy's 502 ``upstream error``, the
supervisor restarts the child on its untouched files, and other namespaces never notice. Real
turso-server, real tursodb children, real pyturso replicas.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.turso_server.support import ServerFactory, ServerProcess
from turso_server._confine import landlock_abi

LIMIT = 256 * 1024 * 1024
PIPELINE = "/v2/pipeline"
HOSTILE = [
    "SELECT length(zeroblob(900000000))",
    "SELECT length(randomblob(600000000))",
    "SELECT length(group_concat(zeroblob(1000000))) FROM generate_series(1, 600)",
]
ANSWER_WITHIN = 10.0
RECOVER_WITHIN = 15.0


def _pipeline(*sql: str) -> bytes:
    return json.dumps({"requests": [{"type": "execute", "stmt": {"sql": q}} for q in sql]}).encode()


def _rows(connection: Any) -> list[tuple[Any, ...]]:
    return sorted(connection.execute("SELECT * FROM t").fetchall())


def _limit(pid: int, name: str = "Max data size") -> tuple[str, str]:
    """Soft and hard limit ``name`` of ``pid``, from ``/proc/<pid>/limits``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            soft, hard = line[len(name) :].split()[:2]
            return soft, hard
    raise AssertionError(f"no {name!r} in /proc/<pid>/limits")


def _served_again(server: ServerProcess, namespace: str) -> float:
    """Seconds until ``namespace`` answers a pipeline with 200: before, 503 while its child restarts,
    or 502 for a request that reached the child while it was still dying (sent, so not resent)."""
    started = time.monotonic()
    while True:
        response = server.data("POST", f"/{namespace}{PIPELINE}", body=_pipeline("SELECT count(*) FROM t"))
        if response.status == 200:
            return time.monotonic() - started
        assert (response.status, response.json()["code"]) in {
            (503, "namespace unavailable"),
            (502, "upstream error"),
        }, response.body
        assert time.monotonic() - started < RECOVER_WITHIN, "the namespace was not served again"
        time.sleep(0.1)


def test_a_statement_past_the_child_memory_limit_fails_alone_and_its_child_comes_back(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    server = start_server(TURSO_CHILD_MEMORY_LIMIT="256Mi")

    # Normal sync is untouched by the limit: replicas push and pull in both namespaces.
    alpha, beta = replicas(server.url("alpha")), replicas(server.url("beta"))
    for replica, who in ((alpha, "alpha"), (beta, "beta")):
        replica.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        replica.execute("BEGIN")
        for _ in range(2000):
            replica.execute("INSERT INTO t(v) VALUES (randomblob(1024))")
        replica.execute("COMMIT")
        replica.execute("INSERT INTO t(v) VALUES (?)", (who,))
        replica.push()
    alpha_peer = replicas(server.url("alpha"))
    assert _rows(alpha_peer) == _rows(alpha)
    alpha_peer.execute("INSERT INTO t(v) VALUES ('peer')")
    alpha_peer.push()
    alpha.pull()
    assert _rows(alpha) == _rows(alpha_peer) and len(_rows(alpha)) == 2002

    pids = server.child_pids()
    for pid in pids.values():
        assert _limit(pid) == (str(LIMIT), str(LIMIT))  # soft and hard: tursodb cannot lift it
        assert _limit(pid, "Max core file size") == ("0", "0")  # a crash past it dumps no core
        # The Landlock half of the same preexec ran too (it sets no_new_privs first).
        assert ("NoNewPrivs:\t1" in Path(f"/proc/{pid}/status").read_text()) == bool(landlock_abi())
    beta_pid = pids["beta"]

    # beta is used all through alpha's trouble and never fails.
    beta_statuses: list[int] = []
    stop = threading.Event()

    def keep_using_beta() -> None:
        while not stop.is_set():
            beta_statuses.append(
                server.data("POST", f"/beta{PIPELINE}", body=_pipeline("SELECT count(*) FROM t")).status
            )
            time.sleep(0.05)

    worker = threading.Thread(target=keep_using_beta)
    worker.start()
    try:
        for restarts, sql in enumerate(HOSTILE, start=1):
            old_pid = server.child_pids()["alpha"]
            started = time.monotonic()
            answer = server.data("POST", f"/alpha{PIPELINE}", body=_pipeline(sql))
            assert time.monotonic() - started < ANSWER_WITHIN, sql
            assert answer.status == 502, (sql, answer.status, answer.body[:300])
            assert answer.json()["code"] == "upstream error", answer.body
            _served_again(server, "alpha")
            assert server.child_pids()["alpha"] != old_pid
            view = server.admin("GET", "/v1/namespaces/alpha").json()
            assert view["running"] and view["restarts"] == restarts, view
    finally:
        stop.set()
        worker.join()
    assert beta_statuses and set(beta_statuses) == {200}, beta_statuses
    assert server.child_pids()["beta"] == beta_pid
    assert server.admin("GET", "/v1/namespaces/beta").json()["restarts"] == 0

    # alpha works again, with its data, for the replicas too; the restarted child has the limit.
    assert _limit(server.child_pids()["alpha"]) == (str(LIMIT), str(LIMIT))
    alpha.execute("INSERT INTO t(v) VALUES ('after')")
    alpha.push()
    alpha_peer.pull()
    assert _rows(alpha_peer) == _rows(alpha) and len(_rows(alpha)) == 2003
    beta.execute("INSERT INTO t(v) VALUES ('after')")
    beta.push()
    assert len(_rows(replicas(server.url("beta")))) == 2002
    assert len(server.find_logs("tursodb exited; restarting", namespace="alpha")) == len(HOSTILE)
    assert not server.find_logs("tursodb exited; restarting", namespace="beta")
    assert server.find_logs("children memory-limited", rlimitData=LIMIT)
    # The server logged no error of its own (an unexpected exception, a 500): only tursodb's lines.
    assert not [
        r for r in server.logs() if r.get("level") == "ERROR" and r.get("logger") != "turso_server.tursodb"
    ]


def test_without_a_limit_children_run_unbounded(start_server: ServerFactory) -> None:
    """The default (0) changes nothing: children inherit the server's own RLIMIT_DATA and RLIMIT_CORE."""
    server = start_server()
    assert server.data("POST", f"/gamma{PIPELINE}", body=_pipeline("SELECT 1")).status == 200
    assert server.process is not None
    child = server.child_pids()["gamma"]
    for name in ("Max data size", "Max core file size"):
        assert _limit(child, name) == _limit(server.process.pid, name)
    assert not server.find_logs("children memory-limited")
