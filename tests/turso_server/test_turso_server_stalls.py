"""Slow and stalled clients cost only their own request: a bootstrap nobody reads, a body never sent,
a statement that never ends (its child is restarted at the upstream timeout).

tursodb serves one connection at a time, so a reply the proxy streamed to a client that stopped
reading used to block every other request to that namespace until the upstream timeout. These
tests hold such clients open against a ~40 MiB namespace and time everyone else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path

from tests.turso_server.support import ADMIN_TOKEN, DATA_TOKEN, ServerFactory, ServerProcess, raw_request

MIB = 1024 * 1024
BLOB_ROWS = 40  # one 1 MiB blob each: the bootstrap reply is about 42 MB
ANSWER_WITHIN = 1.0
PULL = "/pull-updates"
PIPELINE = "/v2/pipeline"


def _pipeline(*sql: str) -> bytes:
    return json.dumps({"requests": [{"type": "execute", "stmt": {"sql": q}} for q in sql]}).encode()


def _fill(server: ServerProcess, namespace: str) -> int:
    """Make ``namespace`` about 40 MiB; the size of its bootstrap reply."""
    assert server.admin("POST", f"/v1/namespaces/{namespace}/create").status == 201
    create = server.data("POST", f"/{namespace}{PIPELINE}", body=_pipeline("CREATE TABLE t(b BLOB)"))
    assert create.status == 200, create.body
    rows = ["INSERT INTO t VALUES (randomblob(1048576))"] * BLOB_ROWS
    assert server.data("POST", f"/{namespace}{PIPELINE}", body=_pipeline(*rows)).status == 200
    bootstrap = server.data("POST", f"/{namespace}{PULL}")
    assert bootstrap.status == 200
    assert len(bootstrap.body) > BLOB_ROWS * MIB
    return len(bootstrap.body)


def _head(port: int, method: str, target: str, *, token: str, length: int) -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


@contextmanager
def _stalled_reader(port: int, target: str, token: str) -> Iterator[socket.socket]:
    """A client that asks for ``target`` and then never reads (a tiny receive window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with closing(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_head(port, "POST", target, token=token, length=0))
        yield sock


@contextmanager
def _stalled_writer(port: int, target: str, token: str) -> Iterator[socket.socket]:
    """A client that announces a 1000-byte body, sends ten bytes of it and stops."""
    sock = socket.create_connection(("127.0.0.1", port))
    with closing(sock):
        sock.sendall(_head(port, "POST", target, token=token, length=1000) + b'{"requests')
        yield sock


def _timed(port: int, method: str, target: str, *, token: str, body: bytes = b"") -> tuple[int, float]:
    started = time.monotonic()
    response = raw_request(port, method, target, token=token, body=body, timeout=10)
    return response.status, time.monotonic() - started


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


SEND_TIMEOUT = 6.0


def test_stalled_reader_and_writer_do_not_hold_the_namespace(start_server: ServerFactory) -> None:
    server = start_server(
        TURSO_CLIENT_SEND_TIMEOUT=f"{SEND_TIMEOUT:g}s",
        TURSO_CLIENT_RECEIVE_TIMEOUT="2s",
        TURSO_SPOOL_DISK=str(100 * MIB),
    )
    size = _fill(server, "big")
    ro = server.admin("POST", "/v1/namespaces/big/tokens", {"access": "ro"}).json()["token"]
    port = server.data_port
    insert = _pipeline("INSERT INTO t VALUES (x'00')")

    with (
        _stalled_reader(port, f"/big{PULL}", ro) as reader,
        _stalled_writer(port, f"/big{PIPELINE}", DATA_TOKEN) as writer,
    ):
        stalled_at = time.monotonic()
        time.sleep(0.5)  # the bootstrap has reached the child, the writer's head the proxy
        for method, route, body in [
            ("POST", PIPELINE, insert),
            ("POST", PULL, b""),
            ("POST", PIPELINE, insert),
        ]:
            status, elapsed = _timed(port, method, f"/big{route}", token=DATA_TOKEN, body=body)
            assert status == 200, route
            assert elapsed < ANSWER_WITHIN, f"{route} took {elapsed:.2f}s behind the stalled clients"

        # The spool is bounded: with one bootstrap held for the stalled reader, a second stalled
        # one fills it, and the next bootstrap is refused at once instead of queueing.
        with _stalled_reader(port, f"/big{PULL}", ro):
            time.sleep(0.5)
            refused = raw_request(port, "POST", f"/big{PULL}", token=DATA_TOKEN, timeout=10)
            assert refused.status == 503, refused.body
            assert refused.json()["code"] == "spool full"
            assert "retry-after" in refused.headers
            status, elapsed = _timed(port, "POST", f"/big{PIPELINE}", token=DATA_TOKEN, body=insert)
            assert (status, elapsed < ANSWER_WITHIN) == (200, True)

        # The stalled writer gets 408 after the receive timeout; the stalled reader is cut off
        # after the send timeout with a short body, not left hanging.
        answer = _read_all(writer, timeout=5)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b'"request timeout"' in answer
        time.sleep(max(0.0, stalled_at + SEND_TIMEOUT + 0.5 - time.monotonic()))
        cut = _read_all(reader, timeout=10)
        assert cut.startswith(b"HTTP/1.1 200")
        assert len(cut) < size

    # Every spool share came back: a full bootstrap fits again, and nothing is left on disk.
    assert server.data("POST", f"/big{PULL}").status == 200
    spool_dir = server.data_dir / "_spool"
    assert not spool_dir.exists() or not any(spool_dir.iterdir())
    assert server.admin("GET", "/v1/namespaces/big", token=ADMIN_TOKEN).json()["running"]
    assert server.find_logs("client did not take its reply")


# Runs for centuries on one core; the SQL guard lets it through (it is a plain read).
ENDLESS = "SELECT count(*) FROM generate_series(1, 9000000000000000000)"
UPSTREAM_TIMEOUT = 2.0
RESTARTED_WITHIN = 5.0


def _restarts_metric(server: ServerProcess, namespace: str) -> float:
    pattern = rf'^turso_server_child_restarts_total\{{namespace="{namespace}"\}} (\S+)$'
    found = re.search(pattern, server.metrics_text(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def test_a_statement_outliving_the_upstream_timeout_restarts_its_child(start_server: ServerFactory) -> None:
    """tursodb serves one connection at a time: without the restart the endless statement kept
    its child busy for good and every later request of the namespace got 504 too."""
    server = start_server(TURSO_UPSTREAM_TIMEOUT=f"{UPSTREAM_TIMEOUT:g}s")
    seed = _pipeline("CREATE TABLE kept(v TEXT)", "INSERT INTO kept VALUES ('before')")
    assert server.data("POST", f"/alpha{PIPELINE}", body=seed).status == 200
    other = server.admin("POST", "/v1/namespaces/alpha/tokens", {"access": "rw"}).json()["token"]
    old_pid = server.child_pids()["alpha"]
    restarts = _restarts_metric(server, "alpha")
    port = server.data_port

    with ThreadPoolExecutor(max_workers=3) as pool:
        started = time.monotonic()
        endless = pool.submit(
            raw_request, port, "POST", f"/alpha{PIPELINE}", token=other, body=_pipeline(ENDLESS)
        )
        time.sleep(0.5)  # it is running; these two queue behind it (at the child, behind its lease)
        pull = pool.submit(_timed, port, "POST", f"/alpha{PULL}", token=DATA_TOKEN)
        push = pool.submit(
            _timed, port, "POST", f"/alpha{PIPELINE}", token=DATA_TOKEN, body=_pipeline("SELECT 1")
        )
        answer = endless.result(timeout=UPSTREAM_TIMEOUT + 10)
        assert answer.status == 504 and answer.json()["code"] == "upstream timeout", answer.body
        assert time.monotonic() - started < UPSTREAM_TIMEOUT + 2
        # The pull was sent to the killed child and is resent to the fresh one; the push waited
        # for the implicit write lease and goes out to the fresh child.
        assert pull.result(timeout=RESTARTED_WITHIN + 10)[0] == 200
        assert push.result(timeout=RESTARTED_WITHIN + 10)[0] == 200

    status, elapsed = _timed(port, "POST", f"/alpha{PIPELINE}", token=DATA_TOKEN, body=_pipeline("SELECT 1"))
    assert (status, elapsed < RESTARTED_WITHIN) == (200, True), elapsed
    kept = server.data("POST", f"/alpha{PIPELINE}", body=_pipeline("SELECT v FROM kept"))
    assert kept.status == 200 and kept.json()["results"][0]["response"]["result"]["rows"] == [
        [{"type": "text", "value": "before"}]
    ], kept.body
    new_pid = server.child_pids()["alpha"]
    assert new_pid != old_pid and _gone(old_pid)  # no core left burning on the endless statement
    assert _restarts_metric(server, "alpha") == restarts + 1
    view = server.admin("GET", "/v1/namespaces/alpha").json()
    assert view["running"] and view["restarts"] == 1, view
    (line,) = server.find_logs("tursodb did not answer within the upstream timeout; killing it to restart")
    assert line["namespace"] == "alpha" and line["pid"] == old_pid and line["level"] == "WARNING", line
    assert other not in server.output() and DATA_TOKEN not in server.output()
    assert not server.find_logs("tursodb exited; restarting")  # one line for the restart, not two


def test_a_backup_outliving_the_upstream_timeout_restarts_its_child(start_server: ServerFactory) -> None:
    """A child that does not answer the backup's ``VACUUM INTO`` (here: stopped) is restarted too."""
    server = start_server(TURSO_UPSTREAM_TIMEOUT=f"{UPSTREAM_TIMEOUT:g}s")
    assert server.data("POST", f"/beta{PIPELINE}", body=_pipeline("CREATE TABLE kept(v)")).status == 200
    old_pid = server.child_pids()["beta"]
    os.kill(old_pid, signal.SIGSTOP)
    try:
        failed = server.admin("GET", "/v1/namespaces/beta/backup")
    finally:
        if not _gone(old_pid):
            os.kill(old_pid, signal.SIGCONT)
    assert failed.status == 500 and failed.json()["code"] == "backup failed", failed.body
    status, elapsed = _timed(
        server.data_port, "POST", f"/beta{PIPELINE}", token=DATA_TOKEN, body=_pipeline("SELECT * FROM kept")
    )
    assert (status, elapsed < RESTARTED_WITHIN) == (200, True), elapsed
    assert server.child_pids()["beta"] != old_pid
    assert server.admin("GET", "/v1/namespaces/beta").json()["restarts"] == 1
    backup = server.admin("GET", "/v1/namespaces/beta/backup")
    assert backup.status == 200 and backup.body.startswith(b"SQLite format 3\x00")


def test_a_child_timing_out_while_its_namespace_is_deleted_is_not_started_again(
    start_server: ServerFactory,
) -> None:
    """The delete stops the child (it takes the whole grace: the child is stopped) while a pull
    waits on it; the pull's timeout falls inside that grace and restarts nothing."""
    server = start_server(TURSO_UPSTREAM_TIMEOUT=f"{UPSTREAM_TIMEOUT:g}s", TURSO_SHUTDOWN_GRACE="4s")
    assert server.data("POST", f"/gamma{PIPELINE}", body=_pipeline("CREATE TABLE kept(v)")).status == 200
    old_pid = server.child_pids()["gamma"]
    os.kill(old_pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            pull = pool.submit(_timed, server.data_port, "POST", f"/gamma{PULL}", token=DATA_TOKEN)
            time.sleep(0.3)
            deleted = pool.submit(server.admin, "DELETE", "/v1/namespaces/gamma")
            status, elapsed = pull.result(timeout=15)
            assert status == 504 and elapsed < UPSTREAM_TIMEOUT + 1.5, (status, elapsed)
            assert deleted.result(timeout=15).status == 200
    finally:
        if not _gone(old_pid):
            os.kill(old_pid, signal.SIGCONT)
    assert _gone(old_pid)
    assert server.admin("GET", "/v1/namespaces/gamma").status == 404
    assert "gamma" not in server.child_pids()
    assert not server.find_logs("tursodb did not answer within the upstream timeout; killing it to restart")
    assert _restarts_metric(server, "gamma") == 0
