"""Auto-provisioning on the data port: only a request that can need the database creates it.

A real turso-server with a small ``TURSO_MAX_NAMESPACES``: requests that cannot legitimately need a
new database (a route tursodb does not serve, a read-only credential, a body refused by the guard,
a lease or pipeline nobody may provision for) are answered without creating a namespace, a
directory or a child, so a prefix token cannot use up the limit for everybody. A writer's pull,
push or lease on a new name still creates it, as before.
"""

from __future__ import annotations

from tests.turso_server.support import DATA_TOKEN, RawResponse, ServerFactory, ServerProcess

SELECT_ONE = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}}]}'
ATTACH = b'{"requests":[{"type":"execute","stmt":{"sql":"ATTACH DATABASE \'/tmp/x.db\' AS x"}}]}'


def _names(server: ServerProcess) -> list[str]:
    return [view["name"] for view in server.admin("GET", "/v1/namespaces").json()["namespaces"]]


def _scope_token(server: ServerProcess, access: str) -> str:
    response = server.admin("POST", "/v1/tokens", {"namespaces": ["team-*"], "access": access})
    assert response.status == 201, response.body
    token: str = response.json()["token"]
    return token


def _code(response: RawResponse) -> tuple[int, str]:
    return response.status, response.json()["code"]


def test_only_a_writer_on_a_forwarded_route_creates_a_namespace(start_server: ServerFactory) -> None:
    server = start_server(TURSO_MAX_NAMESPACES="2")
    ro, rw = _scope_token(server, "ro"), _scope_token(server, "rw")
    refused: list[tuple[str, str, str, str, bytes, tuple[int, str]]] = [
        ("ro, unknown route", ro, "GET", "/team-a/no-such-route", b"", (404, "unknown route")),
        ("ro, root", ro, "GET", "/team-a/", b"", (404, "unknown route")),
        (
            "ro, pull of a missing namespace",
            ro,
            "POST",
            "/team-a/pull-updates",
            b"",
            (404, "namespace not found"),
        ),
        ("rw, unknown route", rw, "GET", "/team-b/anything", b"", (404, "unknown route")),
        ("rw, pipeline by GET", rw, "GET", "/team-b/v2/pipeline", b"", (404, "unknown route")),
        ("rw, trailing slash", rw, "POST", "/team-b/v2/pipeline/", SELECT_ONE, (404, "unknown route")),
        ("rw, other version", rw, "POST", "/team-b/v3/pipeline", SELECT_ONE, (404, "unknown route")),
        ("rw, fenced unknown route", rw, "POST", "/team-b/-/lease/abc/info", b"", (404, "unknown route")),
        (
            "rw, pipeline with a query",
            rw,
            "POST",
            "/team-b/v2/pipeline?x=1",
            SELECT_ONE,
            (404, "unknown route"),
        ),
        ("rw, pull with a query", rw, "POST", "/team-b/pull-updates?x=1", b"", (404, "unknown route")),
        (
            "global, pull with a query",
            DATA_TOKEN,
            "POST",
            "/team-d/pull-updates?a",
            b"",
            (404, "unknown route"),
        ),
        ("rw, guard refuses", rw, "POST", "/team-c/v2/pipeline", ATTACH, (403, "statement forbidden")),
        (
            "rw, not strict JSON",
            rw,
            "POST",
            "/team-c/v2/pipeline",
            b'{"requests": [',
            (400, "invalid pipeline"),
        ),
        ("global, unknown route", DATA_TOKEN, "OPTIONS", "/team-d/v2/pipeline", b"", (404, "unknown route")),
    ]
    for label, token, method, target, body, expected in refused:
        response = server.data(method, target, token=token, body=body)
        assert _code(response) == expected, f"{label}: {response.status} {response.body!r}"
    assert _names(server) == []
    assert not (server.data_dir / "namespaces").exists() or not any(
        (server.data_dir / "namespaces").iterdir()
    )
    assert server.child_pids() == {}

    # A writer's pull and push on a new name still create it (origin auto), up to the limit.
    assert server.data("POST", "/team-a/pull-updates", token=rw).status == 200
    assert server.data("POST", "/team-b/v2/pipeline", token=rw, body=SELECT_ONE).status == 200
    views = server.admin("GET", "/v1/namespaces").json()["namespaces"]
    assert [(v["name"], v["origin"]) for v in views] == [("team-a", "auto"), ("team-b", "auto")]
    # Now the read-only token pulls what exists; the limit refuses a writer's third name.
    assert server.data("POST", "/team-a/pull-updates", token=ro).status == 200
    full = server.data("POST", "/team-c/pull-updates", token=rw)
    assert _code(full) == (429, "max namespaces reached")
    assert _names(server) == ["team-a", "team-b"]


def test_a_push_tursodb_cannot_parse_leaves_no_namespace_behind(server: ServerProcess) -> None:
    """A body the guard lets through but tursodb cannot parse (``args`` not a list) is ``400 invalid
    pipeline``, nothing ran: the namespace created for it goes again, files and child included. One
    that existed before keeps its data."""
    unparsable = b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT 1","args":5}}]}'
    refused = server.data("POST", "/fresh/v2/pipeline", body=unparsable)
    assert _code(refused) == (400, "invalid pipeline"), refused.body
    assert _names(server) == []
    assert not (server.data_dir / "namespaces" / "fresh").exists()
    assert server.child_pids() == {}

    create = b'{"requests":[{"type":"execute","stmt":{"sql":"CREATE TABLE kept(x)"}}]}'
    assert server.data("POST", "/fresh/v2/pipeline", body=create).status == 200
    again = server.data("POST", "/fresh/v2/pipeline", body=unparsable)
    assert _code(again) == (400, "invalid pipeline"), again.body
    tables = server.data(
        "POST",
        "/fresh/v2/pipeline",
        body=b'{"requests":[{"type":"execute","stmt":{"sql":"SELECT name FROM sqlite_master"}}]}',
    )
    assert tables.status == 200 and b"kept" in tables.body, tables.body
    assert _names(server) == ["fresh"]


def test_a_pull_tursodb_cannot_decode_is_a_400_and_leaves_no_namespace_behind(server: ServerProcess) -> None:
    """The isolation review's bodies (finding 3): tursodb answers them with a plain-text 500; they
    are ``400 invalid body`` JSON, and the namespace created for the first goes again. One that
    existed before is kept and still pulls."""
    undecodable = [
        b"\xff\xff\xff\xff",
        b"\x0a\x05hello",
        b"\x1a\x02\xff\xff",
        b"\x12\x03\xff\xfe\xfd",
        b"\x08\x01",
    ]
    for body in undecodable:
        refused = server.data("POST", "/fresh/pull-updates", body=body)
        assert _code(refused) == (400, "invalid body"), (body, refused.body)
        assert refused.headers["content-type"].startswith("application/json")
        assert _names(server) == []
    assert not (server.data_dir / "namespaces" / "fresh").exists()
    assert server.child_pids() == {}

    assert server.data("POST", "/fresh/pull-updates").status == 200
    for body in undecodable:
        assert _code(server.data("POST", "/fresh/pull-updates", body=body)) == (400, "invalid body")
    assert _names(server) == ["fresh"]
    assert server.data("POST", "/fresh/pull-updates").status == 200
