"""History visibility (client-server "Room History Visibility" → "Server behaviour")
and stripped state (client-server "Stripped state")."""

from __future__ import annotations

import copy
import itertools

import pytest

from roomactors.protocol.visibility import (
    DEFAULT_HISTORY_VISIBILITY,
    HISTORY_VISIBILITY_VALUES,
    STRIPPED_STATE_TYPES,
    event_visible,
    filter_visible,
    history_visibility_of,
    membership_of,
    strip_state_event,
    strip_state_events,
    stripped_state,
    stripped_state_pdus,
    user_may_see_event,
)

ME = "@me:example.org"
OTHER = "@other:example.org"
MEMBERSHIPS = [None, "join", "invite", "knock", "leave", "ban"]


# --- history_visibility_of ---------------------------------------------------------


@pytest.mark.parametrize("value", HISTORY_VISIBILITY_VALUES)
def test_history_visibility_known_values(value: str) -> None:
    assert history_visibility_of({"history_visibility": value}) == value


@pytest.mark.parametrize(
    "content", [None, {}, {"history_visibility": "bogus"}, {"history_visibility": 1}, {"history_visibility": None}, "x"]
)
def test_history_visibility_defaults_to_shared(content: object) -> None:
    # "if no history_visibility is set, or if the value is not understood, the
    # visibility is assumed to be shared"
    assert history_visibility_of(content) == "shared" == DEFAULT_HISTORY_VISIBILITY  # type: ignore[arg-type]


def test_membership_of() -> None:
    assert membership_of(None) is None
    assert membership_of({"content": {"membership": "join"}}) == "join"
    assert membership_of({"content": {}}) is None
    assert membership_of({"content": "x"}) is None
    assert membership_of({"content": {"membership": 3}}) is None


# --- the algorithm, exhaustively -----------------------------------------------------


def _expected(visibility: str, at_event: str | None, current: str | None) -> bool:
    """The spec's table, written independently of the implementation."""
    table = {
        "world_readable": True,
        "joined": at_event == "join",
        "invited": at_event in ("join", "invite"),
        "shared": at_event == "join" or current == "join",
    }
    return table[visibility]


@pytest.mark.parametrize(
    "visibility,at_event,current",
    list(itertools.product(HISTORY_VISIBILITY_VALUES, MEMBERSHIPS, MEMBERSHIPS)),
)
def test_user_may_see_event_table(visibility: str, at_event: str | None, current: str | None) -> None:
    got = user_may_see_event(history_visibility=visibility, membership_at_event=at_event, current_membership=current)
    assert got is _expected(visibility, at_event, current)


@pytest.mark.parametrize("at_event", MEMBERSHIPS)
@pytest.mark.parametrize("current", MEMBERSHIPS)
def test_unknown_visibility_is_shared(at_event: str | None, current: str | None) -> None:
    got = user_may_see_event(history_visibility="nonsense", membership_at_event=at_event, current_membership=current)
    assert got is _expected("shared", at_event, current)


@pytest.mark.parametrize(
    "visibility,at_event,current,joined_after,expected",
    [
        # Literal step 3: joined after the event, has since left -> shared allows.
        ("shared", None, "leave", True, True),
        ("shared", "leave", "ban", True, True),
        # Exact answer "no" overrides a current join (e.g. joined, event, left, ... ).
        ("shared", None, "join", False, False),
        # Step 3 is only for shared.
        ("joined", None, "leave", True, False),
        ("invited", None, "leave", True, False),
        # Steps 1, 2, 4 don't care.
        ("world_readable", None, None, False, True),
        ("joined", "join", None, False, True),
        ("invited", "invite", None, False, True),
    ],
)
def test_joined_after_event_exact(
    visibility: str, at_event: str | None, current: str | None, joined_after: bool, expected: bool
) -> None:
    got = user_may_see_event(
        history_visibility=visibility,
        membership_at_event=at_event,
        current_membership=current,
        joined_after_event=joined_after,
    )
    assert got is expected


# --- event_visible: state derivation and boundary rules ----------------------------------


def _hv(value: str) -> dict:
    return {"type": "m.room.history_visibility", "state_key": "", "sender": OTHER, "content": {"history_visibility": value}}


def _member(user: str, membership: str) -> dict:
    return {"type": "m.room.member", "state_key": user, "sender": user, "content": {"membership": membership}}


def _state(visibility: str | None, my_membership: str | None) -> dict:
    state: dict = {}
    if visibility is not None:
        state[("m.room.history_visibility", "")] = _hv(visibility)
    if my_membership is not None:
        state[("m.room.member", ME)] = _member(ME, my_membership)
    # Noise that must not matter.
    state[("m.room.member", OTHER)] = _member(OTHER, "join")
    state[("m.room.history_visibility", "other")] = _hv("world_readable")
    return state


MESSAGE = {"type": "m.room.message", "sender": OTHER, "content": {"body": "hi"}}


@pytest.mark.parametrize(
    "visibility,at_event,current",
    list(itertools.product([*HISTORY_VISIBILITY_VALUES, None], MEMBERSHIPS, MEMBERSHIPS)),
)
def test_event_visible_message_matches_table(visibility: str | None, at_event: str | None, current: str | None) -> None:
    got = event_visible(MESSAGE, _state(visibility, at_event), ME, current_membership=current)
    assert got is _expected(visibility or "shared", at_event, current)


@pytest.mark.parametrize(
    "before,after,expected",
    [
        ("world_readable", "joined", True),  # spec example
        ("joined", "world_readable", True),  # spec example
        ("joined", "joined", False),
        ("joined", "invited", False),
        ("shared", "joined", False),  # not joined now, shared only helps later joiners
    ],
)
def test_history_visibility_event_before_or_after(before: str, after: str, expected: bool) -> None:
    event = _hv(after)
    assert event_visible(event, _state(before, None), ME, current_membership="leave") is expected


def test_history_visibility_event_with_other_state_key_is_not_special() -> None:
    event = {**_hv("world_readable"), "state_key": "x"}
    assert event_visible(event, _state("joined", None), ME, current_membership=None) is False


def test_history_visibility_event_after_uses_invited_with_invite_membership() -> None:
    event = _hv("invited")
    assert event_visible(event, _state("joined", "invite"), ME, current_membership="invite") is True


@pytest.mark.parametrize(
    "visibility,before,after,current,expected",
    [
        # "a user can always see m.room.member events which set their membership to join"
        ("joined", None, "join", "join", True),
        ("joined", "invite", "join", "leave", True),
        ("invited", "leave", "join", "leave", True),
        # "... or which change their membership from join to any other value"
        ("joined", "join", "leave", "leave", True),
        ("joined", "join", "ban", "ban", True),
        ("shared", "join", "leave", "leave", True),
        # Invited visibility: the invite itself is visible (after == invite).
        ("invited", None, "invite", "invite", True),
        # Joined visibility: their own invite is not (neither before nor after allows).
        ("joined", None, "invite", "invite", False),
        # Extension: invite rejection / knock rescission always visible.
        ("joined", "invite", "leave", "leave", True),
        ("shared", "knock", "leave", "leave", True),
        # But not a kick/ban straight from leave.
        ("joined", "leave", "ban", "ban", False),
        ("joined", None, "knock", "knock", False),
    ],
)
def test_own_member_event_before_or_after(
    visibility: str, before: str | None, after: str, current: str, expected: bool
) -> None:
    event = _member(ME, after)
    assert event_visible(event, _state(visibility, before), ME, current_membership=current) is expected


def test_own_leave_extension_can_be_disabled() -> None:
    event = _member(ME, "leave")
    state = _state("joined", "invite")
    assert event_visible(event, state, ME, current_membership="leave", own_leave_after_invite_visible=False) is False


def test_other_users_member_event_is_not_special() -> None:
    event = _member(OTHER, "join")
    assert event_visible(event, _state("joined", None), ME, current_membership="leave") is False


def test_filter_visible_keeps_order_and_identity() -> None:
    e1 = {**MESSAGE, "content": {"body": "1"}}
    e2 = {**MESSAGE, "content": {"body": "2"}}
    e3 = {**MESSAGE, "content": {"body": "3"}}
    pairs = [(e1, _state("joined", None)), (e2, _state("joined", "join")), (e3, _state("world_readable", None))]
    snapshot = copy.deepcopy(pairs)
    out = filter_visible(pairs, ME, current_membership="leave")
    assert out == [e2, e3]
    assert out[0] is e2 and out[1] is e3
    assert pairs == snapshot


def test_filter_visible_joined_after_callback() -> None:
    e1 = {**MESSAGE, "content": {"body": "before my join"}}
    e2 = {**MESSAGE, "content": {"body": "after I left"}}
    pairs = [(e1, _state("shared", None)), (e2, _state("shared", "leave"))]
    out = filter_visible(
        pairs, ME, current_membership="leave", joined_after_event=lambda ev: ev["content"]["body"] == "before my join"
    )
    assert out == [e1]
    # Default approximation: not joined now -> neither.
    assert filter_visible(pairs, ME, current_membership="leave") == []
    # Joined now -> both.
    assert filter_visible(pairs, ME, current_membership="join") == [e1, e2]


# --- stripped state -------------------------------------------------------------------


def _pdu(event_type: str, content: dict, state_key: str = "") -> dict:
    return {
        "type": event_type,
        "state_key": state_key,
        "content": content,
        "sender": "@creator:example.org",
        "room_id": "!r:example.org",
        "origin_server_ts": 1,
        "depth": 3,
        "auth_events": ["$a"],
        "prev_events": ["$p"],
        "hashes": {"sha256": "h"},
        "signatures": {"example.org": {"ed25519:1": "s"}},
        "unsigned": {"age": 4},
    }


FULL_STATE = {
    ("m.room.create", ""): _pdu("m.room.create", {"room_version": "11"}),
    ("m.room.name", ""): _pdu("m.room.name", {"name": "Room"}),
    ("m.room.avatar", ""): _pdu("m.room.avatar", {"url": "mxc://x/y"}),
    ("m.room.topic", ""): _pdu("m.room.topic", {"topic": "T"}),
    ("m.room.join_rules", ""): _pdu("m.room.join_rules", {"join_rule": "invite"}),
    ("m.room.canonical_alias", ""): _pdu("m.room.canonical_alias", {"alias": "#a:example.org"}),
    ("m.room.encryption", ""): _pdu("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
    ("m.room.power_levels", ""): _pdu("m.room.power_levels", {"users": {}}),
    ("m.room.history_visibility", ""): _hv("joined"),
    ("m.room.member", "@creator:example.org"): _pdu("m.room.member", {"membership": "join"}, "@creator:example.org"),
    ("m.room.name", "odd"): _pdu("m.room.name", {"name": "not the name"}, "odd"),
}


def test_stripped_state_types_are_the_spec_list() -> None:
    assert STRIPPED_STATE_TYPES == (
        "m.room.create",
        "m.room.name",
        "m.room.avatar",
        "m.room.topic",
        "m.room.join_rules",
        "m.room.canonical_alias",
        "m.room.encryption",
    )


def test_stripped_state_selects_and_strips() -> None:
    snapshot = copy.deepcopy(FULL_STATE)
    out = stripped_state(FULL_STATE)
    assert [e["type"] for e in out] == list(STRIPPED_STATE_TYPES)
    for event in out:
        assert set(event) == {"type", "state_key", "content", "sender"}
        assert event["state_key"] == ""
        assert event["sender"] == "@creator:example.org"
        assert event["content"] == FULL_STATE[(event["type"], "")]["content"]
        assert event["content"] is not FULL_STATE[(event["type"], "")]["content"]
    assert FULL_STATE == snapshot


def test_stripped_state_skips_absent_and_adds_extra() -> None:
    state = {k: v for k, v in FULL_STATE.items() if k[0] not in ("m.room.avatar", "m.room.topic")}
    out = stripped_state(state, extra=[("m.room.member", "@creator:example.org"), ("m.room.member", "@nobody:x")])
    assert [(e["type"], e["state_key"]) for e in out] == [
        ("m.room.create", ""),
        ("m.room.name", ""),
        ("m.room.join_rules", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.encryption", ""),
        ("m.room.member", "@creator:example.org"),
    ]


def test_stripped_state_pdus_are_full_copies() -> None:
    out = stripped_state_pdus(FULL_STATE)
    assert [e["type"] for e in out] == list(STRIPPED_STATE_TYPES)
    assert out[0] == FULL_STATE[("m.room.create", "")]
    assert out[0] is not FULL_STATE[("m.room.create", "")]
    out[0]["content"]["room_version"] = "mutated"
    assert FULL_STATE[("m.room.create", "")]["content"]["room_version"] == "11"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "m.room.name", "content": {}, "sender": "@a:x"},  # no state_key
        {"type": "m.room.name", "state_key": "", "content": [], "sender": "@a:x"},
        {"type": "m.room.name", "state_key": "", "content": {}, "sender": "a:x"},
        {"type": "m.room.name", "state_key": "", "content": {}},
        {"type": 1, "state_key": "", "content": {}, "sender": "@a:x"},
        {"type": "m.room.name", "state_key": 0, "content": {}, "sender": "@a:x"},
        "not an event",
    ],
)
def test_strip_state_event_rejects_off_schema(event: object) -> None:
    assert strip_state_event(event) is None  # type: ignore[arg-type]


def test_strip_state_events_prunes_federation_pdus() -> None:
    incoming = [FULL_STATE[("m.room.create", "")], {"type": "m.room.name"}, FULL_STATE[("m.room.topic", "")]]
    assert strip_state_events(incoming) == [
        {"type": "m.room.create", "state_key": "", "content": {"room_version": "11"}, "sender": "@creator:example.org"},
        {"type": "m.room.topic", "state_key": "", "content": {"topic": "T"}, "sender": "@creator:example.org"},
    ]
