"""Filters (client-server "Filtering"; filter.yaml, sync_filter.yaml,
room_event_filter.yaml, event_filter.yaml) and dot-separated property paths
(appendices)."""

from __future__ import annotations

import copy

import pytest

from roomactors.protocol.filters import (
    DEFAULT_FILTER,
    EventFilter,
    Filter,
    FilterError,
    RoomEventFilter,
    RoomFilter,
    StateFilter,
    apply_event_fields,
    event_allowed,
    parse_event_filter,
    parse_filter,
    parse_filter_json_param,
    parse_room_event_filter,
    parse_room_event_filter_param,
    room_allowed,
    split_field_path,
    type_matches,
)

#: The example from filter.yaml (POST /user/{userId}/filter).
SPEC_EXAMPLE = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {
            "limit": 10,
            "types": ["m.room.message"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
        "ephemeral": {
            "types": ["m.receipt", "m.typing"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}


# --- parsing ---------------------------------------------------------------------------


def test_parse_spec_example() -> None:
    snapshot = copy.deepcopy(SPEC_EXAMPLE)
    f = parse_filter(SPEC_EXAMPLE)
    assert SPEC_EXAMPLE == snapshot
    assert f.event_format == "client"
    assert f.event_fields == ("type", "content", "sender")
    assert f.presence == EventFilter(types=("m.presence",), not_senders=("@alice:example.com",))
    assert f.account_data == EventFilter()
    assert f.room.state == RoomEventFilter(types=("m.room.*",), not_rooms=("!726s6s6q:example.com",))
    assert f.room.timeline.limit == 10
    assert f.room.timeline.not_senders == ("@spam:example.com",)
    assert f.room.ephemeral.types == ("m.receipt", "m.typing")
    assert f.room.account_data == RoomEventFilter()
    assert f.room.include_leave is False
    # Round trip for GET /user/{userId}/filter/{filterId}: client-format default is dropped.
    expected = copy.deepcopy(SPEC_EXAMPLE)
    del expected["event_format"]
    assert f.to_json() == expected
    assert parse_filter(f.to_json()) == f


def test_defaults() -> None:
    assert parse_filter({}) == DEFAULT_FILTER == Filter()
    assert DEFAULT_FILTER.event_format == "client"
    assert DEFAULT_FILTER.event_fields is None
    assert DEFAULT_FILTER.room == RoomFilter()
    rf = DEFAULT_FILTER.room.timeline
    assert (rf.limit, rf.types, rf.contains_url) == (None, None, None)
    assert (rf.lazy_load_members, rf.include_redundant_members, rf.unread_thread_notifications) == (False, False, False)
    assert DEFAULT_FILTER.to_json() == {}
    assert StateFilter is RoomEventFilter


def test_parse_all_room_event_filter_fields() -> None:
    obj = {
        "limit": 5,
        "types": ["a"],
        "not_types": ["b"],
        "senders": ["@s:x"],
        "not_senders": ["@t:x"],
        "rooms": ["!r:x"],
        "not_rooms": ["!q:x"],
        "contains_url": False,
        "lazy_load_members": True,
        "include_redundant_members": True,
        "unread_thread_notifications": True,
        "unknown_key": {"ignored": True},
    }
    f = parse_room_event_filter(obj)
    assert f == RoomEventFilter(
        limit=5,
        types=("a",),
        not_types=("b",),
        senders=("@s:x",),
        not_senders=("@t:x",),
        rooms=("!r:x",),
        not_rooms=("!q:x",),
        contains_url=False,
        lazy_load_members=True,
        include_redundant_members=True,
        unread_thread_notifications=True,
    )
    expected = dict(obj)
    del expected["unknown_key"]
    assert f.to_json() == expected


def test_parse_room_level_fields() -> None:
    f = parse_filter({"room": {"rooms": ["!a:x"], "not_rooms": ["!b:x"], "include_leave": True}, "event_format": "federation"})
    assert f.room.rooms == ("!a:x",)
    assert f.room.not_rooms == ("!b:x",)
    assert f.room.include_leave is True
    assert f.event_format == "federation"


def test_null_reads_as_absent() -> None:
    f = parse_filter({"room": {"timeline": {"types": None, "limit": None}}, "presence": None, "event_fields": None})
    assert f == DEFAULT_FILTER


def test_empty_types_list_is_not_absent() -> None:
    f = parse_event_filter({"types": []})
    assert f.types == ()
    assert event_allowed(f, {"type": "m.room.message", "sender": "@a:x"}) is False


@pytest.mark.parametrize(
    "obj,errcode,where",
    [
        ([], "M_BAD_JSON", "filter"),
        ("{}", "M_BAD_JSON", "filter"),
        ({"event_fields": "content"}, "M_BAD_JSON", "event_fields"),
        ({"event_fields": ["content", 1]}, "M_BAD_JSON", "event_fields"),
        ({"event_format": 1}, "M_BAD_JSON", "event_format"),
        ({"event_format": "raw"}, "M_INVALID_PARAM", "event_format"),
        ({"presence": []}, "M_BAD_JSON", "presence"),
        ({"presence": {"types": "m.presence"}}, "M_BAD_JSON", "presence.types"),
        ({"account_data": {"not_types": [None]}}, "M_BAD_JSON", "account_data.not_types"),
        ({"presence": {"senders": ["alice"]}}, "M_INVALID_PARAM", "presence.senders"),
        ({"room": "all"}, "M_BAD_JSON", "room"),
        ({"room": {"rooms": "!a:x"}}, "M_BAD_JSON", "room.rooms"),
        ({"room": {"not_rooms": ["#alias:x"]}}, "M_INVALID_PARAM", "room.not_rooms"),
        ({"room": {"include_leave": "true"}}, "M_BAD_JSON", "room.include_leave"),
        ({"room": {"timeline": {"limit": 0}}}, "M_INVALID_PARAM", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": -3}}}, "M_INVALID_PARAM", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": "10"}}}, "M_BAD_JSON", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": 10.0}}}, "M_BAD_JSON", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": True}}}, "M_BAD_JSON", "room.timeline.limit"),
        ({"room": {"state": {"lazy_load_members": 1}}}, "M_BAD_JSON", "room.state.lazy_load_members"),
        ({"room": {"state": {"include_redundant_members": "yes"}}}, "M_BAD_JSON", "room.state.include_redundant_members"),
        ({"room": {"timeline": {"unread_thread_notifications": 0}}}, "M_BAD_JSON", "room.timeline.unread_thread_notifications"),
        ({"room": {"timeline": {"contains_url": "true"}}}, "M_BAD_JSON", "room.timeline.contains_url"),
        ({"room": {"ephemeral": {"rooms": ["r"]}}}, "M_INVALID_PARAM", "room.ephemeral.rooms"),
        ({"room": {"account_data": {"not_senders": [{}]}}}, "M_BAD_JSON", "room.account_data.not_senders"),
        ({"room": {"state": ["m.room.name"]}}, "M_BAD_JSON", "room.state"),
    ],
)
def test_parse_errors(obj: object, errcode: str, where: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(obj)
    assert info.value.errcode == errcode
    assert where in info.value.error
    assert isinstance(info.value, ValueError)


def test_filter_values_are_frozen() -> None:
    f = parse_filter(SPEC_EXAMPLE)
    with pytest.raises(AttributeError):
        f.event_format = "federation"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        f.room.timeline.limit = 1  # type: ignore[misc]


# --- inline filter parameters -------------------------------------------------------------


def test_filter_param_id_vs_inline() -> None:
    assert parse_filter_json_param("66696p746572") == ("id", "66696p746572")
    assert parse_filter_json_param(" {}") == ("id", " {}")  # only a leading "{" means JSON
    kind, f = parse_filter_json_param('{"room":{"timeline":{"limit":3}}}')
    assert kind == "inline"
    assert isinstance(f, Filter) and f.room.timeline.limit == 3


@pytest.mark.parametrize("text,errcode", [("{", "M_NOT_JSON"), ('{"a": NaN}', "M_NOT_JSON"), ('{"room": 1}', "M_BAD_JSON")])
def test_filter_param_errors(text: str, errcode: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter_json_param(text)
    assert info.value.errcode == errcode


def test_room_event_filter_param() -> None:
    # message_pagination.yaml example.
    assert parse_room_event_filter_param('{"contains_url":true}') == RoomEventFilter(contains_url=True)
    with pytest.raises(FilterError) as info:
        parse_room_event_filter_param("[]")
    assert info.value.errcode == "M_BAD_JSON"
    with pytest.raises(FilterError) as info:
        parse_room_event_filter_param("not json")
    assert info.value.errcode == "M_NOT_JSON"


# --- matching --------------------------------------------------------------------------------


def _ev(event_type: str = "m.room.message", sender: str | None = "@a:x", room_id: str | None = "!r:x", **content: object) -> dict:
    event: dict = {"type": event_type, "content": dict(content)}
    if sender is not None:
        event["sender"] = sender
    if room_id is not None:
        event["room_id"] = room_id
    return event


@pytest.mark.parametrize(
    "event_type,patterns,expected",
    [
        ("m.room.message", ["m.room.message"], True),
        ("m.room.message", ["m.room.*"], True),
        ("m.room.message", ["*"], True),
        ("m.room.message", ["m.*.message"], True),
        ("m.room.message", ["*.message"], True),
        ("m.room.message", ["m.room"], False),
        ("m.room.message", ["m.room.messag"], False),
        ("m.room.message", ["m.room.message.*"], False),
        ("m.roomXmessage", ["m.room.message"], False),  # "." is not special
        ("m.room.message", ["m.room.?essage"], False),  # only "*" is a wildcard
        ("m.room.?essage", ["m.room.?essage"], True),
        ("m.room.[m]", ["m.room.[m]"], True),
        ("", ["*"], True),
        ("m.room.message", [], False),
    ],
)
def test_type_matches(event_type: str, patterns: list[str], expected: bool) -> None:
    assert type_matches(event_type, patterns) is expected


@pytest.mark.parametrize(
    "filter_json,event,expected",
    [
        ({}, _ev(), True),
        ({"types": ["m.room.*"]}, _ev("m.room.member"), True),
        ({"types": ["m.room.*"]}, _ev("m.reaction"), False),
        # not_types wins over types.
        ({"types": ["m.room.*"], "not_types": ["m.room.member"]}, _ev("m.room.member"), False),
        ({"types": ["m.room.member"], "not_types": ["*"]}, _ev("m.room.member"), False),
        ({"not_types": ["m.room.*"]}, _ev("m.room.message"), False),
        ({"not_types": ["m.room.*"]}, _ev("m.call.invite"), True),
        # senders
        ({"senders": ["@a:x"]}, _ev(sender="@a:x"), True),
        ({"senders": ["@a:x"]}, _ev(sender="@b:x"), False),
        ({"senders": ["@a:x"], "not_senders": ["@a:x"]}, _ev(sender="@a:x"), False),
        ({"not_senders": ["@spam:x"]}, _ev(sender="@spam:x"), False),
        ({"not_senders": ["@spam:x"]}, _ev(sender="@a:x"), True),
        # No sender: fails a positive list, passes a negative one.
        ({"senders": ["@a:x"]}, _ev("m.typing", sender=None), False),
        ({"not_senders": ["@a:x"]}, _ev("m.typing", sender=None), True),
        # rooms
        ({"rooms": ["!r:x"]}, _ev(room_id="!r:x"), True),
        ({"rooms": ["!r:x"]}, _ev(room_id="!q:x"), False),
        ({"rooms": ["!r:x"], "not_rooms": ["!r:x"]}, _ev(room_id="!r:x"), False),
        ({"not_rooms": ["!r:x"]}, _ev(room_id="!q:x"), True),
        ({"rooms": ["!r:x"]}, _ev(room_id=None), False),
        # contains_url: key presence
        ({"contains_url": True}, _ev(url="mxc://a/b"), True),
        ({"contains_url": True}, _ev(body="no"), False),
        ({"contains_url": False}, _ev(url="mxc://a/b"), False),
        ({"contains_url": False}, _ev(body="no"), True),
        ({"contains_url": True}, _ev(url=None), True),
        ({}, _ev(url="mxc://a/b"), True),
        # Combined (spec example timeline).
        (SPEC_EXAMPLE["room"]["timeline"], _ev("m.room.message", sender="@spam:example.com"), False),
        (SPEC_EXAMPLE["room"]["timeline"], _ev("m.room.message", room_id="!726s6s6q:example.com"), False),
        (SPEC_EXAMPLE["room"]["timeline"], _ev("m.room.message"), True),
        (SPEC_EXAMPLE["room"]["timeline"], _ev("m.room.topic"), False),
    ],
)
def test_event_allowed_room_event_filter(filter_json: dict, event: dict, expected: bool) -> None:
    assert event_allowed(parse_room_event_filter(filter_json), event) is expected


def test_event_allowed_room_id_argument_overrides() -> None:
    f = parse_room_event_filter({"rooms": ["!r:x"]})
    event = _ev(room_id=None)  # ClientEventWithoutRoomID, as in /sync
    assert event_allowed(f, event, room_id="!r:x") is True
    assert event_allowed(f, _ev(room_id="!r:x"), room_id="!q:x") is False


def test_event_filter_ignores_rooms_and_url() -> None:
    # A plain EventFilter (presence/account_data) has no room or url conditions.
    f = parse_event_filter({"types": ["m.presence"], "not_senders": ["@alice:example.com"]})
    assert event_allowed(f, {"type": "m.presence", "sender": "@bob:x", "content": {}}) is True
    assert event_allowed(f, {"type": "m.presence", "sender": "@alice:example.com", "content": {}}) is False
    assert event_allowed(f, {"type": "m.direct", "content": {}}) is False
    # account data has no sender: passes with only types.
    assert event_allowed(parse_event_filter({"types": ["m.*"]}), {"type": "m.direct", "content": {}}) is True


@pytest.mark.parametrize(
    "filter_json,room_id,expected",
    [
        ({}, "!a:x", True),
        ({"rooms": ["!a:x"]}, "!a:x", True),
        ({"rooms": ["!a:x"]}, "!b:x", False),
        ({"not_rooms": ["!a:x"]}, "!a:x", False),
        ({"rooms": ["!a:x"], "not_rooms": ["!a:x"]}, "!a:x", False),
        ({"rooms": []}, "!a:x", False),
    ],
)
def test_room_allowed(filter_json: dict, room_id: str, expected: bool) -> None:
    f = parse_filter({"room": filter_json})
    assert room_allowed(f.room, room_id) is expected
    assert room_allowed(parse_room_event_filter(filter_json), room_id) is expected


# --- event_fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,parts",
    [
        ("content.body", ["content", "body"]),
        ("content.m\\.relates_to", ["content", "m.relates_to"]),  # spec example
        ("content.m\\\\foo", ["content", "m\\foo"]),  # spec example
        ("content.a\\xb", ["content", "a\\xb"]),  # other escapes are literal
        ("content.trailing\\", ["content", "trailing\\"]),
        ("content.m\\\\.rel", ["content", "m\\", "rel"]),  # escaped backslash, then a real dot
        ("type", ["type"]),
        ("a..b", ["a", "", "b"]),
        ("", [""]),
    ],
)
def test_split_field_path(path: str, parts: list[str]) -> None:
    assert split_field_path(path) == parts


EVENT = {
    "type": "m.room.message",
    "sender": "@a:x",
    "event_id": "$e",
    "origin_server_ts": 5,
    "content": {
        "body": "hi",
        "msgtype": "m.text",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"},
        "m\\foo": 1,
        "m": {"relates_to": "nested, not dotted"},
    },
    "unsigned": {"age": 3},
}


@pytest.mark.parametrize(
    "fields,expected",
    [
        (["type", "content", "sender"], {"type": "m.room.message", "content": EVENT["content"], "sender": "@a:x"}),
        (["content.body"], {"content": {"body": "hi"}}),
        (["content.m\\.relates_to"], {"content": {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}}),
        (["content.m.relates_to"], {"content": {"m": {"relates_to": "nested, not dotted"}}}),
        (["content.m\\.relates_to.rel_type"], {"content": {"m.relates_to": {"rel_type": "m.thread"}}}),
        (["content.m\\\\foo"], {"content": {"m\\foo": 1}}),
        (["content.body", "content"], {"content": EVENT["content"]}),
        (["content", "content.body"], {"content": EVENT["content"]}),
        (["content.body", "content.msgtype"], {"content": {"body": "hi", "msgtype": "m.text"}}),
        (["content.missing"], {}),  # no empty objects are created
        (["type.sub"], {}),  # descending through a non-object contributes nothing
        (["nope", "unsigned.age"], {"unsigned": {"age": 3}}),
        (None, EVENT),
        ([], EVENT),
    ],
)
def test_apply_event_fields(fields: list[str] | None, expected: dict) -> None:
    snapshot = copy.deepcopy(EVENT)
    out = apply_event_fields(EVENT, fields)
    assert out == expected
    assert EVENT == snapshot
    if "content" in out and out["content"]:
        assert out["content"] is not EVENT["content"]
