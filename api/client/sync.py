"""``GET /sync`` and the filter endpoints.

Theory of operation
-------------------
A sync is one consistent read of the database (``compute_sync`` runs in a single
``db.read``: one WAL snapshot), bracketed by the notifier so a long poll never
misses a change and never polls::

    with notifier.listen({user_id, *room_ids}) as listener:   # 1. register
        response = await db.read(compute_sync, …)              # 2. read
        if response is empty and timeout left:
            await listener.wait()  (under move_on_at)          # 3. sleep
            → loop to 1

The keys are the user's ID and the rooms they are joined to, invited to or
knocking on (a left room matters only through the user's own membership, which
notifies the user key); a room joined while the poll waits is added on the next
loop. An idle poll is one sleeping task: no timer, no database read.

Before reading, the request records the user's presence (``set_presence``,
default ``online``: "If this parameter is omitted then the client is
automatically marked as online"); ``offline`` records nothing.

**Tokens.** ``next_batch`` is opaque to clients: ``s<events>_<misc>_<typing>``,
where *events* is the greatest ``stream_ordering`` read, *misc* the position of the
account data / receipts / presence / push-rules stream, and *typing* the typing
service's serial. A token that does not parse (or holds numbers SQLite cannot)
answers 400 ``M_INVALID_PARAM``.

**Rooms.** A room's section depends on the user's membership at the end of the
window and whether it changed inside it:

* ``join``: timeline = the latest ``limit`` (at most ``MAX_TIMELINE_SCAN``) served
  events after ``since`` that history visibility and the timeline filter allow —
  filtered *before* the limit, walking back in batches (at most
  ``MAX_TIMELINE_SCAN`` rows); ``limited`` if more such events exist. ``state`` = the state at the timeline's *start*:
  current-state changes in the window that are not in the timeline — or, on
  initial sync, ``full_state`` or a fresh join, the whole current state minus the
  timeline's events. With ``use_state_after=true`` (v1.16) it is ``state_after``
  instead, the state at the timeline's *end* (timeline events included).
  Lazy-loading trims members to the timeline's senders, the user and the
  summary's heroes, and (as redundancy is allowed) re-sends the senders' member
  events on incremental syncs. ``prev_batch`` is a ``/messages`` token
  (``t<ordering>``) at the timeline's start. Ephemeral ``m.typing`` /
  ``m.receipt`` (``room.ephemeral`` filter), room account data
  (``room.account_data`` filter), ``summary`` (when members changed) and
  ``unread_notifications`` complete it.
* ``invite`` / ``knock``: the stripped state plus the user's own member event.
* ``leave`` / ``ban``: on incremental syncs when it changed in the window (and on
  initial syncs with ``include_leave``): the timeline up to the leave.
  Forgotten rooms are skipped.

Events are client events, or the stored PDUs with ``event_format: federation``;
``event_fields`` projects either.

**Unread counts** come from ``api.client.notifications`` (push rules evaluated
over the events after the user's read receipt).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import trio
from quart import Blueprint, request

from api.auth import requester
from api.body import json_body, query_bool, query_int
from api.deps import deps
from api.errors import MatrixError, forbidden, not_found
from api.responses import json_response
from api.routes import client_route
from roomactors.protocol.client_format import client_event
from roomactors.protocol.filters import (
    DEFAULT_FILTER,
    Filter,
    FilterError,
    RoomEventFilter,
    apply_event_fields,
    event_allowed,
    parse_filter,
    parse_filter_json_param,
    room_allowed,
)
from roomactors.protocol.redaction import redact_with_rules
from roomactors.protocol.room_versions import get_rules
from roomactors.protocol.visibility import strip_state_events, stripped_state
from storage import device_lists, e2e_keys, timeline, to_device, userdata
from storage.accounts import current_stream_id
from storage.rooms import StoredEvent, get_events
from storage.schema import forgotten_rooms, rooms

__all__ = ["blueprint", "SyncToken", "compute_sync", "format_events", "MAX_TIMELINE_SCAN"]

blueprint = Blueprint("sync", __name__)

#: The most rows one room's timeline walk examines looking for events the user may
#: see and the filter allows, before answering ``limited`` with what it found; also
#: the largest timeline ``limit`` honoured (the rest is one ``/messages`` away).
MAX_TIMELINE_SCAN = 1000

# Positions are SQLite integers: at most 18 ASCII digits keeps them in range.
_TOKEN = re.compile(r"s([0-9]{1,18})_([0-9]{1,18})_([0-9]{1,18})(?:_([0-9]{1,18}))?\Z")
_FILTER_ID = re.compile(r"[0-9]{1,18}\Z")


@dataclass(frozen=True, slots=True)
class SyncToken:
    events: int
    misc: int
    typing: int
    to_device: int = 0  # the last to-device message delivered (storage.to_device); a 3-part token is 0

    def __str__(self) -> str:
        return f"s{self.events}_{self.misc}_{self.typing}_{self.to_device}"

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        m = _TOKEN.match(text)
        if m is None:
            raise MatrixError("M_INVALID_PARAM", 400, f"invalid sync token {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4) or 0))


@dataclass(slots=True)
class SyncRequest:
    user_id: str
    device_id: str
    since: SyncToken | None
    filter: Filter
    full_state: bool
    now_ms: int
    default_limit: int
    use_state_after: bool = False


@dataclass(slots=True)
class SyncResult:
    body: dict[str, Any]
    events_pos: int
    misc_pos: int
    to_device_pos: int = 0
    joined: list[str] = field(default_factory=list)
    empty: bool = True


def format_events(
    conn: sa.Connection,
    evs: list[StoredEvent],
    *,
    user_id: str,
    device_id: str,
    room_version: str,
    now_ms: int,
    include_room_id: bool,
    event_fields: tuple[str, ...] | None = None,
    event_format: str = "client",
) -> list[dict[str, Any]]:
    """Stored events as client events: redactions applied, own transaction IDs.
    ``event_format="federation"`` serves the stored PDU itself (redacted if it was)."""
    if not evs:
        return []
    ids = [e.event_id for e in evs]
    redacted = timeline.get_redactions(conn, ids)
    own = [e.event_id for e in evs if e.json.get("sender") == user_id]
    txns = timeline.get_txn_ids(conn, own, user_id, device_id)
    rules = get_rules(room_version)
    out = []
    for ev in evs:
        if event_format == "federation":
            event = redact_with_rules(ev.json, rules) if ev.event_id in redacted else copy.deepcopy(ev.json)
            if event_fields is not None:
                event = apply_event_fields(event, event_fields)
            out.append(event)
            continue
        because = None
        if ev.event_id in redacted:
            r = redacted[ev.event_id]
            # Spec "Redactions": apply a redaction by another user only if it was
            # authorised (the sender's own events, or one with the redact level,
            # which local sends check before sending; v3+ the same-server rule).
            because = client_event(r.json, r.event_id, now_ms=now_ms, include_room_id=include_room_id,
                                   room_version_rules=rules, room_id=ev.room_id)
        event = client_event(
            ev.json,
            ev.event_id,
            now_ms=now_ms,
            include_room_id=include_room_id,
            transaction_id=txns.get(ev.event_id),
            redacted_because=because,
            room_version_rules=rules,
            room_id=ev.room_id,
        )
        if event_fields is not None:
            event = apply_event_fields(event, event_fields)
        out.append(event)
    return out


def _room_versions(conn: sa.Connection, room_ids: list[str]) -> dict[str, str]:
    if not room_ids:
        return {}
    return dict(conn.execute(sa.select(rooms.c.room_id, rooms.c.room_version).where(rooms.c.room_id.in_(room_ids))).all())


def _forgotten(conn: sa.Connection, user_id: str) -> set[str]:
    return set(conn.execute(sa.select(forgotten_rooms.c.room_id).where(forgotten_rooms.c.user_id == user_id)).scalars())


def _summary(members: dict[str, str], user_id: str) -> dict[str, Any]:
    """``summary`` from user ID -> membership (``storage.timeline.get_member_list``)."""
    joined = sorted(u for u, m in members.items() if m == "join")
    invited = sorted(u for u, m in members.items() if m == "invite")
    heroes = [u for u in joined + invited if u != user_id][:5]
    return {"m.heroes": heroes, "m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}


def _timeline_window(
    conn: sa.Connection,
    user_id: str,
    room_id: str,
    tfilter: RoomEventFilter,
    *,
    after: int,
    upto: int,
    limit: int,
    membership: str,
    joined_at: int | None = None,
) -> tuple[list[StoredEvent], bool, str]:
    """The latest ``limit`` events in ``(after, upto]`` that the user may see and the
    timeline filter allows, ``limited`` (more such events exist, or the walk hit
    ``MAX_TIMELINE_SCAN`` rows), and ``prev_batch``. Filtering happens before the
    limit, walking back in growing batches, so a ``types`` filter still fills the
    timeline from older events."""
    picked: list[StoredEvent] = []
    cursor = upto
    scanned = 0
    own_server = user_id.split(":", 1)[1]
    batch_size = limit + 1
    while True:
        batch = timeline.get_timeline(conn, room_id, after=after, upto=cursor, limit=batch_size)
        scanned += len(batch)
        if joined_at is not None:
            # Fast path: an event *this server* built after the user's current join
            # was built on a state holding that join (our actor's prev events are its
            # forward extremities), so the user's membership at it is join and it is
            # visible whatever the history visibility. An event from another server
            # may sit on a branch concurrent with the join (federation forks the
            # DAG), so it takes the full history-visibility check like older events.
            fast = [e for e in batch if e.stream_ordering > joined_at and _sender_server(e) == own_server]
            slow = [e for e in batch if e.stream_ordering <= joined_at or _sender_server(e) != own_server]
            visible = timeline.filter_visible_events(conn, user_id, slow, membership) if slow else []
            if fast:
                visible = sorted(visible + fast, key=lambda e: e.stream_ordering)
        else:
            visible = timeline.filter_visible_events(conn, user_id, batch, membership)
        picked[:0] = [e for e in visible if event_allowed(tfilter, e.json, room_id=room_id)]
        if len(picked) > limit:
            picked = picked[-limit:]
            return picked, True, f"t{picked[0].stream_ordering}"
        if len(batch) < batch_size:  # reached ``after``: nothing older to give
            return picked, False, f"t{picked[0].stream_ordering}" if picked else f"t{upto + 1}"
        cursor = batch[0].stream_ordering - 1
        if scanned >= MAX_TIMELINE_SCAN:
            start = picked[0].stream_ordering if picked else batch[0].stream_ordering
            return picked, True, f"t{start}"
        batch_size = min(max(2 * batch_size, 50), 500)


def _sender_server(event: StoredEvent) -> str:
    sender = event.json.get("sender")
    return sender.split(":", 1)[1] if isinstance(sender, str) and ":" in sender else ""


def compute_sync(conn: sa.Connection, req: SyncRequest) -> SyncResult:
    from api.client.ephemeral import CURRENTLY_ACTIVE_MS
    from api.client.notifications import SyncPushRules, unread_counts

    upto = timeline.max_stream_ordering(conn)
    misc_upto = current_stream_id(conn)
    since_ev = req.since.events if req.since else 0
    since_misc = req.since.misc if req.since else 0
    initial = req.since is None
    f = req.filter
    room_filter = f.room
    limit = min(room_filter.timeline.limit or req.default_limit, MAX_TIMELINE_SCAN)
    lazy = bool(room_filter.state.lazy_load_members)
    state_field = "state_after" if req.use_state_after else "state"
    memberships = timeline.get_memberships(conn, req.user_id)
    push = SyncPushRules(conn, req.user_id)
    changed = set() if initial else timeline.get_membership_changes(conn, req.user_id, since_ev, upto)
    forgotten = _forgotten(conn, req.user_id)
    versions = _room_versions(conn, list(memberships))
    result = SyncResult(body={}, events_pos=upto, misc_pos=misc_upto)
    join: dict[str, Any] = {}
    invite: dict[str, Any] = {}
    leave: dict[str, Any] = {}
    knock: dict[str, Any] = {}
    joined_ids = [r for r, m in memberships.items() if m.membership == "join" and room_allowed(room_filter, r)]
    with_events = set(joined_ids) if initial else timeline.rooms_with_events_since(conn, joined_ids, since_ev, upto)
    receipts = userdata.get_receipts_since(conn, joined_ids, since_misc, misc_upto, viewer=req.user_id)
    account = userdata.get_account_data_since(conn, req.user_id, since_misc, misc_upto)
    room_account: dict[str, list[dict[str, Any]]] = {}
    global_account = []
    for room_id, type_, content in account:
        if room_id:
            if event_allowed(room_filter.account_data, {"type": type_}, room_id=room_id):
                room_account.setdefault(room_id, []).append({"type": type_, "content": content})
        elif event_allowed(f.account_data, {"type": type_}):
            global_account.append({"type": type_, "content": content})
    if initial and not any(e["type"] == "m.push_rules" for e in global_account) and \
            event_allowed(f.account_data, {"type": "m.push_rules"}):
        # Clients read their push rules from account data (Synapse always sends
        # them on an initial sync); a user who never changed one has no stored row.
        global_account.append({"type": "m.push_rules", "content": push.rules})
    if f.account_data.limit is not None:
        global_account = global_account[: f.account_data.limit]

    def fmt(evs: list[StoredEvent], room_id: str) -> list[dict[str, Any]]:
        return format_events(conn, evs, user_id=req.user_id, device_id=req.device_id,
                             room_version=versions.get(room_id, "1"), now_ms=req.now_ms,
                             include_room_id=False, event_fields=f.event_fields, event_format=f.event_format)

    for room_id in joined_ids:
        fresh = initial or req.full_state or room_id in changed
        section: dict[str, Any] = {}
        if room_id in with_events or fresh:
            # A fresh room on an initial sync starts from the beginning; a join (or
            # full_state) in an incremental sync keeps the timeline after ``since``.
            after = 0 if fresh and initial else since_ev
            visible, limited, prev = _timeline_window(
                conn, req.user_id, room_id, room_filter.timeline, after=after, upto=upto, limit=limit,
                membership="join", joined_at=memberships[room_id].stream_ordering,
            )
            timeline_ids = {e.event_id for e in visible}
            current: dict[tuple[str, str], str] | None = None
            if fresh:
                current = timeline.get_current_state_ids(conn, room_id)
                state_ids = current
            else:
                state_ids = {k: v for k, v in timeline.get_state_deltas(conn, room_id, since_ev, upto).items() if v}
            if req.use_state_after:
                # State at the END of the timeline: every change, the timeline's included.
                wanted = dict(state_ids)
            else:
                # State at the START of the timeline: what the timeline does not carry.
                wanted = {k: v for k, v in state_ids.items() if v not in timeline_ids}
            if fresh or any(k[0] == "m.room.member" for k in state_ids):
                section["summary"] = _summary(timeline.get_member_list(conn, room_id), req.user_id)
            if lazy:
                # Members of the timeline's senders, the user and the heroes only
                # (sync.yaml: heroes' member events "MUST be included in the state").
                senders = {e.json.get("sender") for e in visible}
                senders |= set(section.get("summary", {}).get("m.heroes", ()))
                needed = senders | {req.user_id}
                wanted = {k: v for k, v in wanted.items() if k[0] != "m.room.member" or k[1] in needed}
                if not fresh:
                    # The client may never have been sent these senders' member events
                    # (no per-device record of what was sent; redundancy is allowed:
                    # "Lazy-loading room members").
                    for user in senders:
                        # One primary-key probe per sender, not the whole state.
                        event_id = timeline.get_current_state_event_id(conn, room_id, "m.room.member", user)
                        if event_id and (req.use_state_after or event_id not in timeline_ids):
                            wanted.setdefault(("m.room.member", user), event_id)
            state_events = list(get_events(conn, wanted.values()).values())
            state_events = [e for e in state_events if event_allowed(room_filter.state, e.json, room_id=room_id)]
            state_events.sort(key=lambda e: e.stream_ordering)
            section["timeline"] = {"events": fmt(visible, room_id), "limited": limited, "prev_batch": prev}
            section[state_field] = {"events": fmt(state_events, room_id)}
        ephemeral = []
        if room_id in receipts:
            ephemeral.append({"type": "m.receipt", "content": receipts[room_id]})
        ephemeral = [e for e in ephemeral if event_allowed(room_filter.ephemeral, e, room_id=room_id)]
        if ephemeral:
            section["ephemeral"] = {"events": ephemeral}
        if room_id in room_account:
            section["account_data"] = {"events": room_account[room_id]}
        if section or fresh:
            section.setdefault("timeline", {"events": [], "limited": False, "prev_batch": f"t{upto + 1}"})
            section.setdefault(state_field, {"events": []})
            section.setdefault("ephemeral", {"events": []})
            section.setdefault("account_data", {"events": []})
            counts = unread_counts(conn, req.user_id, room_id, versions.get(room_id, "1"),
                                   membership_position=memberships[room_id].stream_ordering,
                                   member_event=memberships[room_id].event, upto=upto, push=push)
            section["unread_notifications"] = counts
            join[room_id] = section
    for room_id, m in memberships.items():
        if not room_allowed(room_filter, room_id) or not (initial or room_id in changed):
            continue
        if m.membership in ("invite", "knock"):
            own = m.event
            unsigned = own.get("unsigned") if isinstance(own.get("unsigned"), dict) else {}
            remote_state = unsigned.get(f"{m.membership}_room_state")
            if isinstance(remote_state, list):
                # A room we are not in: the stripped state the inviting (or
                # knocked-upon) server sent, pruned to the client schema.
                stripped = strip_state_events(e for e in remote_state if isinstance(e, dict))
            else:
                current = timeline.get_current_state_ids(conn, room_id)
                evs = get_events(conn, current.values())
                by_key = {k: evs[v].json for k, v in current.items() if v in evs}
                stripped = stripped_state(by_key)
            stripped.append({"type": own["type"], "state_key": own["state_key"], "sender": own["sender"],
                             "content": own["content"]})
            if m.membership == "invite":
                invite[room_id] = {"invite_state": {"events": stripped}}
            else:
                knock[room_id] = {"knock_state": {"events": stripped}}
        elif m.membership in ("leave", "ban") and room_id not in forgotten and (not initial or room_filter.include_leave):
            visible, limited, prev = _timeline_window(
                conn, req.user_id, room_id, room_filter.timeline, after=since_ev, upto=m.stream_ordering,
                limit=limit, membership=m.membership,
            )
            leave[room_id] = {
                "timeline": {"events": fmt(visible, room_id), "limited": limited, "prev_batch": prev},
                state_field: {"events": []},
                "account_data": {"events": room_account.get(room_id, [])},
            }
    body: dict[str, Any] = {"next_batch": "", "rooms": {}}
    if join:
        body["rooms"]["join"] = join
    if invite:
        body["rooms"]["invite"] = invite
    if leave:
        body["rooms"]["leave"] = leave
    if knock:
        body["rooms"]["knock"] = knock
    if global_account:
        body["account_data"] = {"events": global_account}
    # Presence of users sharing a joined room.
    # Presence changes first (usually none), then which of those users share a room.
    changes = userdata.get_presence_changes(conn, since_misc, misc_upto) if joined_ids else []
    if changes:
        peers = timeline.get_rooms_shared_with(conn, [p["user_id"] for p in changes], joined_ids)
        pres = [p for p in changes if p["user_id"] in peers]
        events = [
            {"type": "m.presence", "sender": p["user_id"],
             "content": {k: v for k, v in {"presence": p["presence"], "status_msg": p["status_msg"],
                                           "last_active_ago": max(0, req.now_ms - p["last_active_ts"]),
                                           "currently_active": p["presence"] == "online"
                                           and req.now_ms - p["last_active_ts"] < CURRENTLY_ACTIVE_MS}.items()
                         if v is not None}}
            for p in pres
        ]
        events = [e for e in events if event_allowed(f.presence, e)]
        if f.presence.limit is not None:
            events = events[: f.presence.limit]
        if events:
            body["presence"] = {"events": events}
    # End-to-end encryption (issue 6). Each part is owned by its storage module:
    # to-device messages (storage.to_device), device-list changes (storage.device_lists)
    # and this device's key counts (storage.e2e_keys).
    since_to_device = req.since.to_device if req.since else 0
    to_device_events, result.to_device_pos = to_device.sync_to_device(
        conn, req.user_id, req.device_id, after=since_to_device
    )
    if to_device_events:
        body["to_device"] = {"events": to_device_events}
    changed, left = device_lists.sync_device_lists(
        conn, req.user_id, initial=initial, since_events=since_ev, upto_events=upto,
        since_misc=since_misc, upto_misc=misc_upto, memberships=memberships,
    )
    if changed or left:
        body["device_lists"] = {"changed": changed, "left": left}
    body["device_one_time_keys_count"] = e2e_keys.one_time_key_counts(conn, req.user_id, req.device_id)
    body["device_unused_fallback_key_types"] = e2e_keys.unused_fallback_key_types(conn, req.user_id, req.device_id)
    result.body = body
    result.joined = joined_ids
    result.empty = not (join or invite or leave or knock or global_account or body.get("presence")
                        or to_device_events or changed or left)
    return result


async def _load_filter(user_id: str) -> Filter:
    d = deps()
    raw = request.args.get("filter")
    if raw is None:
        return DEFAULT_FILTER
    try:
        kind, value = parse_filter_json_param(raw)
    except FilterError as e:
        raise MatrixError(e.errcode, 400, e.error) from None
    if kind == "inline":
        return value  # type: ignore[return-value]
    if not isinstance(value, str) or not _FILTER_ID.match(value):
        raise MatrixError("M_INVALID_PARAM", 400, f"unknown filter {value!r}")
    stored = await d.db.read(userdata.get_filter, user_id, int(value))
    if stored is None:
        raise MatrixError("M_INVALID_PARAM", 400, f"unknown filter {value!r}")
    return parse_filter(stored)


def _add_typing(result: SyncResult, since_typing: int | None, filt: Filter, state_field: str) -> None:
    typing = deps().typing
    join = result.body.get("rooms", {}).get("join", {})
    for room_id in result.joined:
        if since_typing is None or typing.changed_since(room_id, since_typing):
            users = typing.typing_users(room_id)
            if since_typing is None and not users:
                continue
            event = {"type": "m.typing", "content": {"user_ids": users}}
            if not event_allowed(filt.room.ephemeral, event, room_id=room_id):
                continue
            section = join.get(room_id)
            if section is None:
                section = {"timeline": {"events": [], "limited": False, "prev_batch": f"t{result.events_pos + 1}"},
                           state_field: {"events": []}, "ephemeral": {"events": []}, "account_data": {"events": []}}
                join[room_id] = section
                result.body.setdefault("rooms", {})["join"] = join
                result.empty = False
            events = section.setdefault("ephemeral", {"events": []})["events"]
            limit = filt.room.ephemeral.limit
            if limit is None or len(events) < limit:
                events.append(event)


@client_route(blueprint, "/sync", ["GET"])
async def sync():
    d = deps()
    who = await requester()
    since_raw = request.args.get("since")
    since = SyncToken.parse(since_raw) if since_raw else None
    timeout_ms = query_int("timeout", 0, maximum=d.settings.sync.max_timeout_ms) or 0
    full_state = query_bool("full_state", False)
    use_state_after = query_bool("use_state_after", False)
    filt = await _load_filter(who.user_id)
    set_presence = request.args.get("set_presence", "online")
    if set_presence not in ("online", "offline", "unavailable"):
        raise MatrixError("M_INVALID_PARAM", 400, "set_presence must be online, offline or unavailable")
    from api.client.ephemeral import note_presence
    from api.client.to_device import acknowledge as acknowledge_to_device

    # "If this parameter is omitted then the client is automatically marked as online."
    await note_presence(d, who.user_id, set_presence)
    if since is not None:  # Send-to-Device "Server behaviour": since acknowledges what it covers
        await acknowledge_to_device(d, who.user_id, who.device_id, since.to_device)
    deadline = trio.current_time() + timeout_ms / 1000
    memberships = await d.db.read(timeline.get_memberships, who.user_id)
    # Left rooms matter only through the user's own membership (their user key).
    keys = {who.user_id, *(r for r, m in memberships.items() if m.membership in ("join", "invite", "knock"))}
    state_field = "state_after" if use_state_after else "state"
    while True:
        typing_serial = d.typing.serial
        with d.notifier.listen(keys) as listener:
            req = SyncRequest(
                user_id=who.user_id, device_id=who.device_id, since=since, filter=filt,
                full_state=full_state, now_ms=d.clock.time_ms(), default_limit=d.settings.sync.default_timeline_limit,
                use_state_after=use_state_after,
            )
            result = await d.db.read(compute_sync, req)
            _add_typing(result, since.typing if since else None, filt, state_field)
            if not result.empty or since is None or full_state or trio.current_time() >= deadline:
                break
            keys_now = {who.user_id, *result.joined}
            if keys_now - keys:
                keys = keys | keys_now  # joined a room since we registered: listen to it too
                continue
            with trio.move_on_at(deadline):
                await listener.wait()
            if trio.current_time() >= deadline and not listener.woken:
                break
    result.body["next_batch"] = str(SyncToken(result.events_pos, result.misc_pos, typing_serial, result.to_device_pos))
    return json_response(result.body)


# --------------------------------------------------------------------------- filters


@client_route(blueprint, "/user/<path:user_id>/filter", ["POST"])
async def create_filter(user_id: str):
    d = deps()
    who = await requester()
    if user_id != who.user_id:
        raise forbidden("you can only create filters for yourself")
    body = await json_body()
    try:
        parse_filter(body)
    except FilterError as e:
        raise MatrixError(e.errcode, 400, e.error) from None
    filter_id = await d.db.write(userdata.add_filter, who.user_id, body)
    return json_response({"filter_id": str(filter_id)})


@client_route(blueprint, "/user/<path:user_id>/filter/<filter_id>", ["GET"])
async def get_filter(user_id: str, filter_id: str):
    d = deps()
    who = await requester()
    if user_id != who.user_id:
        raise forbidden("you can only read your own filters")
    if not _FILTER_ID.match(filter_id):
        raise not_found("no such filter")
    stored = await d.db.read(userdata.get_filter, who.user_id, int(filter_id))
    if stored is None:
        raise not_found("no such filter")
    return json_response(stored)
