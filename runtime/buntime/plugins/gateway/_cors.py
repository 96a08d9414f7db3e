"""Per-domain CORS rules: validation, origin matching and the headers a response gets.

Called by ``_gateway`` (the preflight answer, the response hook and the admin API). Matching
denies by default: an ``Origin`` no rule covers gets no CORS headers at all. A rule's origins
are exact (``https://app.example.com``), a subdomain wildcard (``*.example.com``, which matches
``https://a.example.com`` but not ``example.com``) or ``*``; a specific match wins over ``*``.

The ``Origin`` header is the client's: one that is not a serialized origin (``scheme://host
[:port]`` in http(s), or ``null``) matches no rule, ``*`` included, so it gets no CORS headers
and cannot break the response hook. Everything a rule puts in a header (header names, methods)
is an HTTP token, checked when the rule is made and again when it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from .._errors import ApiError
from .._http import first_non_token
from ._config import DEFAULT_CORS_MAX_AGE, DEFAULT_CORS_METHODS, CorsSeed

VALID_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
WILDCARD = "*"
#: What a browser sends for an opaque origin (sandboxed frames, ``file:``): only ``*`` covers it.
OPAQUE_ORIGIN = "null"

INVALID_CORS_RULE = "INVALID_CORS_RULE"
CORS_NAME_REQUIRED = "CORS_NAME_REQUIRED"
CORS_ORIGINS_REQUIRED = "CORS_ORIGINS_REQUIRED"
CORS_CREDENTIALS_WILDCARD = "CORS_CREDENTIALS_WILDCARD"
CORS_INVALID_METHOD = "CORS_INVALID_METHOD"
CORS_INVALID_MAX_AGE = "CORS_INVALID_MAX_AGE"
CORS_INVALID_ORIGIN = "CORS_INVALID_ORIGIN"
CORS_INVALID_HEADER = "CORS_INVALID_HEADER"


@dataclass(frozen=True)
class CorsRule:
    """One row of ``gateway_cors_rules``; ``created_at`` is epoch ms."""

    id: str
    name: str
    origins: tuple[str, ...]
    methods: tuple[str, ...] = DEFAULT_CORS_METHODS
    allowed_headers: tuple[str, ...] = ()
    exposed_headers: tuple[str, ...] = ()
    credentials: bool = False
    max_age: int = DEFAULT_CORS_MAX_AGE
    created_at: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "origins": list(self.origins),
            "methods": list(self.methods),
            "allowedHeaders": list(self.allowed_headers),
            "exposedHeaders": list(self.exposed_headers),
            "credentials": self.credentials,
            "maxAge": self.max_age,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_seed(cls, seed: CorsSeed, *, rule_id: str, created_at: int) -> CorsRule:
        return cls(
            id=rule_id,
            name="All origins" if WILDCARD in seed.origins else "Default",
            origins=seed.origins,
            methods=seed.methods,
            allowed_headers=seed.allowed_headers,
            exposed_headers=seed.exposed_headers,
            # A wildcard cannot carry credentials (browsers refuse it); the seed drops them.
            credentials=seed.credentials and WILDCARD not in seed.origins,
            max_age=seed.max_age,
            created_at=created_at,
        )


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        items = [str(v).strip() for v in value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.replace(",", " ").split()]
    else:
        items = []
    return tuple(item for item in items if item)


def origin_host(origin: str) -> str | None:
    """The lower-case host of ``scheme://host[:port]`` (http or https), else ``None``.

    Never raises: yarl's ``ValueError``/``UnicodeError`` (a port out of range, a broken IPv6
    literal or punycode label) and anything that is not a bare origin (a path, query, fragment,
    user info, non-ASCII text) all give ``None``.
    """
    if not origin.isascii() or not origin.isprintable():
        return None
    try:
        url = URL(origin)
        host = url.host  # decoded lazily: a bad punycode label raises here, not in URL()
    except (ValueError, UnicodeError):
        return None
    extras = url.raw_user or url.raw_password or url.raw_query_string or url.raw_fragment
    if url.scheme not in ("http", "https") or not host or extras or url.raw_path not in ("", "/"):
        return None
    return host.lower()


def _valid_origin(origin: str) -> bool:
    if origin == WILDCARD:
        return True
    if origin.startswith("*."):
        return "/" not in origin and len(origin) > 2
    return origin_host(origin) is not None


def check_tokens(rule: CorsRule) -> CorsRule:
    """``rule`` when every method and header name it lists is an HTTP token; else a 400.

    These go into response headers as they are: a control character there would make aiohttp
    refuse to send every response the rule covers.
    """
    for where, names in (
        ("methods", rule.methods),
        ("allowedHeaders", rule.allowed_headers),
        ("exposedHeaders", rule.exposed_headers),
    ):
        bad = first_non_token(names)
        if bad is not None:
            raise ApiError(f"{where}: {bad!r} is not an HTTP token", code=CORS_INVALID_HEADER, status=400)
    return rule


def parse_cors_rule(body: Any, *, rule_id: str, created_at: int) -> CorsRule:
    """Validate an admin API payload into a :class:`CorsRule`; raise a 400 :class:`ApiError`."""
    if not isinstance(body, Mapping):
        raise ApiError("Invalid CORS rule payload", code=INVALID_CORS_RULE, status=400)
    raw_name = body.get("name")
    name = raw_name.strip() if isinstance(raw_name, str) else ""
    if not name:
        raise ApiError("A rule name is required", code=CORS_NAME_REQUIRED, status=400)
    origins = _strings(body.get("origins"))
    if not origins:
        raise ApiError("At least one origin is required", code=CORS_ORIGINS_REQUIRED, status=400)
    bad_origin = next((o for o in origins if not _valid_origin(o)), None)
    if bad_origin is not None:
        raise ApiError(
            f"Invalid origin {bad_origin!r}: use scheme://host[:port], *.domain or *",
            code=CORS_INVALID_ORIGIN,
            status=400,
        )
    credentials = body.get("credentials") is True
    if credentials and WILDCARD in origins:
        raise ApiError(
            "Credentials cannot be enabled with a wildcard (*) origin. Specify explicit origins.",
            code=CORS_CREDENTIALS_WILDCARD,
            status=400,
        )
    methods = tuple(m.upper() for m in _strings(body.get("methods")))
    invalid = next((m for m in methods if m not in VALID_METHODS), None)
    if invalid is not None:
        raise ApiError(f"Invalid HTTP method: {invalid}", code=CORS_INVALID_METHOD, status=400)
    max_age = DEFAULT_CORS_MAX_AGE
    raw_max_age = body.get("maxAge")
    if raw_max_age not in (None, ""):
        try:
            parsed = float(raw_max_age)
        except (TypeError, ValueError):
            parsed = -1.0
        if isinstance(raw_max_age, bool) or not 0 <= parsed < float("inf"):
            raise ApiError("maxAge must be a non-negative number", code=CORS_INVALID_MAX_AGE, status=400)
        max_age = int(parsed)
    return check_tokens(
        CorsRule(
            id=rule_id,
            name=name,
            origins=origins,
            methods=methods or DEFAULT_CORS_METHODS,
            allowed_headers=_strings(body.get("allowedHeaders")),
            exposed_headers=_strings(body.get("exposedHeaders")),
            credentials=credentials,
            max_age=max_age,
            created_at=created_at,
        )
    )


def match_rule(origin: str, rules: Sequence[CorsRule]) -> CorsRule | None:
    """The first rule with a specific match for ``origin``, else the first ``*`` rule.

    A malformed ``origin`` matches nothing; ``null`` matches only ``*``.
    """
    host = origin_host(origin)
    if host is None and origin != OPAQUE_ORIGIN:
        return None
    wildcard: CorsRule | None = None
    for rule in rules:
        for pattern in rule.origins:
            if pattern == WILDCARD:
                wildcard = wildcard or rule
            elif host is None:
                continue
            elif pattern == origin or (pattern.startswith("*.") and host.endswith(pattern[1:].lower())):
                return rule
    return wildcard


def response_headers(origin: str, rule: CorsRule) -> CIMultiDict[str]:
    """What every response to ``origin`` gets under ``rule`` (actual requests and preflights)."""
    headers: CIMultiDict[str] = CIMultiDict()
    if WILDCARD in rule.origins and not rule.credentials:
        headers["Access-Control-Allow-Origin"] = WILDCARD
    else:
        headers["Access-Control-Allow-Origin"] = origin
        headers.add("Vary", "Origin")
    if rule.credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.exposed_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.exposed_headers)
    return headers


def preflight_headers(origin: str, rule: CorsRule, requested_headers: str | None) -> CIMultiDict[str]:
    """The 204 answer to ``OPTIONS`` with ``Access-Control-Request-Method``.

    Without ``allowedHeaders`` the requested headers are reflected (and ``Vary`` says so).
    """
    headers = response_headers(origin, rule)
    headers["Access-Control-Allow-Methods"] = ", ".join(rule.methods)
    if rule.allowed_headers:
        headers["Access-Control-Allow-Headers"] = ", ".join(rule.allowed_headers)
    elif requested_headers:
        headers["Access-Control-Allow-Headers"] = requested_headers
        headers.add("Vary", "Access-Control-Request-Headers")
    headers["Access-Control-Max-Age"] = str(rule.max_age)
    return headers
