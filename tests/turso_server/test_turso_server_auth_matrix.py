"""The auth matrix on both ports: every kind of credential against every kind of route, one table.

Rows are credentials (none, malformed, unknown, forged, signed with another key, expired, scoped to
another namespace, ``ro``, ``rw``, the global data token, the admin token); columns are the routes
that auth treats differently (data: pull-updates, pipeline, other read, other write; admin: read,
mutating, metrics). Each cell is the expected status and error code (``None`` where tursodb
answers and its body is not ours). Expired and foreign-key tokens are made with the real signing
code and claims, so they differ from a good token only where the row says.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.turso_server.support import (
    ADMIN_TOKEN,
    DATA_TOKEN,
    SIGNING_KEY,
    RawResponse,
    ServerProcess,
    raw_exchange,
)
from turso_server._auth import TOKEN_ALGORITHM, TOKEN_AUDIENCE, TOKEN_ISSUER

NAMESPACE, OTHER = "tenant", "other"
SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'

# column -> (port kind, method, target, body)
ROUTES: dict[str, tuple[str, str, str, bytes]] = {
    "pull": ("data", "POST", f"/{NAMESPACE}/pull-updates", b""),
    "pipeline": ("data", "POST", f"/{NAMESPACE}/v2/pipeline", SELECT_ONE),
    "other read": ("data", "GET", f"/{NAMESPACE}/info", b""),
    "other write": ("data", "POST", f"/{NAMESPACE}/info", b""),
    "reserved": ("data", "POST", f"/{NAMESPACE}/-/other", b""),  # /-/ but not the lease API
    "admin read": ("admin", "GET", f"/v1/namespaces/{NAMESPACE}", b""),
    "admin mutate": ("admin", "POST", f"/v1/namespaces/{NAMESPACE}/access", b""),
    "metrics": ("admin", "GET", "/metrics", b""),
}
COLUMNS = tuple(ROUTES)

Cell = tuple[int, str | None]
NO = (401, "unauthorized")
FORBIDDEN = (403, "forbidden")
OK = (200, None)
UNKNOWN = (404, "unknown route")  # auth let it through; turso-server forwards no such route
ADMIN_NO = {"admin read": NO, "admin mutate": NO, "metrics": NO}
DATA_NO = {"pull": NO, "pipeline": NO, "other read": NO, "other write": NO, "reserved": NO}
ADMIN_OK = {"admin read": OK, "admin mutate": OK, "metrics": OK}
DATA_FULL = {"pull": OK, "pipeline": OK, "other read": UNKNOWN, "other write": UNKNOWN, "reserved": UNKNOWN}

# row -> expected cell per column
MATRIX: dict[str, dict[str, Cell]] = {
    "no token": {**DATA_NO, **ADMIN_NO},
    "malformed (non-UTF-8)": {**DATA_NO, **ADMIN_NO},
    "malformed (not bearer)": {**DATA_NO, **ADMIN_NO},
    "unknown raw token": {**DATA_NO, **ADMIN_NO},
    "forged signature": {**DATA_NO, **ADMIN_NO},
    "signed with another key": {**DATA_NO, **ADMIN_NO},
    "alg none": {**DATA_NO, **ADMIN_NO},
    "expired": {**DATA_NO, **ADMIN_NO},
    "wrong namespace": {
        "pull": FORBIDDEN,
        "pipeline": FORBIDDEN,
        "other read": FORBIDDEN,
        "other write": FORBIDDEN,
        "reserved": FORBIDDEN,  # the scope is checked before the route, /-/ paths included
        **ADMIN_NO,
    },
    "ro": {
        "pull": OK,
        "pipeline": FORBIDDEN,
        "other read": UNKNOWN,
        "other write": FORBIDDEN,
        "reserved": FORBIDDEN,
        **ADMIN_NO,
    },
    "rw": {**DATA_FULL, **ADMIN_NO},
    "global data token": {**DATA_FULL, **ADMIN_NO},
    "admin token": {**DATA_NO, **ADMIN_OK},
}


def _claims(namespace: str, access: str, **extra: object) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "sub": namespace,
        "ns": namespace,
        "access": access,
        "iat": now,
        "jti": "matrix",
        **extra,
    }


def _mint(server: ServerProcess, namespace: str, **body: object) -> str:
    response = server.admin("POST", f"/v1/namespaces/{namespace}/tokens", body)
    assert response.status == 201, response.body
    token: str = response.json()["token"]
    return token


def _credentials(server: ServerProcess) -> dict[str, bytes | None]:
    rw = _mint(server, NAMESPACE)
    header, payload, signature = rw.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired = jwt.encode(_claims(NAMESPACE, "rw", exp=past, iat=past - timedelta(hours=1)), SIGNING_KEY)
    foreign = jwt.encode(_claims(NAMESPACE, "rw"), "another-signing-key-0123456789abcdef", TOKEN_ALGORITHM)
    unsigned = jwt.encode(_claims(NAMESPACE, "rw"), None, algorithm="none")

    def bearer(token: str) -> bytes:
        return b"Bearer " + token.encode()

    return {
        "no token": None,
        "malformed (non-UTF-8)": b"Bearer \xff" + rw.encode()[1:],
        "malformed (not bearer)": b"Basic " + DATA_TOKEN.encode(),
        "unknown raw token": bearer("not-the-token"),
        "forged signature": bearer(f"{header}.{payload}.{flipped}"),
        "signed with another key": bearer(foreign),
        "alg none": bearer(unsigned),
        "expired": bearer(expired),
        "wrong namespace": bearer(_mint(server, OTHER)),
        "ro": bearer(_mint(server, NAMESPACE, access="ro")),
        "rw": bearer(rw),
        "global data token": bearer(DATA_TOKEN),
        "admin token": bearer(ADMIN_TOKEN),
    }


def _send(server: ServerProcess, column: str, auth: bytes | None) -> RawResponse:
    kind, method, target, body = ROUTES[column]
    port = server.data_port if kind == "data" else server.admin_port
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines.append(b"Content-Length: %d" % len(body))
    if auth is not None:
        lines.append(b"Authorization: " + auth)
    return raw_exchange(port, b"\r\n".join(lines) + b"\r\n\r\n" + body, timeout=30)


def test_matrix_covers_every_cell() -> None:
    for row, cells in MATRIX.items():
        assert set(cells) == set(COLUMNS), row


@pytest.mark.slow
def test_auth_matrix_on_both_ports(server: ServerProcess) -> None:
    for name in (NAMESPACE, OTHER):
        assert server.admin("POST", f"/v1/namespaces/{name}/create").status == 201
    credentials = _credentials(server)
    assert set(credentials) == set(MATRIX)

    failures = []
    for row, cells in MATRIX.items():
        for column in COLUMNS:
            expected = cells[column]
            response = _send(server, column, credentials[row])
            code = response.json().get("code") if expected[1] is not None else None
            if (response.status, code) != expected:
                failures.append(
                    f"{row} x {column}: {response.status} {response.body[:120]!r}, want {expected}"
                )
            if response.status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer"), (row, column)
            for secret in credentials.values():
                if secret is not None and len(secret) > 20:
                    assert secret.split(b" ", 1)[-1] not in response.body, f"{row} x {column} echoed a token"
    assert not failures, "\n".join(failures)

    # An expired token says so; a short-lived minted token expires in real time, too.
    assert b"expired" in _send(server, "pull", credentials["expired"]).body
    short = _mint(server, NAMESPACE, expiresIn="1s")
    time.sleep(2.1)
    assert _send(server, "pull", b"Bearer " + short.encode()).status == 401

    output = server.output()
    for secret in credentials.values():
        if secret is not None:
            assert secret.split(b" ", 1)[-1].decode(errors="replace") not in output
