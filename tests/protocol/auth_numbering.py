"""Expected rule numbers per room version, transcribed by hand from the spec
(rooms/fragments/v1-, v3-, v8-auth-rules; rooms/v6, v7, v10, v11, v12), as rendered
(v12's rule-3 list renders "1, 2, 3, 5" as 3.1–3.4).

Kept independent of ``roomactors.protocol.auth._NUMBERS`` so the tests check it.
"""

from __future__ import annotations

ALL_VERSIONS = [str(i) for i in range(1, 13)]

_TOP_V1 = dict(create=1, auth_events=2, federate=3, aliases=4, member=5, sender_joined=6, tpi=7,
               required=8, state_key=9, pl=10, redaction=11, allow=12)
_TOP_V3 = dict(create=1, auth_events=2, federate=3, aliases=4, member=5, sender_joined=6, tpi=7,
               required=8, state_key=9, pl=10, allow=11)
_TOP_V6 = dict(create=1, auth_events=2, federate=3, member=4, sender_joined=5, tpi=6,
               required=7, state_key=8, pl=9, allow=10)
_TOP_V12 = dict(create=1, room_id=2, auth_events=3, federate=4, member=5, sender_joined=6, tpi=7,
                required=8, state_key=9, pl=10, allow=11)

_MEMBER_V1 = dict(shape=1, join=2, invite=3, leave=4, ban=5, unknown=6)
_MEMBER_V7 = dict(shape=1, join=2, invite=3, leave=4, ban=5, knock=6, unknown=7)
_MEMBER_V8 = dict(shape=1, jauvs=2, join=3, invite=4, leave=5, ban=6, knock=7, unknown=8)

_JOIN_V1 = dict(only_create=1, sender=2, banned=3, invite=4, public=5, reject=6)
_JOIN_V8 = dict(only_create=1, sender=2, banned=3, invite=4, restricted=5, public=6, reject=7)

_PL_V1 = dict(users=1, no_previous=2, props=3, events_old=4, events_new=5, users_old=6, users_new=7)
_PL_V10 = dict(integers=1, maps=2, users=3, no_previous=4, props=5, events_old=6, events_new=7,
               users_old=8, users_new=9)
_PL_V12 = dict(integers=1, maps=2, users=3, creators=4, no_previous=5, props=6, events_old=7,
               events_new=8, users_old=9, users_new=10)

_AUTH_V1 = dict(duplicates=1, selection=2, rejected=3, no_create=4, room_id=5)
_AUTH_V12 = dict(duplicates=1, selection=2, rejected=3, room_id=4)


def _pick(v: str, **by_first_version: dict) -> dict:
    """by_first_version: {"v1": table, "v6": table, ...}: the table in force for ``v``."""
    n = int(v)
    best = None
    for key, table in by_first_version.items():
        if int(key[1:]) <= n:
            best = table
    assert best is not None
    return best


def rule(v: str, *path: object) -> str:
    """``rule("9", "member", "join", "restricted", 2)`` -> ``"auth 4.3.5.2"``."""
    top = _pick(v, v1=_TOP_V1, v3=_TOP_V3, v6=_TOP_V6, v12=_TOP_V12)
    head, rest = path[0], list(path[1:])
    parts = [str(top[head])]
    if head == "member" and rest:
        sub = rest.pop(0)
        parts.append(str(_pick(v, v1=_MEMBER_V1, v7=_MEMBER_V7, v8=_MEMBER_V8)[sub]))
        if sub == "join" and rest and isinstance(rest[0], str):
            parts.append(str(_pick(v, v1=_JOIN_V1, v8=_JOIN_V8)[rest.pop(0)]))
    elif head == "pl" and rest:
        parts.append(str(_pick(v, v1=_PL_V1, v10=_PL_V10, v12=_PL_V12)[rest.pop(0)]))
    elif head == "auth_events" and rest:
        parts.append(str(_pick(v, v1=_AUTH_V1, v12=_AUTH_V12)[rest.pop(0)]))
    parts.extend(str(x) for x in rest)
    return "auth " + ".".join(parts)
