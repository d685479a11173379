"""The device-list change stream: who changed their devices or cross-signing keys,
when, and which room-mates must hear of it (client-server "Tracking the device
list for a user"; server-server "Device Management").

Theory of operation
-------------------
**One stream, the shared ``misc`` counter.** Every change to a user's device list
(a device added, renamed or deleted, device keys uploaded or signed) or to their
cross-signing keys is one ``device_list_changes`` row at a position of
``accounts.next_stream_id`` ("misc"), the counter whose position is the second part
of a sync token. So a sync window ``(since.misc, next_batch.misc]`` bounds the
changes exactly, and one primary-key range read finds them. Remote users' changes
(applied from federation, ``storage.remote_devices``) are recorded the same way, so
local room-mates see them in ``device_lists.changed``.

**Writers call it inside their own transaction.** :func:`record_device_change` /
:func:`record_signing_key_change` are called by the transaction that makes the
change (login, device delete, logout-all, key upload, signature upload,
cross-signing upload). For a *local* user (one with a ``users`` row) the same
transaction owes every remote server sharing a room with the user an EDU through
the durable outbox (``storage.outbox``):

* ``m.device_list_update`` {user_id, device_id, device_display_name, stream_id,
  prev_id, deleted, keys} ("Device Management"): ``stream_id`` is the change's
  position, ``prev_id`` the user's previous *device* position (``[]`` for the
  first). Cross-signing changes are not in that chain, because an
  ``m.signing_key_update`` carries no stream ID and a receiver could never know it.
* ``m.signing_key_update`` {user_id, master_key, self_signing_key}
  ("Cross-signing keys" EDU).

After the commit the caller runs ``d.device_lists.after_local_change(user_id)``
(notify the room-mates' /sync, wake the outbox).

**Signatures of other users, for the signer only.** A signature by a user's
user-signing key of another user's master key is seen by its signer alone ("Key
and signature security"), so it is no change of anyone's device list: the
signature-upload transaction calls :func:`record_user_signature_change` (one
``user_signature_changes`` row per target at one misc position, no EDU) and the
caller notifies the signer's key, so the signer's *other* devices see the targets in
``changed`` and query the new signature (as Synapse's user-signature stream).

**Sync** (:func:`sync_device_lists`, also ``/keys/changes``), for the window
``(since, upto]`` of both the event and the misc streams:

* ``changed``: users whose device list changed in the misc window and who share a
  joined room with the requester now (or are the requester: Synapse reports a
  user's own device changes, so their other devices learn of a new sibling), plus
  users who *started* sharing a room: someone whose membership became ``join`` in a
  room the requester is joined to, or every member of a room the requester joined;
* ``left``: users who *stopped* being joined to a room the requester is in (or
  members of a room the requester left) and now share no joined room with them,
  unless in ``changed``.

``changed`` also has the users whose master key the requester signed in the misc
window (:func:`users_signed_between`, whether or not they share a room: the
signature is the requester's own news), one probe of the signer's index.

"Became" / "stopped" compare the membership at ``since`` with that at ``upto``
(``timeline.get_membership_at``), so a display-name change (join → join) counts
as neither. Membership changes come from ``current_state_deltas`` over the rooms
the requester has any membership in (one indexed read); the common empty window
costs that read, one range probe of the change stream, one of the requester's
signature stream (``user_signature_changes``) and nothing else. An initial
sync reports nothing (there is no earlier list to correct).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from roomactors.protocol.e2e_keys import SHARE_DEVICE_NAMES_OVER_FEDERATION

from . import accounts, e2e_keys, outbox, timeline
from .federation_reads import servers_sharing_rooms
from .compiled import compiled, raw
from .schema import current_state_deltas, device_list_changes, user_signature_changes

__all__ = [
    "record_device_change",
    "record_signing_key_change",
    "record_remote_change",
    "record_devices_deleted",
    "record_user_signature_change",
    "users_signed_between",
    "current_device_list_stream_id",
    "device_list_update_content",
    "signing_key_update_content",
    "users_changed_between",
    "sync_device_lists",
    "remote_destinations",
]

_c = device_list_changes


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


def remote_destinations(conn: sa.Connection, user_id: str) -> list[str]:
    """The remote servers with a joined member in some room where the (local)
    ``user_id`` is joined: who must hear of their device-list changes."""
    own = _server_of(user_id)
    return [s for s in servers_sharing_rooms(conn, user_id) if s and s != own]


def current_device_list_stream_id(conn: sa.Connection, user_id: str) -> int:
    """The user's latest *device* change position (0: none): the ``stream_id`` of
    ``/user/devices`` and the ``prev_id`` of their next ``m.device_list_update``."""
    pos = conn.execute(
        sa.select(sa.func.max(_c.c.stream_id)).where(_c.c.user_id == user_id, _c.c.device_id.is_not(None))
    ).scalar()
    return int(pos or 0)


def device_list_update_content(
    conn: sa.Connection, user_id: str, device_id: str, *, stream_id: int, prev_id: list[int], deleted: bool
) -> dict[str, Any]:
    """The ``m.device_list_update`` content for one device as it is now (s2s
    "Device Management": ``keys`` and ``device_display_name`` are absent for a
    deleted device or one without them)."""
    content: dict[str, Any] = {
        "user_id": user_id, "device_id": device_id, "stream_id": stream_id, "prev_id": prev_id,
        "deleted": deleted,
    }
    if not deleted:
        device = accounts.get_device(conn, user_id, device_id)
        if SHARE_DEVICE_NAMES_OVER_FEDERATION and device is not None and device.display_name is not None:
            content["device_display_name"] = device.display_name
        keys = e2e_keys.get_device_keys(conn, user_id, device_id)
        if keys:
            content["keys"] = keys
    return content


def signing_key_update_content(conn: sa.Connection, user_id: str) -> dict[str, Any]:
    """The ``m.signing_key_update`` content: the user's public master and
    self-signing keys (the user-signing key is private to the user)."""
    keys = e2e_keys.get_cross_signing_keys(conn, user_id)
    content: dict[str, Any] = {"user_id": user_id}
    for usage in ("master", "self_signing"):
        key = keys.get(usage)
        if key:
            content[f"{usage}_key"] = key
    return content


def record_device_change(conn: sa.Connection, user_id: str, device_id: str, *, deleted: bool = False) -> int:
    """Record that the device changed (created, renamed, keys uploaded or signed, or
    deleted: ``deleted`` or no device row any more) in the caller's transaction;
    for a local user, owe an ``m.device_list_update`` to every remote server sharing
    a room with them. Returns the change's stream position."""
    prev = current_device_list_stream_id(conn, user_id)
    pos = accounts.next_stream_id(conn)
    conn.execute(sa.insert(_c).values(stream_id=pos, user_id=user_id, device_id=device_id))
    if accounts.user_exists(conn, user_id):
        destinations = remote_destinations(conn, user_id)
        if destinations:
            gone = deleted or accounts.get_device(conn, user_id, device_id) is None
            content = device_list_update_content(
                conn, user_id, device_id, stream_id=pos, prev_id=[prev] if prev else [], deleted=gone
            )
            outbox.add_edus(conn, [(d, "m.device_list_update", content) for d in destinations])
    return pos


def record_devices_deleted(
    conn: sa.Connection, user_id: str, device_ids: list[str] | None, *, except_device: str | None = None
) -> list[str]:
    """Call *before* deleting devices (``None``: all of the user's, but
    ``except_device``): record a deletion for each that exists. Returns their IDs."""
    existing = [d.device_id for d in accounts.get_devices(conn, user_id)]
    gone = [d for d in existing if (device_ids is None or d in device_ids) and d != except_device]
    for device_id in gone:
        record_device_change(conn, user_id, device_id, deleted=True)
    return gone


def record_signing_key_change(conn: sa.Connection, user_id: str) -> int:
    """Record that the user's cross-signing keys changed (caller's transaction); for a
    local user, owe an ``m.signing_key_update`` to every remote server sharing a
    room with them. Returns the change's stream position."""
    pos = accounts.next_stream_id(conn)
    conn.execute(sa.insert(_c).values(stream_id=pos, user_id=user_id, device_id=None))
    if accounts.user_exists(conn, user_id):
        destinations = remote_destinations(conn, user_id)
        if destinations:
            content = signing_key_update_content(conn, user_id)
            outbox.add_edus(conn, [(d, "m.signing_key_update", content) for d in destinations])
    return pos


def record_remote_change(conn: sa.Connection, user_id: str) -> int:
    """Record that a *remote* user's device list changed (an update from their
    server was applied, or a resync replaced our cache), so local room-mates see
    them in ``device_lists.changed``. No EDU: it is not ours to send."""
    pos = accounts.next_stream_id(conn)
    conn.execute(sa.insert(_c).values(stream_id=pos, user_id=user_id, device_id=None))
    return pos


def record_user_signature_change(conn: sa.Connection, signer: str, targets: list[str]) -> int:
    """Record, in the caller's transaction, that ``signer`` signed the master keys of
    ``targets`` (other users) with their user-signing key: only the signer's syncs
    report them (the signature is visible to the signer alone; no EDU). The caller
    notifies ``signer`` after the commit. Returns the position (0: no target)."""
    wanted = sorted(set(targets) - {signer})
    if not wanted:
        return 0
    pos = accounts.next_stream_id(conn)
    conn.execute(
        sa.insert(user_signature_changes),
        [{"stream_id": pos, "signer_user_id": signer, "target_user_id": t} for t in wanted],
    )
    return pos


def users_signed_between(conn: sa.Connection, signer: str, since: int, upto: int) -> set[str]:
    """Users whose master key ``signer`` signed at a misc position in ``(since, upto]``
    (one range read of the ``(signer_user_id, stream_id)`` index)."""
    if upto <= since:
        return set()
    rows = raw(conn).execute(_SIGNED_BETWEEN, {"signer": signer, "since": since, "upto": upto})
    return {t for (t,) in rows}


# Both run on every incremental /sync: compiled once (storage.compiled).
_SIGNED_BETWEEN = compiled(
    sa.select(user_signature_changes.c.target_user_id).where(
        user_signature_changes.c.signer_user_id == sa.bindparam("signer"),
        user_signature_changes.c.stream_id > sa.bindparam("since"),
        user_signature_changes.c.stream_id <= sa.bindparam("upto"),
    ).distinct(),
    "signer", "since", "upto",
)
_CHANGED_BETWEEN = compiled(
    sa.select(device_list_changes.c.user_id).where(
        device_list_changes.c.stream_id > sa.bindparam("since"), device_list_changes.c.stream_id <= sa.bindparam("upto")
    ).distinct(),
    "since", "upto",
)


def users_changed_between(conn: sa.Connection, since: int, upto: int) -> set[str]:
    """Users with a device-list change at a misc position in ``(since, upto]``."""
    if upto <= since:
        return set()
    return {u for (u,) in raw(conn).execute(_CHANGED_BETWEEN, {"since": since, "upto": upto})}


def _member_deltas(conn: sa.Connection, room_ids: list[str], since: int, upto: int) -> set[tuple[str, str]]:
    """(room, user) pairs whose member state changed in ``(since, upto]``, over the rooms."""
    if not room_ids or upto <= since:
        return set()
    d = current_state_deltas
    out: set[tuple[str, str]] = set()
    for start in range(0, len(room_ids), 500):
        rows = conn.execute(
            sa.select(d.c.room_id, d.c.state_key).where(
                d.c.room_id.in_(room_ids[start:start + 500]),
                d.c.type == "m.room.member",
                d.c.stream_ordering > since,
                d.c.stream_ordering <= upto,
            ).distinct()
        )
        out.update((r, u) for r, u in rows)
    return out


def _joined_members(conn: sa.Connection, room_id: str) -> set[str]:
    return {u for u, m in timeline.get_member_list(conn, room_id).items() if m == "join"}


def _sharing(conn: sa.Connection, users: Iterable[str], my_rooms: list[str]) -> set[str]:
    return timeline.get_rooms_shared_with(conn, users, my_rooms)


def sync_device_lists(
    conn: sa.Connection, user_id: str, *, initial: bool, since_events: int, upto_events: int,
    since_misc: int, upto_misc: int, memberships: dict[str, timeline.Membership] | None = None,
) -> tuple[list[str], list[str]]:
    """``device_lists.changed`` and ``device_lists.left`` for a sync window (module
    docstring). Also ``/keys/changes`` between two tokens. ``memberships`` is the
    user's ``timeline.get_memberships`` when the caller has read it already."""
    if initial:
        return [], []
    if memberships is None:
        memberships = timeline.get_memberships(conn, user_id)
    my_rooms = [r for r, m in memberships.items() if m.membership == "join"]
    changed: set[str] = set()
    # 1. Device-list changes of users sharing a room (or of the requester).
    users = users_changed_between(conn, since_misc, upto_misc)
    if users:
        others = users - {user_id}
        changed |= _sharing(conn, others, my_rooms) if others else set()
        if user_id in users:
            changed.add(user_id)
    # 1b. Users whose master key the requester signed with their user-signing key:
    # that signature is visible to the requester only, so their other devices learn
    # of it here, whether or not they share a room with the target.
    changed |= users_signed_between(conn, user_id, since_misc, upto_misc)
    # 2. Membership transitions over every room the requester has a membership in.
    joiners: set[str] = set()
    leavers: set[str] = set()
    deltas = _member_deltas(conn, list(memberships), since_events, upto_events)
    if deltas:
        mine = set(my_rooms)
        for room_id, member in deltas:
            before = timeline.get_membership_at(conn, room_id, member, since_events) == "join"
            after = timeline.get_membership_at(conn, room_id, member, upto_events) == "join"
            if before == after:
                continue  # a profile change, or a leave and rejoin inside the window
            if member == user_id:
                # The requester joined (all members are new room-mates) or left
                # (all members may be gone).
                (joiners if after else leavers).update(_joined_members(conn, room_id) - {user_id})
            elif room_id in mine:
                (joiners if after else leavers).add(member)
        candidates = joiners | leavers
        if candidates:
            sharing = _sharing(conn, candidates, my_rooms)
            changed |= joiners & sharing
            leavers -= sharing
    leavers -= changed | {user_id}
    return sorted(changed), sorted(leavers)
