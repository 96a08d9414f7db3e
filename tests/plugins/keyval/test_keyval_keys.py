"""Key encoding: round trips, byte order equals key order, prefix ranges, parsing from HTTP forms."""

from __future__ import annotations

import json
import random

import pytest

from buntime.plugins.keyval import InvalidKeyError, InvalidRequestError, decode_key, encode_key
from buntime.plugins.keyval._keys import (
    decode_cursor,
    encode_cursor,
    key_from_json,
    key_from_path,
    key_from_query,
    key_json_text,
    key_to_json,
    prefix_range,
)

ROUND_TRIPS = [
    ("users", 42, "name"),
    ("", "a\x00b", "\x00", "\u00fcnicode \u2603"),
    (b"", b"\x00", b"\xff\x00\xff", b"abc"),
    (0, -1, 1.5, -2.25, 2**53, -(2**53), 1e300, -1e-300),
    (2**53 + 1, -(2**53) - 1, 10**40, -(10**40)),
    (True, False, "x", 1, b"y"),
]


@pytest.mark.parametrize("key", ROUND_TRIPS)
def test_round_trip(key: tuple) -> None:  # type: ignore[type-arg]
    assert decode_key(encode_key(key)) == key


def test_integral_floats_decode_as_ints_and_minus_zero_is_zero() -> None:
    assert decode_key(encode_key((3.0,))) == (3,)
    assert isinstance(decode_key(encode_key((3.0,)))[0], int)
    assert encode_key((-0.0,)) == encode_key((0,)) == encode_key((0.0,))


def _sorted_by_encoding(keys: list[tuple]) -> list[tuple]:  # type: ignore[type-arg]
    return sorted(keys, key=encode_key)


def test_byte_order_is_key_order_within_each_type() -> None:
    rng = random.Random(7)
    alphabet = ["", "\x00", "\x01", "a", "b", "\xff", "\u00e9", "\U0001f600"]
    strings = [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))),) for _ in range(300)]
    assert _sorted_by_encoding(strings) == sorted(strings)
    blobs = [(bytes(rng.choice([0, 1, 2, 254, 255]) for _ in range(rng.randint(0, 4))),) for _ in range(300)]
    assert _sorted_by_encoding(blobs) == sorted(blobs)
    numbers = [
        (rng.choice([rng.uniform(-1e6, 1e6), rng.randint(-(10**6), 10**6), 0, -0.5]),) for _ in range(300)
    ]
    assert _sorted_by_encoding(numbers) == sorted(numbers)
    bigints = [(rng.choice([1, -1]) * (2**53 + rng.randint(1, 10**30)),) for _ in range(300)]
    assert _sorted_by_encoding(bigints) == sorted(bigints)
    assert _sorted_by_encoding([(True,), (False,)]) == [(False,), (True,)]


def test_multi_part_keys_sort_part_by_part() -> None:
    keys = [("a",), ("a", 1), ("a", 2), ("a", "x"), ("a\x00",), ("a", 1, "z"), ("b",), ("a", 1.5)]
    # A key sorts before its children; strings (tag 0x02) before numbers (tag 0x03).
    assert _sorted_by_encoding(keys) == [
        ("a",),
        ("a", "x"),
        ("a", 1),
        ("a", 1, "z"),
        ("a", 1.5),
        ("a", 2),
        ("a\x00",),
        ("b",),
    ]


def test_types_sort_by_tag() -> None:
    keys = [(True,), (2**60 + 1,), (5,), ("s",), (b"b",)]
    assert [k[0] for k in _sorted_by_encoding(keys)] == [b"b", "s", 5, 2**60 + 1, True]


def test_prefix_range_holds_exactly_the_children() -> None:
    lo, hi = prefix_range(encode_key(("a",)))
    inside = [("a", 1), ("a", "b"), ("a", b"\x00"), ("a", True, "deep")]
    outside = [("a",), ("a\x00b",), ("a\x00",), ("ab",), ("b",), ("",)]
    for key in inside:
        assert lo <= encode_key(key) < hi, key
    for key in outside:
        assert not lo <= encode_key(key) < hi, key
    assert prefix_range(b"") == (b"\x00", b"\xff")


@pytest.mark.parametrize(
    "bad",
    [
        "users",
        b"users",
        42,
        None,
        ("a", None),
        ("a", ["nested"]),
        (float("nan"),),
        (float("inf"),),
        ("x" * 3000,),
    ],
)
def test_invalid_keys(bad: object) -> None:
    with pytest.raises(InvalidKeyError):
        encode_key(bad)


def test_empty_key_only_where_allowed() -> None:
    assert encode_key(()) == b""
    with pytest.raises(InvalidKeyError):
        encode_key((), allow_empty=False)


def test_json_forms() -> None:
    key = ("a", 1, 2.5, True, b"\x00\xff")
    as_json = key_to_json(key)
    assert as_json == ["a", 1, 2.5, True, {"$bytes": "AP8="}]
    assert key_from_json(as_json) == key
    for bad in ["a", [None], [{"$bytes": "!!"}], [{"other": 1}], [[1]]]:
        with pytest.raises(InvalidKeyError):
            key_from_json(bad)


def test_path_and_query_forms() -> None:
    assert key_from_path("users/42/-1/2.5/name") == ("users", 42, -1, 2.5, "name")
    assert key_from_path("a%2Fb/c%20d") == ("a/b", "c d")
    assert key_from_path("") == ()
    assert key_from_query('["users","42"]') == ("users", "42")
    assert key_from_query("users/42") == ("users", 42)
    assert key_from_query(None) is None


def test_a_path_segment_is_a_number_only_when_it_is_all_ascii_digits() -> None:
    # "5\n" and the Arabic-Indic "٨" used to pass the number test and become 5 and 8.
    assert key_from_path("5%0A/%D9%A8/7") == ("5\n", "٨", 7)
    with pytest.raises(InvalidKeyError):
        key_from_query("[1, null]")
    with pytest.raises(InvalidKeyError):
        key_from_query("[not json")


def test_cursors_are_opaque_round_trips() -> None:
    encoded = encode_key(("users", 7))
    cursor = encode_cursor(encoded)
    assert "=" not in cursor and "/" not in cursor
    assert decode_cursor(cursor) == encoded
    for bad in ["", "!!!", encode_cursor(b"\x09garbage")]:
        with pytest.raises(InvalidRequestError):
            decode_cursor(bad)


@pytest.mark.parametrize(
    "key", [*ROUND_TRIPS, (1.0, 0.1, -0.0, '"quoted" \\ back\tslash', "\U0001f600", True)]
)
def test_key_json_text_is_the_json_of_the_key(key: tuple[object, ...]) -> None:
    for form in (key, decode_key(encode_key(key))):  # as sent and as read back
        text = key_json_text(form)  # type: ignore[arg-type]
        assert text.isascii()
        expected = key_to_json(form)  # type: ignore[arg-type]
        assert json.loads(text) == expected
        # Same types as well (1 vs 1.0, True vs 1): equal re-encodings.
        assert json.dumps(json.loads(text)) == json.dumps(expected)
