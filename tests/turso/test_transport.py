"""pyturso's sync IO as the runtime does it (``buntime.turso._transport``), against a real
turso-server: a push under a kept lease skips its cursor read, the answer given for it is the one
tursodb gives, every rule that drops a remembered cursor, and metadata written in place."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import TursoService, TursoUnavailableError, _transport, resolve_config
from tests.support.tursoserver import SyncEndpoint
from tests.turso.test_sync import count, create_table, insert, single

FENCED = "http://127.0.0.1:1/ns/-/lease/TOKEN/v2/pipeline"
CLIENT = "buntime-client"


def _stmt(sql: str, *args: dict[str, str], want_rows: bool = False) -> dict[str, Any]:
    return {"sql": sql, "sql_id": None, "args": list(args), "named_args": [], "want_rows": want_rows}


def _pipeline(*stmts: dict[str, Any]) -> bytes:
    steps = [{"condition": None, "stmt": stmt} for stmt in stmts]
    return json.dumps({"baton": None, "requests": [{"type": "batch", "batch": {"steps": steps}}]}).encode()


def _text(value: str) -> dict[str, str]:
    return {"type": "text", "value": value}


def _int(value: int) -> dict[str, str]:
    return {"type": "integer", "value": str(value)}


def read_body(client: str = CLIENT) -> bytes:
    return _pipeline(_stmt(_transport.READ_SQL, _text(client), want_rows=True))


def push_body(change_id: int, client: str = CLIENT) -> bytes:
    return _pipeline(
        _stmt("BEGIN IMMEDIATE"),
        _stmt(_transport.CREATE_SQL),
        _stmt("INSERT INTO t(v) VALUES (?)", _text("x")),
        _stmt(_transport.UPSERT_SQL, _text(client), _int(0), _int(change_id)),
        _stmt("COMMIT"),
    )


def batch_reply(steps: int, failed: int | None = None) -> bytes:
    ok = {"cols": [], "rows": [], "affected_row_count": 0}
    results = [None if i == failed else ok for i in range(steps)]
    errors = [{"message": "boom"} if i == failed else None for i in range(steps)]
    result = {"step_results": results, "step_errors": errors, "replication_index": None}
    return json.dumps(
        {"baton": None, "results": [{"type": "ok", "response": {"type": "batch", "result": result}}]}
    ).encode()


def learned(cursors: Any, url: str, change_id: int, reply: bytes | None = None) -> None:
    """What ``urlopen`` does around a push batch: announce it, then keep it if every step ran."""
    push = cursors.batch(url, push_body(change_id))
    assert push is not None
    client, row, steps = push
    if _transport._all_steps_ran(reply if reply is not None else batch_reply(steps), steps):
        cursors.landed(url, client, row)


def answered_row(cursors: Any, url: str = FENCED, client: str = CLIENT) -> Any:
    answer = cursors.answer(url, read_body(client))
    if answer is None:
        return None
    return json.loads(answer)["results"][0]["response"]["result"]["step_results"][0]["rows"]


# -- the rules, on pyturso 0.8.3's request shapes --------------------------------------------------


def test_a_landed_push_answers_the_next_read_under_the_same_lease() -> None:
    cursors = _transport._Cursors()
    assert answered_row(cursors) is None
    learned(cursors, FENCED, 7)
    assert answered_row(cursors) == [[_int(0), _int(7)]]
    learned(cursors, FENCED, 9)
    assert answered_row(cursors) == [[_int(0), _int(9)]]


def test_a_new_lease_another_client_or_an_unfenced_url_asks_the_server() -> None:
    cursors = _transport._Cursors()
    learned(cursors, FENCED, 7)
    assert answered_row(cursors, FENCED.replace("TOKEN", "OTHER")) is None
    assert answered_row(cursors, client="someone-else") is None
    plain = "http://127.0.0.1:1/ns/v2/pipeline"
    assert cursors.batch(plain, push_body(8)) is None  # an unfenced push is never remembered...
    assert answered_row(cursors, plain) is None
    assert answered_row(cursors) is None  # ...and it drops what the client's fenced pushes knew


def test_a_push_that_failed_or_is_on_its_way_drops_the_cursor() -> None:
    cursors = _transport._Cursors()
    learned(cursors, FENCED, 7)
    learned(cursors, FENCED, 8, reply=batch_reply(5, failed=2))  # a failed step: tursodb commits the rest
    assert answered_row(cursors) is None
    learned(cursors, FENCED, 9)
    assert cursors.batch(FENCED, push_body(10)) is not None  # sent; its reply never came
    assert answered_row(cursors) is None
    learned(cursors, FENCED, 11, reply=b'{"results": "not a reply"}')
    assert answered_row(cursors) is None


def test_anything_else_that_names_the_cursor_table_drops_every_cursor() -> None:
    cursors = _transport._Cursors()
    learned(cursors, FENCED, 7)
    other = _pipeline(_stmt("DELETE FROM turso_sync_last_change_id"))
    assert cursors.batch(FENCED, other) is None
    assert answered_row(cursors) is None
    learned(cursors, FENCED, 7)
    odd_push = push_body(8).replace(b"INSERT INTO t(v)", b"INSERT INTO turso_sync_last_change_id(v)")
    assert cursors.batch(FENCED, odd_push) is None
    assert answered_row(cursors) is None


# -- end to end ---------------------------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bytes, bytes]]]:
    """Every pipeline request that reached the server: ``(url, body, reply)``."""
    sent: list[tuple[str, bytes, bytes]] = []
    real = _transport._send

    def send(request: urllib.request.Request) -> Any:
        reply = real(request)
        if request.full_url.endswith("/v2/pipeline"):
            body = reply.read()
            sent.append((request.full_url, request.data, body))  # type: ignore[arg-type]
            return _transport._answer(body)
        return reply

    monkeypatch.setattr(_transport, "_send", send)
    yield sent


async def test_pushes_under_a_kept_lease_skip_their_cursor_read(
    sync_server: SyncEndpoint, tmp_path: Path, recorded: list[tuple[str, bytes, bytes]]
) -> None:
    async with single(sync_server.url, tmp_path / "a" / "r.db") as a:
        await create_table(a)
        before, sent = _transport.stats.cursor_reads, len(recorded)
        for i in range(10):  # back to back: the lease is kept between them (LEASE_MAX_HOLD)
            await insert(a, f"v{i}")
        answered = _transport.stats.cursor_reads - before
        reads = [body for _, body, _ in recorded[sent:] if _transport.READ_SQL.encode() in body]
        assert answered >= 5, (answered, len(reads))
        assert answered + len(reads) == 10, "every push reads its cursor once, here or at the server"
    async with single(sync_server.url, tmp_path / "b" / "r.db") as b:
        assert await count(b) == 10


async def test_the_answer_is_the_one_the_server_gives(
    sync_server: SyncEndpoint, tmp_path: Path, recorded: list[tuple[str, bytes, bytes]]
) -> None:
    async with single(sync_server.url, tmp_path / "a" / "r.db") as a:
        await create_table(a)
        for i in range(3):
            await insert(a, f"v{i}")
    url, push, reply = next(item for item in reversed(recorded) if _transport.UPSERT_SQL.encode() in item[1])
    read = next(body for _, body, _ in recorded if _transport.READ_SQL.encode() in body)
    cursors = _transport._Cursors()
    announced = cursors.batch(url, push)
    assert announced is not None and _transport._all_steps_ran(reply, announced[2])
    cursors.landed(url, announced[0], announced[1])
    ours = cursors.answer(url, read)
    assert ours is not None
    plain = url.split("/-/lease/")[0] + "/v2/pipeline"  # the same read, unfenced: the server answers
    request = urllib.request.Request(plain, data=read, method="POST")
    request.add_header("Content-Type", "application/json")
    with _transport._send(request) as theirs:
        assert json.loads(ours) == json.loads(theirs.read())


# -- metadata -------------------------------------------------------------------------------------


async def written_over(service: TursoService, info: Path, *, offline: bool = False) -> bool:
    """Push three times; whether the metadata file's content changed under a second hard link
    to it (written in place) or only under its name (a new file renamed over it)."""
    probe = info.with_name(info.name + ".probe")
    os.link(info, probe)
    try:
        before = probe.read_bytes()
        for i in range(3):
            await insert(service, f"v{i}")
            if offline:
                await service.sync()  # offline: the sync round pushes
        assert info.read_bytes() != before, "the pushes rewrote the metadata"
        return probe.read_bytes() == info.read_bytes()
    finally:
        probe.unlink()


async def test_a_serializable_replica_rewrites_its_metadata_in_place(
    sync_server: SyncEndpoint, tmp_path: Path
) -> None:
    path = tmp_path / "a" / "r.db"
    info = Path(f"{path}-info")
    async with single(sync_server.url, path) as a:
        await create_table(a)
        assert await written_over(a, info)
    # Shorter content is padded with spaces, which the engine's JSON reader ignores.
    info.write_bytes(info.read_bytes() + b" " * 64)
    async with single(sync_server.url, path) as a:
        await insert(a, "after")
        assert await count(a) == 4
        assert json.loads(info.read_bytes())["client_unique_id"]


async def test_an_offline_replica_keeps_pyturso_s_rename(sync_server: SyncEndpoint, tmp_path: Path) -> None:
    path = tmp_path / "a" / "r.db"
    async with single(sync_server.url, path, TURSO_WRITE_MODE="offline") as a:
        await create_table(a)
        await a.sync()
        assert not await written_over(a, Path(f"{path}-info"), offline=True)


def test_the_sync_clients_statements_are_the_ones_turso_server_knows() -> None:
    """The runtime and turso-server are independent packages; both recognise pyturso 0.8.3's own
    three statements on the cursor table, which must stay the same text on both sides."""
    from turso_server import _cursors

    assert (_transport.READ_SQL, _transport.CREATE_SQL, _transport.UPSERT_SQL) == (
        _cursors.READ_SQL,
        _cursors.CREATE_SQL,
        _cursors.UPSERT_SQL,
    )
    assert _transport.CURSOR_TABLE.decode() == _cursors.CURSOR_TABLE
    assert json.loads(_transport._read_reply([_int(0), _int(7)])) == json.loads(
        _cursors.read_reply([[_int(0), _int(7)]])
    )


class _Listener:
    """A plain TCP listener on 127.0.0.1 that records every byte each connection sends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                data = b""
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(65536):
                        data += chunk
                        if b"\r\n\r\n" in data or data[:1] == b"\x16":
                            break  # a whole request head, or a TLS ClientHello
                self.received.append(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    yield server
    server.close()


@pytest.mark.parametrize(
    "url", ["libsql://127.0.0.1:{port}/ns", "ftp://127.0.0.1:{port}/ns", "127.0.0.1:{port}"]
)
def test_the_transport_never_sends_a_token_to_a_scheme_other_than_http_or_https(
    listener: _Listener, url: str
) -> None:
    request = urllib.request.Request(
        url.format(port=listener.port) + "/pull-updates", headers={"Authorization": "Bearer SECRET-TOKEN"}
    )
    with pytest.raises(urllib.error.URLError, match="refusing to send"):
        _transport.urlopen(request)
    time.sleep(0.3)
    assert listener.received == []


async def test_a_libsql_sync_url_is_sent_over_tls_and_never_as_plain_http(
    listener: _Listener, tmp_path: Path
) -> None:
    env = {
        "TURSO_LOCAL_PATH": str(tmp_path / "r.db"),
        "TURSO_SYNC_URL": f"libsql://127.0.0.1:{listener.port}",
        "TURSO_SYNC_AUTH_TOKEN": "SECRET-TOKEN",
    }
    config = resolve_config(env=env)
    assert config.sync_url == f"https://127.0.0.1:{listener.port}"
    service = TursoService(config)
    try:
        with pytest.raises(TursoUnavailableError):
            await service.connect("runtime")  # the bootstrap meets a listener that speaks no TLS
    finally:
        await service.aclose()
    assert listener.received, "the replica never reached the listener"
    for data in listener.received:
        assert data[:1] == b"\x16", data[:80]  # a TLS handshake record, not "GET /... HTTP/1.1"
        assert b"SECRET-TOKEN" not in data


def test_a_request_that_starts_after_its_deadline_is_still_sent_and_answered(
    sync_server: SyncEndpoint,
) -> None:
    """A deadline bounds how long a request waits for an answer, not how long a step may take: a
    request that starts after it (behind a long transfer that kept streaming, a big bootstrap)
    still goes out and waits ``MIN_TIMEOUT``, so a big pull or reset is never failed for being big."""
    request = urllib.request.Request(
        f"{sync_server.url}/v2/pipeline",
        data=_pipeline(_stmt("SELECT 1", want_rows=True)),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with _transport.deadline(time.monotonic() - 1.0), _transport.urlopen(request) as reply:
        assert reply.status == 200 and b'"rows":[[' in reply.read()
