"""Proxy rules: validation, JSON shape, matching and the upstream URL a request maps to.

Called by ``_config`` (static rules), ``_proxy`` (dynamic rules) and ``_forward``. Patterns are
Python regular expressions searched in the request's raw (percent-encoded) path. ``rewrite`` is a
replacement for the matched part, written as in JavaScript (``$1``, ``$<name>``, ``$$``); an
empty rewrite strips the match, which with ``^/prefix`` is a prefix strip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from yarl import URL

STATIC_ID_PREFIX = "static-"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

INVALID_RULE = "PROXY_INVALID_RULE"
INVALID_PATTERN = "PROXY_INVALID_PATTERN"
INVALID_TARGET = "PROXY_INVALID_TARGET"
INVALID_REWRITE = "PROXY_INVALID_REWRITE"
INVALID_HEADERS = "PROXY_INVALID_HEADERS"
INVALID_REDIRECT = "PROXY_INVALID_REDIRECT"
INVALID_REORDER = "PROXY_INVALID_REORDER"

_TEMPLATE_TOKEN = re.compile(r"\$(?:(\$)|(\d+)|<([A-Za-z_]\w*)>|\{([A-Za-z_]\w*)\})")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class RuleError(ValueError):
    """A rule cannot be used; ``code`` says which field is wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def python_template(template: str, pattern: re.Pattern[str]) -> str:
    """Translate a JavaScript-style replacement into a ``re.sub`` template, checking its groups."""
    out: list[str] = []
    pos = 0
    for token in _TEMPLATE_TOKEN.finditer(template):
        out.append(template[pos : token.start()].replace("\\", "\\\\"))
        pos = token.end()
        dollar, number, name = token.group(1), token.group(2), token.group(3) or token.group(4)
        if dollar:
            out.append("$")
        elif number is not None:
            if int(number) > pattern.groups:
                raise RuleError(INVALID_REWRITE, f"rewrite refers to group ${number}, the pattern has fewer")
            out.append(f"\\g<{int(number)}>")
        else:
            if name not in pattern.groupindex:
                raise RuleError(INVALID_REWRITE, f"rewrite refers to unknown group $<{name}>")
            out.append(f"\\g<{name}>")
    out.append(template[pos:].replace("\\", "\\\\"))
    return "".join(out)


@dataclass(frozen=True, eq=False)
class ProxyRule:
    """A validated rule; build it with :func:`parse_rule`."""

    id: str
    pattern: str
    target: str
    name: str = ""
    rewrite: str | None = None
    change_origin: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    order: int = 0
    redirect: int | None = None
    read_only: bool = False
    compiled: re.Pattern[str] = field(default=re.compile(""), repr=False)
    _template: str | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        """The API shape (camelCase, with ``readOnly``)."""
        return {
            "id": self.id,
            "name": self.name,
            "pattern": self.pattern,
            "target": self.target,
            "rewrite": self.rewrite,
            "changeOrigin": self.change_origin,
            "headers": dict(self.headers),
            "enabled": self.enabled,
            "order": self.order,
            "redirect": self.redirect,
            "readOnly": self.read_only,
        }

    def stored_json(self) -> str:
        """What ``proxy_rules.rule_json`` holds (everything but ``readOnly``)."""
        data = self.as_json()
        del data["readOnly"]
        return json.dumps(data, sort_keys=True)

    def with_changes(self, **changes: Any) -> ProxyRule:
        return replace(self, **changes)

    def upstream_url(self, raw_path: str, raw_query: str) -> URL:
        """Where a request for ``raw_path`` goes: target + (rewritten) path + query."""
        path = raw_path if self._template is None else self.compiled.sub(self._template, raw_path, count=1)
        if not path.startswith("/"):
            path = "/" + path
        query = f"?{raw_query}" if raw_query else ""
        return URL(f"{self.target.rstrip('/')}{path}{query}", encoded=True)


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise RuleError(INVALID_RULE, f"{key} must be a string")
    return value


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = _optional_text(data, key)
    if value is None or not value.strip():
        raise RuleError(INVALID_RULE, "pattern and target are required")
    return value


def _flag(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise RuleError(INVALID_RULE, f"{key} must be true or false")
    return value


def _target(raw: str) -> str:
    try:
        url = URL(raw.strip())
    except (ValueError, TypeError) as exc:
        raise RuleError(INVALID_TARGET, f"invalid target URL {raw!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise RuleError(INVALID_TARGET, f"target must be an absolute http(s) URL (got {raw!r})")
    if url.query_string or url.fragment:
        raise RuleError(INVALID_TARGET, "target must not have a query or a fragment")
    return str(url)


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RuleError(INVALID_HEADERS, "headers must be an object of header name to value")
    headers: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _HEADER_NAME.match(key):
            raise RuleError(INVALID_HEADERS, f"invalid header name {key!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise RuleError(INVALID_HEADERS, f"header {key} must be a single-line string")
        headers[key] = value
    return headers


def _redirect(raw: Any) -> int | None:
    if raw is None or raw is False:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw not in REDIRECT_STATUSES:
        allowed = ", ".join(map(str, sorted(REDIRECT_STATUSES)))
        raise RuleError(INVALID_REDIRECT, f"redirect must be null or one of {allowed}")
    return raw


def parse_rule(data: Any, *, rule_id: str, order: int, read_only: bool = False) -> ProxyRule:
    """Validate ``data`` (API/manifest JSON) into a :class:`ProxyRule`; raise :class:`RuleError`."""
    if not isinstance(data, Mapping):
        raise RuleError(INVALID_RULE, "a rule must be a JSON object")
    pattern = _required_text(data, "pattern")
    target = _required_text(data, "target")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RuleError(INVALID_PATTERN, f"Invalid regex pattern {pattern!r}: {exc}") from exc
    rewrite = _optional_text(data, "rewrite")
    return ProxyRule(
        id=rule_id,
        pattern=pattern,
        target=_target(target),
        name=_optional_text(data, "name") or "",
        rewrite=rewrite,
        change_origin=_flag(data, "changeOrigin", False),
        headers=_headers(data.get("headers")),
        enabled=_flag(data, "enabled", True),
        order=order,
        redirect=_redirect(data.get("redirect")),
        read_only=read_only,
        compiled=compiled,
        _template=None if rewrite is None else python_template(rewrite, compiled),
    )
