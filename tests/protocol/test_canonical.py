"""Canonical JSON (appendices "Canonical JSON") and the v6+ number rules
(rooms/fragments/v6-canonical-json)."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import canonicaljson
import pytest

from roomactors.protocol import InvalidEvent, canonical_json, check_json_numbers
from roomactors.protocol.canonical import CANONICAL_INT_MAX, CANONICAL_INT_MIN

from roomactors.protocol import KNOWN_ROOM_VERSIONS

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS)
_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
_SPEC = json.loads((_VECTORS / "canonical_json.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", _SPEC["cases"], ids=[c["name"] for c in _SPEC["cases"]])
def test_appendix_examples(case: dict) -> None:
    value = json.loads(case["input"])
    assert canonical_json(value) == case["canonical"].encode("utf-8")


def test_negative_zero_and_exponent_example_exactly() -> None:
    # The appendix's trickiest example, spelled out: -0 loses its sign, 1e10 (a float
    # once parsed) is written as a plain integer.
    value = json.loads('{"a": -0, "b": 1e10}')
    assert isinstance(value["b"], float)
    assert canonical_json(value) == b'{"a":0,"b":10000000000}'
    assert canonical_json({"a": -0.0}) == b'{"a":0}'


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": [1, 2, {"c": None, "b": True, "a": False}]},
        {"nested": {"z": {"y": {"x": [[], {}, ""]}}}},
        {"int_max": CANONICAL_INT_MAX, "int_min": CANONICAL_INT_MIN, "zero": 0, "neg": -17},
        {"é": 1, "e": 2, "日": 3, "\U0001f600": 4, "\ufb01": 5},
        {"ctl": "".join(chr(c) for c in range(0x20)) + "\x7f"},
        {"quote": '"', "backslash": "\\", "slash": "/"},
        {"separators": "\u2028\u2029", "bom": "\ufeff"},
        ["a", 1, True, None],
        "just a string",
        12345,
        None,
    ],
)
def test_agrees_with_reference_library(value: object) -> None:
    # canonicaljson (the reference Python implementation) on values inside the
    # canonical domain: integers within range, no floats.
    assert canonical_json(value) == canonicaljson.encode_canonical_json(value)


def test_keys_sorted_by_code_point_not_utf16() -> None:
    # U+FB01 < U+1F600 by code point; in UTF-16 the astral character's surrogate
    # (0xD83D) would sort first. The spec sorts by code point.
    out = canonical_json({"\U0001f600": 1, "\ufb01": 2})
    assert out == '{"\ufb01":2,"\U0001f600":1}'.encode("utf-8")


def test_control_characters_use_short_or_lowercase_u_escapes() -> None:
    out = canonical_json({"a": "\x00\x01\x08\t\n\x0b\x0c\r\x1f"})
    assert out == b'{"a":"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f"}'


def test_no_redundant_escapes() -> None:
    # DEL, '/', and non-ASCII are written raw; only '"' and '\\' are escaped.
    assert canonical_json(["\x7f/é\"\\"]) == '["\x7f/é\\"\\\\"]'.encode("utf-8")


def test_non_bmp_characters_are_raw_utf8() -> None:
    out = canonical_json({"emoji": "\U0001f600", "clef": "\U0001d11e"})
    assert out == '{"clef":"\U0001d11e","emoji":"\U0001f600"}'.encode("utf-8")
    assert b"\\u" not in out


def test_shortest_form_no_whitespace() -> None:
    assert canonical_json({"a": [1, {"b": 2}]}) == b'{"a":[1,{"b":2}]}'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_rejected(bad: float) -> None:
    with pytest.raises(InvalidEvent, match="not"):
        canonical_json({"a": bad})


def test_non_string_keys_rejected() -> None:
    with pytest.raises(InvalidEvent, match="key"):
        canonical_json({1: "a"})


def test_lone_surrogate_rejected() -> None:
    with pytest.raises(InvalidEvent):
        canonical_json({"a": "\ud800"})


def test_non_json_type_rejected() -> None:
    with pytest.raises(InvalidEvent, match="bytes"):
        canonical_json({"a": b"raw"})


def test_tuples_and_subclasses_encode_as_plain_json() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    assert canonical_json({"a": (1, 2), "b": Colour.RED}) == b'{"a":[1,2],"b":1}'


def test_out_of_range_integers_still_encode_for_old_rooms() -> None:
    # Room versions 1-5 may hold such numbers; they must still hash consistently.
    assert canonical_json({"big": 2**64}) == b'{"big":18446744073709551616}'
    assert canonical_json({"f": 1.5}) == b'{"f":1.5}'


# --- check_json_numbers --------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2", "3", "4", "5"])
@pytest.mark.parametrize("value", [{"f": 1.5}, {"big": 2**53}, {"neg": -(2**53)}, {"deep": [{"x": 2**70}]}])
def test_lenient_versions_accept_floats_and_big_ints(version: str, value: dict) -> None:
    check_json_numbers(value, version)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_nan_rejected_in_every_version(version: str) -> None:
    with pytest.raises(InvalidEvent):
        check_json_numbers({"x": [float("nan")]}, version)


@pytest.mark.parametrize("version", ["6", "7", "8", "9", "10", "11", "12"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"f": 1.5}, "float"),
        ({"f": 1.0}, "float"),
        ({"big": 2**53}, "outside the canonical JSON range"),
        ({"neg": -(2**53)}, "outside the canonical JSON range"),
        ({"deep": {"list": [0, [2**70]]}}, "outside the canonical JSON range"),
    ],
)
def test_strict_versions_reject_floats_and_big_ints(version: str, value: dict, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message) as info:
        check_json_numbers(value, version)
    assert info.value.rule is not None and "v6" in info.value.rule


@pytest.mark.parametrize("version", ["6", "12"])
def test_strict_boundaries(version: str) -> None:
    check_json_numbers({"max": 2**53 - 1, "min": -(2**53) + 1, "b": True, "n": None}, version)
    with pytest.raises(InvalidEvent):
        check_json_numbers({"max": 2**53}, version)
    with pytest.raises(InvalidEvent):
        check_json_numbers({"min": -(2**53)}, version)


def test_booleans_are_not_numbers() -> None:
    check_json_numbers({"t": True, "f": False}, "12")


def test_check_json_numbers_unknown_version() -> None:
    from roomactors.protocol import UnsupportedRoomVersion

    with pytest.raises(UnsupportedRoomVersion):
        check_json_numbers({}, "13")
