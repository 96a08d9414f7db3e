"""No ``/v2/pipeline`` leaves its child's connection inside a transaction.

tursodb 0.7.0 serves every request of a child on one shared connection and never resets it between
requests, and the SQL guard lets a lone ``BEGIN`` (or a ``SAVEPOINT``, or a batch whose ``COMMIT``
failed) through. Left alone, the next client's pushes would run inside that transaction: the first
client could roll back their acknowledged writes, and an admin backup (``VACUUM INTO``) would fail
with "cannot VACUUM INTO from within a transaction". So the proxy appends one hidden request to
every forwarded pipeline, :data:`RESET`, a batch whose only step is ``ROLLBACK`` under the
condition "not in autocommit": a no-op (the step is skipped) unless the client's own requests left
a transaction open. tursodb answers every request of a pipeline in order, whatever the earlier ones
did, so its result is always the last of ``results``, and :func:`strip` cuts exactly that element
out of the reply, leaving every other byte as tursodb wrote it (a client sees what it would have
seen, minus an open transaction). A reply whose last result is not that answer (a 500, or any
other shape) means the reset is not known to have run: the proxy then sends :data:`RESET` alone
before it lets go of the child (:func:`reset_ran` checks that answer).

Why not refuse pipelines whose transaction control does not close instead: whether a transaction
is still open after a pipeline depends on run time (a failed ``COMMIT``, a step skipped by its
condition, ``SAVEPOINT`` outside a transaction opening one, ``RELEASE`` of the outermost savepoint
closing it, a constraint's ``ON CONFLICT ROLLBACK``), so a static check would refuse valid
pipelines or miss some; asking tursodb itself (``is_autocommit``) is exact.

The request keeps the client's bytes: the hidden request is spliced in before the ``]`` that ends
``requests`` (found from the end when ``requests`` is the body's last key, as every Hrana client
sends it, else by walking the body's members), never re-serialised. Used by ``_proxy``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._spool import Spool

_IN_TRANSACTION = {"type": "not", "cond": {"type": "is_autocommit"}}
RESET_REQUEST: dict[str, Any] = {
    "type": "batch",
    "batch": {"steps": [{"condition": _IN_TRANSACTION, "stmt": {"sql": "ROLLBACK"}}]},
}
_RESET_JSON = json.dumps(RESET_REQUEST, separators=(",", ":")).encode()
RESET = b'{"requests":[' + _RESET_JSON + b"]}"  # the reset on its own
# How tursodb 0.7.0 starts the answer to a batch; it can only occur as structure (a JSON string
# escapes its quotes), and the reset's answer holds it exactly once, at its start.
_BATCH_ANSWER = b'{"type":"ok","response":{"type":"batch","result":{"step_results":['
_END = b"]}"  # the end of ``results`` and of the document: ``results`` is tursodb's last key
TAIL = 4096  # the reset's answer is ~250 bytes; anything longer is not that answer
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_JSON_WHITESPACE = b" \t\n\r"


def with_reset(body: bytes, document: dict[str, Any]) -> bytes:
    """``body`` (a pipeline the guard parsed into ``document``) with :data:`RESET_REQUEST` appended."""
    requests = document["requests"]
    comma = b"," if requests else b""
    if list(document)[-1] == "requests":
        # The body ends with the requests array, then "}", each maybe followed by whitespace.
        end = len(body.rstrip(_JSON_WHITESPACE)) - 1
        close = len(body[:end].rstrip(_JSON_WHITESPACE)) - 1
        return body[:close] + comma + _RESET_JSON + body[close:]
    text = body.decode("utf-8")
    close = _requests_close(text)
    return (text[:close] + comma.decode() + _RESET_JSON.decode() + text[close:]).encode("utf-8")


def _requests_close(text: str) -> int:
    """The offset of the ``]`` that ends the top-level ``requests`` array of a strict JSON object."""
    decoder = json.JSONDecoder()
    pos = _skip(text, 0) + 1  # past "{"
    close = -1
    while True:
        pos = _skip(text, pos)
        if text[pos] == "}":
            break
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)  # past ":"
        _, pos = decoder.raw_decode(text, pos)
        if key == "requests":
            close = pos - 1
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos += 1
    if close < 0:
        raise ValueError("no requests array")  # the guard made sure there is one
    return close


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _is_reset_answer(answer: Any) -> bool:
    """Whether ``answer`` is tursodb's answer to :data:`RESET_REQUEST`, its ``ROLLBACK`` skipped or run."""
    try:
        result = answer["response"]["result"]
        (step,) = result["step_results"]
        errors = result["step_errors"]
    except (KeyError, TypeError, ValueError):
        return False
    ran = step is None or (isinstance(step, dict) and step.get("cols") == [] and step.get("rows") == [])
    return answer.get("type") == "ok" and errors == [None] and ran


async def strip(spool: Spool) -> bool:
    """Cut the reset's answer, the last element of ``results``, out of a 200 reply in ``spool``.

    ``False`` (and ``spool`` untouched) when the reply does not end with that answer.
    """
    tail = await spool.tail(TAIL)
    if not tail.endswith(_END):
        return False
    start = tail.rfind(_BATCH_ANSWER)
    if start < 1 or tail[start - 1 : start] not in (b",", b"["):
        return False
    try:
        answer = json.loads(tail[start : -len(_END)])
    except ValueError:
        return False
    if not _is_reset_answer(answer):
        return False
    cut = start - 1 if tail[start - 1 : start] == b"," else start
    await spool.replace_tail(spool.size - len(tail) + cut, _END)
    return True


def reset_ran(reply: bytes) -> bool:
    """Whether ``reply``, tursodb's 200 answer to :data:`RESET` alone, says the reset ran."""
    try:
        results = json.loads(reply)["results"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(results, list) and len(results) == 1 and _is_reset_answer(results[0])
