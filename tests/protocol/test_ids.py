"""Identifier grammar (appendices "Server Name", "User Identifiers", "Historical User
IDs", "Room IDs", "Event IDs")."""

from __future__ import annotations

import pytest

from roomactors.protocol import InvalidEvent, get_rules
from roomactors.protocol.ids import (
    MAX_ID_BYTES,
    is_compliant_user_id,
    is_valid_event_id,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    server_name_of,
)

HASH_STD = "CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o"  # 43 chars, standard alphabet
HASH_STD_PLUS = "CD66HAED5npg6074c6pDtLKa+HjVfYb2q4Q3LZgrW/o"
HASH_URLSAFE = "Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"


@pytest.mark.parametrize(
    "name",
    [
        "matrix.org",
        "matrix.org:8888",
        "1.2.3.4",
        "1.2.3.4:1234",
        "[1234:5678::abcd]",
        "[1234:5678::abcd]:5678",
        "[::1]",
        "[::ffff:1.2.3.4]:8448",
        "localhost",
        "a",
        "MATRIX.ORG",
        "xn--bcher-kva.example",
        "my-server.example.com:1",
        "a" * 255,
    ],
)
def test_valid_server_names(name: str) -> None:
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "matrix.org:",
        "matrix.org:123456",
        "matrix.org:port",
        "matrix.org:-1",
        "matrix_org",
        "mätrix.org",
        "matrix.org/path",
        "user@matrix.org",
        "a b",
        "1.2.3.256",
        "[1234:5678::abcd",
        "1234:5678::abcd",
        "[::1]x",
        "[::1]:",
        "[not:an:ipv6:zz]",
        "[12345::]",
        "[fe80::1%eth0]",
        "[]",
        "a" * 256,
        None,
        5,
    ],
)
def test_invalid_server_names(name: object) -> None:
    assert not is_valid_server_name(name)


# --- user IDs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    ["@alice:example.org", "@a.b_c=d-e/f+g:example.org:8448", "@0:[::1]", "@x:1.2.3.4"],
)
def test_compliant_user_ids(user_id: str) -> None:
    assert is_valid_user_id(user_id)
    assert is_compliant_user_id(user_id)


@pytest.mark.parametrize(
    "user_id",
    [
        "@Alice:example.org",  # upper case
        "@:example.org",  # empty localpart
        "@alice smith:example.org",  # space
        "@日本:example.org",  # non-ASCII
        "@tab\there:example.org",  # control character
        "@!#$%&*:example.org",  # punctuation
    ],
)
def test_historical_user_ids_tolerated_but_not_compliant(user_id: str) -> None:
    assert is_valid_user_id(user_id)
    assert not is_compliant_user_id(user_id)


@pytest.mark.parametrize(
    "user_id",
    [
        "alice:example.org",  # no sigil
        "@alice",  # no domain
        "@alice:",  # empty domain
        "@al\x00ice:example.org",  # NUL
        "@alice:bad_server",  # bad server name
        "@alice:example.org:port",
        "@\ud800:example.org",  # lone surrogate is not a code point we accept
        "!alice:example.org",
        "",
        None,
        ["@alice:example.org"],
    ],
)
def test_invalid_user_ids(user_id: object) -> None:
    assert not is_valid_user_id(user_id)
    assert not is_compliant_user_id(user_id)


def test_user_id_255_byte_limit_counts_utf8_bytes() -> None:
    domain = ":example.org"
    fits = "@" + "a" * (MAX_ID_BYTES - 1 - len(domain)) + domain
    assert len(fits.encode()) == 255 and is_valid_user_id(fits)
    assert not is_valid_user_id("@" + "a" * (MAX_ID_BYTES - len(domain)) + domain)
    # 'é' is 2 bytes: 122 of them + sigil + domain = 1 + 244 + 12 = 257 bytes, 135 characters.
    wide = "@" + "é" * 122 + domain
    assert len(wide) < 255 < len(wide.encode())
    assert not is_valid_user_id(wide)


# --- room IDs ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [str(v) for v in range(1, 12)])
def test_room_ids_v1_to_v11(version: str) -> None:
    rules = get_rules(version)
    assert is_valid_room_id("!abc:example.org", rules)
    assert is_valid_room_id("!odd chars é:example.org:8448", rules)
    assert not is_valid_room_id("!" + HASH_URLSAFE, rules)  # no domain
    assert not is_valid_room_id("!abc:bad_server", rules)
    assert not is_valid_room_id("abc:example.org", rules)
    assert not is_valid_room_id("!a\x00b:example.org", rules)
    assert not is_valid_room_id("!" + "a" * 243 + ":example.org", rules)  # 256 bytes
    assert is_valid_room_id("!" + "a" * 242 + ":example.org", rules)  # 255 bytes


def test_room_ids_v12_are_hashes() -> None:
    rules = get_rules("12")
    assert is_valid_room_id("!" + HASH_URLSAFE, rules)
    assert not is_valid_room_id("!abc:example.org", rules)
    assert not is_valid_room_id("!" + HASH_STD_PLUS, rules)  # standard alphabet
    assert not is_valid_room_id("!" + HASH_URLSAFE[:-1], rules)  # 42 characters
    assert not is_valid_room_id("!" + HASH_URLSAFE + "A", rules)  # 44 characters
    assert not is_valid_room_id("$" + HASH_URLSAFE, rules)
    assert not is_valid_room_id(None, rules)


# --- event IDs ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_event_ids_v1_v2(version: str) -> None:
    rules = get_rules(version)
    assert is_valid_event_id("$a4ecee13e2accdadf56c1025:example.com", rules)
    assert is_valid_event_id("$0:domain", rules)
    assert not is_valid_event_id("$" + HASH_STD, rules)
    assert not is_valid_event_id("a4ecee:example.com", rules)
    assert not is_valid_event_id("$abc:bad_server", rules)
    assert not is_valid_event_id("$" + "a" * 243 + ":example.org", rules)


def test_event_ids_v3() -> None:
    rules = get_rules("3")
    assert is_valid_event_id("$" + HASH_STD, rules)
    assert is_valid_event_id("$" + HASH_STD_PLUS, rules)
    assert not is_valid_event_id("$" + HASH_URLSAFE, rules)  # '-' and '_' are not standard
    assert not is_valid_event_id("$abc:example.org", rules)
    assert not is_valid_event_id("$" + HASH_STD + "=", rules)  # padded


@pytest.mark.parametrize("version", ["4", "5", "6", "7", "8", "9", "10", "11", "12"])
def test_event_ids_v4_and_later(version: str) -> None:
    rules = get_rules(version)
    assert is_valid_event_id("$" + HASH_URLSAFE, rules)
    assert is_valid_event_id("$" + HASH_STD, rules)  # no '+' or '/': valid in both alphabets
    assert not is_valid_event_id("$" + HASH_STD_PLUS, rules)
    assert not is_valid_event_id("$abc:example.org", rules)
    assert not is_valid_event_id("!" + HASH_URLSAFE, rules)
    assert not is_valid_event_id(42, rules)


# --- server_name_of ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "server"),
    [
        ("@alice:example.org", "example.org"),
        ("@alice:example.org:8448", "example.org:8448"),
        ("!room:[::1]:80", "[::1]:80"),
        ("$event:1.2.3.4", "1.2.3.4"),
        ("#alias:example.org", "example.org"),
    ],
)
def test_server_name_of(identifier: str, server: str) -> None:
    assert server_name_of(identifier) == server


@pytest.mark.parametrize("identifier", ["@alice", "@alice:bad_server", "$" + HASH_URLSAFE, 5])
def test_server_name_of_invalid(identifier: object) -> None:
    with pytest.raises(InvalidEvent):
        server_name_of(identifier)  # type: ignore[arg-type]
