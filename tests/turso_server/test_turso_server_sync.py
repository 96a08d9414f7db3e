"""Real pyturso replicas through turso-server: convergence, isolation, first-touch, crashes, restore."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.turso_server.support import ServerFactory, ServerProcess, kill_pid


def _rows(connection: Any, table: str = "t") -> list[tuple[Any, ...]]:
    return sorted(connection.execute(f"SELECT * FROM {table}").fetchall())


def test_two_replicas_converge_through_the_proxy(server: ServerProcess, replicas: Callable[..., Any]) -> None:
    first = replicas(server.url("shop"))
    first.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
    first.execute("INSERT INTO t VALUES (1, 'first')")
    first.push()

    second = replicas(server.url("shop"))
    assert _rows(second) == [(1, "first")]
    second.execute("INSERT INTO t VALUES (2, 'second')")
    second.push()

    first.pull()
    assert _rows(first) == [(1, "first"), (2, "second")]
    assert _rows(first) == _rows(second)

    view = server.admin("GET", "/v1/namespaces/shop").json()
    assert view["origin"] == "auto" and view["running"] and not view["locked"]


def test_namespaces_are_isolated(server: ServerProcess, replicas: Callable[..., Any]) -> None:
    alpha = replicas(server.url("alpha"))
    alpha.execute("CREATE TABLE secrets(v TEXT)")
    alpha.execute("INSERT INTO secrets VALUES ('alpha-only')")
    alpha.push()

    beta = replicas(server.url("beta"))
    beta.execute("CREATE TABLE t(v TEXT)")
    beta.execute("INSERT INTO t VALUES ('beta-only')")
    beta.push()

    fresh_beta = replicas(server.url("beta"))
    tables = {row[0] for row in fresh_beta.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "secrets" not in tables
    assert _rows(fresh_beta) == [("beta-only",)]
    alpha.pull()
    tables = {row[0] for row in alpha.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "t" not in tables

    namespaces = server.data_dir / "namespaces"
    assert (namespaces / "alpha" / "alpha.db").is_file() and (namespaces / "beta" / "beta.db").is_file()
    ports = {server.admin("GET", f"/v1/namespaces/{name}").json()["port"] for name in ("alpha", "beta")}
    assert len(ports) == 2


def test_hundred_concurrent_first_touches_start_one_child(start_server: ServerFactory) -> None:
    # 100 requests queue for one single-threaded child; on a loaded 2-core machine the last ones
    # wait seconds, which the default 5 s TURSO_STARTUP_TIMEOUT (a wait that includes the queue)
    # can cut short. What is checked here is that one child starts, not how long the queue is.
    server = start_server(TURSO_STARTUP_TIMEOUT="60s")

    def touch(_: int) -> int:
        return server.data("POST", "/crowd/pull-updates").status

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(touch, range(100)))

    assert statuses == [200] * 100
    assert len(server.find_logs("namespace running", namespace="crowd")) == 1
    assert len(server.find_logs("namespace created", namespace="crowd")) == 1
    assert list(server.child_pids()) == ["crowd"]
    assert [n["name"] for n in server.admin("GET", "/v1/namespaces").json()["namespaces"]] == ["crowd"]


def test_killed_child_is_restarted_and_loses_nothing(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    writer = replicas(server.url("crashy"))
    writer.execute("CREATE TABLE t(v INTEGER)")
    for value in range(5):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        writer.push()
    old_pid = server.child_pids()["crashy"]

    os.kill(old_pid, signal.SIGKILL)
    _wait_dead(old_pid)
    # The very next operation arrives while the child is dead or restarting: it must wait, not fail.
    # (A push that reaches a child in the middle of dying is not resent: see the reset test below.)
    writer.execute("INSERT INTO t VALUES (5)")
    writer.push()

    reader = replicas(server.url("crashy"))
    assert _rows(reader) == [(v,) for v in range(6)]
    assert server.child_pids()["crashy"] != old_pid
    view = server.admin("GET", "/v1/namespaces/crashy").json()
    assert view["running"] and view["restarts"] == 1
    assert server.find_logs("tursodb exited; restarting", namespace="crashy")


def test_killed_server_restart_restores_every_namespace(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    first = start_server()
    assert first.admin("POST", "/v1/namespaces/ledger/create").status == 201
    expected: dict[str, list[tuple[Any, ...]]] = {}
    for name in ("ledger", "auto-one", "auto-two"):
        connection = replicas(first.url(name))
        connection.execute("CREATE TABLE t(v TEXT)")
        rows = [(f"{name}-{i}",) for i in range(3)]
        for row in rows:
            connection.execute("INSERT INTO t VALUES (?)", row)
        connection.push()
        expected[name] = rows
    orphans = first.child_pids()
    assert set(orphans) == set(expected)

    first.kill9()  # children survive in their own process groups, holding the database locks
    second = start_server(data_dir=first.data_dir)

    views = {v["name"]: v for v in second.admin("GET", "/v1/namespaces").json()["namespaces"]}
    assert set(views) == set(expected)
    assert all(view["running"] for view in views.values())
    assert views["ledger"]["origin"] == "explicit" and views["ledger"]["locked"]
    assert views["auto-one"]["origin"] == "auto"
    for name, rows in expected.items():
        assert _rows(replicas(second.url(name))) == rows
    for pid in orphans.values():
        assert not _alive(pid), "the orphaned child of the killed server is still running"
        kill_pid(pid, second.data_dir)
    assert len(second.find_logs("killing orphaned tursodb")) == 3


def test_an_orphan_whose_pidfile_is_unreadable_is_still_reclaimed(
    start_server: ServerFactory, replicas: Callable[..., Any]
) -> None:
    # An older server wrote pidfiles in place: killed mid-write, it left an empty one, the orphan
    # kept its database lock, and the namespace answered 503 for good after the restart.
    first = start_server()
    connection = replicas(first.url("ledger"))
    connection.execute("CREATE TABLE t(v TEXT)")
    connection.execute("INSERT INTO t VALUES ('kept')")
    connection.push()
    orphan = first.child_pids()["ledger"]
    first.kill9()
    (first.data_dir / "_state" / "run" / "ledger.pid").write_text("")
    second = start_server(data_dir=first.data_dir)
    try:
        assert not _alive(orphan), "the orphan named by no readable pidfile is still running"
        assert _rows(replicas(second.url("ledger"))) == [("kept",)]
        assert second.find_logs("killing orphaned tursodb")
    finally:
        kill_pid(orphan, second.data_dir)
    assert not list((second.data_dir / "_state" / "run").glob(".*.tmp"))


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} outlived SIGKILL"
        time.sleep(0.005)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_child_that_cannot_come_back_gives_503_with_retry_after_then_recovers(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """The real tursodb behind a wrapper that refuses to start while a flag file exists."""
    from tests.support.tursodb import tursodb_bin

    flag = tmp_path / "refuse-start"
    wrapper = tmp_path / "tursodb-wrapper"
    wrapper.write_text(f'#!/bin/sh\n[ -e "{flag}" ] && exit 1\nexec "{tursodb_bin()}" "$@"\n')
    wrapper.chmod(0o755)
    server = start_server(
        TURSODB_BIN=str(wrapper),
        TURSO_STARTUP_TIMEOUT="1s",
        TURSO_RESTART_BACKOFF_MAX="1s",
        TURSO_CHILD_LANDLOCK="off",  # the wrapper runs /bin/sh, which a confined child may not
    )
    assert server.admin("POST", "/v1/namespaces/fragile/create").status == 201
    pid = server.child_pids()["fragile"]
    flag.touch()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    started = time.monotonic()
    response = server.data("POST", "/fragile/pull-updates", body=b"{}")
    waited = time.monotonic() - started
    assert response.status == 503, response.body
    assert int(response.headers["retry-after"]) >= 1
    assert waited >= 0.9, "the request waited for the restart before giving up"
    flag.unlink()
    deadline = time.monotonic() + 15
    while server.admin("GET", "/v1/namespaces/fragile").json().get("running") is not True:
        assert time.monotonic() < deadline, "the supervisor never restarted the child"
        time.sleep(0.2)
    assert server.data("POST", "/fragile/pull-updates", body=b"{}").status != 503


def test_a_reset_read_is_resent_but_a_reset_push_is_not(start_server: ServerFactory, tmp_path: Path) -> None:
    """Replaying a ``/v2/pipeline`` push by hand runs it twice (it duplicated rows on tursodb 0.7.0),
    so only read-only requests are resent after the child dropped them unanswered."""
    wrapper = tmp_path / "resetting-tursodb"
    script = Path(__file__).with_name("resetting_child.py")
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    server = start_server(TURSODB_BIN=str(wrapper), TURSO_CHILD_LANDLOCK="off")  # a Python child
    assert server.admin("POST", "/v1/namespaces/flaky/create").status == 201
    requests_log = server.data_dir / "namespaces" / "flaky" / "flaky.db.requests"

    pull = server.data("POST", "/flaky/pull-updates", body=b"{}")
    assert pull.status == 200, pull.body
    assert requests_log.read_text().splitlines() == ["POST /pull-updates"] * 2

    push = server.data("POST", "/flaky/v2/pipeline", body=b'{"requests": []}')
    assert push.status == 502, push.body
    assert push.json()["code"] == "upstream error"
    assert requests_log.read_text().splitlines()[2:] == ["POST /v2/pipeline"]


class _ReplyDroppingProxy(http.server.ThreadingHTTPServer):
    """Forwards to a real tursodb, but drops (resets) the reply to the first push batch it applied."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _DropFirstPushReply)
        self.upstream = upstream
        self.dropped = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DropFirstPushReply(http.server.BaseHTTPRequestHandler):
    server: _ReplyDroppingProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        forwarded = urllib.request.Request(
            self.server.upstream + self.path,
            data=body,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
            method="POST",
        )
        with urllib.request.urlopen(forwarded, timeout=30) as upstream:
            status, reply = upstream.status, upstream.read()
        if b"BEGIN IMMEDIATE" in body and not self.server.dropped:
            self.server.dropped += 1  # tursodb committed it; the client never hears so
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_a_push_whose_reply_was_lost_is_not_applied_twice_when_the_client_retries(
    tmp_path: Path, replicas: Callable[..., Any]
) -> None:
    """Why the proxy answers 502 instead of resending a push: the sync client's own retry first
    reads the last change id the server recorded, so a push that did commit is not replayed."""
    import turso
    from tests.support.tursodb import SyncServer

    child = SyncServer(tmp_path / "remote" / "db.db").start()
    proxy = _ReplyDroppingProxy(child.url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        writer = replicas(proxy.url, token=None)
        writer.execute("CREATE TABLE t(v INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(turso.Error, match="without response"):
            writer.push()
        assert proxy.dropped == 1
        writer.push()  # the retry
        reader = replicas(child.url, token=None)
        assert _rows(reader) == [(1,)]
    finally:
        proxy.shutdown()
        proxy.server_close()
        child.stop()
