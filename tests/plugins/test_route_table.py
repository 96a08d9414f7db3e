"""Every route of the keyval, gateway and proxy plugins, against the upstream reference's shapes.

One table drives one real ``buntime serve`` (local mode, every built-in plugin, a shell
directory, a rate limiter and one static proxy rule): each row is a request (method, path,
JSON body) with the status and the response shape it must get, run in order on the same server
(rows capture ids, such as a message or a rule, that later rows use). The shapes are upstream's
(``../shared/reference/plugin-turso-spec.md`` §3 and the upstream route code): bare arrays,
``{ok, versionstamp}``, ``{added, basename, source}``, ``{success: true}``...; a row fails
on a wrong status, a missing key, a wrong type or a wrong literal. Keys our answers add beyond
upstream's (an error's ``code``, a keyval entry's ``expiresAt``) are allowed unless the shape is
:class:`Exact`. Server-sent-event routes are read up to their first event.

A shape is a type (``str``, ``int``: never a bool, ``NONE``), a tuple of them (any of), ``ANY``,
a dict (those keys, each of its shape), ``[shape]`` (a list whose items all match),
:class:`NonEmpty`, :class:`Len`, :class:`Exact`, :class:`Text` (a non-JSON body containing a
string), :class:`Event` (the first SSE event of that name and its data), or a literal
(equal to it).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.server.support import RuntimeProcess, local_env

NONE = type(None)
ANY = object()


@dataclass(frozen=True)
class NonEmpty:
    item: Any


@dataclass(frozen=True)
class Len:
    n: int
    item: Any


@dataclass(frozen=True)
class Exact:
    """A dict with exactly these keys."""

    shape: dict[str, Any]


@dataclass(frozen=True)
class Eq:
    """Exactly this value (for a literal list, which ``[shape]`` would read as a list shape)."""

    value: Any


@dataclass(frozen=True)
class Text:
    contains: str


@dataclass(frozen=True)
class Event:
    name: str
    data: Any


def mismatches(value: Any, shape: Any, where: str = "$") -> Iterator[str]:
    if shape is ANY:
        return
    if isinstance(shape, Eq):
        if value != shape.value:
            yield f"{where}: {value!r} != {shape.value!r}"
        return
    if isinstance(shape, type) or (isinstance(shape, tuple) and all(isinstance(t, type) for t in shape)):
        types = shape if isinstance(shape, tuple) else (shape,)
        if isinstance(value, bool) and bool not in types:
            yield f"{where}: {value!r} is a bool, want {shape}"
        elif not isinstance(value, types):
            yield f"{where}: {value!r} is not {shape}"
    elif isinstance(shape, Exact):
        if not isinstance(value, dict) or set(value) != set(shape.shape):
            yield f"{where}: {value!r} has not exactly the keys {sorted(shape.shape)}"
        else:
            yield from mismatches(value, shape.shape, where)
    elif isinstance(shape, dict):
        if not isinstance(value, dict):
            yield f"{where}: {value!r} is not an object"
            return
        for key, sub in shape.items():
            if key not in value:
                yield f"{where}: no key {key!r} in {sorted(value)}"
            else:
                yield from mismatches(value[key], sub, f"{where}.{key}")
    elif isinstance(shape, NonEmpty | Len) or (isinstance(shape, list) and shape):
        item = shape[0] if isinstance(shape, list) else shape.item
        if not isinstance(value, list):
            yield f"{where}: {value!r} is not an array"
            return
        if isinstance(shape, NonEmpty) and not value:
            yield f"{where}: empty array"
        if isinstance(shape, Len) and len(value) != shape.n:
            yield f"{where}: {len(value)} items, want {shape.n}"
        for i, v in enumerate(value):
            yield from mismatches(v, item, f"{where}[{i}]")
    elif value != shape:
        yield f"{where}: {value!r} != {shape!r}"


@dataclass
class Row:
    method: str
    path: str
    body: Any = None
    status: int = 200
    shape: Any = ANY
    #: ``capture(body, ids)`` stores ids later rows put in their path or body as ``{name}``.
    capture: Callable[[Any, dict[str, Any]], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


ENTRY = {"key": list, "value": ANY, "versionstamp": (str, NONE)}
MESSAGE = {"id": str, "value": ANY, "attempts": int}
DEAD_LETTER = {"id": str, "originalId": str, "value": ANY, "attempts": int, "failedAt": int}
ERROR = {"error": str}
SNAPSHOT = Exact(
    {
        "timestamp": int,
        "totalRequests": int,
        "blockedRequests": int,
        "allowedRequests": int,
        "activeBuckets": int,
    }
)
CORS_RULE = {
    "id": str,
    "name": str,
    "origins": [str],
    "methods": [str],
    "allowedHeaders": [str],
    "exposedHeaders": [str],
    "credentials": bool,
    "maxAge": int,
    "createdAt": int,
}
RULE = {
    "id": str,
    "name": (str, NONE),
    "pattern": str,
    "target": str,
    "rewrite": (str, NONE),
    "changeOrigin": bool,
    "secure": bool,
    "headers": dict,
    "ws": bool,
    "base": (str, NONE),
    "relativePaths": bool,
    "enabled": bool,
    "order": int,
    "readonly": bool,
}
KV = "/keyval/api"
GW = "/gateway/admin"
PX = "/redirects/admin"
STATIC_RULE = {"pattern": "^/static-only/", "target": "https://static.example"}


def put(name: str, key: str = "id") -> Callable[[Any, dict[str, Any]], None]:
    def capture(body: Any, ids: dict[str, Any]) -> None:
        ids[name] = body[key]

    return capture


def polled(name: str) -> Callable[[Any, dict[str, Any]], None]:
    def capture(body: Any, ids: dict[str, Any]) -> None:
        ids[name] = body["message"]["id"]

    return capture


def first_id(name: str) -> Callable[[Any, dict[str, Any]], None]:
    def capture(body: Any, ids: dict[str, Any]) -> None:
        ids[name] = body[0]["id"]

    return capture


def table(shell_dir: str) -> list[Row]:
    bigint = {"__type": "bigint", "value": "5"}
    return [
        # -- keyval: keys ------------------------------------------------------------------------
        Row("PUT", f"{KV}/keys/users/1", {"name": "Ada", "city": "Lisbon"}, 200,
            Exact({"ok": True, "versionstamp": str})),
        Row("PUT", f"{KV}/keys/users/2?expiresIn=600000", {"name": "Bob", "city": "Porto"}, 200,
            Exact({"ok": True, "versionstamp": str})),
        Row("GET", f"{KV}/keys/users/1", None, 200,
            {"key": Eq(["users", 1]), "value": {"name": "Ada", "city": "Lisbon"}, "versionstamp": str}),
        Row("GET", f"{KV}/keys/users/404", None, 404, ERROR),
        Row("GET", f"{KV}/keys?prefix=users", None, 200, Len(2, ENTRY)),
        Row("GET", f"{KV}/keys?prefix=users&limit=1&reverse=true", None, 200,
            [{**ENTRY, "key": Eq(["users", 2])}]),
        Row("POST", f"{KV}/keys/list", {"prefix": ["users"], "where": {"city": {"$eq": "Lisbon"}}}, 200,
            Len(1, {**ENTRY, "key": Eq(["users", 1])})),
        Row("POST", f"{KV}/keys/list", {"prefix": ["users"], "where": {"city": {"$nope": 1}}}, 400, ERROR),
        Row("GET", f"{KV}/keys/count?prefix=users", None, 200, {"count": 2}),
        Row("GET", f"{KV}/keys/paginate?prefix=users&limit=1", None, 200,
            {"entries": Len(1, ENTRY), "cursor": str, "hasMore": True}),
        Row("POST", f"{KV}/keys/batch", {"keys": [["users", 1], ["users", 404]]}, 200, Len(2, ENTRY),
            lambda body, ids: ids.update(batch_missing=body[1])),
        Row("PUT", f"{KV}/keys/tmp/a", 1, 200, {"ok": True}),
        Row("POST", f"{KV}/keys/delete-batch", {"keys": [["tmp"]]}, 200, {"deletedCount": 1}),
        Row("DELETE", f"{KV}/keys/users/2", None, 200, {"deletedCount": 1}),
        Row("PUT", f"{KV}/keys/tree/a", 1, 200, {"ok": True}),
        Row("PUT", f"{KV}/keys/tree/a/b", 2, 200, {"ok": True}),
        # upstream's client sends delete options in a JSON body
        Row("DELETE", f"{KV}/keys/tree/a", {"exact": True}, 200, {"deletedCount": 1}),
        Row("PUT", f"{KV}/keys/broken", "{nope", 400, ERROR),
        # -- keyval: atomic ----------------------------------------------------------------------
        Row("POST", f"{KV}/atomic", {"mutations": [{"type": "sum", "key": ["n"], "value": bigint}]}, 200,
            {"ok": True, "versionstamp": str}),
        Row("POST", f"{KV}/atomic",
            {"checks": [{"key": ["users", 1], "versionstamp": None}],
             "mutations": [{"type": "delete", "key": ["users", 1]}]},
            200, {"ok": False}),  # a failed check is a result (upstream: 200), not an error
        Row("POST", f"{KV}/atomic", {"mutations": [{"type": "append", "key": ["l"], "value": [1]}]}, 200,
            {"ok": True}),
        # -- keyval: queue -----------------------------------------------------------------------
        Row("POST", f"{KV}/queue/enqueue", {"value": {"job": 1}, "options": {"backoffSchedule": [0]}}, 200,
            {"ok": True, "id": str}, put("msg")),
        Row("GET", f"{KV}/queue/stats", None, 200,
            Exact({"pending": 1, "processing": 0, "dlq": 0, "total": 1})),
        Row("GET", f"{KV}/queue/poll", None, 200, {"message": {**MESSAGE, "attempts": 1}}, polled("lease")),
        Row("POST", f"{KV}/queue/nack", {"id": "{lease}"}, 200, {"ok": True}),
        Row("GET", f"{KV}/queue/poll", None, 200, {"message": {**MESSAGE, "attempts": 2}}, polled("lease")),
        Row("POST", f"{KV}/queue/nack", {"id": "{lease}"}, 200, {"ok": True}),  # out of attempts: DLQ
        Row("GET", f"{KV}/queue/poll", None, 200, {"message": None}),
        Row("POST", f"{KV}/queue/poll", None, 200, {"message": None}),
        Row("POST", f"{KV}/queue/ack", {}, 400, ERROR),
        Row("GET", f"{KV}/queue/dlq", None, 200, Len(1, DEAD_LETTER), first_id("dead")),
        Row("GET", f"{KV}/queue/dlq/{{dead}}", None, 200, DEAD_LETTER),
        Row("GET", f"{KV}/queue/dlq/nope", None, 404, ERROR),
        Row("POST", f"{KV}/queue/dlq/{{dead}}/requeue", None, 200, {"ok": True, "id": str}),
        Row("GET", f"{KV}/queue/poll", None, 200, {"message": MESSAGE}, polled("lease")),
        Row("POST", f"{KV}/queue/ack", {"id": "{lease}"}, 200, {"ok": True}),
        Row("POST", f"{KV}/queue/enqueue", {"value": 2, "options": {"backoffSchedule": []}}, 200,
            {"ok": True, "id": str}),
        Row("GET", f"{KV}/queue/poll", None, 200, {"message": {**MESSAGE, "value": 2}}, polled("lease")),
        Row("POST", f"{KV}/queue/nack", {"id": "{lease}"}, 200, {"ok": True}),  # one attempt: DLQ
        Row("GET", f"{KV}/queue/dlq", None, 200, Len(1, DEAD_LETTER), first_id("dead")),
        Row("DELETE", f"{KV}/queue/dlq/{{dead}}", None, 200, {"ok": True}),
        Row("DELETE", f"{KV}/queue/dlq", None, 200, {"deletedCount": int}),
        Row("POST", f"{KV}/queue/enqueue", {"value": "listen-me"}, 200, {"ok": True, "id": str}),
        Row("GET", f"{KV}/queue/listen", None, 200, Event("message", {**MESSAGE, "value": "listen-me"})),
        # -- keyval: search ----------------------------------------------------------------------
        Row("POST", f"{KV}/indexes", {"prefix": ["users"], "options": {"fields": ["name"]}}, 200,
            {"ok": True}),
        Row("GET", f"{KV}/indexes", None, 200, Len(1, {"prefix": ["users"], "fields": ["name"]})),
        Row("GET", f"{KV}/search?prefix=users&query=ada", None, 200, Len(1, ENTRY)),
        Row("POST", f"{KV}/search", {"prefix": ["users"], "query": "ada", "options": {"limit": 5}}, 200,
            Len(1, ENTRY)),
        Row("DELETE", f"{KV}/indexes?prefix=users", None, 200, {"ok": True}),
        # -- keyval: watch -----------------------------------------------------------------------
        Row("GET", f"{KV}/watch?keys=users/1", None, 200,
            Event("change", Len(1, {**ENTRY, "key": Eq(["users", 1])}))),
        Row("GET", f"{KV}/watch/prefix?prefix=users&initial=true", None, 200,
            Event("change", NonEmpty(ENTRY))),
        Row("GET", f"{KV}/watch/poll?keys=users/1,users/404", None, 200,
            {"entries": Len(1, ENTRY), "versionstamps": Len(2, str)}),
        Row("GET", f"{KV}/watch/prefix/poll?prefix=users", None, 200,
            {"entries": Len(1, ENTRY), "versionstamps": str}),
        Row("GET", f"{KV}/watch/poll", None, 400, ERROR),
        # -- keyval: metrics ---------------------------------------------------------------------
        Row("GET", f"{KV}/metrics", None, 200,
            {"operations": dict,
             "queue": Exact({"pending": int, "processing": int, "dlq": int, "total": int}),
             "storage": Exact({"entries": int, "sizeBytes": int})}),
        Row("GET", f"{KV}/metrics/prometheus", None, 200, Text("keyval")),
        # -- gateway: shell excludes and metrics history ----------------------------------------
        Row("GET", f"{GW}/shell/excludes", None, 200, [Exact({"basename": "cpanel", "source": "env"})]),
        Row("POST", f"{GW}/shell/excludes", {"basename": " legacy-app "}, 200,
            {"added": True, "basename": "legacy-app", "source": "turso"}),
        Row("POST", f"{GW}/shell/excludes", {"basename": "legacy-app"}, 200,
            {"added": False, "basename": "legacy-app", "source": "turso"}),
        Row("POST", f"{GW}/shell/excludes", {"basename": "cpanel"}, 400,
            {"error": "Already excluded via environment"}),
        Row("POST", f"{GW}/shell/excludes", {"basename": "bad name"}, 400,
            {"error": "Invalid basename format"}),
        Row("POST", f"{GW}/shell/excludes", {}, 400, {"error": "basename is required"}),
        Row("GET", f"{GW}/shell/excludes", None, 200,
            Len(2, {"basename": str, "source": str})),  # order and addedAt: test_gateway_api
        Row("DELETE", f"{GW}/shell/excludes/legacy-app", None, 200,
            Exact({"removed": True, "basename": "legacy-app"})),
        Row("DELETE", f"{GW}/shell/excludes/legacy-app", None, 200,
            Exact({"removed": False, "basename": "legacy-app"})),
        Row("DELETE", f"{GW}/shell/excludes/cpanel", None, 400,
            {"error": "Cannot remove environment-based exclude"}),
        Row("POST", f"{GW}/metrics/snapshot", None, 201, SNAPSHOT),
        Row("POST", f"{GW}/metrics/snapshot", None, 201, SNAPSHOT, put("newest", "timestamp")),
        Row("GET", f"{GW}/metrics/history?limit=60", None, 200, NonEmpty(SNAPSHOT),
            lambda body, ids: ids.update(history_head=body[0]["timestamp"])),
        Row("DELETE", f"{GW}/metrics/history", None, 200, {"cleared": True}),
        Row("GET", f"{GW}/metrics/history", None, 200, []),
        # -- gateway: the rest -------------------------------------------------------------------
        Row("GET", f"{GW}/stats", None, 200,
            {"rateLimit": {"enabled": True, "metrics": dict, "config": dict},
             "cors": {"enabled": bool, "rulesCount": int}, "cache": {"enabled": False},
             "shell": {"enabled": True, "dir": str, "excludesCount": int}, "logs": dict}),
        Row("GET", f"{GW}/config", None, 200,
            {"rateLimit": dict, "cors": list, "cache": None, "shell": {"dir": str, "envExcludes": [str]}}),
        Row("POST", f"{GW}/cors/rules", {"name": "app", "origins": ["https://app.example"]}, 201, CORS_RULE,
            put("cors")),
        Row("GET", f"{GW}/cors/rules", None, 200, NonEmpty(CORS_RULE)),
        Row("PUT", f"{GW}/cors/rules/{{cors}}", {"name": "app2", "origins": "https://app.example"}, 200,
            {**CORS_RULE, "name": "app2"}),
        Row("PUT", f"{GW}/cors/rules/nope", {"name": "x", "origins": ["https://x.example"]}, 404,
            {"error": "Rule not found"}),
        Row("POST", f"{GW}/cors/rules", {"name": "x"}, 400, ERROR),
        Row("DELETE", f"{GW}/cors/rules/{{cors}}", None, 200, {"removed": True}),
        Row("GET", f"{GW}/rate-limit/metrics", None, 200,
            {"totalRequests": int, "blockedRequests": int, "allowedRequests": int, "activeBuckets": int}),
        Row("GET", f"{GW}/rate-limit/buckets?limit=5", None, 200, NonEmpty({"key": str})),
        Row("DELETE", f"{GW}/rate-limit/buckets/nobody", None, 200, {"deleted": False, "key": "nobody"}),
        Row("POST", f"{GW}/rate-limit/clear", None, 200, {"cleared": int}),
        Row("PUT", f"{GW}/shell/config", {"dir": shell_dir}, 200, {"dir": shell_dir, "source": "override"}),
        Row("PUT", f"{GW}/shell/config", {"dir": ""}, 400, ERROR),
        Row("POST", f"{GW}/shell/config/reset", None, 200,
            {"dir": shell_dir, "source": "default", "enabled": True}),
        Row("PUT", f"{GW}/shell/routes", {"host": "T.example", "dir": shell_dir}, 200,
            {"host": "t.example", "dir": shell_dir}),
        Row("GET", f"{GW}/shell/routes", None, 200,
            [{"host": "t.example", "dir": shell_dir, "createdAt": int}]),
        Row("DELETE", f"{GW}/shell/routes/t.example", None, 200, {"removed": True}),
        Row("GET", f"{GW}/logs", None, 200, list),
        Row("GET", f"{GW}/logs/stats", None, 200, {"total": int, "rateLimited": int, "byStatus": dict}),
        Row("DELETE", f"{GW}/logs", None, 200, {"cleared": True}),
        Row("POST", f"{GW}/cache/invalidate", {}, 400, {"error": "Cache not enabled"}),
        Row("GET", f"{GW}/sse", None, 200,
            Event("message", {"timestamp": int, "rateLimit": dict, "cors": {"enabled": bool, "rules": list},
                              "shell": {"enabled": True, "dir": str, "excludes": list}, "recentLogs": list})),
        # -- proxy -------------------------------------------------------------------------------
        Row("GET", f"{PX}/rules", None, 200, Len(1, {**RULE, "id": "static-0", "readonly": True})),
        Row("POST", f"{PX}/rules",
            {"name": "docs", "pattern": "^/docs/(.*)", "target": "https://example.com", "rewrite": "/$1",
             "redirect": 302},
            201, {**RULE, "readonly": False, "enabled": True}, put("rule")),
        Row("POST", f"{PX}/rules", {"pattern": "^/x"}, 400, ERROR),
        Row("POST", f"{PX}/rules", {"pattern": "([", "target": "https://x.example"}, 400, ERROR),
        Row("POST", f"{PX}/rules", {"pattern": "^/keyval", "target": "https://x.example"}, 409, ERROR),
        Row("GET", f"{PX}/rules/{{rule}}", None, 200, {**RULE, "name": "docs"}),
        Row("GET", f"{PX}/rules/nope", None, 404, ERROR),
        Row("GET", "/docs/intro", None, 302, None),  # the rule at work: a redirect to the target
        Row("PUT", f"{PX}/rules/{{rule}}", {"name": "docs2"}, 200, {**RULE, "name": "docs2"}),
        Row("PUT", f"{PX}/rules/static-0", {"name": "x"}, 403, ERROR),
        Row("PUT", f"{PX}/rules/nope", {"name": "x"}, 404, ERROR),
        Row("PATCH", f"{PX}/rules/{{rule}}/toggle", None, 200, {**RULE, "enabled": False}),
        Row("PATCH", f"{PX}/rules/{{rule}}/toggle", None, 200, {**RULE, "enabled": True}),
        Row("PATCH", f"{PX}/rules/static-0/toggle", None, 403, ERROR),
        Row("PUT", f"{PX}/rules/reorder", {"ids": ["{rule}"]}, 200, Len(1, {**RULE, "order": 0})),
        Row("PUT", f"{PX}/rules/reorder", {"ids": ["{rule}", "nope"]}, 404, ERROR),
        Row("PUT", f"{PX}/rules/reorder", {"ids": ["static-0"]}, 403, ERROR),
        Row("DELETE", f"{PX}/rules/static-0", None, 403, ERROR),
        Row("DELETE", f"{PX}/rules/{{rule}}", None, 200, Exact({"success": True})),
        Row("DELETE", f"{PX}/rules/{{rule}}", None, 404, ERROR),
    ]  # fmt: skip


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(_NoRedirects)


def _first_event(response: Any, want: str) -> tuple[str, Any]:
    name = "message"
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == want:
            return name, json.loads(line[6:])
        elif not line:
            name = "message"
    raise AssertionError(f"the stream ended before a {want!r} event")


def call(base: str, row: Row, ids: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    """(status, body, headers): JSON, text, or the first matching event of a stream."""
    path = row.path.format(**ids)
    body = row.body
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("{lease}", str(ids.get("lease"))))
        body = json.loads(json.dumps(body).replace('"{rule}"', json.dumps(ids.get("rule"))))
    data = None if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    request = urllib.request.Request(
        base + path, data=data, method=row.method, headers={"Content-Type": "application/json", **row.headers}
    )
    try:
        response = OPENER.open(request, timeout=10)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        headers = dict(response.headers.items())
        if headers.get("Content-Type", "").startswith("text/event-stream"):
            assert isinstance(row.shape, Event), f"{row.label}: a stream, the row wants {row.shape!r}"
            return response.status, _first_event(response, row.shape.name)[1], headers
        raw = response.read()
    try:
        return response.status, json.loads(raw) if raw else None, headers
    except ValueError:
        return response.status, raw.decode(errors="replace"), headers


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeProcess, str]]:
    tmp = tmp_path_factory.mktemp("route-table")
    shell = tmp / "shell"
    shell.mkdir()
    env = local_env(
        tmp,
        GATEWAY_SHELL_DIR=str(shell),
        GATEWAY_RATE_LIMIT_REQUESTS="100000",
        PROXY_RULES=json.dumps([STATIC_RULE]),
        KEYVAL_SWEEP_INTERVAL="0",
        KEYVAL_QUEUE_CLEANUP_INTERVAL="0",
    )
    process = RuntimeProcess(env, tmp / "serve.log").start()
    try:
        yield process, str(shell)
    finally:
        process.stop()


def test_every_route_answers_the_reference_shape(runtime: tuple[RuntimeProcess, str]) -> None:
    process, shell = runtime
    ids: dict[str, Any] = {}
    failures: list[str] = []
    rows = table(shell)
    for row in rows:
        status, body, headers = call(process.url, row, ids)
        if status != row.status:
            failures.append(f"{row.label}: status {status}, want {row.status}: {body!r}"[:400])
            continue
        shape = row.shape.data if isinstance(row.shape, Event) else row.shape
        if isinstance(shape, Text):
            problems = [] if shape.contains in str(body) else [f"no {shape.contains!r} in the body"]
        elif row.status == 302:
            location = headers.get("Location")
            problems = [] if location == "https://example.com/intro" else [f"Location {location!r}"]
        else:
            problems = list(mismatches(body, shape))
        failures.extend(f"{row.label}: {problem}" for problem in problems)
        if not problems and row.capture is not None:
            row.capture(body, ids)
    assert not failures, f"{len(failures)} of {len(rows)} rows differ:\n" + "\n".join(failures)
    # the history row saw the newest snapshot first (upstream's order); a missing key in a batch
    assert ids["history_head"] == ids["newest"]
    missing = {"key": ["users", 404], "value": None, "versionstamp": None, "expiresAt": None}
    assert ids["batch_missing"] == missing


def test_the_table_can_fail() -> None:
    """The checker itself: each kind of difference is reported."""
    assert list(mismatches({"a": 1}, {"a": str}))
    assert list(mismatches({"a": True}, {"a": int}))
    assert list(mismatches({}, {"a": ANY}))
    assert list(mismatches({"a": 1, "b": 2}, Exact({"a": int})))
    assert list(mismatches([1, "x"], [int]))
    assert list(mismatches([], NonEmpty(int)))
    assert list(mismatches([1], Len(2, int)))
    assert list(mismatches({"ok": False}, {"ok": True}))
    assert not list(mismatches({"a": 1, "extra": None}, {"a": int}))


def test_every_mounted_route_has_a_row() -> None:
    """A route added to a plugin without a row here fails: the table stays complete."""
    from buntime.plugins.gateway._routes import build_admin_app as gateway_app
    from buntime.plugins.keyval._routes import create_app as keyval_app
    from buntime.plugins.proxy._routes import build_admin_app as proxy_app

    rows = {(row.method, _canonical(row.path)) for row in table("/dir")}
    mounted: set[tuple[str, str]] = set()
    for base, builder in (("/keyval", keyval_app), ("/gateway", gateway_app), ("/redirects", proxy_app)):
        app = builder(None)  # routes only: no handler runs
        for route in app.router.routes():
            if route.method != "HEAD" and route.resource is not None:
                mounted.add((route.method, base + route.resource.canonical))
    missing = sorted(m for m in mounted if m not in rows)
    assert not missing, f"routes without a row in the table: {missing}"


def _canonical(path: str) -> str:
    """``/keyval/api/keys/users/1?x`` -> the route pattern it hits, to compare with the router."""
    path = path.split("?", 1)[0]
    patterns = [
        ("/keyval/api/keys/", "/keyval/api/keys/{path}"),
        ("/keyval/api/queue/dlq/", "/keyval/api/queue/dlq/{id}"),
        ("/gateway/admin/shell/excludes/", "/gateway/admin/shell/excludes/{basename}"),
        ("/gateway/admin/shell/routes/", "/gateway/admin/shell/routes/{host}"),
        ("/gateway/admin/cors/rules/", "/gateway/admin/cors/rules/{id}"),
        ("/gateway/admin/rate-limit/buckets/", "/gateway/admin/rate-limit/buckets/{key}"),
        ("/redirects/admin/rules/", "/redirects/admin/rules/{id}"),
    ]
    fixed = {
        "/keyval/api/keys/batch", "/keyval/api/keys/delete-batch", "/keyval/api/keys/list",
        "/keyval/api/keys/count", "/keyval/api/keys/paginate", "/redirects/admin/rules/reorder",
    }  # fmt: skip
    if path in fixed:
        return path
    if path.startswith("/keyval/api/queue/dlq/") and path.endswith("/requeue"):
        return "/keyval/api/queue/dlq/{id}/requeue"
    if path.startswith("/redirects/admin/rules/") and path.endswith("/toggle"):
        return "/redirects/admin/rules/{id}/toggle"
    for prefix, pattern in patterns:
        if path.startswith(prefix) and path != prefix.rstrip("/"):
            return pattern
    return path
