"""Coverage-guided fuzzing (atheris) of what an outsider can send to turso-server. Run by hand.

Not a test module (pytest never collects ``hack/``); the suite's hypothesis tests
(``tests/turso_server/test_turso_server_fuzz.py``) keep the inputs this harness found as
``@example`` regression cases. Each input is one of:

* a raw request head, parsed by aiohttp's own (C) request parser exactly as the data port does,
  then run through what both listeners run before any handler: the head check, the bearer token
  check on both ports (raw and JWT), the target split and the namespace name check. A parser
  refusal must give a reason that does not quote the input;
* an admin JSON body: ``parse_json_object``, then ``parse_duration``/``parse_expires_in`` on its
  ``ttl`` and ``expiresIn``.

A finding is any exception other than the ``ApiError`` each step may raise, or a token (the
configured ones, or the one the input carried) inside an error's detail. Usage::

    .venv/bin/pip install -e '.[fuzz]'
    mkdir -p .cache/fuzz-corpus
    .venv/bin/python hack/fuzz/fuzz_inputs.py .cache/fuzz-corpus hack/fuzz/seeds \
        -dict=hack/fuzz/inputs.dict -max_total_time=300

libFuzzer prints ``cov:`` (edges) and ``exec/s``; a finding stops the run and writes
``crash-<sha1>`` with the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import atheris

with atheris.instrument_imports(include=["turso_server", "jwt"]):
    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.http_parser import HttpRequestParser

    from turso_server._admin import parse_expires_in, parse_json_object
    from turso_server._auth import AdminAuth, DataAuth, ScopedTokens
    from turso_server._durations import parse_duration
    from turso_server._errors import ApiError, BadRequestError, UnauthorizedError
    from turso_server._http import check_head, parse_error_reason
    from turso_server._names import validate_name
    from turso_server._proxy import split_target

DATA_TOKEN = "data-token-for-fuzzing"
ADMIN_TOKEN = "admin-token-for-fuzzing"
SIGNING_KEY = "signing-key-for-fuzzing-0123456789abcdef"
SCOPED = ScopedTokens(SIGNING_KEY)
DATA_AUTH = DataAuth(DATA_TOKEN, SCOPED, binding=lambda _name: None)
ADMIN_AUTH = AdminAuth(ADMIN_TOKEN)
LOOP = asyncio.new_event_loop()


def _parser() -> HttpRequestParser:
    return HttpRequestParser(mock.Mock(), LOOP, 2**16, max_line_size=8190, max_field_size=8190)


def _check_detail(exc: ApiError, *secrets: str) -> None:
    for secret in (DATA_TOKEN, ADMIN_TOKEN, *secrets):
        if len(secret) >= 8 and secret in exc.detail:
            raise AssertionError(f"{type(exc).__name__} quotes a token: {exc.detail!r}")


def fuzz_head(data: bytes) -> None:
    try:
        messages, _upgraded, _tail = _parser().feed_data(data)
    except HttpProcessingError as exc:
        reason = parse_error_reason(exc)
        if not (reason.isascii() and reason.isprintable()):
            raise AssertionError(f"unprintable reason {reason!r}") from exc
        marker = data.find(b"Bearer ")
        if marker >= 0:
            token = data[marker + 7 :].split(b"\r", 1)[0].decode("utf-8", "surrogateescape")
            if len(token) >= 8 and token in reason:
                raise AssertionError(f"the parser's reason quotes the token: {reason!r}") from exc
        return
    for message, _payload in messages:
        request = cast(web.BaseRequest, SimpleNamespace(raw_path=message.path, headers=message.headers))
        header = message.headers.get("Authorization")
        token = (header or "").partition(" ")[2]
        try:
            check_head(request)
        except BadRequestError as exc:
            _check_detail(exc, token)
        for check in (DATA_AUTH.authenticate, ADMIN_AUTH.check):
            try:
                check(header)
            except UnauthorizedError as exc:
                _check_detail(exc, token)
        with contextlib.suppress(BadRequestError):
            segment, _rest, _query = split_target(message.path)
            validate_name(segment)


def fuzz_admin_body(data: bytes) -> None:
    try:
        payload = parse_json_object(data)
    except ApiError:
        return
    for key in ("ttl", "expiresIn"):
        value: Any = payload.get(key)
        if not isinstance(value, str):
            continue
        with contextlib.suppress(ValueError):
            parse_duration(value)
        with contextlib.suppress(ApiError):
            parse_expires_in(value)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, rest = data[0], data[1:]
    if selector & 1:
        fuzz_head(rest)
    else:
        fuzz_admin_body(rest)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
