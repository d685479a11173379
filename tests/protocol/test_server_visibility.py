"""History visibility for servers (``roomactors.protocol.server_visibility``): the
user algorithm's steps applied to a server's users, table-driven."""

from __future__ import annotations

import pytest

from roomactors.protocol.server_visibility import (
    event_visible_to_server,
    server_may_see_event,
    server_memberships,
    server_of_user,
)

S = "remote.test"


def hv(value: str) -> dict:
    return {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": value}}


def member(user_id: str, membership: str) -> dict:
    return {"type": "m.room.member", "state_key": user_id, "content": {"membership": membership}}


def state(visibility: str | None, *members: tuple[str, str]) -> dict:
    out: dict = {}
    if visibility is not None:
        out[("m.room.history_visibility", "")] = hv(visibility)
    for user_id, membership in members:
        out[("m.room.member", user_id)] = member(user_id, membership)
    return out


MESSAGE = {"type": "m.room.message", "content": {"body": "x"}}


def test_server_of_user() -> None:
    assert server_of_user("@a:remote.test") == "remote.test"
    assert server_of_user("@a:remote.test:8448") == "remote.test:8448"
    assert server_of_user("@a:[::1]:8448") == "[::1]:8448"
    assert server_of_user("not-a-user") is None and server_of_user(None) is None and server_of_user("@a") is None


def test_server_memberships_only_counts_its_own_users() -> None:
    s = state("joined", ("@a:remote.test", "join"), ("@b:remote.test", "leave"), ("@c:other.test", "join"),
              ("@d:remote.test:8448", "join"))
    assert sorted(server_memberships(s, S)) == ["join", "leave"]


@pytest.mark.parametrize(
    "visibility,memberships,joined_now,expected",
    [
        ("world_readable", [], False, True),  # step 1
        ("joined", ["join"], True, True),  # step 2
        ("joined", ["leave", "join"], True, True),  # step 2: any user
        ("shared", [], True, True),  # step 3: the server is in the room now
        ("shared", [], False, False),
        ("invited", ["invite"], True, True),  # step 4
        ("invited", [], True, False),
        ("joined", ["invite"], True, False),  # invite is not enough under joined
        ("joined", [], True, False),  # step 5
        ("bogus", [], True, True),  # unknown value: shared
    ],
)
def test_steps(visibility: str, memberships: list, joined_now: bool, expected: bool) -> None:
    assert (
        server_may_see_event(history_visibility=visibility, memberships_at_event=memberships,
                             server_joined_now=joined_now)
        is expected
    )


def test_event_visible_with_missing_visibility_is_shared() -> None:
    assert event_visible_to_server(MESSAGE, {}, S, server_joined_now=True)
    assert not event_visible_to_server(MESSAGE, {}, S, server_joined_now=False)


def test_joined_room_hides_events_from_before_the_server_joined() -> None:
    assert not event_visible_to_server(MESSAGE, state("joined"), S, server_joined_now=True)
    assert not event_visible_to_server(MESSAGE, state("joined", ("@c:other.test", "join")), S, server_joined_now=True)
    assert event_visible_to_server(MESSAGE, state("joined", ("@a:remote.test", "join")), S, server_joined_now=True)


def test_own_member_event_before_or_after() -> None:
    # The server's first join into a joined-only room: visible by the membership after it.
    join = member("@a:remote.test", "join")
    assert event_visible_to_server(join, state("joined"), S, server_joined_now=True)
    # Someone else's join at that point is not.
    assert not event_visible_to_server(member("@c:other.test", "join"), state("joined"), S, server_joined_now=True)
    # Leaving: visible by the membership before it.
    leave = member("@a:remote.test", "leave")
    assert event_visible_to_server(leave, state("joined", ("@a:remote.test", "join")), S, server_joined_now=False)


def test_history_visibility_event_before_or_after() -> None:
    to_world = hv("world_readable")
    assert event_visible_to_server(to_world, state("joined"), S, server_joined_now=False)
    to_joined = hv("joined")
    assert event_visible_to_server(to_joined, state("shared"), S, server_joined_now=True)
    assert not event_visible_to_server(hv("invited"), state("joined"), S, server_joined_now=True)


def test_inputs_are_not_mutated() -> None:
    s = state("joined", ("@a:remote.test", "join"))
    before = repr(s)
    event_visible_to_server(MESSAGE, s, S, server_joined_now=True)
    assert repr(s) == before
