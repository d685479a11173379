"""Server ACLs (s2s "Server Access Control Lists (ACLs)"; m.room.server_acl schema),
with the schema's own example and its rule order."""

from __future__ import annotations

import pytest

from roomactors.protocol.server_acl import glob_matches, server_acl_allows, strip_port

#: data/event-schemas/examples/m.room.server_acl.yaml
SPEC_EXAMPLE = {"allow_ip_literals": False, "allow": ["*"], "deny": ["*.evil.com", "evil.com"]}


@pytest.mark.parametrize(
    "server, allowed",
    [
        ("good.example", True),
        ("good.example:8448", True),
        # "evil.com, evil.com:8448, and evil.com:1234 would all match rules that apply to evil.com"
        ("evil.com", False),
        ("evil.com:8448", False),
        ("evil.com:1234", False),
        ("sub.evil.com", False),
        ("EVIL.COM", False),  # case-insensitive
        ("notevil.com", True),
        ("1.2.3.4", False),  # allow_ip_literals: false
        ("1.2.3.4:8448", False),
        ("[::1]", False),
        ("[2001:db8::1]:8448", False),
    ],
)
def test_spec_example(server, allowed):
    assert server_acl_allows(SPEC_EXAMPLE, server) is allowed


def test_rule_1_no_acl_event_allows():
    assert server_acl_allows(None, "anything.example")


def test_rule_2_ip_literals_default_true():
    assert server_acl_allows({"allow": ["*"]}, "1.2.3.4")
    assert server_acl_allows({"allow": ["*"], "allow_ip_literals": "no"}, "1.2.3.4")  # not a boolean: true
    assert server_acl_allows({"allow": ["*"], "allow_ip_literals": True}, "[::1]:80")


def test_rule_3_deny_before_allow():
    assert not server_acl_allows({"allow": ["evil.com"], "deny": ["evil.com"]}, "evil.com")


def test_rule_5_allow_defaults_to_empty():
    assert not server_acl_allows({}, "good.example")
    assert not server_acl_allows({"deny": ["evil.com"]}, "good.example")


def test_invalid_field_types():
    assert not server_acl_allows({"allow": "*"}, "good.example")  # not a list: empty
    assert server_acl_allows({"allow": ["*"], "deny": "good.example"}, "good.example")
    assert server_acl_allows({"allow": [1, None, "good.*"], "deny": [{"x": 1}]}, "good.example")


@pytest.mark.parametrize(
    "pattern, value, matches",
    [
        ("*", "", True),
        ("?", "a", True),
        ("?", "", False),
        ("ev?l.com", "evil.com", True),
        ("ev?l.com", "eviil.com", False),
        ("*.evil.com", "evil.com", False),
        ("*.evil.com", "a.b.evil.com", True),
        ("evil.com", "evilXcom", False),  # '.' is literal
        ("[a]", "[a]", True),  # regex metacharacters are literal
        ("a+", "aa", False),
    ],
)
def test_glob(pattern, value, matches):
    assert glob_matches(pattern, value) is matches


def test_strip_port():
    assert strip_port("example.org:8448") == "example.org"
    assert strip_port("[::1]:8448") == "[::1]"
    assert strip_port("[::1]") == "[::1]"
    assert strip_port("1.2.3.4") == "1.2.3.4"
