"""Malformed input never crashes the authorization rules: every outcome is "allowed" or an
AuthError, never a KeyError/TypeError/ValueError/... (systematic + seeded random mutation)."""

from __future__ import annotations

import copy
import random
from typing import Any, Iterator

import pytest
from auth_builders import ALICE, BOB, CAROL, DAVE, Room, new_room
from auth_numbering import ALL_VERSIONS
from nacl.signing import SigningKey

from roomactors.protocol.auth import auth_types_for_event, check_auth, check_auth_events_list
from roomactors.protocol.b64 import encode_base64
from roomactors.protocol.canonical import canonical_json
from roomactors.protocol.errors import AuthError

JUNK: list[Any] = [
    None, 0, -1, 2**70, 1.5, float("nan"), True, "", "x", "@", "@x", "@x:", "!", "$", [], {}, [None], [[]],
    {"a": None}, {"membership": "join"}, ["@alice:a.example"],
]


def scenarios(v: str) -> Iterator[tuple[str, dict, dict]]:
    """(name, event, state) triples that are allowed (mostly) in version ``v``."""
    room = new_room(v, users={CAROL: 50})
    room.join(CAROL)
    key = SigningKey(b"\x09" * 32)
    room.send("m.room.third_party_invite", ALICE, {"public_key": encode_base64(key.verify_key.encode())}, "tok")
    signed = {"mxid": BOB, "token": "tok"}
    signed["signatures"] = {"id.example": {"ed25519:0": encode_base64(key.sign(canonical_json(signed)).signature)}}
    state = room.state
    yield "message", room.make("m.room.message", CAROL, {"body": "x"}), state
    yield "join", room.member(BOB, "join"), state
    yield "invite", room.member(CAROL, "invite", BOB), state
    yield "tpi", room.member(ALICE, "invite", BOB, third_party_invite={"signed": signed}), state
    room.join(DAVE)
    yield "kick", room.member(CAROL, "leave", DAVE), state
    yield "ban", room.member(ALICE, "ban", CAROL), state
    knock_state = dict(state)
    knock_state[("m.room.join_rules", "")] = room.make("m.room.join_rules", ALICE, {"join_rule": "knock"}, "")
    yield "knock", room.member(BOB, "knock"), knock_state
    join = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    join["signatures"]["c.example"] = {"ed25519:1": "x"}
    yield "restricted", join, state
    pl = copy.deepcopy(state[("m.room.power_levels", "")]["content"])
    pl["users"][BOB] = 10
    pl["notifications"] = {"room": 10}
    yield "power_levels", room.power_levels(pl, sender=ALICE), state
    yield "redaction", room.make("m.room.redaction", CAROL, {"redacts": "$x:c.example"}, redacts="$y:c.example"), state
    yield "aliases", room.make("m.room.aliases", BOB, {"aliases": []}, "b.example"), state
    yield "create", Room(v, create_content={"additional_creators": [BOB]}).create, {}


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


def replaced(root: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(root)
    cursor = out
    for step in path[:-1]:
        cursor = cursor[step]
    cursor[path[-1]] = new
    return out


def removed(root: Any, path: tuple) -> Any:
    out = copy.deepcopy(root)
    cursor = out
    for step in path[:-1]:
        cursor = cursor[step]
    del cursor[path[-1]]
    return out


def outcome(event: Any, state: Any, v: str) -> None:
    try:
        check_auth(event, state, v)
    except AuthError:
        pass
    if isinstance(event, dict):
        auth_types_for_event(event, v)
        try:
            check_auth_events_list(event, list(state.values()) if isinstance(state, dict) else state, v)
        except AuthError:
            pass


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_every_field_replaced_or_removed(v):
    for _name, event, state in scenarios(v):
        for path in paths(event):
            if path:
                outcome(removed(event, path), state, v)
            for junk in JUNK:
                outcome(replaced(event, path, junk), state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_every_state_field_replaced(v):
    for _name, event, state in scenarios(v):
        for key, state_event in state.items():
            for path in paths(state_event):
                for junk in (None, "x", {}):
                    bad_state = dict(state)
                    bad_state[key] = replaced(state_event, path, junk)
                    outcome(event, bad_state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("state", [None, [], "x", 5, {"junk": 1}, {("m.room.create", ""): None}])
def test_malformed_state_container(v, state):
    room = new_room(v)
    outcome(room.make("m.room.message", ALICE, {"body": "x"}), state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("seed", range(3))
def test_random_mutations(v, seed):
    rng = random.Random(f"{v}-{seed}")
    cases = list(scenarios(v))
    for _ in range(400):
        _name, event, state = rng.choice(cases)
        for _ in range(rng.randint(1, 3)):
            options = [p for p in paths(event)]
            path = rng.choice(options)
            if path and rng.random() < 0.2:
                event = removed(event, path)
            else:
                event = replaced(event, path, copy.deepcopy(rng.choice(JUNK)))
        outcome(event, state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
@pytest.mark.parametrize("bad", [{"sender": None}, {"sender": 5}, {"sender": "bob"}, {"sender": "@bob:"},
                                 {"content": []}, {"content": None}, {"type": None}, {"state_key": 5},
                                 {"room_id": None}, {"prev_events": "x"}])
def test_malformed_basics_are_auth_errors(v, bad):
    room = new_room(v)
    event = room.make("m.room.message", ALICE, {"body": "x"}, "")
    event.update(bad)
    with pytest.raises(AuthError):
        check_auth(event, room.state, v)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_non_dict_event(v):
    for junk in (None, [], "x", 1):
        with pytest.raises(AuthError):
            check_auth(junk, {}, v)  # type: ignore[arg-type]
        with pytest.raises(AuthError):
            check_auth_events_list(junk, [], v)  # type: ignore[arg-type]
