"""No pipeline leaves the child's one shared connection inside a transaction (``_txreset``).

tursodb 0.7.0 serves every request of a child on one connection. Real server, real tursodb: a
client's lone ``BEGIN`` must not let it hold other clients' pushes in its transaction (and roll
them back), nor make admin backups fail; and the hidden reset must never show in a reply, which is
compared byte for byte with the one a bare tursodb gives for the same pipeline.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port
from tests.turso_server.support import TURSODB, ServerProcess, raw_request
from turso_server._txreset import with_reset


def _execute(sql: str, *args: dict[str, str]) -> dict[str, Any]:
    return {"type": "execute", "stmt": {"sql": sql, "args": list(args), "want_rows": True}}


def _pipeline(*requests: dict[str, Any]) -> bytes:
    return json.dumps({"baton": None, "requests": list(requests)}).encode()


def _send(server: ServerProcess, namespace: str, body: bytes) -> Any:
    response = server.data("POST", f"/{namespace}/v2/pipeline", body=body)
    assert response.status == 200, response.body
    return response.json()


def _rows(reply: Any, index: int = 0) -> Any:
    return reply["results"][index]["response"]["result"]["rows"]


def test_a_lone_begin_does_not_outlive_its_request(server: ServerProcess) -> None:
    # The reviewer's sequence (isolation review, finding 4).
    _send(server, "shared", _pipeline(_execute("CREATE TABLE t (x TEXT)")))
    opened = _send(server, "shared", _pipeline(_execute("BEGIN")))
    assert opened["results"][0]["type"] == "ok" and len(opened["results"]) == 1
    _send(server, "shared", _pipeline(_execute("INSERT INTO t VALUES ('other client')")))
    backup = server.admin("GET", "/v1/namespaces/shared/backup")
    assert backup.status == 200, backup.body
    assert backup.body.startswith(b"SQLite format 3\0")
    # The first client's ROLLBACK finds no transaction: the other client's row stays.
    rolled = _send(server, "shared", _pipeline(_execute("ROLLBACK")))
    assert rolled["results"][0]["type"] == "error"
    assert _rows(_send(server, "shared", _pipeline(_execute("SELECT x FROM t")))) == [
        [{"type": "text", "value": "other client"}]
    ]


def test_a_transaction_inside_one_pipeline_still_works(server: ServerProcess) -> None:
    _send(server, "tx", _pipeline(_execute("CREATE TABLE t (x INTEGER)")))
    committed = _pipeline(_execute("BEGIN"), _execute("INSERT INTO t VALUES (1)"), _execute("COMMIT"))
    assert [r["type"] for r in _send(server, "tx", committed)["results"]] == ["ok", "ok", "ok"]
    # Left open at the end of its pipeline: rolled back, as if the client had gone away.
    left_open = _pipeline(_execute("BEGIN"), _execute("INSERT INTO t VALUES (2)"))
    assert len(_send(server, "tx", left_open)["results"]) == 2
    savepoint = _pipeline(_execute("SAVEPOINT s"), _execute("INSERT INTO t VALUES (3)"))
    assert len(_send(server, "tx", savepoint)["results"]) == 2
    assert _rows(_send(server, "tx", _pipeline(_execute("SELECT x FROM t")))) == [
        [{"type": "integer", "value": "1"}]
    ]
    backup = server.admin("GET", "/v1/namespaces/tx/backup")
    assert backup.status == 200, backup.body


@pytest.fixture
def bare_tursodb(tmp_path: Path) -> Iterator[int]:
    """A tursodb sync server of its own, to compare replies with."""
    port = free_port()
    process = subprocess.Popen(
        [str(TURSODB), str(tmp_path / "bare.db"), "--sync-server", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                raw_request(port, "POST", "/v2/pipeline", body=_pipeline(), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


_DURATION = re.compile(rb'"query_duration_ms":[0-9.e+-]+')


def test_replies_are_the_ones_tursodb_gives(server: ServerProcess, bare_tursodb: int) -> None:
    big = "x" * 4096
    bodies = [
        _pipeline(_execute("CREATE TABLE t (x TEXT)")),
        _pipeline(),
        _pipeline(_execute("INSERT INTO t VALUES (?)", {"type": "text", "value": 'ünïcode "q" \\ ]}'})),
        _pipeline(_execute("SELEC nonsense"), _execute("SELECT count(*) FROM t")),
        # ``requests`` not the last key, whitespace and non-ASCII around it: the slow splice.
        '{ "requests" : [ {"type":"execute","stmt":{"sql":"SELECT \'ß]\'"}} ] ,\n "baton": null }\n'.encode(),
        b'{"requests":[]  ,"baton":null}',
        b'  {"baton":null,"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]  }  \n',
        json.dumps(
            {"requests": [{"type": "batch", "batch": {"steps": [{"stmt": {"sql": "SELECT 2"}}] * 3}}]}
        ).encode(),
        # A reply over the in-memory limit (1 MiB) is spooled to a file and cut there.
        _pipeline(
            _execute(f"INSERT INTO t SELECT '{big}' || value FROM generate_series(1, 400)"),
            _execute("SELECT x FROM t"),
        ),
        _pipeline(_execute("BEGIN"), _execute("SELECT 1")),
    ]
    sizes = []
    for body in bodies:
        proxied = server.data("POST", "/same/v2/pipeline", body=body)
        bare = raw_request(bare_tursodb, "POST", "/v2/pipeline", body=body)
        assert proxied.status == bare.status == 200, (body, proxied.body[:200], bare.body[:200])
        assert _DURATION.sub(b"", proxied.body) == _DURATION.sub(b"", bare.body), body
        sizes.append(len(proxied.body))
        # The bare server is left as the proxy leaves its child: no transaction open.
        raw_request(bare_tursodb, "POST", "/v2/pipeline", body=_pipeline(_execute("ROLLBACK")))
    assert max(sizes) > 1 << 20  # one reply went through a spool file


def test_the_reset_is_spliced_in_without_touching_the_clients_bytes() -> None:
    for body in [
        b'{"baton":null,"requests":[]}',
        b'{"baton":null,"requests":[{"type":"execute","stmt":{"sql":"SELECT 1e400"}}]} ',
        b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT \'\\u00e9\'"}}],"baton":"\xc3\xa9"}',
    ]:
        document = json.loads(body)
        spliced = with_reset(body, document)
        parsed = json.loads(spliced)
        assert parsed["requests"][:-1] == document["requests"]
        assert parsed["requests"][-1]["batch"]["steps"][0]["stmt"] == {"sql": "ROLLBACK"}
        hidden = json.dumps(parsed["requests"][-1], separators=(",", ":")).encode()
        assert spliced.replace(b"," + hidden, b"").replace(hidden, b"") == body
