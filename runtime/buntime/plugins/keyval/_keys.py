"""Keys: tuples of parts encoded into BLOBs whose byte order is the key order.

Called by the Kv store (every statement compares encoded keys) and by the HTTP layer (keys in
URL paths, query strings and JSON bodies). Each part starts with a type tag, so parts of
different types sort by tag, and parts are self-delimiting, so a key's encoding is a byte prefix
of its children's encodings:

=====  =========  ==========================================================================
tag    type       body
=====  =========  ==========================================================================
0x01   bytes      the bytes with ``0x00`` escaped as ``0x00 0xFF``, then a ``0x00`` terminator
0x02   str        UTF-8, escaped and terminated like bytes
0x03   number     float64 big-endian; sign bit flipped when >= 0, all bits flipped when < 0
0x04   big int    ``0x02 len magnitude`` (>= 0) or ``0x01 ~len ~magnitude`` (< 0)
0x05   bool       ``0x01`` false, ``0x02`` true
=====  =========  ==========================================================================

This is the FoundationDB tuple-layer escape rather than upstream's ``0xFF``-prefix escape plus
``0x00`` joins, because upstream's sorts ``b"\\x00"`` after ``b"\\x01"``. Python ``int`` uses
tag 0x03 when float64 holds it exactly (so ``1`` and ``1.0`` are one key, as in JavaScript) and
tag 0x04 otherwise; big ints therefore sort after every float-sized number. Decoding returns
``int`` for integral numbers within ±2**53. The children of prefix ``p`` are exactly the keys in
``[enc(p) + 0x00, enc(p) + 0xFF)``: after a part the next byte is a tag (0x01-0x05), never
0xFF, while an escaped NUL inside a string continues with 0xFF.
"""

from __future__ import annotations

import base64
import binascii
import json
import json.encoder
import math
import re
import struct
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

from .._errors import InvalidTextError
from .._json import client_json
from ._errors import InvalidKeyError, InvalidRequestError

KeyPart = str | bytes | int | float | bool
Key = tuple[KeyPart, ...]

TAG_BYTES = 0x01
TAG_STR = 0x02
TAG_NUMBER = 0x03
TAG_BIGINT = 0x04
TAG_BOOL = 0x05

MAX_KEY_BYTES = 2048
_MAX_SAFE_INT = 2**53
#: Upper bound of every encoded key (all tags are below it); ``enc + RANGE_END`` ends a prefix range.
RANGE_END = b"\xff"
#: JSON spelling of a bytes part: ``{"$bytes": "<base64>"}``.
BYTES_JSON_FIELD = "$bytes"
#: Matched whole (``fullmatch``): with ``$``, "5\n" would become the number 5.
_NUMBER_SEGMENT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_F64 = struct.Struct(">d")
_U64 = struct.Struct(">Q")
_SIGN_BIT = 1 << 63
_ALL_BITS = (1 << 64) - 1
_BYTES_TAG = bytes([TAG_BYTES])
_STR_TAG = bytes([TAG_STR])
_NUMBER_TAG = bytes([TAG_NUMBER])
#: A string as a JSON string literal (the C encoder ``json.dumps`` uses; ASCII-only output).
_json_str = json.encoder.encode_basestring_ascii


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00"


def _encode_float(value: float) -> bytes:
    if value == 0.0:
        value = 0.0  # -0.0 and 0.0 are one key
    bits: int = _U64.unpack(_F64.pack(value))[0]
    # >= 0: flip the sign bit; < 0: flip every bit (so larger magnitudes sort lower).
    return _U64.pack(bits ^ _SIGN_BIT if value >= 0 else bits ^ _ALL_BITS)


def _encode_bigint(value: int) -> bytes:
    magnitude = abs(value).to_bytes((abs(value).bit_length() + 7) // 8, "big")
    if len(magnitude) > 255:
        raise InvalidKeyError("integer key parts are limited to 255 bytes")
    if value >= 0:
        return bytes([0x02, len(magnitude)]) + magnitude
    # Larger magnitudes sort lower among negatives: invert the length and every byte.
    return bytes([0x01, 255 - len(magnitude)]) + bytes(b ^ 0xFF for b in magnitude)


def encode_part(part: object) -> bytes:
    """Encode one key part; raise :class:`InvalidKeyError` for unsupported types."""
    if isinstance(part, str):
        return _STR_TAG + _escape(part.encode("utf-8"))
    if isinstance(part, bool):  # before int: bool is an int subclass
        return bytes([TAG_BOOL, 0x02 if part else 0x01])
    if isinstance(part, bytes | bytearray | memoryview):
        return _BYTES_TAG + _escape(bytes(part))
    if isinstance(part, int):
        if -_MAX_SAFE_INT <= part <= _MAX_SAFE_INT:  # float64 holds it exactly
            return _NUMBER_TAG + _encode_float(float(part))
        try:
            as_float = float(part)
        except OverflowError:
            as_float = math.inf
        if math.isfinite(as_float) and int(as_float) == part:
            return _NUMBER_TAG + _encode_float(as_float)
        return bytes([TAG_BIGINT]) + _encode_bigint(part)
    if isinstance(part, float):
        if not math.isfinite(part):
            raise InvalidKeyError("number key parts must be finite (no NaN or infinity)")
        return _NUMBER_TAG + _encode_float(part)
    raise InvalidKeyError(
        f"unsupported key part type {type(part).__name__}: use str, bytes, int, float or bool"
    )


def encode_key(key: object, *, allow_empty: bool = True) -> bytes:
    """Encode a key (a tuple or list of parts) into its order-preserving BLOB."""
    if not isinstance(key, tuple | list) and (isinstance(key, str | bytes) or not isinstance(key, Sequence)):
        raise InvalidKeyError("a key must be a list or tuple of parts, e.g. ['users', 42]")
    if not key and not allow_empty:
        raise InvalidKeyError("the key must have at least one part")
    encoded = b"".join([encode_part(p) for p in key])
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"the encoded key is {len(encoded)} bytes; the limit is {MAX_KEY_BYTES}")
    return encoded


def _unescape(data: bytes, pos: int) -> tuple[bytes, int]:
    nul = data.index(b"\x00", pos)
    if data[nul + 1 : nul + 2] != b"\xff":  # no escaped NUL: the common case, one slice
        return data[pos:nul], nul + 1
    out = bytearray()
    while True:
        nul = data.index(b"\x00", pos)
        out += data[pos:nul]
        if nul + 1 < len(data) and data[nul + 1] == 0xFF:
            out.append(0)
            pos = nul + 2
        else:
            return bytes(out), nul + 1


def _decode_float(body: bytes) -> float | int:
    bits: int = _U64.unpack(body)[0]
    value: float = _F64.unpack(_U64.pack(bits ^ _SIGN_BIT if bits & _SIGN_BIT else bits ^ _ALL_BITS))[0]
    if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
        return int(value)
    return value


def decode_key(data: bytes) -> Key:
    """Decode a BLOB made by :func:`encode_key` back into a tuple of parts."""
    parts: list[KeyPart] = []
    pos = 0
    try:
        while pos < len(data):
            tag = data[pos]
            pos += 1
            if tag in (TAG_BYTES, TAG_STR):
                raw, pos = _unescape(data, pos)
                parts.append(raw.decode("utf-8") if tag == TAG_STR else raw)
            elif tag == TAG_NUMBER:
                parts.append(_decode_float(data[pos : pos + 8]))
                pos += 8
            elif tag == TAG_BIGINT:
                sign, length = data[pos], data[pos + 1]
                if sign == 0x02:
                    parts.append(int.from_bytes(data[pos + 2 : pos + 2 + length], "big"))
                else:
                    length = 255 - length
                    magnitude = bytes(b ^ 0xFF for b in data[pos + 2 : pos + 2 + length])
                    parts.append(-int.from_bytes(magnitude, "big"))
                pos += 2 + length
            elif tag == TAG_BOOL:
                parts.append(data[pos] == 0x02)
                pos += 1
            else:
                raise InvalidKeyError(f"unknown key tag 0x{tag:02x} at byte {pos - 1}")
    except (IndexError, ValueError, struct.error) as exc:
        if isinstance(exc, InvalidKeyError):
            raise
        raise InvalidKeyError(f"corrupt encoded key {data.hex()}: {exc}") from exc
    return tuple(parts)


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """``[lo, hi)`` of the keys strictly under an encoded prefix (the prefix itself excluded)."""
    return prefix + b"\x00", prefix + RANGE_END


def hex_key(encoded: bytes) -> str:
    """Upper-case hex: sorts like the bytes (search's ``doc_key`` columns hold it)."""
    return encoded.hex().upper()


# -- JSON and URL forms (HTTP layer) -----------------------------------------------------------
def part_to_json(part: KeyPart) -> Any:
    if isinstance(part, bytes):
        return {BYTES_JSON_FIELD: base64.b64encode(part).decode("ascii")}
    return part


def key_to_json(key: Key) -> list[Any]:
    """A key as JSON: bytes parts become ``{"$bytes": base64}``, the rest stay as they are."""
    return [part_to_json(p) for p in key]


def key_json_text(key: Key) -> str:
    """``json.dumps(key_to_json(key))``, compact, without building the list or an encoder:
    what responses that copy stored values through put around them (a list-100 formats 100).
    Key parts are never NaN or infinite, so ``repr`` is JSON for every number."""
    out = []
    for part in key:
        if isinstance(part, str):
            out.append(_json_str(part))
        elif isinstance(part, bool):
            out.append("true" if part else "false")
        elif isinstance(part, int):
            out.append(int.__repr__(part))
        elif isinstance(part, float):
            out.append(float.__repr__(part))
        else:
            out.append(f'{{"{BYTES_JSON_FIELD}":"{base64.b64encode(part).decode("ascii")}"}}')
    return "[" + ",".join(out) + "]"


def part_from_json(raw: object) -> KeyPart:
    if isinstance(raw, str | bool | int | float):
        return raw
    if isinstance(raw, dict) and set(raw) == {BYTES_JSON_FIELD} and isinstance(raw[BYTES_JSON_FIELD], str):
        try:
            return base64.b64decode(raw[BYTES_JSON_FIELD], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidKeyError(f"invalid base64 in a {BYTES_JSON_FIELD} key part") from exc
    raise InvalidKeyError(
        f"unsupported key part {raw!r}: use a string, number, boolean or {{{BYTES_JSON_FIELD!r}: base64}}"
    )


def key_from_json(raw: object) -> Key:
    """A key from a JSON array; the parts are validated by encoding them."""
    if not isinstance(raw, list):
        raise InvalidKeyError('a key must be a JSON array of parts, e.g. ["users", 42]')
    key = tuple(part_from_json(p) for p in raw)
    encode_key(key)
    return key


def segment_to_part(segment: str) -> KeyPart:
    """A URL path segment: numbers (``42``, ``-1``, ``2.5``) become numbers, the rest stay strings."""
    if _NUMBER_SEGMENT.fullmatch(segment):
        try:
            return float(segment) if "." in segment else int(segment)
        except ValueError as exc:  # over Python's 4300-digit int limit: far over the 255-byte one
            raise InvalidKeyError("integer key parts are limited to 255 bytes") from exc
    return segment


def key_from_path(path: str) -> Key:
    """``users/42/name`` -> ``("users", 42, "name")``; segments are percent-decoded."""
    if not path.strip("/"):
        return ()
    return tuple(segment_to_part(unquote(s)) for s in path.strip("/").split("/"))


def key_to_path(key: Key) -> str:
    """``("users", 42)`` -> ``users/42``, the inverse of :func:`key_from_path` for string and
    number parts (each part percent-encoded, so a ``/`` or ``,`` in a part survives) — but not for
    a string that reads as a number (``"42"``), a boolean, an exponent float (``1e-05``), an
    empty part or bytes: :func:`key_to_token` is lossless."""
    return "/".join(quote(str(part), safe="") for part in key)


def key_to_token(key: Key) -> str:
    """``key`` as the prefix poll's ``versionstamps=<key>:<vs>,...`` names it, losslessly.

    The path form (``users/42``, what upstream sent: parts joined with ``/``) when
    :func:`key_from_path` gives ``key`` back exactly; otherwise the key's JSON with everything but
    its leading ``[`` percent-encoded (so no ``,`` or ``:`` splits it). A path form never starts
    with a raw ``[`` (a part's own ``[`` is ``%5B``), so :func:`key_from_token` tells them apart.
    """
    path = key_to_path(key)
    if encode_key(key_from_path(path)) == encode_key(key):  # type-exact: True == 1 in Python
        return path
    return quote(key_json_text(key), safe="[")


def key_from_token(token: str) -> Key:
    """The key of a :func:`key_to_token` token (or any :func:`key_from_query` form a client sends)."""
    return key_from_query(unquote(token) if token.startswith("[") else token) or ()


def key_from_query(raw: str | None) -> Key | None:
    """A key in a query parameter: a JSON array (``["a",1]``) or a path (``a/1``); empty is ``()``."""
    if raw is None:
        return None
    text = raw.strip()
    if text.startswith("["):
        try:
            return key_from_json(client_json(text))
        except ValueError as exc:
            if isinstance(exc, InvalidKeyError | InvalidTextError):
                raise
            raise InvalidKeyError(f"invalid JSON key {text!r}: {exc}") from exc
    return key_from_path(text)


def encode_cursor(encoded: bytes) -> str:
    """An opaque cursor: the last key's BLOB, base64url without padding."""
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decode_key(data)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"invalid cursor {cursor!r}", code="INVALID_CURSOR") from exc
    if not data:
        raise InvalidRequestError("invalid empty cursor", code="INVALID_CURSOR")
    return data
