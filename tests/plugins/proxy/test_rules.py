"""Rule validation and the upstream URL a path maps to (pure functions, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buntime.plugins.proxy import ProxyConfigError, RuleError, parse_rule, resolve_proxy_config


def rule(**fields: Any) -> Any:
    return parse_rule({"pattern": "^/api/", "target": "http://up:8080", **fields}, rule_id="r", order=0)


def test_defaults() -> None:
    parsed = rule()
    assert parsed.as_json() == {
        "id": "r",
        "name": "",
        "pattern": "^/api/",
        "target": "http://up:8080",
        "rewrite": None,
        "changeOrigin": False,
        "headers": {},
        "enabled": True,
        "order": 0,
        "redirect": None,
        "secure": True,
        "ws": True,
        "base": None,
        "relativePaths": False,
        "publicRoutes": None,
        "readonly": False,
        "readOnly": False,
    }


@pytest.mark.parametrize(
    ("fields", "path", "query", "url"),
    [
        ({}, "/api/x", "", "http://up:8080/api/x"),
        ({}, "/api/x", "a=1&b=%20", "http://up:8080/api/x?a=1&b=%20"),
        ({"target": "http://up:8080/base/"}, "/api/x", "", "http://up:8080/base/api/x"),
        ({"rewrite": ""}, "/api/x/y", "", "http://up:8080/x/y"),  # prefix strip
        ({"pattern": "^/api/(.*)$", "rewrite": "/v2/$1"}, "/api/users/7", "", "http://up:8080/v2/users/7"),
        (
            {"pattern": "^/a/(?P<id>\\d+)", "rewrite": "/items/$<id>"},
            "/a/42/more",
            "",
            "http://up:8080/items/42/more",
        ),
        (  # JavaScript's named groups (upstream's syntax) work too
            {"pattern": "^/a/(?<id>\\d+)", "rewrite": "/items/$<id>"},
            "/a/42/more",
            "",
            "http://up:8080/items/42/more",
        ),
        ({"pattern": "^/p", "rewrite": "/cost$$"}, "/p/x", "", "http://up:8080/cost$/x"),
        (
            {"pattern": "^/p", "rewrite": "/back\\slash"},
            "/p",
            "",
            "http://up:8080/back\\slash",
        ),  # literal, not an escape
        ({}, "/api/caf%C3%A9", "", "http://up:8080/api/caf%C3%A9"),  # raw path passes encoded
    ],
)
def test_upstream_url(fields: dict[str, Any], path: str, query: str, url: str) -> None:
    assert str(rule(**fields).upstream_url(path, query)) == url


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"pattern": None}, "PROXY_INVALID_RULE"),
        ({"target": "  "}, "PROXY_INVALID_RULE"),
        ({"pattern": "(unclosed"}, "PROXY_INVALID_PATTERN"),
        # what needs backtracking (RE2 refuses it), and a pattern over the length cap
        ({"pattern": "^/api/(?!internal)"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/a/(?<=a/)b"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/(\\w+)/\\1$"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/(?P<x>a)(?P=x)"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/(?>a+)b"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/a++b"}, "PROXY_INVALID_PATTERN"),
        ({"pattern": "^/" + "a" * 1023}, "PROXY_INVALID_PATTERN"),
        ({"publicRoutes": ["/" + "a" * 1100]}, "PROXY_INVALID_PUBLIC_ROUTES"),
        ({"target": "ftp://x"}, "PROXY_INVALID_TARGET"),
        ({"target": "/relative"}, "PROXY_INVALID_TARGET"),
        ({"target": "http://x/?q=1"}, "PROXY_INVALID_TARGET"),
        ({"rewrite": "/$2"}, "PROXY_INVALID_REWRITE"),
        ({"rewrite": "/$<nope>"}, "PROXY_INVALID_REWRITE"),
        ({"headers": {"Bad Name": "x"}}, "PROXY_INVALID_HEADERS"),
        ({"headers": {"X-Ok\n": "x"}}, "PROXY_INVALID_HEADERS"),  # a final newline is no token
        ({"headers": {"X-Ok": "line\r\nX-Injected: 1"}}, "PROXY_INVALID_HEADERS"),
        ({"headers": ["X-A"]}, "PROXY_INVALID_HEADERS"),
        ({"headers": {"X-A": "[redacted]"}}, "PROXY_INVALID_HEADERS"),  # the API's marker, not a value
        ({"redirect": 200}, "PROXY_INVALID_REDIRECT"),
        ({"redirect": True}, "PROXY_INVALID_REDIRECT"),
        ({"enabled": "yes"}, "PROXY_INVALID_RULE"),
        ({"name": 7}, "PROXY_INVALID_RULE"),
    ],
)
def test_invalid_rules(fields: dict[str, Any], code: str) -> None:
    with pytest.raises(RuleError) as caught:
        rule(**fields)
    assert caught.value.code == code


def test_a_rule_must_be_an_object() -> None:
    with pytest.raises(RuleError, match="JSON object"):
        parse_rule(["not", "a", "rule"], rule_id="r", order=0)


def test_the_longest_pattern_accepted_is_the_cap() -> None:
    assert rule(pattern="^/" + "a" * 1022).pattern == "^/" + "a" * 1022


def test_a_static_rule_re2_refuses_stops_the_plugin_naming_it() -> None:
    rules = json.dumps(
        [{"pattern": "^/a", "target": "http://a"}, {"pattern": "^/b(?!c)", "target": "http://b"}]
    )
    with pytest.raises(ProxyConfigError, match=r"^PROXY_RULES: rule 1: .*\(PROXY_INVALID_PATTERN\)$"):
        resolve_proxy_config({}, {"PROXY_RULES": rules})
