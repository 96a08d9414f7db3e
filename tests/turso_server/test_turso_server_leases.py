"""Write leases on the data port: grant, renew, release, fencing, fairness and hostile bodies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.turso_server.support import DATA_TOKEN, RawResponse, ServerFactory, ServerProcess

LEASE = "/tenant/-/lease"
SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'


def pipeline(*sql: str) -> bytes:
    return json.dumps({"requests": [{"type": "execute", "stmt": {"sql": q}} for q in sql]}).encode()


def grant(server: ServerProcess, holder: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    response = server.data(
        "POST", LEASE, token=DATA_TOKEN, body=json.dumps({"holder": holder, **extra}).encode()
    )
    return response.status, response.json() if response.body else {}


def test_grant_renew_release_and_fresh(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    status, first = grant(server, "pod-a")
    assert status == 200 and first["fence"] == 1 and first["fresh"] is False
    token = first["token"]
    assert server.data("PUT", f"{LEASE}/{token}", token=DATA_TOKEN).status == 200
    # A write through the lease makes its holder the last writer: its next grant is fresh.
    fenced = server.data("POST", f"{LEASE}/{token}/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE)
    assert fenced.status == 200, fenced.body
    assert server.data("DELETE", f"{LEASE}/{token}", token=DATA_TOKEN).status == 204
    status, again = grant(server, "pod-a")
    assert status == 200 and again["fresh"] is True and again["fence"] == 2
    server.data("DELETE", f"{LEASE}/{again['token']}", token=DATA_TOKEN)
    # Another holder's grant is not fresh, and a plain push resets freshness for everyone.
    status, other = grant(server, "pod-b")
    assert other["fresh"] is False
    server.data("DELETE", f"{LEASE}/{other['token']}", token=DATA_TOKEN)
    assert server.data("POST", "/tenant/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE).status == 200
    assert grant(server, "pod-a")[1]["fresh"] is False


def test_the_admin_view_shows_who_holds_the_lease_never_its_token(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    assert server.admin("GET", "/v1/namespaces/tenant").json()["lease"] is None
    _, held = grant(server, "pod-a.1234.xyz", ttl=2)
    view = server.admin("GET", "/v1/namespaces/tenant")
    lease = view.json()["lease"]
    assert lease["holder"] == "pod-a.1234.xyz" and lease["fence"] == held["fence"] and lease["ttl"] == 2
    assert 0 < lease["expiresIn"] <= 2 and lease["inUse"] is False
    assert held["token"] not in view.body.decode()
    listed = server.admin("GET", "/v1/namespaces").json()["namespaces"]
    assert [n["lease"]["holder"] for n in listed if n["name"] == "tenant"] == ["pod-a.1234.xyz"]
    assert server.data("DELETE", f"{LEASE}/{held['token']}", token=DATA_TOKEN).status == 204
    assert server.admin("GET", "/v1/namespaces/tenant").json()["lease"] is None
    grant(server, "pod-b", ttl=0.2)
    time.sleep(0.4)  # a holder that died: its lease shows until it runs out, then it is gone
    assert server.admin("GET", "/v1/namespaces/tenant").json()["lease"] is None


def test_a_stale_token_is_fenced_off(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    _, old = grant(server, "pod-a", ttl=0.2)
    time.sleep(0.4)  # expired, unrenewed
    _, new = grant(server, "pod-b")
    for method, target, body in (
        ("POST", f"{LEASE}/{old['token']}/v2/pipeline", SELECT_ONE),
        ("PUT", f"{LEASE}/{old['token']}", b""),
        ("POST", f"{LEASE}/not-a-token/v2/pipeline", SELECT_ONE),
    ):
        response = server.data(method, target, token=DATA_TOKEN, body=body)
        assert response.status == 409 and response.json()["code"] == "lease lost", (target, response.body)
    # Releasing someone else's lease by guessing does nothing.
    assert server.data("DELETE", f"{LEASE}/{old['token']}", token=DATA_TOKEN).status == 204
    busy = grant(server, "pod-c", wait=0)
    assert busy[0] == 409 and busy[1]["code"] == "lease busy"
    assert server.data("PUT", f"{LEASE}/{new['token']}", token=DATA_TOKEN).status == 200


def test_waiters_are_served_in_order_and_a_plain_push_waits(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    _, held = grant(server, "pod-a")
    order: list[str] = []
    results: dict[str, int] = {}

    def wait_for(name: str, call: Callable[[], int]) -> threading.Thread:
        def run() -> None:
            results[name] = call()
            order.append(name)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.15)  # queue in a known order
        return thread

    fences: dict[str, int] = {}

    def lease_then_release(holder: str) -> int:
        status, body = grant(server, holder, wait=10)
        fences[holder] = body["fence"]  # the server's grant order: an implicit lease takes one too
        server.data("DELETE", f"{LEASE}/{body['token']}", token=DATA_TOKEN)
        return status

    threads = [
        wait_for("b", lambda: lease_then_release("pod-b")),
        wait_for(
            "plain",
            lambda: server.data("POST", "/tenant/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE).status,
        ),
        wait_for("c", lambda: lease_then_release("pod-c")),
    ]
    assert order == [], "everyone waits while pod-a holds the lease"
    assert server.data("DELETE", f"{LEASE}/{held['token']}", token=DATA_TOKEN).status == 204
    for thread in threads:
        thread.join(timeout=20)
    # Served in the order they queued: b, then the plain push (under an implicit lease, one fence),
    # then c. Read from the grants' fences, not from when each thread finished: a thread that
    # returns later than the next one was served (its DELETE's reply) is no reordering.
    assert set(results.values()) == {200} and sorted(order) == ["b", "c", "plain"]
    assert (fences["pod-b"], fences["pod-c"]) == (held["fence"] + 1, held["fence"] + 3)


def test_a_lease_whose_waiter_went_away_is_given_back_at_once(server: ServerProcess) -> None:
    # A client that gives up while it waits (its write was cancelled, its request timed out) used
    # to be granted the lease anyway, by nobody released: every other writer waited out its TTL.
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    _, held = grant(server, "pod-a", ttl=30)
    body = json.dumps({"holder": "pod-gone", "wait": 10}).encode()
    with socket.create_connection(("127.0.0.1", server.data_port)) as gone:
        gone.sendall(
            f"POST {LEASE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {DATA_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.3)  # queued behind pod-a on the server
    assert server.data("DELETE", f"{LEASE}/{held['token']}", token=DATA_TOKEN).status == 204
    time.sleep(0.3)
    status, taken = grant(server, "pod-b", wait=0)  # no wait: the lease must be free right now
    assert status == 200, taken
    assert server.find_logs("lease granted after its client went away, released")
    view = server.admin("GET", "/v1/namespaces/tenant").json()
    assert DATA_TOKEN not in json.dumps(view)


def test_lease_requests_are_validated(server: ServerProcess) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    ro = server.admin("POST", "/v1/namespaces/tenant/tokens", {"access": "ro"}).json()["token"]
    cases: list[tuple[str, str, bytes, str | None, int, str]] = [
        ("no token", LEASE, b'{"holder": "a"}', None, 401, "unauthorized"),
        ("read-only token", LEASE, b'{"holder": "a"}', ro, 403, "forbidden"),
        ("not json", LEASE, b"\xff\xfe", DATA_TOKEN, 400, "invalid body"),
        ("not an object", LEASE, b"[1]", DATA_TOKEN, 400, "invalid body"),
        ("nested too deeply", LEASE, b"[" * 2000, DATA_TOKEN, 400, "invalid body"),
        (
            "too large",
            LEASE,
            json.dumps({"holder": "a", "pad": "x" * 5000}).encode(),
            DATA_TOKEN,
            413,
            "payload too large",
        ),
        ("no holder", LEASE, b"{}", DATA_TOKEN, 400, "invalid body"),
        ("bad holder", LEASE, b'{"holder": "a b/c"}', DATA_TOKEN, 400, "invalid body"),
        ("long holder", LEASE, json.dumps({"holder": "a" * 129}).encode(), DATA_TOKEN, 400, "invalid body"),
        ("huge ttl", LEASE, b'{"holder": "a", "ttl": 1e9}', DATA_TOKEN, 400, "invalid body"),
        ("negative wait", LEASE, b'{"holder": "a", "wait": -1}', DATA_TOKEN, 400, "invalid body"),
        ("bool ttl", LEASE, b'{"holder": "a", "ttl": true}', DATA_TOKEN, 400, "invalid body"),
        (
            "oversized",
            LEASE,
            b'{"holder": "a", "x": "' + b"y" * 5000 + b'"}',
            DATA_TOKEN,
            413,
            "payload too large",
        ),
        ("reserved route", "/tenant/-/other", b"", DATA_TOKEN, 404, "unknown route"),
        ("empty token", "/tenant/-/lease//v2/pipeline", SELECT_ONE, DATA_TOKEN, 404, "unknown route"),
        ("unknown namespace", "/ghost/-/lease", b'{"holder": "a"}', DATA_TOKEN, 200, ""),
    ]
    for label, target, body, token, status, code in cases:
        response = server.data("POST", target, token=token, body=body)
        assert response.status == status, f"{label}: {response.status} {response.body!r}"
        if code:
            assert response.json()["code"] == code, label
    wrong_method = server.data("GET", LEASE, token=DATA_TOKEN)
    assert wrong_method.status == 405


def _send_in_pieces(
    port: int, head: bytes, pieces: list[bytes], *, pause: float
) -> tuple[RawResponse, float]:
    """Send ``head``, then each piece as a TCP write of its own ``pause`` seconds apart; the reply
    (read until the server closes) and the seconds it took after the last piece."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        for piece in pieces:
            time.sleep(pause)
            sock.sendall(piece)
        sent = time.monotonic()
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    elapsed = time.monotonic() - sent
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return RawResponse(int(status_line.split()[1]), {}, body), elapsed


def test_a_lease_body_is_read_whole_within_the_receive_timeout(start_server: ServerFactory) -> None:
    """The grant's body is read like a pipeline body: whole however the network splits it, 408 when
    it stops arriving within ``TURSO_CLIENT_RECEIVE_TIMEOUT``, 413 past its 4 KiB limit."""
    server = start_server(TURSO_CLIENT_RECEIVE_TIMEOUT="1s")
    assert server.admin("POST", "/v1/namespaces/tenant/create").status == 201
    body = json.dumps({"holder": "pod-a", "ttl": 5}).encode()

    def head(*framing: str) -> bytes:
        lines = [f"POST {LEASE} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {DATA_TOKEN}"]
        return ("\r\n".join([*lines, "Connection: close", *framing]) + "\r\n\r\n").encode()

    split, _ = _send_in_pieces(
        server.data_port, head(f"Content-Length: {len(body)}"), [body[:5], body[5:]], pause=0.2
    )
    assert split.status == 200 and split.json()["fence"] == 1, split.body
    server.data("DELETE", f"{LEASE}/{split.json()['token']}", token=DATA_TOKEN)

    stalled, waited = _send_in_pieces(server.data_port, head("Content-Length: 50"), [body[:5]], pause=0)
    assert (stalled.status, stalled.json()["code"]) == (408, "request timeout"), stalled.body
    assert waited < 3.0

    chunk = b'{"holder": "a", "x": "' + b"y" * 5000 + b'"}'
    chunked, _ = _send_in_pieces(
        server.data_port,
        head("Transfer-Encoding: chunked"),
        [b"%x\r\n%s\r\n" % (len(chunk), chunk), b"0\r\n\r\n"],
        pause=0.1,
    )
    assert (chunked.status, chunked.json()["code"]) == (413, "payload too large"), chunked.body
    assert server.admin("GET", "/v1/namespaces/tenant").json()["lease"] is None


def test_a_lease_needs_a_namespace_there_is_or_may_be(start_server: ServerFactory, tmp_path: Path) -> None:
    """A grant on a missing namespace creates it as a push would, or is refused as a push would be
    (the limit: 429; auto-provisioning off: 404), and nothing is kept for the name. An entry with
    nothing to remember is forgotten once idle (its fence starts again, its tokens are refused);
    one whose holder wrote last is kept, so that holder's next grant is still ``fresh``."""
    server = start_server(TURSO_MAX_NAMESPACES="1")
    status, first = grant(server, "pod-a")
    assert status == 200 and first["fence"] == 1, first
    views = server.admin("GET", "/v1/namespaces").json()["namespaces"]
    assert [(v["name"], v["origin"]) for v in views] == [("tenant", "auto")]
    ghost = server.data("POST", "/ghost/-/lease", token=DATA_TOKEN, body=b'{"holder": "pod-a"}')
    assert (ghost.status, ghost.json()["code"]) == (429, "max namespaces reached"), ghost.body
    assert server.admin("GET", "/v1/namespaces/ghost").status == 404

    assert server.data("DELETE", f"{LEASE}/{first['token']}", token=DATA_TOKEN).status == 204
    status, second = grant(server, "pod-a")  # the idle entry was dropped: a new one, not fresh
    assert status == 200 and second["fence"] == 1 and second["fresh"] is False, second
    for method, target, body in (
        ("PUT", f"{LEASE}/{first['token']}", b""),
        ("POST", f"{LEASE}/{first['token']}/v2/pipeline", SELECT_ONE),
    ):
        stale = server.data(method, target, token=DATA_TOKEN, body=body)
        assert (stale.status, stale.json()["code"]) == (409, "lease lost"), stale.body
    fenced = server.data("POST", f"{LEASE}/{second['token']}/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE)
    assert fenced.status == 200, fenced.body
    assert server.data("DELETE", f"{LEASE}/{second['token']}", token=DATA_TOKEN).status == 204
    status, third = grant(server, "pod-a")  # its holder wrote last: kept, and fresh
    assert status == 200 and third["fence"] == 2 and third["fresh"] is True, third

    closed = start_server(data_dir=tmp_path / "closed", TURSO_ALLOW_AUTO_PROVISION="false")
    missing = closed.data("POST", LEASE, token=DATA_TOKEN, body=b'{"holder": "pod-a"}')
    assert (missing.status, missing.json()["code"]) == (404, "namespace not found"), missing.body
    assert closed.admin("GET", "/v1/namespaces").json()["namespaces"] == []


def test_a_lease_token_reaches_no_reply_and_no_log_line(start_server: ServerFactory) -> None:
    """Requests under a lease URL that end in an error reply (405, 404, 413) or in a log line (a
    client that does not take its reply) show the path with the token as ``***``, never the token:
    whoever read it could push under another replica's lease."""
    limit = 64 * 1024
    server = start_server(TURSO_CLIENT_SEND_TIMEOUT="1s", TURSO_MAX_REQUEST_BYTES=str(limit))
    status, held = grant(server, "pod-a", ttl=30)
    assert status == 200, held
    token = held["token"]
    fenced = f"{LEASE}/{token}"
    replies = []
    for method, target, body, expected in (
        ("GET", fenced, b"", (405, "method not allowed")),
        ("PATCH", fenced, b"", (405, "method not allowed")),
        ("POST", f"{fenced}/v2/pipeline", b" " * (limit + 1), (413, "payload too large")),
        ("GET", f"{fenced}/v2/pipeline", b"", (404, "unknown route")),
        ("POST", f"{fenced}/no-such-route", b"", (404, "unknown route")),
    ):
        response = server.data(method, target, token=DATA_TOKEN, body=body)
        assert (response.status, response.json()["code"]) == expected, (method, target, response.body)
        replies.append(response)
    assert replies[0].json()["detail"] == "GET /tenant/-/lease/***"
    assert replies[2].json()["detail"] == "POST /tenant/-/lease/***/v2/pipeline"

    # A client that never reads its 10 MB reply: the send timeout cuts it, and that is logged.
    big = pipeline("SELECT zeroblob(8000000)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with contextlib.closing(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.data_port))
        head = (
            f"POST {fenced}/v2/pipeline HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {DATA_TOKEN}"
            f"\r\nContent-Length: {len(big)}\r\n\r\n"
        )
        sock.sendall(head.encode() + big)
        deadline = time.monotonic() + 15.0
        while not (cut := server.find_logs("client did not take its reply")):
            assert time.monotonic() < deadline, "the stalled reader was never cut off"
            time.sleep(0.05)
    assert [record["path"] for record in cut] == ["/tenant/-/lease/***/v2/pipeline"]

    for response in replies:
        assert token.encode() not in response.body and token not in json.dumps(response.headers)
    assert token not in server.output()


def test_an_archived_namespace_forgets_its_lease_and_last_writer(start_server: ServerFactory) -> None:
    """Archived by the GC (or deleted), a namespace's lease and last writer go with its files: the
    last writer's next grant on the namespace created again is not ``fresh`` (it must pull), and
    its old token is refused."""
    server = start_server(TURSO_GC_INTERVAL="100ms", TURSO_AUTO_IDLE_DURATION="600ms")
    status, held = grant(server, "pod-a")  # auto-provisions "tenant"
    assert status == 200
    fenced = server.data("POST", f"{LEASE}/{held['token']}/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE)
    assert fenced.status == 200, fenced.body
    assert server.data("DELETE", f"{LEASE}/{held['token']}", token=DATA_TOKEN).status == 204
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not server.find_logs("gc archive"):
        time.sleep(0.05)
    assert [r["namespace"] for r in server.find_logs("gc archive")] == ["tenant"]
    stale = server.data("PUT", f"{LEASE}/{held['token']}", token=DATA_TOKEN)
    assert stale.status == 409, stale.body
    status, again = grant(server, "pod-a")  # "tenant" again, new and empty
    assert status == 200 and again["fresh"] is False and again["fence"] == 1, again


def test_a_write_that_may_have_landed_makes_no_holder_fresh(start_server: ServerFactory) -> None:
    """A push under a lease whose exchange with tursodb failed after it was sent (here a batch that
    outlasts ``TURSO_UPSTREAM_TIMEOUT``: 504, the child is restarted, and the batch's first statement,
    committed by then, stays) may have landed, so
    its holder is the last writer: the one before must not skip the pull it needs and push on
    top of rows it never saw."""
    server = start_server(TURSO_UPSTREAM_TIMEOUT="300ms")
    values = ",".join(f"({i})" for i in range(1500))
    seed = pipeline(
        "CREATE TABLE IF NOT EXISTS t0(x INTEGER PRIMARY KEY)", f"INSERT OR IGNORE INTO t0 VALUES {values}"
    )
    for _ in range(5):  # ~0.1 s unloaded; on a busy machine it may need another go
        if server.data("POST", "/tenant/v2/pipeline", token=DATA_TOKEN, body=seed).status == 200:
            break
    else:
        raise AssertionError("could not seed t0 within the upstream timeout")
    _, first = grant(server, "pod-a")
    fenced = server.data("POST", f"{LEASE}/{first['token']}/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE)
    assert fenced.status == 200, fenced.body
    assert server.data("DELETE", f"{LEASE}/{first['token']}", token=DATA_TOKEN).status == 204
    _, second = grant(server, "pod-b")
    slow = pipeline("CREATE TABLE t(x)", "INSERT INTO t SELECT a.x FROM t0 a, t0 b")  # 2.25M rows
    timed_out = server.data("POST", f"{LEASE}/{second['token']}/v2/pipeline", token=DATA_TOKEN, body=slow)
    assert timed_out.status == 504, timed_out.body
    assert server.data("DELETE", f"{LEASE}/{second['token']}", token=DATA_TOKEN).status == 204
    status, again = grant(server, "pod-a")
    assert status == 200 and again["fresh"] is False, again
    server.data("DELETE", f"{LEASE}/{again['token']}", token=DATA_TOKEN)
    # pod-b may skip its pull: whatever landed is its own (its client re-pushes past the cursor).
    status, own = grant(server, "pod-b")
    assert status == 200 and own["fresh"] is True, own
    server.data("DELETE", f"{LEASE}/{own['token']}", token=DATA_TOKEN)
    # Part of the batch did land (its CREATE TABLE; the INSERT ended with the killed child, unless
    # it finished just before): "fresh" would have been a lie.
    counted = server.data(
        "POST", "/tenant/v2/pipeline", token=DATA_TOKEN, body=pipeline("SELECT count(*) FROM t")
    )
    assert counted.status == 200, counted.body
    (row,) = counted.json()["results"][0]["response"]["result"]["rows"]
    assert row[0]["value"] in ("0", str(1500 * 1500)), counted.body


def test_a_write_waiting_while_its_namespace_is_archived_does_not_go_out(start_server: ServerFactory) -> None:
    """A fenced write that passed the lease check and then waited for the namespace while an admin
    delete archived it is refused (409 lease lost) once the namespace is there again (re-created
    for it by auto-provisioning), instead of going out under a lease that ended with the archive."""
    server = start_server(TURSO_SHUTDOWN_GRACE="1500ms")
    assert server.data("POST", "/tenant/v2/pipeline", token=DATA_TOKEN, body=SELECT_ONE).status == 200
    _, held = grant(server, "pod-a")
    child = server.child_pids()["tenant"]
    os.kill(child, signal.SIGSTOP)  # so that the delete takes the whole grace to stop it
    deleted: list[int] = []
    deleting = threading.Thread(
        target=lambda: deleted.append(server.admin("DELETE", "/v1/namespaces/tenant").status)
    )
    try:
        deleting.start()
        time.sleep(0.4)  # the delete is under way: the child is being stopped
        write = pipeline("CREATE TABLE late(x)")
        late = server.data("POST", f"{LEASE}/{held['token']}/v2/pipeline", token=DATA_TOKEN, body=write)
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed once the grace ran out
            os.kill(child, signal.SIGCONT)
        deleting.join(10)
    assert deleted == [200]
    assert late.status == 409, late.body
    tables = server.data(
        "POST", "/tenant/v2/pipeline", token=DATA_TOKEN, body=pipeline("SELECT name FROM sqlite_master")
    )
    assert tables.status == 200 and b"late" not in tables.body, tables.body
