"""matrix-nio (a real asyncio Matrix client) against a real roomactors homeserver.

Two users register with ``m.login.dummy``; alice creates a room and invites bob,
who joins; they take turns sending messages and each sees all of them, in order,
through ``/sync``; then typing, read receipts and the fully-read marker, a kick
(bob's sync shows the room under ``leave``) and a ban (bob cannot join again:
``M_FORBIDDEN``). Nothing sleeps: every wait is a bounded loop of long-poll syncs
until the expected state arrives.

The server runs in a background thread (``roomactors_homeserver_thread``); each test
is a sync function running its scenario with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinError,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomKickResponse,
    RoomBanResponse,
    RoomMemberEvent,
    RoomMessageText,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    UpdateReceiptMarkerResponse,
)
from nio.api import ReceiptType

from roomactors.testing import ThreadedHomeserver

#: Upper bound on one scenario, and on each wait inside it.
SCENARIO_TIMEOUT_S = 120
WAIT_TIMEOUT_S = 20
#: Server-side long-poll of each sync while waiting (ms); returns early on news.
LONG_POLL_MS = 2_000


class Client:
    """An nio ``AsyncClient`` plus the room timelines it has seen, across syncs."""

    def __init__(self, base_url: str, localpart: str) -> None:
        config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False, max_timeouts=2)
        self.nio = AsyncClient(base_url, localpart, config=config)
        self.localpart = localpart
        self.timelines: dict[str, list[Any]] = {}
        self.left: dict[str, list[Any]] = {}
        self.last_sync: SyncResponse | None = None

    @property
    def user_id(self) -> str:
        return self.nio.user_id

    async def register(self) -> None:
        response = await self.nio.register(self.localpart, f"{self.localpart}-password", device_name="nio test")
        assert isinstance(response, RegisterResponse), response
        assert self.nio.user_id == f"@{self.localpart}:localhost"
        await self.sync(timeout_ms=0)  # initial sync, so every later one is incremental

    async def sync(self, *, timeout_ms: int = LONG_POLL_MS) -> SyncResponse:
        response = await self.nio.sync(timeout=timeout_ms)
        assert isinstance(response, SyncResponse), response
        for room_id, room in response.rooms.join.items():
            self.timelines.setdefault(room_id, []).extend(room.timeline.events)
        for room_id, room in response.rooms.leave.items():
            self.left.setdefault(room_id, []).extend(room.timeline.events)
        self.last_sync = response
        return response

    async def sync_until(self, what: str, condition: Callable[[], bool]) -> None:
        """Long-poll /sync until ``condition()`` holds (checked before the first sync too)."""
        try:
            async with asyncio.timeout(WAIT_TIMEOUT_S):
                while not condition():
                    await self.sync()
        except TimeoutError:
            raise AssertionError(f"{self.localpart} never saw {what} within {WAIT_TIMEOUT_S} s") from None

    def messages(self, room_id: str) -> list[RoomMessageText]:
        return [e for e in self.timelines.get(room_id, []) if isinstance(e, RoomMessageText)]

    def membership(self, room_id: str, user_id: str) -> str | None:
        room = self.nio.rooms.get(room_id)
        if room is None or user_id not in room.users:
            return None
        return "invite" if user_id in room.invited_users else "join"


def run(scenario: Callable[[str], Awaitable[None]], homeserver: ThreadedHomeserver) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            await scenario(homeserver.base_url)

    asyncio.run(bounded())


async def send_text(client: Client, room_id: str, body: str) -> str:
    response = await client.nio.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(response, RoomSendResponse), response
    return response.event_id


async def invite_and_join(alice: Client, bob: Client, room_id: str) -> None:
    response = await alice.nio.room_invite(room_id, bob.user_id)
    assert isinstance(response, RoomInviteResponse), response
    await bob.sync_until("the invite", lambda: room_id in bob.nio.invited_rooms)
    invite = bob.nio.invited_rooms[room_id]
    assert any(
        isinstance(e, InviteMemberEvent) and e.state_key == bob.user_id and e.membership == "invite"
        for e in bob.last_sync.rooms.invite[room_id].invite_state
    )
    assert invite.inviter == alice.user_id
    joined = await bob.nio.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    assert joined.room_id == room_id
    await bob.sync_until("the room under join", lambda: room_id in bob.nio.rooms and room_id not in bob.nio.invited_rooms)
    await alice.sync_until("bob's join", lambda: alice.membership(room_id, bob.user_id) == "join")


def test_two_nio_users_chat_type_read_kick_and_ban(roomactors_homeserver_thread: ThreadedHomeserver) -> None:
    run(_chat_scenario, roomactors_homeserver_thread)


async def _chat_scenario(base_url: str) -> None:
    alice, bob = Client(base_url, "alice"), Client(base_url, "bob")
    try:
        await alice.register()
        await bob.register()

        # -- alice creates a room, invites bob, bob joins
        created = await alice.nio.room_create(name="Tea party", topic="Unbirthdays")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await alice.sync_until("her new room", lambda: room_id in alice.nio.rooms)
        assert alice.nio.rooms[room_id].name == "Tea party"
        await invite_and_join(alice, bob, room_id)
        assert bob.nio.rooms[room_id].name == "Tea party"
        assert bob.nio.rooms[room_id].topic == "Unbirthdays"

        # -- they take turns; each sees every message, in the order it was sent
        sent: list[tuple[str, str, str]] = []  # (sender, body, event_id)
        for turn in range(6):
            speaker = (alice, bob)[turn % 2]
            body = f"message {turn} from {speaker.localpart}"
            sent.append((speaker.user_id, body, await send_text(speaker, room_id, body)))
        for client in (alice, bob):
            await client.sync_until("all six messages", lambda c=client: len(c.messages(room_id)) >= len(sent))
            seen = [(e.sender, e.body, e.event_id) for e in client.messages(room_id)]
            assert seen == sent, f"{client.localpart}'s timeline"
        last_event_id = sent[-1][2]

        # -- typing: bob sees alice start and stop typing
        typing = await alice.nio.room_typing(room_id, True, timeout=30_000)
        assert isinstance(typing, RoomTypingResponse), typing
        await bob.sync_until("alice typing", lambda: bob.nio.rooms[room_id].typing_users == [alice.user_id])
        typing = await alice.nio.room_typing(room_id, False)
        assert isinstance(typing, RoomTypingResponse), typing
        await bob.sync_until("alice stop typing", lambda: bob.nio.rooms[room_id].typing_users == [])

        # -- receipts: alice sees bob's read receipt; bob's fully-read marker is his alone
        receipt = await bob.nio.update_receipt_marker(room_id, sent[-2][2], ReceiptType.read)
        assert isinstance(receipt, UpdateReceiptMarkerResponse), receipt

        def alice_sees_bob_read(event_id: str, *, thread: str | None) -> Callable[[], bool]:
            def seen() -> bool:
                room = alice.nio.rooms[room_id]
                if thread is None:
                    r = room.read_receipts.get(bob.user_id)
                else:
                    r = room.threaded_read_receipts.get(bob.user_id, {}).get(thread)
                return r is not None and r.event_id == event_id and r.receipt_type == "m.read"
            return seen

        # nio's update_receipt_marker sends thread_id "main" (the main timeline) and
        # files the echoed receipt under threaded_read_receipts["main"].
        await alice.sync_until("bob's read receipt", alice_sees_bob_read(sent[-2][2], thread="main"))
        markers = await bob.nio.room_read_markers(room_id, fully_read_event=last_event_id, read_event=last_event_id)
        assert isinstance(markers, RoomReadMarkersResponse), markers
        await alice.sync_until("bob's unthreaded read receipt", alice_sees_bob_read(last_event_id, thread=None))
        await bob.sync_until("his fully-read marker", lambda: bob.nio.rooms[room_id].fully_read_marker == last_event_id)
        assert alice.nio.rooms[room_id].fully_read_marker is None  # private account data

        # -- kick: bob's sync shows the room under leave, with the kick in its timeline
        kicked = await alice.nio.room_kick(room_id, bob.user_id, reason="too much tea")
        assert isinstance(kicked, RoomKickResponse), kicked
        await bob.sync_until("the room under leave", lambda: room_id in bob.left)
        kick = _member_event(bob.left[room_id], bob.user_id)
        assert (kick.sender, kick.membership, kick.content.get("reason")) == (alice.user_id, "leave", "too much tea")
        assert room_id not in bob.last_sync.rooms.join
        await alice.sync_until("bob gone", lambda: alice.membership(room_id, bob.user_id) is None)
        not_again = await send_text_error(bob, room_id, "am I still here?")
        assert not_again == "M_FORBIDDEN"

        # -- ban: invited and joined again, then banned; joining is refused
        bob.left.clear()
        await invite_and_join(alice, bob, room_id)
        rejoined_event = await send_text(bob, room_id, "back again")
        await alice.sync_until("bob's return message", lambda: alice.messages(room_id)[-1].event_id == rejoined_event)
        banned = await alice.nio.room_ban(room_id, bob.user_id, reason="no more tea")
        assert isinstance(banned, RoomBanResponse), banned
        await bob.sync_until("the room under leave after the ban", lambda: room_id in bob.left)
        ban = _member_event(bob.left[room_id], bob.user_id)
        assert (ban.sender, ban.membership, ban.content.get("reason")) == (alice.user_id, "ban", "no more tea")
        refused = await bob.nio.join(room_id)
        assert isinstance(refused, JoinError), refused
        assert refused.status_code == "M_FORBIDDEN"
        invite_banned = await alice.nio.room_invite(room_id, bob.user_id)
        assert getattr(invite_banned, "status_code", None) == "M_FORBIDDEN", invite_banned

        # alice's view agrees: the messages in order, then bob's return, nothing after the ban
        await alice.sync_until("the ban", lambda: alice.membership(room_id, bob.user_id) is None)
        assert [e.body for e in alice.messages(room_id)] == [body for _, body, _ in sent] + ["back again"]
    finally:
        await alice.nio.close()
        await bob.nio.close()


async def send_text_error(client: Client, room_id: str, body: str) -> str | None:
    """The errcode of a refused ``m.room.message`` send, or None if it was accepted."""
    response = await client.nio.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    return None if isinstance(response, RoomSendResponse) else response.status_code


def _member_event(events: list[Any], state_key: str) -> RoomMemberEvent:
    members = [e for e in events if isinstance(e, RoomMemberEvent) and e.state_key == state_key]
    assert members, f"no m.room.member for {state_key} in {events}"
    return members[-1]


def test_nio_logs_in_to_an_account_made_by_register_user(roomactors_homeserver_thread: ThreadedHomeserver) -> None:
    """``register_user()`` makes an account a client can log in to with its password."""
    user = roomactors_homeserver_thread.register_user("carol", "secret-pw")

    async def scenario(base_url: str) -> None:
        client = AsyncClient(base_url, user.user_id, config=AsyncClientConfig(encryption_enabled=False))
        try:
            login = await client.login("secret-pw", device_name="bot")
            assert getattr(login, "user_id", None) == user.user_id, login
            assert client.device_id != user.device_id
            whoami = await client.whoami()
            assert whoami.user_id == user.user_id
        finally:
            await client.close()

    run(scenario, roomactors_homeserver_thread)
