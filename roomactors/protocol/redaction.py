"""The redaction algorithm (client-server API "Redactions"; rooms/fragments/v1-, v6-, v9-,
v11-redactions).

Theory of operation
-------------------
Redaction keeps only the *essential* keys of an event so that its signatures and
reference hash survive a redaction. Which keys survive is data in
:class:`~roomactors.protocol.room_versions.RoomVersionRules`:
``redaction_keys`` (top level) and ``redaction_content_keys`` (per event type;
``None`` means "every content key", as v11 does for ``m.room.create``).
:func:`redact` never mutates its input; it returns a new dict that shares no
mutable containers with it. :func:`redacted_view` is the same algorithm without the
copies (it shares the kept values), for callers that only encode the result.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import InvalidEvent
from .room_versions import RoomVersionRules, get_rules

__all__ = ["redact", "redact_with_rules", "redacted_view"]


def redact(event: dict, room_version: str) -> dict:
    """A new dict holding the redacted form of ``event`` under ``room_version``'s algorithm."""
    return redact_with_rules(event, get_rules(room_version))


def redact_with_rules(event: dict, rules: RoomVersionRules) -> dict:
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a JSON object", rule="redaction")
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in event.items() if k in rules.redaction_keys}
    content = event.get("content")
    if not isinstance(content, dict):
        # The algorithm only defines stripping an object; keep the shape predictable.
        out["content"] = {}
        return out
    event_type = event.get("type")
    allowed = rules.redaction_content_keys.get(event_type, frozenset()) if isinstance(event_type, str) else frozenset()
    if allowed is None:
        new_content = copy.deepcopy(content)
    else:
        new_content = {k: copy.deepcopy(v) for k, v in content.items() if k in allowed}
    if (
        rules.redaction_keeps_third_party_invite_signed
        and event_type == "m.room.member"
        and isinstance(content.get("third_party_invite"), dict)
        and "signed" in content["third_party_invite"]
    ):
        # v11: "it allows the signed key of the third_party_invite key".
        new_content["third_party_invite"] = {"signed": copy.deepcopy(content["third_party_invite"]["signed"])}
    out["content"] = new_content
    return out


def redacted_view(event: dict, rules: RoomVersionRules) -> dict:
    """The redacted form of ``event`` (equal to :func:`redact_with_rules`), built
    without copying: the top-level dict and ``content`` are new, every value in them
    is ``event``'s own object. Callers must not mutate the result; it exists to be
    encoded (signing and reference hashes of events we just built)."""
    keys = rules.redaction_keys
    out: dict[str, Any] = {k: v for k, v in event.items() if k in keys}
    content = event.get("content")
    if not isinstance(content, dict):
        out["content"] = {}
        return out
    event_type = event.get("type")
    allowed = rules.redaction_content_keys.get(event_type, frozenset()) if isinstance(event_type, str) else frozenset()
    new_content = dict(content) if allowed is None else {k: v for k, v in content.items() if k in allowed}
    if (
        rules.redaction_keeps_third_party_invite_signed
        and event_type == "m.room.member"
        and isinstance(content.get("third_party_invite"), dict)
        and "signed" in content["third_party_invite"]
    ):
        new_content["third_party_invite"] = {"signed": content["third_party_invite"]["signed"]}
    out["content"] = new_content
    return out
