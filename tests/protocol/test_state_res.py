"""State resolution scenarios as named-event DAGs (see ``state_res_dag.py``).

Every scenario starts from ``initial_room``::

    CREATE ─ IMA ─ IPOWER ─ IJR ─ IMB ─ IMC ─ IMZ ─ START

(Alice creates and administers the room, join rule public; Bob, Charlie and Zara
have joined at power 0; defaults give state_default/ban/kick 50.) Expected results
are derived by hand from fragments/v2-state-res and rooms/v12 "State resolution"
(rooms/v1 for the v1 cases); each docstring says why.
"""

from __future__ import annotations

import pytest

from roomactors.protocol.errors import UnsupportedRoomVersion
from roomactors.protocol.state_res import MissingEventError, resolve_state
from state_res_dag import (
    ALICE,
    BOB,
    CHARLIE,
    CREATE,
    EVE,
    JOIN_RULES,
    JR_KEY,
    MEMBER,
    MESSAGE,
    PL_KEY,
    POWER,
    TOPIC,
    TOPIC_KEY,
    ZARA,
    Dag,
    initial_room,
    member_key,
)

V2_VERSIONS = [str(v) for v in range(2, 12)]  # state res v2
V2_PLUS = V2_VERSIONS + ["12"]  # v2 and v2.1
BAN = {"membership": "ban"}
JOIN = {"membership": "join"}
LEAVE = {"membership": "leave"}


@pytest.mark.parametrize("version", V2_PLUS)
def test_ban_vs_power_levels(version: str) -> None:
    """
    START ─ PA ─┬─ MA ─ MB ─┐
                └─ PB ──────┴─ (resolve)

    PA: Alice gives Bob 50. Then Alice bans Bob (MA is Alice re-joining, cited by MB)
    while Bob concurrently edits the power levels (PB). Power events sort by sender
    power first: Alice's MA/MB (100 or v12 ∞) before Bob's PB (50); once Bob is
    banned, PB fails its auth check. Result: PA, Bob banned.
    """
    dag = initial_room(version)
    dag.add("PA", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    dag.add("MA", MEMBER, ALICE, JOIN, ALICE, prev="PA")
    dag.add("MB", MEMBER, ALICE, BAN, BOB, prev="MA")
    dag.add("PB", POWER, BOB, dag.power({BOB: 50, ZARA: 50}), "", prev="PA")

    state = dag.resolve("MB", "PB")
    assert state[PL_KEY] == "PA"
    assert state[member_key(BOB)] == "MB"
    assert state[member_key(ALICE)] == "MA"


@pytest.mark.parametrize("version", V2_PLUS)
def test_topic_reset(version: str) -> None:
    """
    START ─ T1 ─┬─ PA ─ T2 ─ MB ─┐
                └────────────────┴─ (resolve)

    Alice sets topic T1, gives Bob 50 (PA), Bob sets topic T2, then Alice bans Bob.
    The other fork still has T1. Power events (IPOWER, PA, MB, and Bob's join IMB,
    conflicted with MB and cited by it) replay first, so Bob is banned before the topics are
    replayed in mainline order (T1 at mainline position 1, T2 at 0): T2 now fails,
    and the topic resets to T1 — the documented, intended outcome.
    """
    dag = initial_room(version)
    dag.add("T1", TOPIC, ALICE, {"topic": "T1"}, "", prev="START")
    dag.add("PA", POWER, ALICE, dag.power({BOB: 50}), "", prev="T1")
    dag.add("T2", TOPIC, BOB, {"topic": "T2"}, "", prev="PA")
    dag.add("MB", MEMBER, ALICE, BAN, BOB, prev="T2")

    state = dag.resolve("MB", "T1")
    assert state[TOPIC_KEY] == "T1"
    assert state[PL_KEY] == "PA"
    assert state[member_key(BOB)] == "MB"


@pytest.mark.parametrize("version", V2_PLUS)
def test_join_rule_evasion(version: str) -> None:
    """
    START ─┬─ JR ─┐
           └─ ME ─┴─ (resolve)

    Alice makes the room invite-only (JR) while Eve, never invited, joins under the
    old public rule (ME). JR is a power event and is applied first; Eve's join is
    then replayed against ``invite`` and fails, so Eve is not in the room.
    """
    dag = initial_room(version)
    dag.add("JR", JOIN_RULES, ALICE, {"join_rule": "invite"}, "", prev="START")
    dag.add("ME", MEMBER, EVE, JOIN, EVE, prev="START")

    state = dag.resolve("JR", "ME")
    assert state[JR_KEY] == "JR"
    assert member_key(EVE) not in state


@pytest.mark.parametrize("version", V2_PLUS)
def test_mainline_ordering_beats_timestamps(version: str) -> None:
    """
    START ─ PA1 ─┬─ PA2 ─ TC ──┐
                 └─ TB ────────┴─ (resolve)

    PA1: Alice gives Bob 50. One fork: Alice also gives Charlie 50 (PA2) and Charlie
    sets topic TC. Other fork: Bob sets topic TB — with a *later* timestamp than TC.
    The resolved power levels are PA2 (mainline PA2 ← PA1 ← IPOWER). TB cites PA1
    (position 1), TC cites PA2 (position 0): a greater position sorts first, so TB is
    replayed before TC whatever the clocks say, and TC wins.
    """
    dag = initial_room(version)
    base = dag._ts
    dag.add("PA1", POWER, ALICE, dag.power({BOB: 50}), "", prev="START", ts=base + 1000)
    dag.add("PA2", POWER, ALICE, dag.power({BOB: 50, CHARLIE: 50}), "", prev="PA1", ts=base + 2000)
    dag.add("TC", TOPIC, CHARLIE, {"topic": "charlie"}, "", prev="PA2", ts=base + 3000)
    dag.add("TB", TOPIC, BOB, {"topic": "bob"}, "", prev="PA1", ts=base + 9000)

    state = dag.resolve("TC", "TB")
    assert state[PL_KEY] == "PA2"
    assert state[TOPIC_KEY] == "TC"


@pytest.mark.parametrize("version", V2_PLUS)
def test_offtopic_power_levels(version: str) -> None:
    """
    START ─ PA1 ─┬─ PB ─ TC ──┐
                 └─ PA2 ─ TA ─┴─ (resolve)

    PA1: Alice gives Bob 50. Fork 1: Bob gives Charlie 50 (PB) and Charlie sets a
    topic (TC, citing PB). Fork 2: Alice demotes Bob to 0 (PA2) and sets topic TA.
    Power order puts Alice's PA2 (100/∞) before Bob's PB (50); after PA2, Bob has no
    power and PB fails, so the resolved power levels are PA2. TC's power-levels
    auth event PB is off the mainline (PA2 ← PA1 ← IPOWER); its position is that of
    PB's own ancestor PA1 (1), before TA (0). TC then fails (Charlie is at 0 under
    PA2), and the topic is TA.
    """
    dag = initial_room(version)
    dag.add("PA1", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    dag.add("PB", POWER, BOB, dag.power({BOB: 50, CHARLIE: 50}), "", prev="PA1")
    dag.add("TC", TOPIC, CHARLIE, {"topic": "charlie"}, "", prev="PB")
    dag.add("PA2", POWER, ALICE, dag.power({BOB: 0}), "", prev="PA1")
    dag.add("TA", TOPIC, ALICE, {"topic": "alice"}, "", prev="PA2")

    state = dag.resolve("TC", "TA")
    assert state[PL_KEY] == "PA2"
    assert state[TOPIC_KEY] == "TA"


@pytest.mark.parametrize("version", V2_PLUS)
def test_demotion_beats_concurrent_power_levels_and_topic(version: str) -> None:
    """
    START ─ T1 ─ PA1 ─┬─ T2 ─ PA2 ─ MZ ─ T4
                      └─ PB ─ T3

    PA1 gives Bob 50. Fork 1: Alice sets T2, demotes Bob (PA2), Zara chats, Alice
    sets T4. Fork 2: Bob edits the power levels (PB) and sets T3. PA2 (Alice) sorts
    before PB (Bob) and demotes him, so PB fails: PA2. T3 cites the off-mainline PB
    (position of PA1, 1), T4 cites PA2 (position 0): T3 replays first and fails, T4.
    """
    dag = initial_room(version)
    dag.add("T1", TOPIC, ALICE, {"topic": "1"}, "", prev="START")
    dag.add("PA1", POWER, ALICE, dag.power({BOB: 50}), "")
    dag.add("T2", TOPIC, ALICE, {"topic": "2"}, "")
    dag.add("PA2", POWER, ALICE, dag.power({BOB: 0}), "")
    dag.add("MZ", MESSAGE, ZARA, {"body": "hi"})
    dag.add("T4", TOPIC, ALICE, {"topic": "4"}, "")
    dag.add("PB", POWER, BOB, dag.power({BOB: 50, ZARA: 50}), "", prev="PA1")
    dag.add("T3", TOPIC, BOB, {"topic": "3"}, "")

    state = dag.resolve("T4", "T3")
    assert state[PL_KEY] == "PA2"
    assert state[TOPIC_KEY] == "T4"


@pytest.mark.parametrize("version", V2_PLUS)
def test_self_demotion_is_kept(version: str) -> None:
    """START ─ PA ─ PB ─ PC against a fork at PA: Alice gives Bob 50, Bob gives
    Charlie 50, Charlie lowers himself to 0. The chain replays in order: PC."""
    dag = initial_room(version)
    dag.add("PA", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    dag.add("PB", POWER, BOB, dag.power({BOB: 50, CHARLIE: 50}), "")
    dag.add("PC", POWER, CHARLIE, dag.power({BOB: 50, CHARLIE: 0}), "")
    assert dag.resolve("PC", "PA")[PL_KEY] == "PC"


@pytest.mark.parametrize("version", V2_PLUS)
def test_unconflicted_state_is_kept(version: str) -> None:
    """Keys both forks agree on come back untouched (step 5), including Zara's join."""
    dag = initial_room(version)
    dag.add("T1", TOPIC, ALICE, {"topic": "a"}, "", prev="START")
    dag.add("T2", TOPIC, ALICE, {"topic": "b"}, "", prev="START")
    state = dag.resolve("T1", "T2")
    assert state[member_key(ZARA)] == "IMZ"
    assert state[JR_KEY] == "IJR"
    assert state[TOPIC_KEY] == "T2"  # same mainline position, later timestamp replays last


# --------------------------------------------------------------------------------------
# v2 vs v2.1 on the same DAG
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_PLUS)
def test_v21_empty_start_keeps_join_rules(version: str) -> None:
    """Starting iterative auth checks from empty state (rooms/v12 change 1).

    START ─ JR1 ─ JR2 ─ LA

    Alice sets the join rule to invite (JR1), then back to public (JR2), then leaves
    (LA). State set 1 is the state after LA; state set 2 is the same state except
    that a stale partial-sync response gave it JR1 for the join rules.

    * v2: the replay starts from the unconflicted state, in which Alice has left;
      both JR1 and JR2 fail ("sender not in room") and the room loses its join
      rules altogether — a state reset.
    * v2.1: the replay starts from nothing, so each event is checked against its
      own auth events (Alice joined): JR1 then JR2 pass and JR2 is kept.
    """
    dag = initial_room(version)
    dag.add("JR1", JOIN_RULES, ALICE, {"join_rule": "invite"}, "", prev="START")
    dag.add("JR2", JOIN_RULES, ALICE, {"join_rule": "public"}, "", prev="JR1")
    dag.add("LA", MEMBER, ALICE, LEAVE, ALICE, prev="JR2")
    fresh = dag.state("LA")
    stale = {**fresh, JR_KEY: dag.id("JR1")}

    state = dag.resolve_sets(fresh, stale)
    if version == "12":
        assert state[JR_KEY] == "JR2"
    else:
        assert JR_KEY not in state
    assert state[member_key(ALICE)] == "LA"


@pytest.mark.parametrize("version", V2_PLUS)
def test_v21_conflicted_subgraph_keeps_power_chain(version: str) -> None:
    """The conflicted state subgraph (rooms/v12 changes 2 and 3).

    START ─ PA ─ PB ─ TC        auth chain: PB → PA → IPOWER

    Alice gives Bob 50 (PA); Bob gives Charlie 50 (PB); Charlie sets the topic (TC).
    State set 1 is the state after TC; state set 2 has the stale IPOWER for the
    power levels. Both sets' auth chains contain PA (TC cites PB), so the auth
    difference is empty and the full conflicted set is {IPOWER, PB}.

    * v2: IPOWER replays, then PB is checked against IPOWER, where Bob has 0: PB
      fails and the power levels reset to IPOWER.
    * v2.1: PA lies on the auth path PB → PA → IPOWER between two conflicted events,
      so it joins the full conflicted set; IPOWER, PA, PB replay in order and PB
      passes. Charlie keeps power.
    """
    dag = initial_room(version)
    dag.add("PA", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    dag.add("PB", POWER, BOB, dag.power({BOB: 50, CHARLIE: 50}), "", prev="PA")
    dag.add("TC", TOPIC, CHARLIE, {"topic": "charlie"}, "", prev="PB")
    fresh = dag.state("TC")
    stale = {**fresh, PL_KEY: dag.id("IPOWER")}

    state = dag.resolve_sets(fresh, stale)
    assert state[PL_KEY] == ("PB" if version == "12" else "IPOWER")
    assert state[TOPIC_KEY] == "TC"  # unconflicted, so kept either way


# --------------------------------------------------------------------------------------
# Readings shared with Synapse and ruma (state_res module docstring, "Readings")
# --------------------------------------------------------------------------------------
#
# Each scenario is one where the spec's text, taken literally, gives a different
# result; the expected values are Synapse's (tests/interop/ checks them against it:
# probe-auth-difference-state-events-*, probe-power-order-outside-full-conflicted-
# set-*, probe-power-event-nonempty-state-key-*).


@pytest.mark.parametrize("version", ["10", "11"])
def test_full_auth_chain_includes_the_state_sets_own_events(version: str) -> None:
    """
    START ─┬─ KICK (Alice kicks Bob)                          (S1)
           └─ PL_A (Charlie 100) ─ PL_C (by Charlie: Bob 100)  (S2)

    Charlie's join IMC is in both states; only PL_C cites it. As a state event of S1
    it is in S1's full auth chain, so it is in every chain and not in the full
    conflicted set. Step 1 orders IPOWER, PL_A, PL_C, IMB, KICK (Alice and Charlie
    both at 100, timestamps decide); once PL_C gives Bob 100, Alice's KICK fails
    (Bob's level is not below hers): Bob stays joined. Taken literally (auth chains of
    S1's events, which never reach IMC), IMC would join step 1 as PL_C's auth event and,
    at power 0, hold PL_C back behind KICK, which would then pass.
    """
    dag = initial_room(version)
    dag.add("KICK", MEMBER, ALICE, LEAVE, BOB, prev="START")
    dag.add("PL_A", POWER, ALICE, dag.power({CHARLIE: 100}), "", prev="START")
    dag.add("PL_C", POWER, CHARLIE, dag.power({CHARLIE: 100, BOB: 100}), "")

    state = dag.resolve("KICK", "PL_C")
    assert state[PL_KEY] == "PL_C"
    assert state[member_key(BOB)] == "IMB"


def test_full_auth_chain_includes_the_state_sets_own_events_v12() -> None:
    """
    START ─ JR2 (knock) ─┬─ INV_E (Alice invites Eve)                 (S1)
                         └─ LEAVE_C (Charlie leaves, ts before IMC)   (S2)

    JR2 is in both states and only INV_E cites it: in every full auth chain, and on no
    auth path between conflicted events, so not in the full conflicted set. Charlie's
    join IMC is then checked against its own auth event IJR ("public") after LEAVE_C
    (timestamps) and passes. Taken literally, JR2 would be replayed first and IMC would
    fail against "knock".
    """
    dag = initial_room("12")
    dag.add("JR2", JOIN_RULES, ALICE, {"join_rule": "knock"}, "", prev="START")
    dag.add("INV_E", MEMBER, ALICE, {"membership": "invite"}, EVE, prev="JR2")
    imc_ts = dag.events[dag.id("IMC")]["origin_server_ts"]
    dag.add("LEAVE_C", MEMBER, CHARLIE, LEAVE, CHARLIE, prev="JR2", ts=imc_ts - 500)

    state = dag.resolve("INV_E", "LEAVE_C")
    assert state[member_key(CHARLIE)] == "IMC"
    assert state[JR_KEY] == "JR2"


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_power_order_walks_auth_events_through_the_full_conflicted_set_only(version: str) -> None:
    """
    … ─ IPOWER(Bob 100, Charlie 50) ─ INVITE_C ─ IMC ─ JR_OLD(public, by Charlie)
      ─ J_BOB ─ T_BOB ─┬──────────────────────────────────────────── (S1)
                       └─ JR_NEW(invite, Alice) ─ PL_B(by Bob: join_rules needs 100) (S2)

    PL_B cites Bob's join J_BOB, which cites JR_OLD. In v2 J_BOB is in both states (so in
    every full auth chain) and not in the full conflicted set: the step-1 graph has no
    path from PL_B to JR_OLD, Charlie's JR_OLD (50) sorts after Bob's PL_B (100) and
    then fails (join_rules now needs 100): the join rule is JR_NEW. Ordering by auth
    ancestry through J_BOB, as the spec's "DAG formed by auth events" reads literally,
    would apply JR_OLD before PL_B and keep it. In v2.1 J_BOB lies on the auth path
    PL_B → J_BOB → JR_OLD between conflicted events, so the conflicted subgraph puts it
    in the full conflicted set, the path is in the graph, and JR_OLD is kept.
    """
    dag = Dag(version)
    content: dict = {"room_version": version}
    if dag.rules.create_event_has_creator:
        content["creator"] = ALICE
    dag.add("CREATE", CREATE, ALICE, content, "")
    dag.add("IMA", MEMBER, ALICE, JOIN, ALICE)
    dag.add("IPOWER", POWER, ALICE, dag.power({BOB: 100, CHARLIE: 50}), "")
    dag.add("INVITE_C", MEMBER, ALICE, {"membership": "invite"}, CHARLIE)
    dag.add("IMC", MEMBER, CHARLIE, JOIN, CHARLIE)
    dag.add("JR_OLD", JOIN_RULES, CHARLIE, {"join_rule": "public"}, "")
    dag.add("J_BOB", MEMBER, BOB, JOIN, BOB)
    dag.add("T_BOB", TOPIC, BOB, {"topic": "bob's"}, "")
    dag.add("JR_NEW", JOIN_RULES, ALICE, {"join_rule": "invite"}, "", prev="T_BOB")
    dag.add("PL_B", POWER, BOB, dag.power({BOB: 100, CHARLIE: 50}, events={JOIN_RULES: 100}), "")

    state = dag.resolve("T_BOB", "PL_B")
    assert state[PL_KEY] == "PL_B"
    assert state[JR_KEY] == ("JR_OLD" if version == "12" else "JR_NEW")


@pytest.mark.parametrize("version", V2_PLUS)
def test_join_rules_with_a_state_key_are_not_power_events(version: str) -> None:
    """
    START ─ PROMOTE(Bob 50) ─┬─ JRX_A (Alice, state_key "x", ts +20 s)
                             └─ JRX_B (Bob,   state_key "x", ts +15 s)

    Only ``("m.room.join_rules", "")`` is a power event, so both go to the mainline
    ordering (same position), where the earlier JRX_B replays first and JRX_A, last,
    wins. Were every join-rules event a power event (the spec's sentence names the
    type only), Alice's higher power would put JRX_A first and JRX_B would win.
    """
    dag = initial_room(version)
    dag.add("PROMOTE", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    base = dag.events[dag.id("PROMOTE")]["origin_server_ts"]
    dag.add("JRX_A", JOIN_RULES, ALICE, {"join_rule": "public"}, "x", prev="PROMOTE", ts=base + 20_000)
    dag.add("JRX_B", JOIN_RULES, BOB, {"join_rule": "invite"}, "x", prev="PROMOTE", ts=base + 15_000)

    assert dag.resolve("JRX_A", "JRX_B")[(JOIN_RULES, "x")] == "JRX_A"


# --------------------------------------------------------------------------------------
# v12 creators
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["11", "12"])
def test_v12_creator_power_is_infinite(version: str) -> None:
    """
    START ─ PC ─ TC ─┬─ JA ─┐      JA: Alice sets join rule invite   (later ts)
                     └─ JC ─┴─     JC: Charlie sets join rule public (earlier ts)

    PC: Alice gives Charlie 100; Charlie sets a topic (TC, so both forks' auth
    chains hold Charlie's join and only JA/JC are conflicted). Both join-rule events
    pass in either order, so the power ordering alone decides which is replayed last
    and wins. In v11 Alice and Charlie tie at 100 and the earlier JC goes first: JA
    wins. In v12 Alice is the creator with infinite power, so JA goes first: JC wins.
    """
    dag = initial_room(version)
    base = dag._ts
    dag.add("PC", POWER, ALICE, dag.power({CHARLIE: 100}), "", prev="START", ts=base + 1000)
    dag.add("TC", TOPIC, CHARLIE, {"topic": "c"}, "", prev="PC", ts=base + 1500)
    dag.add("JA", JOIN_RULES, ALICE, {"join_rule": "invite"}, "", prev="TC", ts=base + 9000)
    dag.add("JC", JOIN_RULES, CHARLIE, {"join_rule": "public"}, "", prev="TC", ts=base + 2000)

    state = dag.resolve("JA", "JC")
    assert state[JR_KEY] == ("JC" if version == "12" else "JA")


def test_v12_additional_creators_outrank_admins() -> None:
    """Bob is an ``additional_creators`` member: infinite power, like Alice.

    Charlie (100) and Bob race: Charlie bans Bob (earlier ts) and Bob bans Charlie.
    Bob sorts first (∞ > 100): Charlie is banned, then Charlie's ban fails (and could
    never pass: creators cannot be banned).
    """
    dag = Dag("12")
    dag.add("CREATE", CREATE, ALICE, {"room_version": "12", "additional_creators": [BOB]}, "")
    dag.add("IMA", MEMBER, ALICE, JOIN, ALICE)
    dag.add("IPOWER", POWER, ALICE, {"users": {CHARLIE: 100}}, "")
    dag.add("IJR", JOIN_RULES, ALICE, {"join_rule": "public"}, "")
    dag.add("IMB", MEMBER, BOB, JOIN, BOB)
    dag.add("IMC", MEMBER, CHARLIE, JOIN, CHARLIE)
    base = dag._ts
    dag.add("MBC", MEMBER, BOB, BAN, CHARLIE, prev="IMC", ts=base + 9000)
    dag.add("MCB", MEMBER, CHARLIE, BAN, BOB, prev="IMC", ts=base + 1000, check=False)

    state = dag.resolve("MBC", "MCB")
    assert state[member_key(CHARLIE)] == "MBC"
    assert state[member_key(BOB)] == "IMB"


def test_v12_create_never_listed_but_used() -> None:
    """In v12 no event lists the create event; resolution still authorises against it
    (implied by ``room_id``) — otherwise every replayed event would fail rule 2."""
    dag = initial_room("12")
    create_id = dag.id("CREATE")
    assert dag.room_id == "!" + create_id[1:]
    assert all(create_id not in e.get("auth_events", []) for e in dag.events.values())
    dag.add("T1", TOPIC, ALICE, {"topic": "a"}, "", prev="START")
    dag.add("T2", TOPIC, ALICE, {"topic": "b"}, "", prev="START")
    assert dag.resolve("T1", "T2")[TOPIC_KEY] == "T2"
    dag.add("J", JOIN_RULES, ALICE, {"join_rule": "invite"}, "", prev="START")
    dag.add("ME", MEMBER, EVE, JOIN, EVE, prev="START")
    state = dag.resolve("J", "ME")
    assert state[JR_KEY] == "J" and member_key(EVE) not in state


# --------------------------------------------------------------------------------------
# Rejected events
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3", "11", "12"])
def test_rejected_events_are_never_admitted(version: str) -> None:
    """An event rejected on its auth chain is excluded (fragment "Rejected events"),
    even when it would pass against the resolved state."""
    dag = initial_room(version)
    dag.add("T1", TOPIC, ALICE, {"topic": "a"}, "", prev="START")
    dag.add("T2", TOPIC, ALICE, {"topic": "b"}, "", prev="START")
    assert dag.resolve("T1", "T2")[TOPIC_KEY] == "T2"
    dag.rejected.add(dag.id("T2"))
    assert dag.resolve("T1", "T2")[TOPIC_KEY] == "T1"


# --------------------------------------------------------------------------------------
# Room version 1
# --------------------------------------------------------------------------------------


def test_v1_ban_vs_power_levels() -> None:
    """rooms/v1: conflicting power levels replay by ascending depth. PB (Bob's edit)
    is checked against R, which excludes every conflicting event — including Bob's
    own membership (IMB vs the ban MB) — so PB fails and PA stays. Then Bob's member
    key replays IMB, then MB, which passes: Bob is banned."""
    dag = initial_room("1")
    dag.add("PA", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    dag.add("MA", MEMBER, ALICE, JOIN, ALICE, prev="PA")
    dag.add("MB", MEMBER, ALICE, BAN, BOB, prev="MA")
    dag.add("PB", POWER, BOB, dag.power({BOB: 50, ZARA: 50}), "", prev="PA")
    state = dag.resolve("MB", "PB")
    assert state[PL_KEY] == "PA"
    assert state[member_key(BOB)] == "MB"


def test_v1_power_levels_replay_stops_at_first_failure() -> None:
    """
    START ─ P1 ─┬─ P2                 P1, P2: Alice (gives Bob 50, then demotes him)
                └─ X ─ P3             P3: Bob, still at 50 on his fork
    START ─ T                         a fork that still holds IPOWER

    The conflicting power-levels events sort by ascending depth: IPOWER, P2 (depth
    START+2), P3 (START+3). IPOWER goes into R unchecked, P2 passes, P3 (Bob, at 0
    under P2) fails and the pass stops: P2.
    """
    dag = initial_room("1")
    dag.add("P1", POWER, ALICE, dag.power({BOB: 50}), "", prev="START")
    dag.add("P2", POWER, ALICE, dag.power({BOB: 0}), "", prev="P1")
    dag.add("X", MESSAGE, BOB, {"body": "x"}, prev="P1")
    dag.add("P3", POWER, BOB, dag.power({BOB: 50, ZARA: 50}), "", prev="X")
    dag.add("T", TOPIC, ALICE, {"topic": "t"}, "", prev="START")
    assert dag.resolve("P2", "T")[PL_KEY] == "P2"
    # P3 alone is checked against IPOWER (P1, which empowered Bob, is in neither
    # state and v1 never looks at auth chains), so v1 keeps IPOWER: a v1 reset.
    assert dag.resolve("P3", "T")[PL_KEY] == "IPOWER"
    assert dag.resolve("P2", "P3", "T")[PL_KEY] == "P2"


def test_v1_other_keys_take_highest_depth_that_passes() -> None:
    """rooms/v1: for other conflicts, the highest-depth event that passes auth in R."""
    dag = initial_room("1")
    dag.add("TA", TOPIC, ALICE, {"topic": "a"}, "", prev="START")
    dag.add("M1", MESSAGE, ALICE, {"body": "x"}, prev="START")
    dag.add("M2", MESSAGE, ALICE, {"body": "y"})
    dag.add("TB", TOPIC, BOB, {"topic": "b"}, "", check=False)  # deeper, but Bob has 0
    assert dag.resolve("TA", "TB")[TOPIC_KEY] == "TA"
    dag.add("TC", TOPIC, ALICE, {"topic": "c"}, "", prev="M2")  # deeper and allowed
    assert dag.resolve("TA", "TC")[TOPIC_KEY] == "TC"


def test_v1_missing_key_is_not_a_conflict() -> None:
    """rooms/v1: a conflict needs *different event IDs*; a key only one state has is
    taken as is, even when it would fail auth (v2 would re-check it)."""
    dag = initial_room("1")
    dag.add("TB", TOPIC, BOB, {"topic": "b"}, "", prev="START", check=False)
    dag.add("M", MESSAGE, ALICE, {"body": "x"}, prev="START")
    assert dag.resolve("TB", "M")[TOPIC_KEY] == "TB"


@pytest.mark.parametrize("version", ["1", "2"])
def test_pair_format_refs(version: str) -> None:
    """v1/v2 PDUs carry ``event_id`` and ``[event_id, {hashes}]`` auth refs."""
    dag = initial_room(version)
    event = dag.events[dag.id("IMB")]
    assert event["event_id"] == "$IMB:example.org"
    assert all(isinstance(ref, list) and len(ref) == 2 for ref in event["auth_events"])
    dag.add("JR", JOIN_RULES, ALICE, {"join_rule": "invite"}, "", prev="START")
    dag.add("ME", MEMBER, EVE, JOIN, EVE, prev="START")
    state = dag.resolve("JR", "ME")
    assert state[JR_KEY] == "JR"
    if version == "2":
        assert member_key(EVE) not in state
    else:  # v1: Eve's key is not conflicting (absent on one side), so it stays
        assert state[member_key(EVE)] == "ME"


# --------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------


class _CountingEvents(dict):
    def __init__(self, *args):
        super().__init__(*args)
        self.reads: set[str] = set()

    def __getitem__(self, key):
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.reads.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("version", ["11", "12"])
def test_unconflicted_members_are_not_read(version: str) -> None:
    """200 members join; two concurrent topics by Alice share every auth event, so
    there is no auth-difference candidate and no member event is ever looked up."""
    dag = initial_room(version)
    users = [f"@u{i}:m.example" for i in range(200)]
    for user in users:
        dag.add(user, MEMBER, user, JOIN, user)
    last = users[-1]
    dag.add("T1", TOPIC, ALICE, {"topic": "a"}, "", prev=last)
    dag.add("T2", TOPIC, ALICE, {"topic": "b"}, "", prev=last)
    events = _CountingEvents(dag.events)
    state = resolve_state(version, [dag.state("T1"), dag.state("T2")], events)
    assert dag.names[state[TOPIC_KEY]] == "T2"
    assert not events.reads & {dag.id(u) for u in users}


# --------------------------------------------------------------------------------------
# API edges
# --------------------------------------------------------------------------------------


def test_no_state_sets() -> None:
    assert resolve_state("11", [], {}) == {}


def test_unknown_room_version() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        resolve_state("99", [{}], {})


def test_missing_event_is_a_caller_bug() -> None:
    dag = initial_room("11")
    dag.add("T1", TOPIC, ALICE, {"topic": "a"}, "", prev="START")
    dag.add("T2", TOPIC, ALICE, {"topic": "b"}, "", prev="START")
    events = dict(dag.events)
    del events[dag.id("T2")]
    with pytest.raises(MissingEventError):
        resolve_state("11", [dag.state("T1"), dag.state("T2")], events)


def test_inputs_are_not_mutated() -> None:
    dag = initial_room("12")
    dag.add("T1", TOPIC, ALICE, {"topic": "a"}, "", prev="START")
    dag.add("T2", TOPIC, ALICE, {"topic": "b"}, "", prev="START")
    s1, s2 = dag.state("T1"), dag.state("T2")
    c1, c2 = dict(s1), dict(s2)
    out = resolve_state("12", [s1, s2], dag.events)
    assert (s1, s2) == (c1, c2)
    assert out is not s1 and out is not s2
