"""Benchmark: state resolution of two forks of a large room.

Run from the repository root::

    .venv/bin/python bench/state_res.py

The room: Alice creates it (v11: power 100; v12: creator, infinite power), Bob is
an admin at 100, the join rule is public, and ``members`` users have joined. From
there two forks each send N power-levels changes, N joins of new users and N bans
of existing members (fork A by Alice, fork B by Bob, banning the same members),
every event citing the current power levels of its fork::

    … ─ members joined ─┬─ PL_A0 ─ J_A0 ─ BAN_A0 ─ PL_A1 ─ … (3N events)
                        └─ PL_B0 ─ J_B0 ─ BAN_B0 ─ PL_B1 ─ … (3N events)

The two fork tips' states are then resolved (time of ``resolve_state`` only; the
best of several runs for small cases), and the share spent in the two steps that
read the whole state is timed separately. Conflicted: the power levels (2 values), N
banned members (2 values each), 2N new joins (1 value each); the auth difference
adds the 2(N-1) intermediate power levels. A room-size sweep at fixed N shows the
cost follows the conflicted set and auth difference, not the number of members.
A last table resolves two concurrent topics (Alice's and Bob's), the common small
case, where the only auth-difference candidates are unconflicted events.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from roomactors.protocol import state_res  # noqa: E402
from roomactors.protocol.room_versions import get_rules  # noqa: E402
from roomactors.protocol.state_res import resolve_state  # noqa: E402

ALICE = "@alice:a.example"
BOB = "@bob:b.example"


def build_room(version: str, members: int, n: int) -> tuple[list[dict], dict[str, dict]]:
    """The two fork tips' states and the events (synthetic IDs, which ``resolve_state``
    takes as given)."""
    rules = get_rules(version)
    events: dict[str, dict] = {}
    ts = itertools.count(1_700_000_000_000, 10)
    create_id = "$create-bench"
    room_id = "!" + create_id[1:] if not rules.create_event_has_room_id else "!bench:a.example"
    state: dict[tuple[str, str], str] = {}

    def add(eid: str, etype: str, sender: str, state_key: str, content: dict, auth: list[str]) -> str:
        event = {
            "type": etype,
            "sender": sender,
            "state_key": state_key,
            "content": content,
            "origin_server_ts": next(ts),
            "depth": len(events) + 1,
            "prev_events": [],
            "auth_events": ([create_id] if rules.create_event_in_auth_events and etype != "m.room.create" else []) + auth,
            "hashes": {"sha256": "AAAA"},
            "signatures": {},
        }
        if etype != "m.room.create" or rules.create_event_has_room_id:
            event["room_id"] = room_id
        events[eid] = event
        return eid

    create_content: dict = {"room_version": version}
    if rules.create_event_has_creator:
        create_content["creator"] = ALICE
    state[("m.room.create", "")] = add(create_id, "m.room.create", ALICE, "", create_content, [])
    alice = state[("m.room.member", ALICE)] = add("$ima", "m.room.member", ALICE, ALICE, {"membership": "join"}, [])
    admins = {BOB: 100} if rules.explicit_creators else {ALICE: 100, BOB: 100}
    pl0 = state[("m.room.power_levels", "")] = add("$pl0", "m.room.power_levels", ALICE, "", {"users": admins}, [alice])
    jr = state[("m.room.join_rules", "")] = add("$jr", "m.room.join_rules", ALICE, "", {"join_rule": "public"}, [pl0, alice])
    bob = state[("m.room.member", BOB)] = add("$imb", "m.room.member", BOB, BOB, {"membership": "join"}, [pl0, jr])
    joins = []
    for i in range(members):
        user = f"@m{i}:s{i % 97}.example"
        joins.append((user, add(f"$m{i}", "m.room.member", user, user, {"membership": "join"}, [pl0, jr])))
        state[("m.room.member", user)] = joins[-1][1]

    tips = []
    for fork, sender, sender_join in (("a", ALICE, alice), ("b", BOB, bob)):
        s = dict(state)
        pl = pl0
        for i in range(n):
            pl = add(f"$pl-{fork}{i}", "m.room.power_levels", sender, "",
                     {"users": admins, "events": {"org.bench.counter": i % 50}}, [pl, sender_join])
            s[("m.room.power_levels", "")] = pl
            user = f"@{fork}{i}:new.example"
            s[("m.room.member", user)] = add(f"$j-{fork}{i}", "m.room.member", user, user, {"membership": "join"}, [pl, jr])
            target, target_join = joins[i % members]
            s[("m.room.member", target)] = add(f"$ban-{fork}{i}", "m.room.member", sender, target,
                                               {"membership": "ban"}, [pl, sender_join, target_join])
        tips.append(s)
    return tips, events


def whole_state_passes(version: str, tips: list[dict], events: dict[str, dict]) -> float:
    """Time of the two steps that read the whole state (the split and the walk over
    the unconflicted events' auth chains for the auth difference)."""
    ctx = state_res._Context(get_rules(version), events, ())
    start = time.perf_counter()
    unconflicted, per_set = state_res._split(tips)
    split = time.perf_counter() - start
    conflicted = set().union(*per_set)
    post = state_res._post_order(ctx, sorted(conflicted))
    mask = state_res._chain_masks(ctx, post, per_set)
    start = time.perf_counter()
    state_res._auth_difference(ctx, unconflicted, conflicted, mask, len(tips))
    return split + time.perf_counter() - start


def time_resolve(version: str, members: int, n: int) -> tuple[float, float, int, int]:
    tips, events = build_room(version, members, n)
    conflicted = sum(1 for k in tips[0].keys() | tips[1].keys() if tips[0].get(k) != tips[1].get(k))
    runs = 5 if n <= 100 else 3 if n <= 1000 else 1
    best = whole = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        resolved = resolve_state(version, tips, events)
        best = min(best, time.perf_counter() - start)
        whole = min(whole, whole_state_passes(version, tips, events))
    return best, whole, conflicted, len(resolved)


def time_topics(version: str, members: int) -> tuple[float, float, int, int]:
    """The common small case: on two forks, Alice and Bob each set the topic. Each
    topic cites its sender's join, an unconflicted event only one fork's conflicted
    event reaches: an auth-difference candidate, struck out by its own key without
    reading the rest of the state (best of 7)."""
    tips, events = build_room(version, members, 0)
    rules = get_rules(version)
    create = ["$create-bench"] if rules.create_event_in_auth_events else []
    room_id = events["$ima"]["room_id"]
    for eid, sender, join in (("$topic-a", ALICE, "$ima"), ("$topic-b", BOB, "$imb")):
        events[eid] = {
            "type": "m.room.topic", "sender": sender, "state_key": "", "content": {"topic": eid},
            "origin_server_ts": 1_800_000_000_000, "depth": len(events) + 1, "prev_events": [],
            "auth_events": [*create, "$pl0", join], "hashes": {"sha256": "AAAA"}, "signatures": {},
            "room_id": room_id,
        }
    tips = [{**tips[0], ("m.room.topic", ""): "$topic-a"}, {**tips[1], ("m.room.topic", ""): "$topic-b"}]
    best = whole = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        resolved = resolve_state(version, tips, events)
        best = min(best, time.perf_counter() - start)
        whole = min(whole, whole_state_passes(version, tips, events))
    return best, whole, 1, len(resolved)


def table(title: str, rows: list[tuple]) -> None:
    print(title)
    print(f"  {'version':<8} {'members':>8} {'N':>7} {'conflicted keys':>16} {'resolved keys':>14} "
          f"{'time':>10} {'split+auth diff':>17}")
    for version, members, n, (secs, whole, conflicted, size) in rows:
        print(f"  {version:<8} {members:>8,} {n:>7,} {conflicted:>16,} {size:>14,} "
              f"{secs * 1000:>8.1f}ms {whole * 1000:>15.1f}ms")
    print()


def main() -> None:
    sizes = [100, 1_000, 10_000]
    table(
        "Two forks of N power + N join + N ban events, 10,000-member room",
        [(f"v{v}", 10_000, n, time_resolve(v, 10_000, n)) for v in ("11", "12") for n in sizes],
    )
    table(
        "Room-size sweep at fixed N (cost should follow N, not members)",
        [(f"v{v}", m, n, time_resolve(v, m, n)) for v in ("11", "12") for n in (100, 1_000) for m in (1_000, 10_000, 50_000)],
    )
    table(
        "Two concurrent topics by Alice and Bob (N = 0): no walk over the state",
        [(f"v{v}", m, 0, time_topics(v, m)) for v in ("11", "12") for m in (1_000, 10_000, 50_000)],
    )
    print("time: best of 5 (N=100), 3 (N=1,000) or 1 (N=10,000) runs of resolve_state (7 for the topics).")
    print("split+auth diff: of that, the time in the two steps that read every state entry")
    print("(the split, and the auth difference with its walk over the unconflicted events'")
    print("auth_events); with few conflicts this is the part that follows the room size.")


if __name__ == "__main__":
    main()
