"""Client-server filters: parsing, validation and matching (client-server API
"Filtering"; ``POST /user/{userId}/filter`` request schema ``Filter`` —
``definitions/sync_filter.yaml``, ``room_event_filter.yaml``, ``event_filter.yaml``).

Theory of operation
-------------------
A filter arrives as JSON, either uploaded (``POST /user/{userId}/filter``) or inline
in a ``filter`` query parameter. :func:`parse_filter` validates it once against the
schema and turns it into immutable values — :class:`Filter`, :class:`RoomFilter`,
:class:`RoomEventFilter` (``StateFilter`` is the same shape; the spec schema uses
``RoomEventFilter`` for ``room.state``), :class:`EventFilter` — so matching code
never re-checks types. Absent fields are ``None`` ("If this list is absent then
..."), which is distinct from an empty list (an empty ``types`` list matches no
event). Each value's ``to_json()`` returns the filter as the client gave it,
minus unknown keys, for ``GET /user/{userId}/filter/{filterId}``.

Matching is :func:`event_allowed` (one event against an ``EventFilter`` or
``RoomEventFilter``) and :func:`room_allowed` (a room against the room-level
``rooms`` / ``not_rooms``). ``not_*`` lists always win over their positive
counterparts ("A matching ... will be excluded even if it is listed in the ...
filter"). ``types`` / ``not_types`` entries may use ``*`` for "any sequence of
characters"; no other character is special. :func:`apply_event_fields` projects a
serialised event onto ``event_fields`` (appendices "Dot-separated property paths").

Validation decisions: a value of the wrong JSON type is ``M_BAD_JSON``; a
well-typed value outside the schema's allowed set (``limit`` < 1, an unknown
``event_format``, a room ID not starting ``!`` or a user ID not starting ``@`` in
the ``rooms``/``senders`` lists, per the schema patterns) is ``M_INVALID_PARAM``;
unparsable inline JSON is ``M_NOT_JSON``. Unknown keys are ignored (JSON objects are
extensible), and an explicit ``null`` is read as "absent" (lenient; the schema
would reject it).

Pure and synchronous; no input is mutated.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from .errors import ProtocolError

__all__ = [
    "FilterError",
    "EventFilter",
    "RoomEventFilter",
    "StateFilter",
    "RoomFilter",
    "Filter",
    "DEFAULT_FILTER",
    "DEFAULT_EVENT_FILTER",
    "DEFAULT_ROOM_EVENT_FILTER",
    "parse_filter",
    "parse_event_filter",
    "parse_room_event_filter",
    "parse_filter_json_param",
    "parse_room_event_filter_param",
    "event_allowed",
    "room_allowed",
    "type_matches",
    "split_field_path",
    "apply_event_fields",
]


class FilterError(ProtocolError, ValueError):
    """A filter the schema does not allow; ``errcode`` is what the API answers with
    (``M_BAD_JSON``, ``M_INVALID_PARAM`` or ``M_NOT_JSON``), ``error`` the message."""

    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error, rule="client-server Filtering")
        self.errcode = errcode
        self.error = error


# --------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """``EventFilter`` (event_filter.yaml). ``None`` means the field was absent."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] | None = None
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomEventFilter(EventFilter):
    """``RoomEventFilter`` (room_event_filter.yaml): ``EventFilter`` plus room and
    content conditions and the lazy-loading / thread-notification switches (the
    booleans default to ``false`` per the schema; ``contains_url`` stays ``None``
    when absent: "If omitted, url key is not considered for filtering")."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] | None = None
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


#: The spec once named the ``room.state`` filter ``StateFilter``; its schema is now
#: ``RoomEventFilter`` (sync_filter.yaml ``room.state``).
StateFilter = RoomEventFilter


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomFilter:
    """``RoomFilter`` (sync_filter.yaml ``room``). ``rooms`` / ``not_rooms`` apply
    "before the filters in ephemeral, state, timeline or account_data"."""

    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] | None = None
    include_leave: bool = False
    ephemeral: RoomEventFilter = field(default_factory=RoomEventFilter)
    state: RoomEventFilter = field(default_factory=RoomEventFilter)
    timeline: RoomEventFilter = field(default_factory=RoomEventFilter)
    account_data: RoomEventFilter = field(default_factory=RoomEventFilter)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """``Filter`` (sync_filter.yaml). ``event_fields`` ``None`` means "all fields";
    ``event_format`` defaults to ``client``."""

    event_fields: tuple[str, ...] | None = None
    event_format: Literal["client", "federation"] = "client"
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    room: RoomFilter = field(default_factory=RoomFilter)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)


DEFAULT_EVENT_FILTER = EventFilter()
DEFAULT_ROOM_EVENT_FILTER = RoomEventFilter()
#: The filter used when a request names none: everything, client format.
DEFAULT_FILTER = Filter()

_DEFAULT_FIELD_VALUES: dict[str, Any] = {
    "event_format": "client",
    "include_leave": False,
    "lazy_load_members": False,
    "include_redundant_members": False,
    "unread_thread_notifications": False,
}


def _to_json(value: Any) -> dict[str, Any]:
    """Only the fields that differ from "absent"/defaults, as JSON."""
    out: dict[str, Any] = {}
    for name in _field_names(type(value)):
        v = getattr(value, name)
        if v is None or (name in _DEFAULT_FIELD_VALUES and v == _DEFAULT_FIELD_VALUES[name]):
            continue
        if isinstance(v, tuple):
            out[name] = list(v)
        elif isinstance(v, (EventFilter, RoomFilter)):
            sub = v.to_json()
            if sub:
                out[name] = sub
        else:
            out[name] = v
    return out


@lru_cache(maxsize=None)
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(cls.__dataclass_fields__)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------


def _bad_json(path: str, expected: str) -> FilterError:
    return FilterError("M_BAD_JSON", f"filter: {path} must be {expected}")


def _object(obj: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise _bad_json(path, "a JSON object")
    return obj


def _get(obj: Mapping[str, Any], key: str) -> Any:
    # An explicit null reads as absent (module docstring).
    return obj.get(key)


def _bool(obj: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = _get(obj, key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad_json(f"{path}{key}", "a boolean")
    return value


def _string_list(obj: Mapping[str, Any], key: str, path: str, *, prefix: str | None = None) -> tuple[str, ...] | None:
    value = _get(obj, key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad_json(f"{path}{key}", "an array of strings")
    for item in value:
        if not isinstance(item, str):
            raise _bad_json(f"{path}{key}", "an array of strings")
        if prefix is not None and not item.startswith(prefix):
            # Schema pattern "^!" (mx-room-id) / "^@" (mx-user-id).
            raise FilterError("M_INVALID_PARAM", f"filter: {path}{key} entries must start with {prefix!r}")
    return tuple(value)


def _limit(obj: Mapping[str, Any], path: str) -> int | None:
    value = _get(obj, "limit")
    if value is None:
        return None
    # JSON integers only: booleans are not numbers; 10.0 is not an integer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_json(f"{path}limit", "an integer")
    if value < 1:
        # event_filter.yaml: "must be an integer greater than 0".
        raise FilterError("M_INVALID_PARAM", f"filter: {path}limit must be greater than 0")
    return value


def _event_filter_fields(obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    return {
        "limit": _limit(obj, path),
        "types": _string_list(obj, "types", path),
        "not_types": _string_list(obj, "not_types", path),
        "senders": _string_list(obj, "senders", path, prefix="@"),
        "not_senders": _string_list(obj, "not_senders", path, prefix="@"),
    }


def parse_event_filter(obj: Any, *, path: str = "") -> EventFilter:
    """An ``EventFilter`` from JSON; raises :class:`FilterError`. ``path`` prefixes
    field names in error messages (e.g. ``"presence."``)."""
    if obj is None:
        return DEFAULT_EVENT_FILTER
    obj = _object(obj, path.rstrip(".") or "filter")
    return EventFilter(**_event_filter_fields(obj, path))


def parse_room_event_filter(obj: Any, *, path: str = "") -> RoomEventFilter:
    """A ``RoomEventFilter`` from JSON (also the ``filter`` of ``/messages`` and
    ``/context``); raises :class:`FilterError`."""
    if obj is None:
        return DEFAULT_ROOM_EVENT_FILTER
    obj = _object(obj, path.rstrip(".") or "filter")
    return RoomEventFilter(
        **_event_filter_fields(obj, path),
        rooms=_string_list(obj, "rooms", path, prefix="!"),
        not_rooms=_string_list(obj, "not_rooms", path, prefix="!"),
        contains_url=_bool(obj, "contains_url", path),
        lazy_load_members=bool(_bool(obj, "lazy_load_members", path)),
        include_redundant_members=bool(_bool(obj, "include_redundant_members", path)),
        unread_thread_notifications=bool(_bool(obj, "unread_thread_notifications", path)),
    )


def _parse_room_filter(obj: Any) -> RoomFilter:
    if obj is None:
        return RoomFilter()
    obj = _object(obj, "room")
    return RoomFilter(
        rooms=_string_list(obj, "rooms", "room.", prefix="!"),
        not_rooms=_string_list(obj, "not_rooms", "room.", prefix="!"),
        include_leave=bool(_bool(obj, "include_leave", "room.")),
        ephemeral=parse_room_event_filter(_get(obj, "ephemeral"), path="room.ephemeral."),
        state=parse_room_event_filter(_get(obj, "state"), path="room.state."),
        timeline=parse_room_event_filter(_get(obj, "timeline"), path="room.timeline."),
        account_data=parse_room_event_filter(_get(obj, "account_data"), path="room.account_data."),
    )


def parse_filter(obj: Any) -> Filter:
    """A ``Filter`` (sync_filter.yaml) from parsed JSON; raises :class:`FilterError`."""
    obj = _object(obj, "filter")
    event_format = _get(obj, "event_format")
    if event_format is None:
        event_format = "client"
    elif not isinstance(event_format, str):
        raise _bad_json("event_format", "a string")
    elif event_format not in ("client", "federation"):
        raise FilterError("M_INVALID_PARAM", "filter: event_format must be 'client' or 'federation'")
    return Filter(
        event_fields=_string_list(obj, "event_fields", ""),
        event_format=event_format,
        presence=parse_event_filter(_get(obj, "presence"), path="presence."),
        account_data=parse_event_filter(_get(obj, "account_data"), path="account_data."),
        room=_parse_room_filter(_get(obj, "room")),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise FilterError("M_NOT_JSON", f"filter is not valid JSON: {exc}") from None


def parse_filter_json_param(text: str) -> tuple[Literal["inline"], Filter] | tuple[Literal["id"], str]:
    """The ``filter`` query parameter of ``/sync``: "The server will detect whether
    it is an ID or a JSON object by whether the first character is a ``"{"`` open
    brace" (sync.yaml). Returns ``("inline", Filter)`` or ``("id", filter_id)``
    (filter IDs "Cannot start with a ``{``", filter.yaml)."""
    if text.startswith("{"):
        return ("inline", parse_filter(_loads(text)))
    return ("id", text)


def parse_room_event_filter_param(text: str) -> RoomEventFilter:
    """The ``filter`` query parameter of ``/messages`` / ``/context``: always "A JSON
    RoomEventFilter" (message_pagination.yaml)."""
    return parse_room_event_filter(_loads(text))


# --------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _type_pattern(pattern: str) -> re.Pattern[str]:
    # "A * can be used as a wildcard to match any sequence of characters."
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def type_matches(event_type: str, patterns: Iterable[str]) -> bool:
    """Whether ``event_type`` matches any of ``patterns`` (``*`` wildcards)."""
    for pattern in patterns:
        if "*" not in pattern:
            if pattern == event_type:
                return True
        elif _type_pattern(pattern).fullmatch(event_type):
            return True
    return False


def _list_allows(value: str | None, allowed: Sequence[str] | None, denied: Sequence[str] | None) -> bool:
    # not_* first: "A matching X will be excluded even if it is listed in the X filter."
    if denied is not None and value is not None and value in denied:
        return False
    # "If this list is absent then all X are included"; a present list must name
    # the value (an event without one matches no entry).
    if allowed is not None and (value is None or value not in allowed):
        return False
    return True


def event_allowed(f: EventFilter, event: Mapping[str, Any], *, room_id: str | None = None) -> bool:
    """Whether ``event`` (any JSON with ``type``, ``sender``, ``content``) passes
    ``f``. For a :class:`RoomEventFilter` the room is ``room_id`` when given (events
    in ``/sync`` room sections carry no ``room_id``), else ``event["room_id"]``.

    A positive list (``types``, ``senders``, ``rooms``) admits only events that
    have a value it matches, so an event with no ``sender`` fails a ``senders``
    list; the ``not_`` lists only exclude what they match. ``contains_url``:
    "If true, includes only events with a url key in their content. If false,
    excludes those events" — key presence, whatever its value.
    """
    event_type = event.get("type")
    event_type = event_type if isinstance(event_type, str) else None
    if f.not_types is not None and event_type is not None and type_matches(event_type, f.not_types):
        return False
    if f.types is not None and (event_type is None or not type_matches(event_type, f.types)):
        return False

    sender = event.get("sender")
    if not _list_allows(sender if isinstance(sender, str) else None, f.senders, f.not_senders):
        return False

    if isinstance(f, RoomEventFilter):
        if room_id is None:
            value = event.get("room_id")
            room_id = value if isinstance(value, str) else None
        if not _list_allows(room_id, f.rooms, f.not_rooms):
            return False
        if f.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and "url" in content
            if has_url != f.contains_url:
                return False
    return True


def room_allowed(room_filter: RoomFilter | RoomEventFilter, room_id: str) -> bool:
    """Whether a room passes the filter's ``rooms`` / ``not_rooms`` ("A matching
    room will be excluded even if it is listed in the rooms filter")."""
    return _list_allows(room_id, room_filter.rooms, room_filter.not_rooms)


# --------------------------------------------------------------------------------
# event_fields
# --------------------------------------------------------------------------------


def split_field_path(path: str) -> list[str]:
    """A dot-separated property path split into property names (appendices
    "Dot-separated property paths"): ``\\.`` is a literal dot, ``\\\\`` a literal
    backslash, and any other backslash is itself ("a ``\\x`` would be treated as a
    literal backslash followed by 'x'"), including a trailing one."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        ch = path[i]
        if ch == "\\" and i + 1 < n and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


# A path trie: name -> subtree; a subtree of None means "the whole value".
_Trie = dict[str, "_Trie | None"]


def _insert(trie: _Trie, parts: list[str]) -> None:
    node = trie
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if last:
            node[part] = None  # the whole value, subsuming any deeper paths
            return
        child = node.get(part, {})
        if child is None:  # a shorter path already takes the whole value
            return
        node[part] = child
        node = child


def _project(src: Mapping[str, Any], trie: _Trie) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sub in trie.items():
        if name not in src:
            continue
        value = src[name]
        if sub is None:
            out[name] = copy.deepcopy(value)
        elif isinstance(value, Mapping):
            projected = _project(value, sub)
            if projected:
                out[name] = projected
    return out


def apply_event_fields(event: Mapping[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """``event`` reduced to the properties named by ``event_fields`` (a new dict).

    Paths that do not exist, or that descend through a non-object, contribute
    nothing (no empty objects are created); overlapping paths merge (``content``
    and ``content.body`` give all of ``content``). ``None`` — and, as Synapse
    does, an empty list — mean "all fields": "If this list is absent then all fields
    are included", and a server "may include more fields than were requested".
    """
    if not fields:
        return copy.deepcopy(dict(event))
    trie: _Trie = {}
    for path in fields:
        _insert(trie, split_field_path(path))
    return _project(event, trie)
