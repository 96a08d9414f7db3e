"""``open_turso()`` in both modes, against a real file and a real sync server."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from buntime.turso import (
    BlockingDatabase,
    InvalidNamespaceError,
    TursoClosedError,
    TursoConfigError,
    TursoError,
    TursoUnavailableError,
)
from buntime.worker import TursoClient, open_turso
from tests.support.tursoserver import SyncEndpoint, TursoServer
from tests.turso.test_token_file import SecretVolume


@pytest.mark.parametrize("name", ["bad name!", "with/slash", "", "_state", "UP"])
def test_rejects_invalid_namespaces(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidNamespaceError):
        open_turso(name, dir=str(tmp_path))


def test_local_mode_runs_sql_and_persists_across_reopen(tmp_path: Path) -> None:
    with open_turso("tenants", dir=str(tmp_path), env={}) as db:
        assert db.mode == "local" and db.path == str(tmp_path / "tenants.db")
        db.exec("CREATE TABLE t(v INTEGER)")
        db.execute("INSERT INTO t VALUES (?)", [42])
        assert db.pull() is False
        db.push()  # a no-op, not an error
        assert db.execute("PRAGMA journal_mode") == [{"journal_mode": "mvcc"}]
    with open_turso("tenants", dir=str(tmp_path), env={}) as again:
        assert again.execute("SELECT v FROM t") == [{"v": 42}]


def test_a_local_worker_sets_no_sync_setting_it_would_be_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="buntime.turso"),
        open_turso("jobs", dir=str(tmp_path), env={}),
    ):
        pass
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def _open_into(results: list[TursoClient | Exception], directory: str) -> None:
    try:
        results.append(open_turso("app", dir=directory, env={}))
    except Exception as exc:
        results.append(exc)


def test_two_threads_opening_a_new_file_both_get_a_client(tmp_path: Path) -> None:
    """Two ``open_turso()`` of one new file in one process: the second waits while the first
    creates it (tursodb says busy meanwhile) instead of failing."""
    for trial in range(3):
        results: list[TursoClient | Exception] = []
        threads = [
            threading.Thread(target=_open_into, args=(results, str(tmp_path / str(trial)))) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clients = [r for r in results if isinstance(r, TursoClient)]
        try:
            assert len(clients) == 2, results
            clients[0].exec("CREATE TABLE t(v)")
            clients[0].execute("INSERT INTO t VALUES (1)")
            assert clients[1].execute("SELECT v FROM t") == [{"v": 1}]
        finally:
            for client in clients:
                client.close()


def _open_replica_into(
    results: list[TursoClient | Exception], url: str, namespace: str, directory: str
) -> None:
    try:
        results.append(open_turso(namespace, server_url=url, dir=directory, env={}))
    except Exception as exc:
        results.append(exc)


def test_two_threads_opening_a_new_replica_both_get_a_client(router: SyncEndpoint, tmp_path: Path) -> None:
    """The same in sync mode: two ``open_turso()`` of one new replica file in one process. The
    second opener waits while the first bootstraps the file; before, it found the file half made
    and failed ("File is not a database", or a raw FileNotFoundError), sometimes both did."""
    for trial in range(5):
        namespace = f"app{trial}"
        results: list[TursoClient | Exception] = []
        threads = [
            threading.Thread(
                target=_open_replica_into, args=(results, router.url, namespace, str(tmp_path / str(trial)))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clients = [r for r in results if isinstance(r, TursoClient)]
        try:
            assert len(clients) == 2, results
            assert {client.path for client in clients} == {str(tmp_path / str(trial) / f"{namespace}.db")}
            clients[0].exec("CREATE TABLE t(v)")
            clients[0].execute("INSERT INTO t VALUES (1)")
            # A transaction pulls first (the other replica wrote last): it sees the row.
            assert clients[1].transaction(lambda tx: tx.all("SELECT v FROM t")) == [{"v": 1}]
        finally:
            for client in clients:
                client.close()
        with open_turso(
            namespace, server_url=router.url, dir=str(tmp_path / f"fresh{trial}"), env={}
        ) as fresh:
            assert fresh.execute("SELECT v FROM t") == [{"v": 1}]


def test_a_closed_client_raises_turso_closed_error(tmp_path: Path) -> None:
    db = open_turso("tenants", dir=str(tmp_path), env={})
    db.close()
    for call in (lambda: db.execute("SELECT 1"), lambda: db.exec("SELECT 1"), db.pull):
        with pytest.raises(TursoClosedError, match="is closed") as caught:
            call()
        assert caught.value.code == "TURSO_CLOSED"
    db.close()  # idempotent


@pytest.mark.parametrize("url", ["http://h:1/?x=1", "ftp://h", "http://user:pw@h"])
def test_a_bad_server_url_is_reported_under_the_name_that_was_set(tmp_path: Path, url: str) -> None:
    with pytest.raises(TursoConfigError) as from_env:
        open_turso("app", dir=str(tmp_path), env={"RUNTIME_TURSO_SERVER_URL": url})
    assert from_env.value.code == "INVALID_RUNTIME_TURSO_SERVER_URL"
    assert str(from_env.value).startswith("RUNTIME_TURSO_SERVER_URL must be"), from_env.value
    with pytest.raises(TursoConfigError) as from_argument:
        open_turso("app", server_url=url, dir=str(tmp_path), env={})
    assert from_argument.value.code == "INVALID_RUNTIME_TURSO_SERVER_URL"
    assert str(from_argument.value).startswith("open_turso(server_url=) must be"), from_argument.value
    for error in (from_env.value, from_argument.value):
        assert "TURSO_SYNC_URL" not in str(error) and "pw" not in str(error)


def test_env_selects_the_dir_and_an_empty_url_means_local(tmp_path: Path) -> None:
    env = {"RUNTIME_TURSO_DIR": str(tmp_path / "wd"), "RUNTIME_TURSO_SERVER_URL": " "}
    with open_turso("jobs", env=env) as db:
        assert db.path == str(tmp_path / "wd" / "jobs.db") and db.mode == "local"


async def test_sync_mode_pushes_and_pulls_between_two_workers(router: SyncEndpoint, tmp_path: Path) -> None:
    """Two workers (two dirs) on one namespace; real push()/pull() through ``<url>/<ns>``."""

    def scenario() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        env = {"RUNTIME_TURSO_SERVER_URL": router.url + "/", "RUNTIME_TURSO_DIR": str(tmp_path / "w1")}
        with open_turso("tenants", env=env) as w1:
            assert w1.mode == "sync" and w1.url == f"{router.url}/tenants"
            w1.exec("CREATE TABLE IF NOT EXISTS t(v TEXT)")
            w1.execute("INSERT INTO t VALUES ('from-w1')")
            w1.push()
        with open_turso("tenants", server_url=router.url, dir=str(tmp_path / "w2"), env={}) as w2:
            first = w2.execute("SELECT v FROM t")
            w2.execute("INSERT INTO t VALUES ('from-w2')")
            w2.push()
        with open_turso("tenants", env=env) as w1_again:  # reopen: persisted file, then pull
            w1_again.pull()
            second = w1_again.execute("SELECT v FROM t ORDER BY v")
        return first, second

    first, second = await asyncio.to_thread(scenario)
    assert first == [{"v": "from-w1"}]
    assert second == [{"v": "from-w1"}, {"v": "from-w2"}]
    assert sorted(router.children) == ["tenants"]


async def test_workers_read_modify_write_serializably(router: SyncEndpoint, tmp_path: Path) -> None:
    """Two workers (two replicas) bump one counter with transaction(): no increment is lost."""

    def bump(db: BlockingDatabase) -> None:
        row = db.get("SELECT n FROM c")
        assert row is not None
        db.run("UPDATE c SET n = ?", [int(row["n"]) + 1])

    def work(name: str, rounds: int) -> None:
        with open_turso("counters", server_url=router.url, dir=str(tmp_path / name), env={}) as db:
            for _ in range(rounds):
                db.transaction(bump)

    with open_turso("counters", server_url=router.url, dir=str(tmp_path / "setup"), env={}) as db:
        db.exec("CREATE TABLE c(n INTEGER)")
        db.execute("INSERT INTO c VALUES (0)")
    await asyncio.gather(asyncio.to_thread(work, "w1", 15), asyncio.to_thread(work, "w2", 15))
    with open_turso("counters", server_url=router.url, dir=str(tmp_path / "check"), env={}) as db:
        assert db.execute("SELECT n FROM c") == [{"n": 30}]


def test_the_worker_uses_only_public_names_of_the_turso_service() -> None:
    """``buntime.worker`` is an app-facing module: it may lean on ``buntime.turso``'s front door only.

    Checked on its source: every import from the service names an exported symbol, no private
    module is imported, and no private attribute of another object is touched (``self._x`` is its
    own). ``.importlinter`` holds the same rule for the modules that exist today.
    """
    import ast

    import buntime.turso
    import buntime.worker

    tree = ast.parse(Path(buntime.worker.__file__).read_text())
    exported = set(buntime.turso.__all__)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            module = ("." * node.level) + (node.module or "")
            assert "._" not in f".{module.lstrip('.')}", module
            if module in (".turso", "buntime.turso"):
                assert {alias.name for alias in node.names} <= exported, ast.dump(node)
        elif isinstance(node, ast.Import):
            assert all("._" not in alias.name for alias in node.names), ast.dump(node)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            assert isinstance(node.value, ast.Name) and node.value.id == "self", (
                f"line {node.lineno}: private attribute {node.attr} of another object"
            )


def _use_inherited_client(db: TursoClient, dir: str, out: Connection) -> None:
    """In a forked child: the parent's client must fail at once, and a client of its own works."""
    report: dict[str, object] = {}
    try:
        db.execute("SELECT 1")
    except TursoError as exc:
        report["error"] = (exc.code, str(exc))
    db.close()  # forgets the parent's client; must not block either
    with open_turso("child", dir=dir, env={}) as own:
        report["own"] = own.execute("SELECT 7 AS v")
    out.send(report)


def test_a_forked_child_gets_a_clear_error_instead_of_blocking_and_can_open_its_own(tmp_path: Path) -> None:
    with open_turso("tenants", dir=str(tmp_path), env={}) as db:
        db.exec("CREATE TABLE t(v INTEGER)")
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_use_inherited_client, args=(db, str(tmp_path), send))
        child.start()
        try:
            assert receive.poll(30), "the forked child blocked on the parent's client"
            report = receive.recv()
            child.join(30)
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        assert child.exitcode == 0
        code, message = report["error"]
        assert code == "TURSO_CLOSED" and "call open_turso() in the child process" in message
        assert report["own"] == [{"v": 7}]
        db.execute("INSERT INTO t VALUES (1)")  # the parent's client is untouched
        assert db.execute("SELECT v FROM t") == [{"v": 1}]


def test_a_second_process_opening_the_same_file_is_told_that_tursodb_locks_it(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from buntime.worker import open_turso\n"
        "try:\n"
        "    open_turso('tenants', dir=sys.argv[1], env={})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc.code, exc)\n"
    )
    with open_turso("tenants", dir=str(tmp_path), env={}) as db:
        second = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
        )
        db.execute("SELECT 1")  # the first process keeps its database
    assert second.stdout.startswith("TursoUnavailableError TURSO_UNAVAILABLE"), second.stdout + second.stderr
    assert "another process has it open (tursodb locks a database file to one process)" in second.stdout
    assert "RUNTIME_TURSO_DIR" in second.stdout


def test_a_stalled_server_makes_a_call_fail_after_the_timeout_instead_of_blocking(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: the open gives up after ``timeout``.

    The timeout cancels the open: it closes the replica it was opening and stops its engine
    thread, which ends as soon as its stalled request returns (here: the server hangs up)."""
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
        started = time.monotonic()
        try:
            with pytest.raises(TursoUnavailableError, match=r"did not finish within 2s"):
                open_turso(
                    "stalled", server_url=f"http://127.0.0.1:{port}", dir=str(tmp_path), env={}, timeout=2
                )
            assert time.monotonic() - started < 15
        finally:
            for conn in accepted:
                conn.close()
    deadline = time.monotonic() + 15
    while any(t.name == "turso:stalled.db" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [t.name for t in threading.enumerate() if t.name.endswith(("turso:stalled.db", ":stalled"))] == []


def test_an_injected_pod_opens_its_turso_namespace_and_another_name_is_refused(tmp_path: Path) -> None:
    """README "Worker apps": the token the operator injects is scoped to the TursoNamespace's
    spec.database, injected as TURSO_NAMESPACE, so ``open_turso(os.environ["TURSO_NAMESPACE"])``
    works and any other name is refused by the server (403) as ``TursoUnavailableError``."""
    with TursoServer(tmp_path / "server") as server:
        assert server.admin("POST", "/v1/namespaces/orders/create", {})[0] in (200, 201)
        status, minted = server.admin("POST", "/v1/namespaces/orders/tokens", {"access": "rw"})
        assert status == 201, minted
        env = {
            "RUNTIME_TURSO_SERVER_URL": server.url,
            "RUNTIME_TURSO_SERVER_TOKEN": minted["token"],
            "RUNTIME_TURSO_DIR": str(tmp_path / "replicas"),
            "TURSO_NAMESPACE": "orders",
        }
        with open_turso(env["TURSO_NAMESPACE"], env=env) as db:
            db.exec("CREATE TABLE IF NOT EXISTS t(v INTEGER)")
            db.execute("INSERT INTO t VALUES (?)", [1])
            assert db.execute("SELECT v FROM t") == [{"v": 1}]
        with pytest.raises(TursoUnavailableError, match="status=403"):
            open_turso("tenants", env=env, timeout=30)


def _mint(server: TursoServer, body: dict[str, object]) -> str:
    status, minted = server.admin("POST", "/v1/namespaces/orders/tokens", body)
    assert status == 201, minted
    return str(minted["token"])


def test_a_token_file_swapped_after_a_revocation_reaches_the_open_client_without_a_reopen(
    tmp_path: Path,
) -> None:
    """``RUNTIME_TURSO_SERVER_TOKEN_FILE`` (what the webhook injects): the open client reads the
    file again when the kubelet swaps it, so the old token's revocation stops only the writes
    between the revocation and the swap."""
    with TursoServer(tmp_path / "server") as server:
        assert server.admin("POST", "/v1/namespaces/orders/create", {})[0] in (200, 201)
        volume = SecretVolume(tmp_path / "secret", key="RUNTIME_TURSO_SERVER_TOKEN")
        old = _mint(server, {"access": "rw"})
        volume.write(old)
        env = {
            "RUNTIME_TURSO_SERVER_URL": server.url,
            "RUNTIME_TURSO_SERVER_TOKEN_FILE": volume.path,
            "RUNTIME_TURSO_DIR": str(tmp_path / "replicas"),
        }
        with open_turso("orders", env=env, timeout=30) as db:
            db.exec("CREATE TABLE IF NOT EXISTS t(v TEXT)")
            db.execute("INSERT INTO t VALUES ('old')")
            new = _mint(server, {"access": "rw", "revokeOthers": True})
            with pytest.raises(TursoError):
                db.execute("INSERT INTO t VALUES ('refused')")  # the old token is revoked
            volume.write(new)  # the operator re-minted; the kubelet refreshed the volume
            db.execute("INSERT INTO t VALUES ('new')")
            db.execute("INSERT INTO t VALUES ('again')")
            assert old not in repr(db) and new not in repr(db)
        fresh = {**env, "RUNTIME_TURSO_DIR": str(tmp_path / "fresh")}
        with open_turso("orders", env=fresh, timeout=30) as other:  # on the server, not only local
            assert other.execute("SELECT v FROM t ORDER BY v") == [{"v": "again"}, {"v": "new"}, {"v": "old"}]


def test_a_worker_token_beside_its_file_is_refused_and_an_explicit_token_wins_over_both(
    tmp_path: Path,
) -> None:
    with TursoServer(tmp_path / "server") as server:
        assert server.admin("POST", "/v1/namespaces/orders/create", {})[0] in (200, 201)
        token = _mint(server, {"access": "rw"})
        env = {
            "RUNTIME_TURSO_SERVER_URL": server.url,
            "RUNTIME_TURSO_SERVER_TOKEN": "stale",
            "RUNTIME_TURSO_SERVER_TOKEN_FILE": str(tmp_path / "missing"),
            "RUNTIME_TURSO_DIR": str(tmp_path / "replicas"),
        }
        with pytest.raises(TursoConfigError) as refused:
            open_turso("orders", env=env)
        assert refused.value.code == "TURSO_TOKEN_CONFLICT"
        assert "RUNTIME_TURSO_SERVER_TOKEN and RUNTIME_TURSO_SERVER_TOKEN_FILE" in str(refused.value)
        assert "stale" not in str(refused.value)
        with open_turso("orders", token=token, env=env, timeout=30) as db:
            db.exec("CREATE TABLE IF NOT EXISTS t(v INTEGER)")
            assert db.execute("SELECT count(*) AS n FROM t") == [{"n": 0}]
