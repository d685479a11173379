"""Push rules (client-server API "Push Notifications", spec v1.17): default rules, the
user document and its mutations, and evaluation."""

from __future__ import annotations

import copy
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomactors.protocol.push_rules import (
    KINDS,
    PushContext,
    PushRuleError,
    actions_highlight,
    actions_notify,
    actions_tweaks,
    default_rules,
    delete_rule,
    empty_user_doc,
    evaluate,
    get_rule,
    glob_matches,
    notification_for,
    put_rule,
    ruleset,
    set_actions,
    set_enabled,
    split_dotted_path,
    validate_actions,
    validate_kind,
)

ME = "@alice:example.org"
OTHER = "@bob:example.org"
ROOM = "!room:example.org"


def ctx(**kw: object) -> PushContext:
    base: dict[str, object] = {
        "user_id": ME,
        "display_name": "Alice Liddell",
        "room_member_count": 5,
        "power_levels": None,
        "sender_power_level": 0,
    }
    base.update(kw)
    return PushContext(**base)  # type: ignore[arg-type]


def msg(body: str = "hello", *, sender: str = OTHER, msgtype: str = "m.text", **content: object) -> dict:
    return {
        "type": "m.room.message",
        "sender": sender,
        "room_id": ROOM,
        "event_id": "$e",
        "content": {"msgtype": msgtype, "body": body, **content},
    }


def ids(rules: list[dict]) -> list[str]:
    return [r["rule_id"] for r in rules]


def first_match(event: dict, c: PushContext | None = None, *, doc: dict | None = None, legacy: bool = False) -> str | None:
    """The rule_id of the rule that decides ``event``: evaluate a copy of the ruleset whose
    every rule's actions name the rule."""
    rs = ruleset(ME, doc if doc is not None else empty_user_doc(), legacy_mentions=legacy)
    for rules in rs["global"].values():
        for rule in rules:
            rule["actions"] = [{"set_tweak": "rule", "value": rule["rule_id"]}]
    return actions_tweaks(evaluate(rs, event, c or ctx())).get("rule")


# --------------------------------------------------------------------------------------
# Default rules
# --------------------------------------------------------------------------------------


def test_default_rules_order_matches_spec_v1_17() -> None:
    g = default_rules(ME)["global"]
    assert set(g) == set(KINDS)
    assert ids(g["override"]) == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert g["content"] == [] and g["room"] == [] and g["sender"] == []
    assert ids(g["underride"]) == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]


def test_default_rules_shape() -> None:
    for kind, rules in default_rules(ME)["global"].items():
        for rule in rules:
            assert rule["default"] is True
            assert rule["rule_id"].startswith(".")
            assert isinstance(rule["actions"], list)
            assert rule["enabled"] is (rule["rule_id"] != ".m.rule.master")
            assert ("conditions" in rule) == (kind in ("override", "underride"))


def test_default_rules_substitute_user_id() -> None:
    g = default_rules(ME)["global"]
    invite = next(r for r in g["override"] if r["rule_id"] == ".m.rule.invite_for_me")
    assert {"kind": "event_match", "key": "state_key", "pattern": ME} in invite["conditions"]
    mention = next(r for r in g["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"] == [
        {"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": ME}
    ]


def test_default_rule_definitions_verbatim() -> None:
    g = default_rules(ME)["global"]
    assert g["override"][0] == {
        "rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [], "actions": []
    }
    room_mention = next(r for r in g["override"] if r["rule_id"] == ".m.rule.is_room_mention")
    assert room_mention["actions"] == ["notify", {"set_tweak": "highlight"}]
    assert room_mention["conditions"] == [
        {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
        {"kind": "sender_notification_permission", "key": "room"},
    ]
    call = g["underride"][0]
    assert call["actions"] == ["notify", {"set_tweak": "sound", "value": "ring"}]


def test_legacy_mention_rules_opt_in() -> None:
    g = default_rules(ME, legacy_mentions=True)["global"]
    order = ids(g["override"])
    assert order.index(".m.rule.is_user_mention") < order.index(".m.rule.contains_display_name")
    assert order.index(".m.rule.contains_display_name") < order.index(".m.rule.is_room_mention")
    assert order.index(".m.rule.is_room_mention") < order.index(".m.rule.roomnotif")
    assert g["content"] == [
        {
            "rule_id": ".m.rule.contains_user_name",
            "default": True,
            "enabled": True,
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
            "pattern": "alice",
        }
    ]


def test_default_rules_fresh_each_call() -> None:
    a = default_rules(ME)
    a["global"]["override"][0]["enabled"] = True
    assert default_rules(ME)["global"]["override"][0]["enabled"] is False


# --------------------------------------------------------------------------------------
# Evaluation of the predefined rules (table-driven)
# --------------------------------------------------------------------------------------

MENTIONS_ME = {"m.mentions": {"user_ids": [ME]}}

PREDEFINED_CASES = [
    # (name, event, context overrides, expected deciding rule, notify, highlight)
    ("group message", msg(), {}, ".m.rule.message", True, False),
    ("one-to-one message", msg(), {"room_member_count": 2}, ".m.rule.room_one_to_one", True, False),
    ("notice suppressed", msg(msgtype="m.notice"), {}, ".m.rule.suppress_notices", False, False),
    ("notice even in 1:1", msg(msgtype="m.notice"), {"room_member_count": 2}, ".m.rule.suppress_notices", False, False),
    ("user mention", msg("hi", **MENTIONS_ME), {}, ".m.rule.is_user_mention", True, True),
    ("other user's mention", msg("hi", **{"m.mentions": {"user_ids": [OTHER]}}), {}, ".m.rule.message", True, False),
    (
        "room mention with power",
        msg("hi", **{"m.mentions": {"room": True}}),
        {"sender_power_level": 50},
        ".m.rule.is_room_mention",
        True,
        True,
    ),
    (
        "room mention without power",
        msg("hi", **{"m.mentions": {"room": True}}),
        {"sender_power_level": 49},
        ".m.rule.message",
        True,
        False,
    ),
    (
        "room mention, custom level",
        msg("hi", **{"m.mentions": {"room": True}}),
        {"sender_power_level": 10, "power_levels": {"notifications": {"room": 10}}},
        ".m.rule.is_room_mention",
        True,
        True,
    ),
    (
        "room mention as string true",
        msg("hi", **{"m.mentions": {"room": "true"}}),
        {"sender_power_level": 100},
        ".m.rule.message",
        True,
        False,
    ),
    (
        "display name in body (v1.17: no legacy rule)",
        msg("hey Alice Liddell!"),
        {},
        ".m.rule.message",
        True,
        False,
    ),
    (
        "invite for me",
        {"type": "m.room.member", "sender": OTHER, "state_key": ME, "room_id": ROOM, "content": {"membership": "invite"}},
        {},
        ".m.rule.invite_for_me",
        True,
        False,
    ),
    (
        "invite for someone else",
        {"type": "m.room.member", "sender": OTHER, "state_key": "@carol:x", "room_id": ROOM,
         "content": {"membership": "invite"}},
        {},
        ".m.rule.member_event",
        False,
        False,
    ),
    (
        "join does not notify",
        {"type": "m.room.member", "sender": OTHER, "state_key": OTHER, "room_id": ROOM, "content": {"membership": "join"}},
        {"room_member_count": 2},
        ".m.rule.member_event",
        False,
        False,
    ),
    (
        "tombstone highlights",
        {"type": "m.room.tombstone", "sender": OTHER, "state_key": "", "room_id": ROOM,
         "content": {"body": "moved", "replacement_room": "!new:x"}},
        {},
        ".m.rule.tombstone",
        True,
        True,
    ),
    (
        "non-state tombstone does not",
        {"type": "m.room.tombstone", "sender": OTHER, "room_id": ROOM, "content": {}},
        {},
        None,
        False,
        False,
    ),
    (
        "reaction",
        {"type": "m.reaction", "sender": OTHER, "room_id": ROOM,
         "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}},
        {"room_member_count": 2},
        ".m.rule.reaction",
        False,
        False,
    ),
    (
        "server acl",
        {"type": "m.room.server_acl", "sender": OTHER, "state_key": "", "room_id": ROOM, "content": {}},
        {},
        ".m.rule.room.server_acl",
        False,
        False,
    ),
    (
        "edit suppressed",
        msg("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}),
        {},
        ".m.rule.suppress_edits",
        False,
        False,
    ),
    (
        "edit that mentions me",
        msg("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}, **MENTIONS_ME),
        {},
        ".m.rule.is_user_mention",
        True,
        True,
    ),
    (
        "call invite",
        {"type": "m.call.invite", "sender": OTHER, "room_id": ROOM, "content": {}},
        {},
        ".m.rule.call",
        True,
        False,
    ),
    (
        "encrypted one-to-one",
        {"type": "m.room.encrypted", "sender": OTHER, "room_id": ROOM, "content": {"algorithm": "x"}},
        {"room_member_count": 2},
        ".m.rule.encrypted_room_one_to_one",
        True,
        False,
    ),
    (
        "encrypted group",
        {"type": "m.room.encrypted", "sender": OTHER, "room_id": ROOM, "content": {"algorithm": "x"}},
        {"room_member_count": 3},
        ".m.rule.encrypted",
        True,
        False,
    ),
    ("unknown event type", {"type": "m.room.topic", "sender": OTHER, "state_key": "", "content": {}}, {}, None, False, False),
]


@pytest.mark.parametrize(
    ("event", "overrides", "rule_id", "notify", "highlight"),
    [c[1:] for c in PREDEFINED_CASES],
    ids=[c[0] for c in PREDEFINED_CASES],
)
def test_predefined_rules(event: dict, overrides: dict, rule_id: str | None, notify: bool, highlight: bool) -> None:
    c = ctx(**overrides)
    assert first_match(event, c) == rule_id
    assert notification_for(ruleset(ME, empty_user_doc()), event, c) == (notify, highlight)


def test_sound_tweaks_of_defaults() -> None:
    rs = ruleset(ME, empty_user_doc())
    assert actions_tweaks(evaluate(rs, msg(), ctx(room_member_count=2))) == {"sound": "default"}
    call = {"type": "m.call.invite", "sender": OTHER, "content": {}}
    assert actions_tweaks(evaluate(rs, call, ctx())) == {"sound": "ring"}


def test_master_rule_enabled_silences_everything() -> None:
    doc = set_enabled(empty_user_doc(), ME, "override", ".m.rule.master", True)
    rs = ruleset(ME, doc)
    assert evaluate(rs, msg("hi", **MENTIONS_ME), ctx()) == []
    assert notification_for(rs, msg(), ctx(room_member_count=2)) == (False, False)


def test_own_events_never_notify() -> None:
    rs = ruleset(ME, empty_user_doc())
    event = msg("hi", sender=ME, **MENTIONS_ME)
    assert actions_notify(evaluate(rs, event, ctx()))  # evaluate itself is pure rule matching
    assert notification_for(rs, event, ctx()) == (False, False)


# --------------------------------------------------------------------------------------
# Legacy mention rules (v1.16 behaviour, opt-in)
# --------------------------------------------------------------------------------------


def test_legacy_display_name_highlights() -> None:
    rs = ruleset(ME, empty_user_doc(), legacy_mentions=True)
    assert notification_for(rs, msg("hey alice liddell, lunch?"), ctx()) == (True, True)
    assert first_match(msg("hey alice liddell, lunch?"), legacy=True) == ".m.rule.contains_display_name"


def test_legacy_user_name_and_roomnotif() -> None:
    assert first_match(msg("ping ALICE now"), legacy=True) == ".m.rule.contains_user_name"
    assert first_match(msg("ping alicex now"), legacy=True) == ".m.rule.message"
    assert first_match(msg("@room lunch"), ctx(sender_power_level=50), legacy=True) == ".m.rule.roomnotif"
    assert first_match(msg("@room lunch"), ctx(sender_power_level=0), legacy=True) == ".m.rule.message"


def test_legacy_rules_skipped_when_event_has_m_mentions() -> None:
    event = msg("hey Alice Liddell and @room", **{"m.mentions": {}})
    assert first_match(event, ctx(sender_power_level=100), legacy=True) == ".m.rule.message"


# --------------------------------------------------------------------------------------
# Glob matching, word boundaries, dotted paths
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("lunc?*", "Lunch plans", True),  # the spec's event_match example
        ("lunc?*", "LUNCH", True),
        ("lunc?*", " lunch", False),
        ("lunc?*", "lunc", False),
        ("m.notice", "m.notice", True),
        ("m.notice", "m.noticeX", False),
        ("m.*", "m.room.message", True),
        ("*", "", True),
        ("", "", True),
        ("", "x", False),
        ("a?c", "a\nc", True),
        ("[ab]", "a", False),  # only * and ? are special
        ("[ab]", "[AB]", True),
        ("*a*a*a*a*a*a*a*b", "a" * 200, False),  # no catastrophic backtracking
    ],
)
def test_glob_whole_value(pattern: str, value: str, expected: bool) -> None:
    assert glob_matches(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "body", "expected"),
    [
        ("ex*ple", "An example event.", True),  # the spec's content.body examples
        ("ex*ple", "exple", True),
        ("ex*ple", "An exciting triple-whammy", True),
        ("cake", "I like cake.", True),
        ("cake", "I like cakes", False),
        ("cake", "cupcake", False),
        ("cake", "CAKE!", True),
        ("cake", "snake_cake", False),  # _ is a word character
        ("cake", "snake-cake", True),
        ("cake", "écake", True),  # non-ASCII letters are boundaries per the spec's sets
        ("cake*lie", "the cake is a lie", True),
        ("cake*lie", "the cake is a lier", False),
        ("@room", "hello @room!", True),
        ("@room", "hello@room", True),  # the pattern's own "@" is a boundary character
        ("room!", "room!s", True),
        ("room", "@rooms", False),
    ],
)
def test_glob_word_boundaries(pattern: str, body: str, expected: bool) -> None:
    assert glob_matches(pattern, body, word_boundary=True) is expected


def _reference_glob(pattern: str, value: str, words: bool) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if not words:
        return re.fullmatch(rx, value, re.DOTALL | re.IGNORECASE) is not None
    w, nw = "[A-Za-z0-9_]", "[^A-Za-z0-9_]"
    before, after = f"(?:(?<!{w})|(?={nw}))", f"(?:(?!{w})|(?<={nw}))"
    return re.search(f"{before}(?:{rx}){after}", value, re.DOTALL | re.IGNORECASE) is not None


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.text(alphabet="ab*? -", max_size=6),
    value=st.text(alphabet="abAB -_", max_size=10),
    words=st.booleans(),
)
def test_glob_agrees_with_regex_reference(pattern: str, value: str, words: bool) -> None:
    assert glob_matches(pattern, value, word_boundary=words) is _reference_glob(pattern, value, words)


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("content.body", ("content", "body")),
        (r"content.m\.relates_to", ("content", "m.relates_to")),
        (r"content.m\\foo", ("content", "m\\foo")),
        (r"content.m\xfoo", ("content", "m\\xfoo")),  # other escapes stay literal
        ("a\\", ("a\\",)),
        ("type", ("type",)),
        ("a..b", ("a", "", "b")),
    ],
)
def test_split_dotted_path(key: str, parts: tuple[str, ...]) -> None:
    assert split_dotted_path(key) == parts


def _override(*conditions: dict) -> dict:
    return {"global": {"override": [{"rule_id": "t", "enabled": True, "default": False,
                                     "actions": ["notify"], "conditions": list(conditions)}]}}


def matches(cond: dict, event: dict, c: PushContext | None = None) -> bool:
    return evaluate(_override(cond), event, c or ctx()) == ["notify"]


def test_event_match_dotted_key_with_escaped_dot() -> None:
    event = {"type": "x", "content": {"m.relates_to": {"rel_type": "m.thread"}, "m": {"relates_to": "nope"}}}
    assert matches({"kind": "event_match", "key": r"content.m\.relates_to.rel_type", "pattern": "m.thread"}, event)
    assert not matches({"kind": "event_match", "key": "content.m.relates_to.rel_type", "pattern": "m.thread"}, event)
    assert matches({"kind": "event_match", "key": "content.m.relates_to", "pattern": "nope"}, event)


def test_event_match_escaped_backslash() -> None:
    event = {"content": {"m\\foo": "yes"}}
    assert matches({"kind": "event_match", "key": r"content.m\\foo", "pattern": "yes"}, event)


def test_event_match_requires_string_value() -> None:
    for topic in (None, 5, True, ["lunch"], {"a": "b"}):
        assert not matches({"kind": "event_match", "key": "content.topic", "pattern": "*"}, {"content": {"topic": topic}})
    assert not matches({"kind": "event_match", "key": "content.topic", "pattern": "*"}, {"content": {}})


def test_event_match_word_boundaries_only_for_content_body() -> None:
    event = {"content": {"body": "I like cake", "topic": "I like cake"}}
    assert matches({"kind": "event_match", "key": "content.body", "pattern": "cake"}, event)
    assert not matches({"kind": "event_match", "key": "content.topic", "pattern": "cake"}, event)


@pytest.mark.parametrize(
    ("value", "cond_value", "expected"),
    [
        (True, True, True),
        ("true", True, False),  # "note the string value"
        (1, True, False),  # "do not cast types"
        (True, 1, False),
        (1, 1, True),
        (None, None, True),
        ("m.replace", "m.replace", True),
        ("M.REPLACE", "m.replace", False),  # exact, not case-insensitive
        (1.0, 1, False),  # not canonical JSON
        (2**53, 2**53, False),  # out of the canonical integer range
        ([True], True, False),
    ],
)
def test_event_property_is(value: object, cond_value: object, expected: bool) -> None:
    event = {"type": "m.room.create", "content": {"m.federate": value}}
    cond = {"kind": "event_property_is", "key": r"content.m\.federate", "value": cond_value}
    assert matches(cond, event) is expected


def test_event_property_is_absent_never_matches_null() -> None:
    assert not matches({"kind": "event_property_is", "key": "content.x", "value": None}, {"content": {}})


def test_event_property_contains() -> None:
    cond = {"kind": "event_property_contains", "key": "content.alt_aliases", "value": "#myroom:example.com"}
    assert matches(cond, {"content": {"alt_aliases": ["#somewhere:example.org", "#myroom:example.com"]}})
    assert not matches(cond, {"content": {"alt_aliases": [":example.com"]}})  # partial values do not match
    assert not matches(cond, {"content": {"alt_aliases": "#myroom:example.com"}})  # not an array
    assert not matches(cond, {"content": {}})
    assert matches({**cond, "value": 1}, {"content": {"alt_aliases": [{"x": 1}, [1], True, 1]}})
    assert not matches({**cond, "value": 1}, {"content": {"alt_aliases": [True, 1.0]}})


def test_contains_display_name_condition() -> None:
    cond = {"kind": "contains_display_name"}
    assert matches(cond, msg("hi Alice Liddell!"))
    assert matches(cond, msg("ALICE LIDDELL"))
    assert not matches(cond, msg("hi Alice Liddells"))
    assert not matches(cond, msg("hi Alice"))
    assert not matches(cond, msg("hi"), ctx(display_name=""))
    assert not matches(cond, msg("hi None"), ctx(display_name=None))
    # Display names are literal, not globs.
    assert not matches(cond, msg("hi bob"), ctx(display_name="*"))
    assert matches(cond, msg("ping [bot]* now"), ctx(display_name="[bot]*"))


@pytest.mark.parametrize(
    ("is_", "count", "expected"),
    [
        ("2", 2, True),
        ("2", 3, False),
        ("==2", 2, True),
        ("<2", 1, True),
        ("<2", 2, False),
        (">2", 3, True),
        (">2", 2, False),
        ("<=2", 2, True),
        ("<=2", 3, False),
        (">=3", 3, True),
        (">=3", 2, False),
        ("=2", 2, False),  # not a defined prefix
        ("two", 2, False),
        ("", 0, False),
        ("< 2", 1, False),
        ("２", 2, False),  # ASCII decimal digits only
    ],
)
def test_room_member_count(is_: str, count: int, expected: bool) -> None:
    assert matches({"kind": "room_member_count", "is": is_}, msg(), ctx(room_member_count=count)) is expected


def test_room_member_count_missing_is() -> None:
    assert not matches({"kind": "room_member_count"}, msg(), ctx(room_member_count=2))


@pytest.mark.parametrize(
    ("power_levels", "sender_level", "key", "expected"),
    [
        (None, 50, "room", True),  # "Defaults to 50 if unspecified"
        (None, 49, "room", False),
        ({"notifications": {"room": 0}}, 0, "room", True),
        ({"notifications": {"room": "20"}}, 20, "room", True),  # stringy levels (room v1-v9)
        ({"notifications": {"room": 100}}, 99, "room", False),
        ({"notifications": {"custom": 10}}, 10, "custom", True),
        ({"notifications": {}}, 50, "custom", True),
        (None, math.inf, "room", True),  # v12 creators
        (None, None, "room", False),  # unknown sender level (outlier)
    ],
)
def test_sender_notification_permission(power_levels: dict | None, sender_level: float | None, key: str,
                                        expected: bool) -> None:
    c = ctx(power_levels=power_levels, sender_power_level=sender_level)
    assert matches({"kind": "sender_notification_permission", "key": key}, msg(), c) is expected


def test_unknown_and_malformed_conditions_never_match() -> None:
    for cond in (
        {"kind": "org.example.future"},
        {"kind": "event_match", "key": "type"},
        {"kind": "event_match", "pattern": "*"},
        {"kind": "event_property_is", "key": "type"},
        {"kind": "sender_notification_permission"},
        {},
    ):
        assert not matches(cond, msg())


def test_rule_without_conditions_always_matches() -> None:
    assert evaluate(_override(), {"type": "anything"}, ctx()) == ["notify"]


# --------------------------------------------------------------------------------------
# Actions helpers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "notify", "highlight"),
    [
        ([], False, False),
        (["notify"], True, False),
        (["dont_notify"], False, False),  # historical: same as []
        (["coalesce", "notify"], True, False),
        (["notify", {"set_tweak": "highlight"}], True, True),
        (["notify", {"set_tweak": "highlight", "value": True}], True, True),
        (["notify", {"set_tweak": "highlight", "value": False}], True, False),
        (["notify", {"set_tweak": "highlight", "value": "yes"}], True, False),
        (["notify", {"set_tweak": "highlight"}, {"set_tweak": "highlight", "value": False}], True, False),
    ],
)
def test_actions_notify_and_highlight(actions: list, notify: bool, highlight: bool) -> None:
    assert actions_notify(actions) is notify
    assert actions_highlight(actions) is highlight


def test_highlight_without_notify_is_not_reported() -> None:
    doc = put_rule(empty_user_doc(), ME, "sender", OTHER, {"actions": [{"set_tweak": "highlight"}]})
    assert notification_for(ruleset(ME, doc), msg(), ctx()) == (False, False)


def test_actions_tweaks() -> None:
    actions = ["notify", {"set_tweak": "sound", "value": "bing"}, {"set_tweak": "highlight"}, {"set_tweak": "x"}]
    assert actions_tweaks(actions) == {"sound": "bing", "highlight": True}


# --------------------------------------------------------------------------------------
# The user document and the merged ruleset
# --------------------------------------------------------------------------------------


def test_empty_doc_ruleset_equals_defaults() -> None:
    assert ruleset(ME, empty_user_doc()) == default_rules(ME)
    assert ruleset(ME, {}) == default_rules(ME)  # missing keys read as empty


def test_user_rules_rank_above_defaults_except_master() -> None:
    doc = empty_user_doc()
    doc = put_rule(doc, ME, "override", "mine", {"actions": [], "conditions": []})
    doc = put_rule(doc, ME, "underride", "late", {"actions": ["notify"]})
    doc = put_rule(doc, ME, "content", "word", {"actions": ["notify"], "pattern": "x"})
    g = ruleset(ME, doc, legacy_mentions=True)["global"]
    assert ids(g["override"])[:3] == [".m.rule.master", "mine", ".m.rule.suppress_notices"]
    assert ids(g["underride"])[:2] == ["late", ".m.rule.call"]
    assert ids(g["content"]) == ["word", ".m.rule.contains_user_name"]
    assert g["override"][1] == {"rule_id": "mine", "default": False, "enabled": True, "actions": [], "conditions": []}


def test_user_override_beats_default_override() -> None:
    doc = put_rule(empty_user_doc(), ME, "override", "shh", {"actions": [], "conditions": [
        {"kind": "event_match", "key": "room_id", "pattern": ROOM}]})
    assert notification_for(ruleset(ME, doc), msg("hi", **MENTIONS_ME), ctx()) == (False, False)


def test_kinds_evaluated_in_order() -> None:
    doc = empty_user_doc()
    doc = put_rule(doc, ME, "sender", OTHER, {"actions": ["notify", {"set_tweak": "sound", "value": "sender"}]})
    doc = put_rule(doc, ME, "room", ROOM, {"actions": ["notify", {"set_tweak": "sound", "value": "room"}]})
    doc = put_rule(doc, ME, "content", "c", {"pattern": "tea", "actions": ["notify", {"set_tweak": "sound", "value": "content"}]})
    rs = ruleset(ME, doc)
    sound = lambda e: actions_tweaks(evaluate(rs, e, ctx())).get("sound")  # noqa: E731
    assert sound(msg("time for tea")) == "content"
    assert sound(msg("time for coffee")) == "room"
    assert sound({**msg("x"), "room_id": "!other:x"}) == "sender"
    assert sound({**msg("x"), "room_id": "!other:x", "sender": "@carol:x"}) is None


def test_room_and_sender_rules_match_exactly() -> None:
    doc = put_rule(empty_user_doc(), ME, "room", "!ro?m:example.org", {"actions": []})
    rs = ruleset(ME, doc)
    assert evaluate(rs, msg(), ctx()) == ["notify"]  # no glob: falls through to .m.rule.message
    g = rs["global"]["room"][0]
    assert g == {"rule_id": "!ro?m:example.org", "default": False, "enabled": True, "actions": []}


def test_disabled_user_rule_never_matches() -> None:
    doc = put_rule(empty_user_doc(), ME, "sender", OTHER, {"actions": []})
    doc = set_enabled(doc, ME, "sender", OTHER, False)
    assert evaluate(ruleset(ME, doc), msg(), ctx()) == ["notify"]


def test_doc_is_json_round_trippable() -> None:
    import json

    doc = put_rule(empty_user_doc(), ME, "content", "c", {"pattern": "tea", "actions": ["notify"]})
    doc = set_actions(doc, ME, "underride", ".m.rule.message", [])
    assert json.loads(json.dumps(doc)) == doc
    assert doc["defaults"]["underride"] == {".m.rule.message": {"actions": []}}
    assert doc["rules"]["content"] == [{"rule_id": "c", "enabled": True, "actions": ["notify"], "pattern": "tea"}]


# --------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------


def _err(fn, *args, **kwargs) -> PushRuleError:  # type: ignore[no-untyped-def]
    with pytest.raises(PushRuleError) as info:
        fn(*args, **kwargs)
    return info.value


def test_put_rule_creates_enabled_rule_at_top() -> None:
    doc = put_rule(empty_user_doc(), ME, "override", "a", {"actions": ["notify"]})
    doc = put_rule(doc, ME, "override", "b", {"actions": ["notify"]})
    assert ids(doc["rules"]["override"]) == ["b", "a"]
    assert all(r["enabled"] is True for r in doc["rules"]["override"])
    assert doc["rules"]["override"][0]["conditions"] == []


def test_put_rule_update_keeps_position_and_enabled() -> None:
    doc = empty_user_doc()
    for name in ("c", "b", "a"):
        doc = put_rule(doc, ME, "underride", name, {"actions": ["notify"]})
    doc = set_enabled(doc, ME, "underride", "b", False)
    doc = put_rule(doc, ME, "underride", "b", {"actions": [], "conditions": [{"kind": "x"}]})
    assert ids(doc["rules"]["underride"]) == ["a", "b", "c"]
    assert doc["rules"]["underride"][1] == {"rule_id": "b", "enabled": False, "actions": [], "conditions": [{"kind": "x"}]}


def test_put_rule_before_and_after() -> None:
    doc = empty_user_doc()
    for name in ("c", "b", "a"):
        doc = put_rule(doc, ME, "content", name, {"actions": [], "pattern": name})
    assert ids(put_rule(doc, ME, "content", "x", {"actions": [], "pattern": "x"}, before="b")["rules"]["content"]) == [
        "a", "x", "b", "c"]
    assert ids(put_rule(doc, ME, "content", "x", {"actions": [], "pattern": "x"}, after="b")["rules"]["content"]) == [
        "a", "b", "x", "c"]
    assert ids(put_rule(doc, ME, "content", "x", {"actions": [], "pattern": "x"}, after="c")["rules"]["content"]) == [
        "a", "b", "c", "x"]
    # both given: before decides
    both = put_rule(doc, ME, "content", "x", {"actions": [], "pattern": "x"}, before="a", after="c")
    assert ids(both["rules"]["content"]) == ["x", "a", "b", "c"]
    # moving an existing rule
    assert ids(put_rule(doc, ME, "content", "a", {"actions": [], "pattern": "a"}, after="c")["rules"]["content"]) == [
        "b", "c", "a"]


def test_put_rule_anchor_errors() -> None:
    doc = put_rule(empty_user_doc(), ME, "override", "a", {"actions": []})
    e = _err(put_rule, doc, ME, "override", "x", {"actions": []}, before="nope")
    assert (e.status, e.errcode) == (400, "M_UNKNOWN") and "nope" in e.error
    e = _err(put_rule, doc, ME, "override", "x", {"actions": []}, after=".m.rule.master")
    assert (e.status, e.errcode) == (400, "M_UNKNOWN")
    e = _err(put_rule, doc, ME, "underride", "x", {"actions": []}, before="a")  # a is override, not underride
    assert e.errcode == "M_UNKNOWN"
    e = _err(put_rule, doc, ME, "override", "a", {"actions": []}, before="a")
    assert e.errcode == "M_UNKNOWN"


@pytest.mark.parametrize(
    ("kind", "rule_id", "body", "errcode"),
    [
        ("override", ".m.rule.master", {"actions": []}, "M_INVALID_PARAM"),  # reserved
        ("override", ".mine", {"actions": []}, "M_INVALID_PARAM"),
        ("override", "a/b", {"actions": []}, "M_INVALID_PARAM"),
        ("override", "a\\b", {"actions": []}, "M_INVALID_PARAM"),
        ("override", "", {"actions": []}, "M_INVALID_PARAM"),
        ("global", "a", {"actions": []}, "M_INVALID_PARAM"),  # unknown kind
        ("override", "a", {}, "M_BAD_JSON"),  # actions required
        ("override", "a", [], "M_BAD_JSON"),
        ("override", "a", {"actions": "notify"}, "M_BAD_JSON"),
        ("override", "a", {"actions": ["ring"]}, "M_INVALID_PARAM"),
        ("override", "a", {"actions": [{"value": 1}]}, "M_INVALID_PARAM"),
        ("override", "a", {"actions": [1]}, "M_BAD_JSON"),
        ("override", "a", {"actions": [], "conditions": {}}, "M_BAD_JSON"),
        ("override", "a", {"actions": [], "conditions": [{"key": "type"}]}, "M_BAD_JSON"),
        ("content", "a", {"actions": []}, "M_BAD_JSON"),  # pattern required
        ("content", "a", {"actions": [], "pattern": 5}, "M_BAD_JSON"),
    ],
)
def test_put_rule_validation(kind: str, rule_id: str, body: object, errcode: str) -> None:
    e = _err(put_rule, empty_user_doc(), ME, kind, rule_id, body)
    assert (e.status, e.errcode) == (400, errcode)
    assert e.to_json() == {"errcode": errcode, "error": e.error}


def test_put_rule_accepts_legacy_actions_and_unknown_conditions() -> None:
    doc = put_rule(empty_user_doc(), ME, "override", "a",
                   {"actions": ["dont_notify", "coalesce"], "conditions": [{"kind": "org.future", "x": 1}]})
    rule = get_rule(ruleset(ME, doc), "override", "a")
    assert rule["actions"] == ["dont_notify", "coalesce"]
    assert evaluate(ruleset(ME, doc), msg(), ctx()) == ["notify"]  # unknown condition: rule never matches


def test_put_rule_room_and_sender_ignore_extra_keys() -> None:
    doc = put_rule(empty_user_doc(), ME, "room", ROOM, {"actions": [], "pattern": "x", "conditions": []})
    assert doc["rules"]["room"] == [{"rule_id": ROOM, "enabled": True, "actions": []}]


def test_delete_rule() -> None:
    doc = put_rule(empty_user_doc(), ME, "sender", OTHER, {"actions": []})
    assert delete_rule(doc, ME, "sender", OTHER)["rules"]["sender"] == []
    e = _err(delete_rule, doc, ME, "sender", "@nobody:x")
    assert (e.status, e.errcode) == (404, "M_NOT_FOUND")
    e = _err(delete_rule, doc, ME, "room", OTHER)  # right id, wrong kind
    assert e.status == 404
    e = _err(delete_rule, doc, ME, "override", ".m.rule.master")
    assert (e.status, e.errcode) == (400, "M_INVALID_PARAM")
    e = _err(delete_rule, doc, ME, "override", ".m.rule.nonexistent")
    assert e.status == 404


def test_set_enabled_and_actions_on_defaults() -> None:
    doc = set_enabled(empty_user_doc(), ME, "underride", ".m.rule.message", False)
    doc = set_actions(doc, ME, "override", ".m.rule.tombstone", ["notify"])
    rs = ruleset(ME, doc)
    assert get_rule(rs, "underride", ".m.rule.message")["enabled"] is False
    tomb = get_rule(rs, "override", ".m.rule.tombstone")
    assert tomb["actions"] == ["notify"] and tomb["default"] is True
    assert evaluate(rs, msg(), ctx()) == []
    doc = set_enabled(doc, ME, "underride", ".m.rule.message", True)
    assert doc["defaults"]["underride"][".m.rule.message"] == {"enabled": True}
    assert evaluate(ruleset(ME, doc), msg(), ctx()) == ["notify"]


def test_set_enabled_and_actions_errors() -> None:
    doc = empty_user_doc()
    assert _err(set_enabled, doc, ME, "override", "nope", True).status == 404
    assert _err(set_enabled, doc, ME, "underride", ".m.rule.master", True).status == 404  # wrong kind
    assert _err(set_enabled, doc, ME, "override", ".m.rule.master", "yes").errcode == "M_BAD_JSON"
    assert _err(set_actions, doc, ME, "override", "nope", []).status == 404
    assert _err(set_actions, doc, ME, "override", ".m.rule.master", ["bogus"]).errcode == "M_INVALID_PARAM"
    assert _err(set_actions, doc, ME, "bogus", ".m.rule.master", []).errcode == "M_INVALID_PARAM"


def test_legacy_default_ids_toggle_even_when_not_served() -> None:
    doc = set_enabled(empty_user_doc(), ME, "override", ".m.rule.contains_display_name", False)
    assert _err(get_rule, ruleset(ME, doc), "override", ".m.rule.contains_display_name").status == 404
    assert get_rule(ruleset(ME, doc, legacy_mentions=True), "override", ".m.rule.contains_display_name")[
        "enabled"] is False


def test_set_actions_on_user_rule() -> None:
    doc = put_rule(empty_user_doc(), ME, "content", "c", {"pattern": "tea", "actions": []})
    doc = set_actions(doc, ME, "content", "c", ["notify", {"set_tweak": "sound", "value": "bing"}])
    assert get_rule(ruleset(ME, doc), "content", "c") == {
        "rule_id": "c", "default": False, "enabled": True,
        "actions": ["notify", {"set_tweak": "sound", "value": "bing"}], "pattern": "tea",
    }


def test_get_rule() -> None:
    rs = ruleset(ME, empty_user_doc())
    assert get_rule(rs, "override", ".m.rule.master")["enabled"] is False
    assert get_rule(rs["global"], "underride", ".m.rule.call")["rule_id"] == ".m.rule.call"
    e = _err(get_rule, rs, "content", ".m.rule.master")
    assert (e.status, e.errcode) == (404, "M_NOT_FOUND")
    assert _err(get_rule, rs, "nonsense", "x").errcode == "M_INVALID_PARAM"
    copy_ = get_rule(rs, "override", ".m.rule.master")
    copy_["actions"].append("notify")
    assert get_rule(rs, "override", ".m.rule.master")["actions"] == []


def test_validate_helpers() -> None:
    assert validate_kind("room") == "room"
    assert _err(validate_kind, "Room").errcode == "M_INVALID_PARAM"
    actions = ["notify", {"set_tweak": "sound", "value": "x", "custom": [1]}]
    out = validate_actions(actions)
    assert out == actions and out[1] is not actions[1]


def test_mutations_never_modify_their_input() -> None:
    doc = put_rule(empty_user_doc(), ME, "override", "a", {"actions": ["notify"], "conditions": [{"kind": "x"}]})
    doc = put_rule(doc, ME, "content", "c", {"actions": [], "pattern": "p"})
    doc = set_enabled(doc, ME, "override", ".m.rule.master", True)
    snapshot = copy.deepcopy(doc)
    body = {"actions": ["notify", {"set_tweak": "sound", "value": "s"}], "conditions": [{"kind": "y"}]}
    body_snapshot = copy.deepcopy(body)
    results = [
        put_rule(doc, ME, "override", "b", body, before="a"),
        put_rule(doc, ME, "override", "a", body),
        delete_rule(doc, ME, "override", "a"),
        set_enabled(doc, ME, "override", "a", False),
        set_enabled(doc, ME, "override", ".m.rule.master", False),
        set_actions(doc, ME, "content", "c", body["actions"]),
        set_actions(doc, ME, "underride", ".m.rule.call", []),
    ]
    assert doc == snapshot and body == body_snapshot
    for result in results:
        assert result is not doc and result != snapshot
    # Results share no mutable state with the inputs.
    results[0]["rules"]["override"][0]["actions"].append("x")
    results[5]["rules"]["content"][0]["actions"].append("x")
    assert body == body_snapshot and doc == snapshot


def test_evaluate_does_not_share_actions_with_ruleset() -> None:
    rs = ruleset(ME, empty_user_doc())
    actions = evaluate(rs, msg(), ctx(room_member_count=2))
    actions.append("x")
    assert get_rule(rs, "underride", ".m.rule.room_one_to_one")["actions"] == [
        "notify", {"set_tweak": "sound", "value": "default"}]
