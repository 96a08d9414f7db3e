r"""Proxy rules: validation, JSON shape, matching and the upstream URL a request maps to.

Called by ``_config`` (static rules), ``_proxy`` (dynamic rules) and ``_forward``. Patterns are
searched in the request's raw (percent-encoded) path with RE2 (``google-re2``), whose matching
time is linear in the path: every request runs every rule's pattern on the event loop, and the
rules API is open to anyone who reaches it when ``PROXY_API_KEY`` is unset (and to every holder
of the key otherwise), so a backtracking engine would let one rule such as ``^/x/(a+)+$`` freeze
every pod. Upstream's patterns are JavaScript regexes; what path rules use
(anchors, classes, ``\d``/``\w``/``\b``, groups, alternation, lazy and counted repetition, named
groups ``(?<name>...)`` or ``(?P<name>...)``, ``(?i)``) reads the same in RE2. Refused with
``PROXY_INVALID_PATTERN``: what needs backtracking (lookahead, lookbehind, backreferences, atomic
groups, possessive quantifiers), JavaScript-only escapes (``\u0041``: write ``\x{41}``; ``\cA``;
``[^]``), repetition counts over 1000, patterns longer than :data:`MAX_PATTERN_LENGTH` and ones
whose compiled program is too large. ``publicRoutes`` globs are matched with RE2 too.

``rewrite`` is a replacement for the matched part, written as in JavaScript (``$1``, ``$<name>``,
``$$``); an empty rewrite strips the match, which with ``^/prefix`` is a prefix strip.

A rule's ``headers`` often carry an upstream credential (``Authorization``), so the admin API
never answers their values: :meth:`ProxyRule.public_json` shows each as :data:`REDACTED` (upstream
answered them in clear). A client that sends such an answer back in a ``PUT`` keeps the stored
values (:func:`restore_redacted`); anywhere else the marker is refused, so it never becomes a
header value by mistake. Stored values belong to the target's origin (scheme, host, port): a
``PUT`` that moves a rule to another origin must send its ``headers`` (possibly ``{}``) with real
values, or it is refused with 409 ``PROXY_HEADERS_REQUIRED`` (:func:`require_headers_for_new_origin`),
so whoever may edit a rule cannot send an admin's stored credential to a server of their choice.

A ``target`` never carries credentials (``http://user:password@host``): 400 ``PROXY_INVALID_TARGET``
at create and update (a static rule stops the plugin, and the chart's schema refuses it), and no
message repeats them. The admin API would answer a target as it is, and aiohttp refuses to send
a URL's credentials beside an ``Authorization`` header; a credential belongs in ``headers``, which
the API never shows. A rule
stored before that refusal still loads (``parse_rule(stored=True)``): the API answers its target
with the userinfo shown as :data:`REDACTED`, the forwarder sends the credentials as a Basic
``Authorization`` header unless the request already has one (as upstream's Node proxy did) and
never puts them in a redirect, and a ``PUT`` must give the rule a target without them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import re2
from yarl import URL

from .._errors import ApiError
from .._http import HEADER_NAME

STATIC_ID_PREFIX = "static-"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

INVALID_RULE = "PROXY_INVALID_RULE"
INVALID_PATTERN = "PROXY_INVALID_PATTERN"
INVALID_TARGET = "PROXY_INVALID_TARGET"
INVALID_REWRITE = "PROXY_INVALID_REWRITE"
INVALID_HEADERS = "PROXY_INVALID_HEADERS"
INVALID_REDIRECT = "PROXY_INVALID_REDIRECT"
INVALID_REORDER = "PROXY_INVALID_REORDER"
INVALID_BASE = "PROXY_INVALID_BASE"
INVALID_PUBLIC_ROUTES = "PROXY_INVALID_PUBLIC_ROUTES"
SHADOWS_RESERVED = "PROXY_RULE_SHADOWS_RESERVED"
HEADERS_REQUIRED = "PROXY_HEADERS_REQUIRED"
#: Codes of :class:`RuleError` answered 409 (a conflict with what is stored or reserved), not 400.
_CONFLICT_CODES = frozenset({SHADOWS_RESERVED, HEADERS_REQUIRED})

#: What the admin API shows in place of every header value of a rule.
REDACTED = "[redacted]"

#: ``publicRoutes`` key that applies to every method.
ALL_METHODS = "ALL"
#: Longest ``pattern`` (and ``publicRoutes`` glob) accepted, in characters; upstream's are a few dozen.
MAX_PATTERN_LENGTH = 1024
#: RE2's memory budget per pattern (program and DFA cache); a pattern that needs more to compile
#: is refused, and matching past the cache falls back to RE2's NFA, still linear.
_RE2_MAX_MEM = 1 << 20

_TEMPLATE_TOKEN = re.compile(r"\$(?:(\$)|(\d+)|<([A-Za-z_]\w*)>|\{([A-Za-z_]\w*)\})")
#: ``base`` goes into ``<base href="...">`` verbatim, so it may not contain quotes or brackets.
#: Both matched whole (``fullmatch``): ``$`` would also accept a trailing newline.
_BASE_PATH = re.compile(r"/[A-Za-z0-9._~!$&()*+,;=:@%/-]*")
_METHOD = re.compile(r"[A-Z]+")
#: ``scheme://userinfo@`` at the start of a target (the userinfo ends at the authority's last ``@``).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")

PublicRoutes = tuple[str, ...] | Mapping[str, tuple[str, ...]]


class RuleError(ApiError, ValueError):
    """A rule cannot be used; ``code`` says which field is wrong (400; 409 when it shadows a base
    or moves to another origin without its headers)."""

    code = INVALID_RULE
    status = 400

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, status=409 if code in _CONFLICT_CODES else 400)


class Pattern(Protocol):
    """A compiled RE2 pattern: the part of its API the proxy uses (``re.Pattern``'s names)."""

    @property
    def groups(self) -> int: ...
    @property
    def groupindex(self) -> Mapping[str, int]: ...
    def search(self, text: str, /) -> object | None: ...
    def fullmatch(self, text: str, /) -> object | None: ...
    def sub(self, template: str, text: str, /, count: int = 0) -> str: ...


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr itself
    options.max_mem = _RE2_MAX_MEM
    return options


_RE2_OPTIONS = _re2_options()


def _within_cap(text: str, what: str, code: str) -> str:
    """``text`` (a pattern or a glob) when it is at most :data:`MAX_PATTERN_LENGTH` long."""
    if len(text) > MAX_PATTERN_LENGTH:
        raise RuleError(f"{what} is longer than {MAX_PATTERN_LENGTH} characters ({len(text)})", code=code)
    return text


def compile_pattern(pattern: str, *, code: str = INVALID_PATTERN) -> Pattern:
    """``pattern`` compiled with RE2, or a :class:`RuleError` with ``code`` saying why not."""
    try:
        compiled: Pattern = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):  # RE2's messages come as bytes
            reason = reason.decode("utf-8", "replace")
        raise RuleError(
            f"Invalid regex pattern {pattern!r}: {reason} (RE2 syntax: no lookaround or backreferences)",
            code=code,
        ) from None
    return compiled


def glob_regex(glob: str) -> str:
    """A path glob as a regex: ``**`` any depth, ``*`` within one segment, ``?`` one character."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def python_template(template: str, pattern: Pattern) -> str:
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
                raise RuleError(
                    f"rewrite refers to group ${number}, the pattern has fewer", code=INVALID_REWRITE
                )
            out.append(f"\\g<{int(number)}>")
        else:
            if name not in pattern.groupindex:
                raise RuleError(f"rewrite refers to unknown group $<{name}>", code=INVALID_REWRITE)
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
    secure: bool = True
    ws: bool = True
    base: str | None = None
    relative_paths: bool = False
    public_routes: PublicRoutes | None = None
    read_only: bool = False
    compiled: Pattern = field(default=compile_pattern(""), repr=False)
    _template: str | None = field(default=None, repr=False)
    _public: Mapping[str, Pattern] = field(default_factory=dict, repr=False)

    @property
    def rewrites_html(self) -> bool:
        return self.base is not None or self.relative_paths

    def is_public(self, raw_path: str, method: str) -> bool:
        """Whether ``publicRoutes`` lets ``method raw_path`` through without authentication."""
        return any(
            pattern.fullmatch(raw_path)
            for key in (ALL_METHODS, method.upper())
            if (pattern := self._public.get(key)) is not None
        )

    def as_json(self) -> dict[str, Any]:
        """Every field in the API's camelCase shape, header values included: what is stored and
        merged. The admin API answers :meth:`public_json` instead."""
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
            "secure": self.secure,
            "ws": self.ws,
            "base": self.base,
            "relativePaths": self.relative_paths,
            "publicRoutes": _public_json(self.public_routes),
            "readonly": self.read_only,
            "readOnly": self.read_only,
        }

    def public_json(self) -> dict[str, Any]:
        """What the admin API answers: :meth:`as_json` with each header value :data:`REDACTED`, and
        the credentials of a target stored before they were refused too."""
        data = self.as_json()
        data["headers"] = dict.fromkeys(self.headers, REDACTED)
        data["target"] = without_userinfo(self.target)
        return data

    def stored_json(self) -> str:
        """What ``proxy_rules.rule_json`` holds (everything but ``readOnly``)."""
        data = self.as_json()
        del data["readOnly"], data["readonly"]
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
        raise RuleError(f"{key} must be a string", code=INVALID_RULE)
    return value


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = _optional_text(data, key)
    if value is None or not value.strip():
        raise RuleError("pattern and target are required", code=INVALID_RULE)
    return value


def _flag(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RuleError(f"{key} must be true or false", code=INVALID_RULE)
    return value


def without_userinfo(target: str) -> str:
    """``target`` with the userinfo of its authority (``user:password@``) shown as :data:`REDACTED`."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", target, count=1)


def _target(raw: str, *, stored: bool = False) -> str:
    """The target URL; credentials in it are refused unless ``stored`` (a row from before)."""
    text = raw.strip()
    shown = without_userinfo(text)  # what a message may repeat
    try:
        url = URL(text)
    except (ValueError, TypeError) as exc:
        raise RuleError(f"invalid target URL {shown!r}: {exc}", code=INVALID_TARGET) from exc
    if not stored and (url.raw_user is not None or url.raw_password is not None or shown != text):
        raise RuleError(
            "target must not carry credentials (user:password@); send them in the rule's headers "
            "(Authorization), which the API never shows",
            code=INVALID_TARGET,
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise RuleError(f"target must be an absolute http(s) URL (got {shown!r})", code=INVALID_TARGET)
    if url.query_string or url.fragment:
        raise RuleError("target must not have a query or a fragment", code=INVALID_TARGET)
    return str(url)


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RuleError("headers must be an object of header name to value", code=INVALID_HEADERS)
    headers: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not HEADER_NAME.fullmatch(key):
            raise RuleError(f"invalid header name {key!r}", code=INVALID_HEADERS)
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise RuleError(f"header {key} must be a single-line string", code=INVALID_HEADERS)
        if value == REDACTED:
            raise RuleError(
                f"header {key}: {REDACTED} is what the API shows in place of a stored value, and this "
                "rule has none for it; send the value",
                code=INVALID_HEADERS,
            )
        headers[key] = value
    return headers


def restore_redacted(raw: Any, stored: Mapping[str, str]) -> Any:
    """``raw`` (a PUT's ``headers``) with each :data:`REDACTED` value put back to the stored value
    of that header (names compared case-insensitively); anything else is left to :func:`parse_rule`."""
    if not isinstance(raw, Mapping):
        return raw
    by_name = {name.lower(): value for name, value in stored.items()}
    return {
        name: by_name.get(name.lower(), value) if value == REDACTED and isinstance(name, str) else value
        for name, value in raw.items()
    }


def target_origin(target: str) -> str:
    """``scheme://host[:port]`` of a validated target (default port left out, no userinfo)."""
    return str(URL(target).origin())


def require_headers_for_new_origin(current: ProxyRule, updated: ProxyRule, sent: Mapping[str, Any]) -> None:
    """Refuse (409 :data:`HEADERS_REQUIRED`) an update ``sent`` that moves ``current`` to another
    origin without giving the headers for it: the stored values were given for ``current``'s
    origin, so they go to a new one only when sent again. A :data:`REDACTED` value does not count
    (it stands for the stored value). The message names origins and header names, never values.
    """
    old, new = target_origin(current.target), target_origin(updated.target)
    if old == new:
        return
    raw = sent.get("headers")
    kept: list[str] = []
    if isinstance(raw, Mapping):
        kept = sorted(str(name) for name, value in raw.items() if value == REDACTED)
    if "headers" in sent and not kept:
        return
    reason = f"headers {', '.join(kept)} are sent as {REDACTED}" if kept else "the request has no headers"
    raise RuleError(
        f"target moves the rule from {old} to {new} and {reason}: the stored header values are kept "
        "for their origin only; send the headers for the new origin (possibly {}) in the same request",
        code=HEADERS_REQUIRED,
    )


def _redirect(raw: Any) -> int | None:
    if raw is None or raw is False:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw not in REDIRECT_STATUSES:
        allowed = ", ".join(map(str, sorted(REDIRECT_STATUSES)))
        raise RuleError(f"redirect must be null or one of {allowed}", code=INVALID_REDIRECT)
    return raw


def _public_json(routes: PublicRoutes | None) -> Any:
    if routes is None:
        return None
    if isinstance(routes, tuple):
        return list(routes)
    return {method: list(globs) for method, globs in routes.items()}


def _base(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not _BASE_PATH.fullmatch(raw):
        raise RuleError("base must be a path starting with / (no quotes or brackets)", code=INVALID_BASE)
    return raw


def _globs(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(g, str) and g.startswith("/") for g in raw):
        raise RuleError(f"{where} must be a list of path globs starting with /", code=INVALID_PUBLIC_ROUTES)
    return tuple(_within_cap(glob, f"a glob of {where}", INVALID_PUBLIC_ROUTES) for glob in raw)


def _public_routes(raw: Any) -> PublicRoutes | None:
    """``[globs]`` (every method) or ``{"ALL"|METHOD: [globs]}``."""
    if raw is None:
        return None
    if isinstance(raw, list):
        return _globs(raw, "publicRoutes")
    if not isinstance(raw, Mapping):
        raise RuleError(
            "publicRoutes must be a list of globs or an object of method to globs", code=INVALID_PUBLIC_ROUTES
        )
    routes: dict[str, tuple[str, ...]] = {}
    for method, globs in raw.items():
        if not isinstance(method, str) or not _METHOD.fullmatch(method.upper()):
            raise RuleError(
                f"publicRoutes key {method!r} is not an HTTP method or ALL", code=INVALID_PUBLIC_ROUTES
            )
        routes[method.upper()] = _globs(globs, f"publicRoutes.{method}")
    return routes


def _compile_public(routes: PublicRoutes | None) -> dict[str, Pattern]:
    by_method = {ALL_METHODS: routes} if isinstance(routes, tuple) else dict(routes or {})
    return {
        method: compile_pattern("|".join(f"(?:{glob_regex(g)})" for g in globs), code=INVALID_PUBLIC_ROUTES)
        for method, globs in by_method.items()
        if globs
    }


def parse_rule(
    data: Any, *, rule_id: str, order: int, read_only: bool = False, stored: bool = False
) -> ProxyRule:
    """Validate ``data`` (API/manifest JSON) into a :class:`ProxyRule`; raise :class:`RuleError`.

    ``stored`` is for rows of ``proxy_rules``: one stored before credentials in targets were
    refused still loads (see the module's docstring).
    """
    if not isinstance(data, Mapping):
        raise RuleError("a rule must be a JSON object", code=INVALID_RULE)
    pattern = _required_text(data, "pattern")
    target = _required_text(data, "target")
    compiled = compile_pattern(_within_cap(pattern, "Invalid regex pattern: it", INVALID_PATTERN))
    rewrite = _optional_text(data, "rewrite")
    public_routes = _public_routes(data.get("publicRoutes"))
    return ProxyRule(
        id=rule_id,
        pattern=pattern,
        target=_target(target, stored=stored),
        name=_optional_text(data, "name") or "",
        rewrite=rewrite,
        change_origin=_flag(data, "changeOrigin", False),
        headers=_headers(data.get("headers")),
        enabled=_flag(data, "enabled", True),
        order=order,
        redirect=_redirect(data.get("redirect")),
        secure=_flag(data, "secure", True),
        ws=_flag(data, "ws", True),
        base=_base(data.get("base")),
        relative_paths=_flag(data, "relativePaths", False),
        public_routes=public_routes,
        read_only=read_only,
        compiled=compiled,
        _template=None if rewrite is None else python_template(rewrite, compiled),
        _public=_compile_public(public_routes),
    )
