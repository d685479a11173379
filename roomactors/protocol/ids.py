"""Identifier grammar (spec appendices "Identifier Grammar", "Server Name").

Theory of operation
-------------------
IDs are plain ``str`` at run time; the ``NewType`` names document intent in
signatures. Validators return ``bool``; ``parse_*``/``server_name_of`` raise
:class:`InvalidEvent` naming what is wrong.

Over federation the spec requires tolerance of *historical* user IDs: any
non-surrogate code points except ``:`` and NUL, even an empty localpart
(appendices "Historical User IDs"). :func:`is_valid_user_id` applies that
tolerant grammar (what we check ``sender`` with); :func:`is_compliant_user_id`
is the strict grammar for IDs we mint. Room and event ID shapes depend on the
room version, so those validators take the rules.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NewType

from .errors import InvalidEvent
from .room_versions import EventIdFormat, RoomIdFormat, RoomVersionRules

__all__ = [
    "UserId",
    "RoomId",
    "EventId",
    "ServerName",
    "MAX_ID_BYTES",
    "is_valid_server_name",
    "is_valid_user_id",
    "is_compliant_user_id",
    "is_valid_room_id",
    "is_valid_event_id",
    "server_name_of",
]

UserId = NewType("UserId", str)
RoomId = NewType("RoomId", str)
EventId = NewType("EventId", str)
ServerName = NewType("ServerName", str)

#: User IDs, room IDs, event IDs and aliases MUST NOT exceed 255 bytes.
MAX_ID_BYTES = 255

_DNS_NAME = re.compile(r"[A-Za-z0-9.\-]{1,255}\Z")
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")
_COMPLIANT_LOCALPART = re.compile(r"[a-z0-9.=_/+\-]+\Z")
_HASH_STD = re.compile(r"[A-Za-z0-9+/]{43}\Z")
_HASH_URLSAFE = re.compile(r"[A-Za-z0-9_\-]{43}\Z")


def _split_port(server_name: str) -> tuple[str, str | None]:
    if server_name.startswith("["):
        end = server_name.find("]")
        if end == -1:
            return server_name, None
        host, rest = server_name[: end + 1], server_name[end + 1 :]
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            return "", None
        return host, rest[1:]
    if ":" in server_name:
        host, port = server_name.rsplit(":", 1)
        return host, port
    return server_name, None


def is_valid_server_name(server_name: object) -> bool:
    """``hostname [ ":" port ]`` with IPv4, ``[IPv6]`` or DNS hostname (appendices "Server Name")."""
    if not isinstance(server_name, str) or not server_name:
        return False
    host, port = _split_port(server_name)
    if port is not None and not _PORT.match(port):
        return False
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if not _IPV6_CHARS.match(inner):
            return False
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        return True
    if _IPV4.match(host):
        return all(0 <= int(part) <= 255 for part in host.split("."))
    return bool(_DNS_NAME.match(host))


def _fits(identifier: str) -> bool:
    try:
        return len(identifier.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:  # lone surrogates are not valid code points here
        return False


def _historical_localpart_ok(localpart: str) -> bool:
    return "\x00" not in localpart and ":" not in localpart


def is_valid_user_id(user_id: object) -> bool:
    """``@localpart:server_name`` with the historical (tolerant) localpart grammar."""
    if not isinstance(user_id, str) or not user_id.startswith("@") or not _fits(user_id):
        return False
    localpart, sep, server = user_id[1:].partition(":")
    return bool(sep) and _historical_localpart_ok(localpart) and is_valid_server_name(server)


def is_compliant_user_id(user_id: object) -> bool:
    """The strict v1.8+ grammar: localpart of ``a-z 0-9 . _ = - / +``."""
    if not is_valid_user_id(user_id):
        return False
    assert isinstance(user_id, str)
    return bool(_COMPLIANT_LOCALPART.match(user_id[1:].partition(":")[0]))


def is_valid_room_id(room_id: object, rules: RoomVersionRules) -> bool:
    """v1–v11 ``!opaque:server_name``; v12 ``!`` + 43 URL-safe base64 characters."""
    if not isinstance(room_id, str) or not room_id.startswith("!") or not _fits(room_id):
        return False
    if rules.room_id_format is RoomIdFormat.CREATE_EVENT_HASH:
        return bool(_HASH_URLSAFE.match(room_id[1:]))
    localpart, sep, server = room_id[1:].partition(":")
    return bool(sep) and _historical_localpart_ok(localpart) and is_valid_server_name(server)


def is_valid_event_id(event_id: object, rules: RoomVersionRules) -> bool:
    """v1/v2 ``$opaque:server_name``; v3 ``$`` + 43 base64; v4+ ``$`` + 43 URL-safe base64."""
    if not isinstance(event_id, str) or not event_id.startswith("$") or not _fits(event_id):
        return False
    fmt = rules.event_id_format
    if fmt is EventIdFormat.SERVER_ASSIGNED:
        localpart, sep, server = event_id[1:].partition(":")
        return bool(sep) and _historical_localpart_ok(localpart) and is_valid_server_name(server)
    if fmt is EventIdFormat.REFERENCE_HASH_BASE64:
        return bool(_HASH_STD.match(event_id[1:]))
    return bool(_HASH_URLSAFE.match(event_id[1:]))


def server_name_of(identifier: str) -> str:
    """The server name after the first ``:`` of a user ID, v1–v11 room ID, alias or v1/v2 event ID."""
    if not isinstance(identifier, str):
        raise InvalidEvent(f"{identifier!r} is not an identifier", rule="appendices: Common Identifier Format")
    _, sep, server = identifier.partition(":")
    if not sep or not is_valid_server_name(server):
        raise InvalidEvent(f"{identifier!r} has no valid server name", rule="appendices: Server Name")
    return server
