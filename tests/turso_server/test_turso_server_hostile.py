"""Hostile heads and bodies on both ports: a 4xx with a stable code, no secret echoed, nothing changed.

Each case was a 500 (or an echo of the token) before: non-ASCII header values, non-UTF-8 and
control-character bearer tokens, durations and expiries past what ``datetime`` holds, undecodable
and deeply nested JSON. Requests go byte for byte through :func:`raw_exchange`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.turso_server.support import (
    ADMIN_TOKEN,
    DATA_TOKEN,
    RawResponse,
    ServerFactory,
    ServerProcess,
    raw_exchange,
)

NAMESPACE = "tenant"
PULL_TARGET = f"/{NAMESPACE}/pull-updates".encode()


def _request(
    port: int,
    target: bytes,
    *,
    auth: bytes | None,
    headers: tuple[bytes, ...] = (),
    body: bytes = b"",
    method: bytes = b"POST",
    framing: bytes | None = None,
) -> RawResponse:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines.append(framing if framing is not None else b"Content-Length: %d" % len(body))
    if auth is not None:
        lines.append(b"Authorization: " + auth)
    lines += headers
    return raw_exchange(port, b"\r\n".join(lines) + b"\r\n\r\n" + body, timeout=30)


def _bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


# (label, target, Authorization value, extra header lines, status, code)
DATA_CASES: list[tuple[str, bytes, bytes | None, tuple[bytes, ...], int, str]] = [
    ("euro in a header", PULL_TARGET, _bearer(DATA_TOKEN), ("X-Note: €".encode(),), 400, "malformed request"),
    (
        "cyrillic user agent",
        PULL_TARGET,
        _bearer(DATA_TOKEN),
        ("User-Agent: Mozilla/5.0 (Линукс)".encode(),),
        400,
        "malformed request",
    ),
    (
        "latin-1 byte in a header",
        PULL_TARGET,
        _bearer(DATA_TOKEN),
        (b"X-Note: caf\xe9",),
        400,
        "malformed request",
    ),
    ("non-UTF-8 token", PULL_TARGET, b"Bearer \xff\xfe\xfd", (), 401, "unauthorized"),
    ("valid token + non-UTF-8", PULL_TARGET, _bearer(DATA_TOKEN) + b"\xc3\x28", (), 401, "unauthorized"),
    ("valid token + control char", PULL_TARGET, _bearer(DATA_TOKEN) + b"\x01", (), 400, "malformed request"),
    ("valid token + DEL", PULL_TARGET, _bearer(DATA_TOKEN) + b"\x7f", (), 400, "malformed request"),
    (
        "token with inner space",
        PULL_TARGET,
        _bearer(DATA_TOKEN[:4] + " " + DATA_TOKEN[4:]),
        (),
        401,
        "unauthorized",
    ),
    (
        "euro in the query",
        "/tenant/pull-updates?x=€".encode(),
        _bearer(DATA_TOKEN),
        (),
        400,
        "malformed request",
    ),
    ("raw byte in the path", b"/tenant/pull\xffupdates", _bearer(DATA_TOKEN), (), 400, "malformed request"),
    (
        "header line too long",
        PULL_TARGET,
        _bearer(DATA_TOKEN),
        (b"X-Long: " + b"a" * 9000,),
        400,
        "malformed request",
    ),
]

ADMIN_BODY_CASES: list[tuple[str, str, bytes, str]] = [
    ("ttl past timedelta", "ttl", b'{"ttl": "1000000000d"}', "invalid ttl"),
    ("ttl of 400 digits", "ttl", b'{"ttl": "' + b"9" * 400 + b's"}', "invalid ttl"),
    ("expiresIn past 9999", "tokens", b'{"expiresIn": "3000000d"}', "invalid body"),
    ("expiresIn past timedelta", "tokens", b'{"expiresIn": "1000000000d"}', "invalid body"),
    ("undecodable bytes", "ttl", b"\xff\xfe{}", "invalid body"),
    ("undecodable inside a string", "tokens", b'{"access": "r\xffw"}', "invalid body"),
    ("deeply nested array", "ttl", b"[" * 5000 + b"]" * 5000, "invalid body"),
    ("deeply nested object", "tokens", b'{"a":' * 3000 + b"1" + b"}" * 3000, "invalid body"),
    ("integer past the digit limit", "ttl", b'{"ttl": ' + b"1" * 5000 + b"}", "invalid body"),
    ("not an object", "tokens", b'["rw"]', "invalid body"),
]


def _snapshot(server: ServerProcess) -> tuple[object, set[str]]:
    views = server.admin("GET", "/v1/namespaces").json()["namespaces"]
    for view in views:  # what the requests themselves change
        view.pop("lastAccessAt"), view.pop("sizeBytes")
    return views, _files(server.data_dir)


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if "-wal" not in path.name}


def _assert_clean(server: ServerProcess, response: RawResponse, label: str, code: str, status: int) -> None:
    assert response.status == status, f"{label}: {response.status} {response.body[:200]!r}"
    assert response.headers["content-type"].startswith("application/json"), label
    assert response.json()["code"] == code, f"{label}: {response.body!r}"
    for secret in (DATA_TOKEN, ADMIN_TOKEN):
        assert secret.encode() not in response.body, f"{label} echoed a token"


def test_hostile_heads_on_both_ports(server: ServerProcess) -> None:
    assert server.admin("POST", f"/v1/namespaces/{NAMESPACE}/create").status == 201
    before = _snapshot(server)
    for label, target, auth, headers, status, code in DATA_CASES:
        _assert_clean(
            server, _request(server.data_port, target, auth=auth, headers=headers), label, code, status
        )
        admin_auth = auth.replace(DATA_TOKEN.encode(), ADMIN_TOKEN.encode()) if auth is not None else None
        admin_target = target.replace(
            f"/{NAMESPACE}/pull".encode(), f"/v1/namespaces/{NAMESPACE}/lock".encode()
        )
        response = _request(server.admin_port, admin_target, auth=admin_auth, headers=headers)
        _assert_clean(server, response, f"admin: {label}", code, status)
    broken = _request(
        server.data_port,
        f"/{NAMESPACE}/v2/pipeline".encode(),
        auth=_bearer(DATA_TOKEN),
        framing=b"Transfer-Encoding: chunked",
        body=b"zz\r\nabc\r\n0\r\n\r\n",
    )
    _assert_clean(server, broken, "broken chunked body", "malformed request", 400)

    assert _snapshot(server) == before  # nothing was locked, created or written
    _assert_quiet_log(server)


@pytest.mark.parametrize(
    ("label", "route", "body", "code"), ADMIN_BODY_CASES, ids=[c[0] for c in ADMIN_BODY_CASES]
)
def test_hostile_admin_bodies(
    start_server: ServerFactory, label: str, route: str, body: bytes, code: str
) -> None:
    server = start_server()
    assert server.admin("POST", f"/v1/namespaces/{NAMESPACE}/create").status == 201
    before = _snapshot(server)
    target = f"/v1/namespaces/{NAMESPACE}/{route}".encode()
    response = _request(
        server.admin_port,
        target,
        auth=_bearer(ADMIN_TOKEN),
        headers=(b"Content-Type: application/json",),
        body=body,
    )
    _assert_clean(server, response, label, code, 400)
    assert _snapshot(server) == before
    assert not server.find_logs("scoped token minted")
    _assert_quiet_log(server)


def test_valid_extremes_still_work(server: ServerProcess) -> None:
    """The boundaries are where they should be: the longest timedelta and a long expiry pass."""
    assert server.admin("POST", f"/v1/namespaces/{NAMESPACE}/create").status == 201
    assert server.admin("POST", f"/v1/namespaces/{NAMESPACE}/ttl", {"ttl": "999999999d"}).json()["ttl"] == (
        "999999999d"
    )
    minted = server.admin("POST", f"/v1/namespaces/{NAMESPACE}/tokens", {"expiresIn": "2000000d"})
    assert minted.status == 201, minted.body
    assert minted.json()["expiresAt"].startswith(tuple(str(year) for year in range(7000, 10000)))
    assert server.data("POST", f"/{NAMESPACE}/pull-updates", token=minted.json()["token"]).status == 200


def _assert_quiet_log(server: ServerProcess) -> None:
    """No traceback, no 'unhandled error', and neither token anywhere in the server's output."""
    output = server.output()
    for secret in (DATA_TOKEN, ADMIN_TOKEN):
        assert secret not in output
    records = [r for r in server.logs() if not str(r.get("src", "")).startswith("tursodb.")]
    assert not [r for r in records if r.get("level") == "ERROR" or "exc" in r], json.dumps(records)[-2000:]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"[]",
        b'{"requests": 5}',
        b'{"baton": 5, "requests": []}',  # the guard passes it; tursodb's parser refuses it
        b'{"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1", "args": "x"}}]}',
        b'{"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1", "want_rows": 3}}]}',
    ],
)
def test_pipeline_bodies_tursodb_cannot_parse_are_400(server: ServerProcess, body: bytes) -> None:
    assert server.admin("POST", "/v1/namespaces/tenant/create").status in (200, 201)
    response = server.data("POST", "/tenant/v2/pipeline", body=body)
    assert response.status == 400, response.body
    assert response.json()["code"] == "invalid pipeline"


def _string_field(tag: int, text: str) -> bytes:
    """A length-delimited protobuf field (``tag`` < 16, ``text`` under 128 bytes)."""
    return bytes([tag << 3 | 2, len(text)]) + text.encode()


def _server_revision(text: str) -> bytes:
    return _string_field(2, text)  # PullUpdatesReqProtoBody.server_revision


def _client_revision(text: str) -> bytes:
    return _string_field(3, text)  # PullUpdatesReqProtoBody.client_revision


# Pulls that decode but name a ``server_revision`` (a WAL frame number) past the end of the
# namespace's WAL: tursodb 0.7.0 answers them with a plain-text 500 ("I/O error: short read on WAL
# frame ...", or "I/O error (pread): invalid input parameter" once the frame's offset passes 2**63).
PAST_WAL_BODIES: list[tuple[str, bytes]] = [
    ("far past the end", _server_revision("999999")),
    ("past the end, after a client revision", _client_revision("999998") + _server_revision("999999")),
    ("u32 max", _server_revision(str(2**32 - 1))),
    ("offset past 2**63", _server_revision(str(2**62)) + _client_revision(str(2**62 - 1))),
    ("u64 max", _server_revision(str(2**64 - 1))),
    ("last of two wins", _server_revision("0") + _server_revision("999999")),
    ("leading zeros", _server_revision("000999999")),
]
# Pulls tursodb cannot use at all (its 500 "Failed to decode PullUpdatesRequest", "Failed to parse
# server_pages_selector", "Zstd encoding is not supported"): JSON, text, a field of the wrong type.
UNUSABLE_BODIES: list[tuple[str, bytes]] = [
    ("JSON", b'{"server_revision": 5}'),
    ("JSON with a string", b'{"server_revision": "5"}'),
    ("text", b"hello world"),
    ("server_revision as a varint", b"\x10\x05"),
    ("server_revision not UTF-8", b"\x12\x02\xff\xfe"),
    ("truncated page selector", _string_field(5, "\x00\x01\x02")),
    ("zstd", b"\x08\x01"),
]
# Past an empty WAL (a namespace the pull itself would create) even frame 1 is: "+1" is Rust's 1.
MISSING_NAMESPACE_BODIES = [
    ("frame 1 of an empty WAL", _server_revision("1")),
    ("frame +1 of an empty WAL", _server_revision("+1")),
    *PAST_WAL_BODIES,
    *UNUSABLE_BODIES,
]


def _pull(server: ServerProcess, namespace: str, body: bytes) -> RawResponse:
    return _request(
        server.data_port,
        f"/{namespace}/pull-updates".encode(),
        auth=_bearer(DATA_TOKEN),
        headers=(b"Content-Type: application/protobuf",),
        body=body,
    )


def test_a_hostile_pull_creates_no_namespace(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    """Each past the WAL was tursodb's 500, passed on, with the namespace auto-provisioned for it
    kept; every one is ``400 invalid body`` and the namespace goes again. A replica then syncs it
    as if new."""
    for label, body in MISSING_NAMESPACE_BODIES:
        _assert_clean(server, _pull(server, "fresh", body), label, "invalid body", 400)
        assert server.admin("GET", "/v1/namespaces").json()["namespaces"] == [], label
    assert not (server.data_dir / "namespaces" / "fresh").exists()
    assert server.child_pids() == {}

    writer = replicas(server.url("fresh"))
    writer.execute("CREATE TABLE t(v TEXT)")
    writer.execute("INSERT INTO t VALUES ('kept')")
    writer.push()
    assert replicas(server.url("fresh")).execute("SELECT v FROM t").fetchall() == [("kept",)]
    _assert_quiet_log(server)


def test_a_hostile_pull_of_a_namespace_changes_nothing(
    server: ServerProcess, replicas: Callable[..., Any]
) -> None:
    """On a namespace with data: ``400 invalid body`` for each, nothing changed, the replica
    syncs on; a revision the WAL has (a partial replica's page fetch) is still served."""
    writer = replicas(server.url(NAMESPACE))
    writer.execute("CREATE TABLE t(v TEXT)")
    writer.execute("INSERT INTO t VALUES ('one')")
    writer.push()
    before = _snapshot(server)
    for label, body in PAST_WAL_BODIES + UNUSABLE_BODIES:
        _assert_clean(server, _pull(server, NAMESPACE, body), label, "invalid body", 400)
    assert _snapshot(server) == before
    assert _pull(server, NAMESPACE, _server_revision("1")).status == 200

    writer.execute("INSERT INTO t VALUES ('two')")
    writer.push()
    reader = replicas(server.url(NAMESPACE))
    assert sorted(reader.execute("SELECT v FROM t").fetchall()) == [("one",), ("two",)]
    writer.execute("INSERT INTO t VALUES ('three')")
    writer.push()
    reader.pull()
    assert sorted(reader.execute("SELECT v FROM t").fetchall()) == [("one",), ("three",), ("two",)]
    _assert_quiet_log(server)
