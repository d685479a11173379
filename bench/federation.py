"""Benchmark: federation — inbound ``/send`` throughput, joining big rooms, and
delivery latency between two servers; roomactors against Synapse where a Synapse
figure can be measured in the same run.

Run from the repository root (``make bench-federation`` does the same)::

    .venv/bin/python bench/federation.py            # full run (~6 minutes)
    .venv/bin/python bench/federation.py --quick    # smaller numbers (~2 minutes)
    .venv/bin/python bench/federation.py --only send,latency --no-synapse

Synapse is the pinned release in ``.venv-synapse`` (``make synapse-venv``), started
through ``tests/interop/synapse_peer.py`` (TLS federation on loopback, rate limits
off). Over HTTPS our server runs as a child process of this script (this file with
``--serve-ours``: ``roomactors.testing.homeserver_in_thread``, server name
``localhost:<port>``, federation TLS on that port, ``verify_certificates=false``,
loopback allowed, no notary), so both servers are separate processes and the CPU
figures of both are read from ``/proc/<pid>/stat`` (every thread). The load
(PDU signing, requests, /sync long-polls) runs in this process.

Figures (ratio "ours vs Synapse": > 1 means roomactors is better):

1. **send**: PDUs per second accepted through ``PUT /send`` from one peer,
   signatures verified. A room on the server under test with a member from the
   origin server; ``--pdus`` linear-chained ``m.room.message`` PDUs by that member
   (prev_events the previous one, auth_events from the room's state, depth +1),
   signed with the origin's real key, in transactions of 50, one request at a time,
   after one untimed warm-up transaction (key fetch), with fewer than 100 PDUs sent
   and not yet accepted (Synapse prunes an inbound staging area of 100 events, see
   :func:`send_windowed`; the same window applies to ours). Both servers answer
   ``/send`` once the PDUs are staged and process them afterwards, so progress is
   read from the target's ``/messages`` (the newest event's body index), polled
   every 20 ms; timed from the first PUT until the last PDU is the newest event
   (every PDU is then counted there). ``inproc``: ours on the in-process network (hs2 -> hs1, CPU is
   this process's: both servers plus the in-process transport). ``https``: ours
   from Synapse as origin (Synapse's key) and Synapse from ours as origin (ours'
   key), over real TLS; CPU is the target process's only.
2. **join**: ``POST /join/{room}?via=hs1`` by a user of hs2 into a room on hs1 with
   ``--join-sizes`` members (in-process; members are local users of hs1 added as
   join events through the room actor's ``SendEvent``, no accounts). Split by
   wrapping, in this process only, hs2's federation client calls and
   ``perform.verify_room_state``: make_join, send_join (the resident's work plus
   the transfer), verify (signatures, hashes, auth of state + auth chain), adopt
   (the room actor persisting the room). Over HTTPS with ``--join-https N``: a room
   of N members on an ours child process, joined by a Synapse user and by a user
   of a second ours child (same resident, same room size; the joining side is
   what differs).
3. **latency**: ``--messages`` messages, one every ``--interval-ms``, sent on
   server A; a /sync long-poll on server B records when each arrives. Latency from
   the send request's start (``e2e``) and from its answer (``after_ack``); p50, p90,
   p99. ours->ours in-process and over HTTPS (two child processes), Synapse ->
   Synapse over HTTPS (two peers).

Results: a table on stdout and ``bench/results/<UTC time>/federation.json``. The
data directories go to a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import trio  # noqa: E402

from bench import common  # noqa: E402
from bench.common import pct, proc_cpu_s, q, ratio  # noqa: E402
from roomactors.protocol.auth import auth_types_for_event  # noqa: E402
from roomactors.protocol.ids import RoomId, UserId  # noqa: E402
from roomactors.room.events import build_event  # noqa: E402

TXN_PDUS = 50
log = common.logger("federation")


def pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {"n": len(values), "p50_ms": pct(values, 0.5), "p90_ms": pct(values, 0.9), "p99_ms": pct(values, 0.99),
            "max_ms": round(max(values), 2), "mean_ms": round(statistics.fmean(values), 2)}


# ====================================================================== shared helpers


async def add_members(deps: Any, room_id: str, user_ids: list[str], concurrency: int = 16) -> None:
    """Join events for ``user_ids`` (local users, no accounts) through the room actor."""
    from roomactors.room.messages import SendEvent, SendResult

    it = iter(user_ids)

    async def worker() -> None:
        for uid in it:
            result = await deps.registry.ask(
                RoomId(room_id),
                lambda r, uid=uid: SendEvent(sender=UserId(uid), type="m.room.member",
                                             content={"membership": "join"}, state_key=uid, reply=r),
                timeout=120,
            )
            if not isinstance(result, SendResult):
                raise RuntimeError(f"adding {uid}: {result!r}")

    async with trio.open_nursery() as n:
        for _ in range(concurrency):
            n.start_soon(worker)


def build_chain(*, room_version: str, room_id: str, sender: str, state: dict[tuple[str, str], str],
                prev: str, depth: int, count: int, server_name: str, signing_key: Any,
                tag: str) -> list[tuple[str, dict[str, Any]]]:
    """``count`` linear-chained signed message PDUs by ``sender`` on top of ``prev``."""
    template = {"type": "m.room.message", "sender": sender, "content": {}}
    auth = sorted({state[k] for k in auth_types_for_event(template, room_version) if k in state})
    out = []
    now = int(time.time() * 1000)
    for i in range(count):
        content = {"msgtype": "m.text", "body": f"{tag} {i}"}
        event_id, pdu = build_event(
            room_version=room_version, room_id=RoomId(room_id), sender=UserId(sender), type="m.room.message",
            content=content, prev_events=[prev], auth_events=auth, depth=depth + 1 + i, origin_server_ts=now + i,
            server_name=server_name, signing_key=signing_key,
        )
        out.append((event_id, pdu))
        prev = event_id
    return out


def txn_body(origin: str, pdus: list[dict[str, Any]]) -> dict[str, Any]:
    return {"origin": origin, "origin_server_ts": int(time.time() * 1000), "pdus": pdus, "edus": []}


def check_txn_answer(answer: Any) -> None:
    errors = {k: v for k, v in (answer or {}).get("pdus", {}).items() if v}
    if errors:
        raise RuntimeError(f"/send refused PDUs: {list(errors.items())[:3]}")


# ====================================================================== HTTP clients


class User:
    """A user on some server's client-server API (async httpx; works for both servers)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, user_id: str, token: str) -> None:
        self.http, self.base, self.user_id, self.token = http, base_url, user_id, token

    async def req(self, method: str, path: str, json_body: Any = None, params: Any = None,
                  timeout: float = 120.0) -> Any:
        r = await self.http.request(method, self.base + path, json=json_body, params=params, timeout=timeout,
                                    headers={"Authorization": f"Bearer {self.token}"})
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {self.base}{path}: {r.status_code} {r.text[:500]}")
        return r.json()

    async def create_room(self, **body: Any) -> str:
        return (await self.req("POST", "/_matrix/client/v3/createRoom", body))["room_id"]

    async def join(self, room_id: str, via: str) -> None:
        await self.req("POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"via": via}, timeout=600)

    async def send(self, room_id: str, body: str) -> str:
        txn = secrets.token_hex(8)
        return (await self.req("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
                               {"msgtype": "m.text", "body": body}))["event_id"]

    async def state(self, room_id: str) -> dict[tuple[str, str], str]:
        events = await self.req("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state")
        return {(e["type"], e["state_key"]): e["event_id"] for e in events}

    async def latest(self, room_id: str, limit: int = 1, from_: str | None = None) -> dict[str, Any]:
        params = {"dir": "b", "limit": str(limit)}
        if from_:
            params["from"] = from_
        return await self.req("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params=params)

    async def count_bodies(self, room_id: str, prefix: str) -> int:
        count, from_ = 0, None
        while True:
            page = await self.latest(room_id, 1000, from_)
            count += sum(1 for e in page["chunk"] if str(e.get("content", {}).get("body", "")).startswith(prefix))
            if not page["chunk"] or not page.get("end"):
                return count
            from_ = page["end"]


async def register_shared_secret(http: httpx.AsyncClient, base: str, secret: str, localpart: str) -> User:
    body = await common.register_shared_secret(http, base, secret, localpart)
    return User(http, base, body["user_id"], body["access_token"])


class Server:
    """A server under test over HTTPS: an ours child process or a SynapsePeer."""

    def __init__(self, kind: str, name: str, base: str, pid: int, key_path: str, secret: str,
                 http: httpx.AsyncClient, extra: dict[str, Any] | None = None) -> None:
        self.kind, self.name, self.base, self.pid = kind, name, base, pid
        self.key_path, self.secret, self.http = key_path, secret, http
        self.extra = extra or {}

    @functools.cached_property
    def signing_key(self) -> Any:
        from api.signing_key import load_signing_key

        return load_signing_key(self.key_path)

    async def register(self, localpart: str) -> User:
        return await register_shared_secret(self.http, self.base, self.secret, localpart)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)


@asynccontextmanager
async def ours_child(root: Path, http: httpx.AsyncClient, label: str, populate: int = 0,
                     room_version: str = "10"):
    """Our server as a child process (this file, ``--serve-ours``)."""
    from synapse_peer import free_ports

    (port,) = free_ports(1)
    args = ["--port", str(port), "--room-version", room_version]
    if populate:
        args += ["--populate", str(populate)]
    async with common.ours_child(__file__, root / label, *args) as (proc, info):
        yield Server("ours", info["server_name"], info["base_url"], proc.pid, info["signing_key_path"],
                     info["shared_secret"], http, info)


@asynccontextmanager
async def synapse_server(root: Path, http: httpx.AsyncClient, label: str):
    async with common.synapse_peer(root / label) as peer:
        yield Server("synapse", peer.server_name, peer.client_url, peer.proc.pid, str(peer.signing_key_path),
                     peer.registration_shared_secret, http, {"version": peer.version})


def serve_ours_child(a: argparse.Namespace) -> None:
    """``--serve-ours``: run our server until stdin closes; print its details as one JSON line."""
    from roomactors.testing import homeserver_in_thread
    from synapse_peer import ours_federation_overrides

    data = Path(a.serve_ours).resolve()
    server_name = f"localhost:{a.port}"
    overrides = ours_federation_overrides(a.port, request_timeout_s=60.0)
    info: dict[str, Any] = {}
    if a.populate:
        info.update(trio.run(populate_child, data, server_name, overrides, a.populate, a.room_version))
    with homeserver_in_thread(server_name=server_name, data_dir=data, settings_overrides=overrides) as hs:
        info.update(base_url=hs.base_url, server_name=server_name, pid=os.getpid(),
                    signing_key_path=str(hs.settings.server.signing_key_path),
                    shared_secret=hs.settings.registration.shared_secret)
        common.serve_until_stdin_closes(info)


async def populate_child(data: Path, server_name: str, overrides: Any, members: int, room_version: str) -> dict:
    """Before serving: a public room with ``members`` joined local users (no accounts)."""
    from api.app import create_app
    from api.client.account import register_user
    from api.services import open_homeserver
    from roomactors.testing import homeserver_settings
    from tests.helpers.client import Api

    settings = homeserver_settings(data, server_name=server_name, settings_overrides=overrides)
    async with open_homeserver(settings) as deps:
        app = create_app(deps)
        async with app.test_request_context("/"):
            r = await register_user(deps, "resident", None)
        api = Api(app, r["access_token"], r["user_id"], r["device_id"])
        room = await api.create_room(preset="public_chat", room_version=room_version)
        t0 = time.monotonic()
        await add_members(deps, room, [f"@m{i}:{server_name}" for i in range(members)])
        print(f"populated {room} with {members} members in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        return {"room_id": room, "resident_token": r["access_token"], "resident_user_id": r["user_id"]}


def fed_client(server: Server) -> Any:
    from roomactors.federation_client import FederationClient, HttpsTransport

    transport = HttpsTransport(verify_certificates=False, ip_range_denylist=[], ip_range_allowlist=["127.0.0.0/8"])
    return FederationClient(transport, server_name=server.name, signing_key=server.signing_key, request_timeout_s=120)


# ====================================================================== 1. /send throughput


async def send_windowed(put: Callable[[str, int], Awaitable[None]], wait_index: Callable[[int], Awaitable[None]],
                        tag: str, total: int) -> None:
    """Transactions of 50 (after the warm-up one), one request at a time, keeping fewer
    than 100 PDUs sent but not yet accepted: Synapse prunes a room's inbound staging
    area once it holds 100 events (``prune_staged_events_in_room``), and the pruned
    PDUs' successors then stall on prev events the origin cannot serve (they were
    made by this script). Before sending PDUs [i, i+50) wait for PDU i-49."""
    for k, i in enumerate(range(TXN_PDUS, total, TXN_PDUS)):
        await wait_index(i - TXN_PDUS + 1)
        await put(f"{tag}{k}", i)


async def send_https(target: Server, origin: Server, n_pdus: int, room_version: str) -> dict[str, Any]:
    """PDUs signed by ``origin``'s key, PUT to ``target``'s /send over HTTPS."""
    tag = f"s{secrets.token_hex(3)}"
    resident = await target.register(f"r{tag}")
    member = await origin.register(f"o{tag}")
    room = await resident.create_room(preset="public_chat", room_version=room_version)
    await member.join(room, target.name)
    for _ in range(300):
        st = await resident.state(room)
        if ("m.room.member", member.user_id) in st:
            break
        await trio.sleep(0.1)
    else:
        raise RuntimeError("the origin's member never showed on the target")
    latest = (await resident.latest(room))["chunk"][0]["event_id"]
    fed = fed_client(origin)
    try:
        ev = await fed.get_json(target.name, f"/_matrix/federation/v1/event/{q(latest)}")
        depth = ev["pdus"][0]["depth"]
        chain = build_chain(room_version=room_version, room_id=room, sender=member.user_id, state=st, prev=latest,
                            depth=depth, count=TXN_PDUS + n_pdus, server_name=origin.name,
                            signing_key=origin.signing_key, tag=tag)
        pdus = [p for _, p in chain]

        async def newest_index() -> int:
            e = (await resident.latest(room))["chunk"][0]
            body = str(e.get("content", {}).get("body", ""))
            return int(body.split()[1]) if body.startswith(tag + " ") else -1

        async def wait_index(j: int, limit_s: float = 300) -> None:
            deadline = time.monotonic() + limit_s
            while await newest_index() < j:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target.kind}: PDU {j} not accepted after {limit_s} s")
                await trio.sleep(0.02)

        async def put(txn: str, i: int) -> None:
            check_txn_answer(await fed.put_json(target.name, f"/_matrix/federation/v1/send/{txn}",
                                                txn_body(origin.name, pdus[i:i + TXN_PDUS])))

        # Warm-up: the key fetch, connections.
        await put(f"{tag}w", 0)
        await wait_index(TXN_PDUS - 1)
        cpu0, t0 = target.cpu_s(), time.monotonic()
        await send_windowed(put, wait_index, tag, len(pdus))
        await wait_index(len(pdus) - 1)
        wall, cpu = time.monotonic() - t0, target.cpu_s() - cpu0
    finally:
        await fed.transport.aclose()
    counted = await resident.count_bodies(room, tag + " ")
    if counted != len(pdus):
        raise RuntimeError(f"{target.kind}: {counted} of {len(pdus)} PDUs in /messages")
    return {"pdus": n_pdus, "wall_s": round(wall, 3), "pdus_per_s": round(n_pdus / wall, 1),
            "cpu_ms_per_pdu": round(cpu * 1e3 / n_pdus, 3), "target": target.kind, "origin": origin.kind}


async def send_inproc(n_pdus: int, room_version: str) -> dict[str, Any]:
    from roomactors.testing import open_test_network
    from tests.helpers.federation import room_record, stored

    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        status, body = await hs1.api("POST", "/_matrix/client/v3/createRoom", token=alice.access_token,
                                     json={"preset": "public_chat", "room_version": room_version})
        assert status == 200, body
        room = body["room_id"]
        status, body = await hs2.api("POST", f"/_matrix/client/v3/join/{room}?via=hs1", token=bob.access_token, json={})
        assert status == 200, body
        await net.settle()
        record = await room_record(hs1, room)
        (prev,) = sorted(record.forward_extremities)
        depth = (await stored(hs1, prev))[prev].depth
        chain = build_chain(room_version=room_version, room_id=room, sender=bob.user_id,
                            state=dict(record.current_state), prev=prev, depth=depth, count=TXN_PDUS + n_pdus,
                            server_name="hs2", signing_key=hs2.deps.signing_key, tag="inproc")
        pdus = [p for _, p in chain]
        async def newest_index() -> int:
            status, body = await hs1.api("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1",
                                         token=alice.access_token)
            text = str(body["chunk"][0].get("content", {}).get("body", ""))
            return int(text.split()[1]) if text.startswith("inproc ") else -1

        async def wait_index(j: int, limit_s: float = 300) -> None:
            deadline = time.monotonic() + limit_s
            while await newest_index() < j:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"hs1: PDU {j} not accepted after {limit_s} s")
                await trio.sleep(0.02)

        async def put(txn: str, i: int) -> None:
            check_txn_answer(await hs2.deps.federation.put_json("hs1", f"/_matrix/federation/v1/send/{txn}",
                                                                txn_body("hs2", pdus[i:i + TXN_PDUS])))

        await put("warm", 0)
        await wait_index(TXN_PDUS - 1)
        cpu0, t0 = time.process_time(), time.monotonic()
        await send_windowed(put, wait_index, "t", len(pdus))
        await wait_index(len(pdus) - 1)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        got = await stored(hs1, *[e for e, _ in chain])
        bad = [e for e, _ in chain if e not in got or getattr(got[e], "rejected", False)]
        assert not bad, f"{len(bad)} PDUs missing or rejected on hs1"
    return {"pdus": n_pdus, "wall_s": round(wall, 3), "pdus_per_s": round(n_pdus / wall, 1),
            "cpu_ms_per_pdu": round(cpu * 1e3 / n_pdus, 3), "note": "CPU: both in-process servers"}


# ====================================================================== 2. joins


async def join_inproc(members: int, room_version: str) -> dict[str, Any]:
    import api.federation.perform as perform
    from roomactors.testing import open_test_network

    stages: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kw: Any) -> Any:
            t0 = time.monotonic()
            try:
                return await fn(*args, **kw)
            finally:
                stages[name] = stages.get(name, 0.0) + time.monotonic() - t0
        return wrapper

    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        status, body = await hs1.api("POST", "/_matrix/client/v3/createRoom", token=alice.access_token,
                                     json={"preset": "public_chat", "room_version": room_version})
        room = body["room_id"]
        t0 = time.monotonic()
        await add_members(hs1.deps, room, [f"@m{i}:hs1" for i in range(members)])
        populate_s = time.monotonic() - t0
        await net.settle(timeout_s=600)
        log(f"join: {members} members added in {populate_s:.1f} s")

        fed = hs2.deps.federation
        real_get, real_put = fed.get_json, fed.put_json
        fed.get_json = timed("make_join", real_get)
        fed.put_json = timed("send_join", real_put)
        real_verify = perform.verify_room_state
        perform.verify_room_state = timed("verify", real_verify)
        try:
            cpu0, t0 = time.process_time(), time.monotonic()
            status, body = await hs2.api("POST", f"/_matrix/client/v3/join/{room}?via=hs1", token=bob.access_token,
                                         json={})
            wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        finally:
            perform.verify_room_state = real_verify
            del fed.get_json, fed.put_json
        assert status == 200, body
        await net.settle(timeout_s=600)
        status, st = await hs2.api("GET", f"/_matrix/client/v3/rooms/{room}/joined_members", token=bob.access_token)
        joined = len(st.get("joined", {})) if status == 200 else None
    rest = wall - sum(stages.values())
    return {"members": members, "join_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "make_join_s": round(stages.get("make_join", 0), 3), "send_join_s": round(stages.get("send_join", 0), 3),
            "verify_s": round(stages.get("verify", 0), 3), "adopt_and_rest_s": round(rest, 3),
            "populate_s": round(populate_s, 1), "joined_members_seen_by_joiner": joined}


async def join_https(root: Path, http: httpx.AsyncClient, members: int, room_version: str,
                     synapse: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"members": members}
    async with AsyncExitStack() as stack:
        t0 = time.monotonic()
        resident = await stack.enter_async_context(
            ours_child(root, http, f"join-resident-{members}", populate=members, room_version=room_version))
        log(f"join-https: resident with {members} members ready in {time.monotonic() - t0:.1f} s")
        room = resident.extra["room_id"]
        joiners = [("ours", await stack.enter_async_context(ours_child(root, http, f"join-ours-{members}")))]
        if synapse:
            joiners.append(("synapse", await stack.enter_async_context(synapse_server(root, http, f"join-syn-{members}"))))
        for kind, server in joiners:
            user = await server.register(f"joiner{secrets.token_hex(2)}")
            cpu0, t0 = server.cpu_s(), time.monotonic()
            await user.join(room, resident.name)
            wall, cpu = time.monotonic() - t0, server.cpu_s() - cpu0
            out[kind] = {"join_s": round(wall, 3), "joiner_cpu_s": round(cpu, 3)}
            log(f"join-https: {kind} joined a {members}-member room in {wall:.2f} s")
    return out


# ====================================================================== 3. latency


async def measure_latency(send: Callable[[str], Awaitable[Any]], sync: Callable[[str | None, int], Awaitable[dict]],
                          room: str, messages: int, interval_s: float, tag: str) -> dict[str, Any]:
    """Send ``messages`` paced messages; a long-poll receiver records their arrival."""
    sent: dict[int, tuple[float, float]] = {}
    received: dict[int, float] = {}
    start = await sync(None, 0)
    since = start["next_batch"]
    done = trio.Event()

    async def receiver() -> None:
        nonlocal since
        while len(received) < messages:
            resp = await sync(since, 10000)
            now = time.monotonic()
            since = resp["next_batch"]
            for e in resp.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", []):
                body = str(e.get("content", {}).get("body", ""))
                if body.startswith(tag + " "):
                    received.setdefault(int(body.split()[1]), now)
        done.set()

    async def sender() -> None:
        t_next = time.monotonic()
        for i in range(messages):
            t0 = time.monotonic()
            await send(f"{tag} {i}")
            sent[i] = (t0, time.monotonic())
            t_next += interval_s
            await trio.sleep(max(0.0, t_next - time.monotonic()))

    with trio.move_on_after(120 + messages * interval_s):
        async with trio.open_nursery() as n:
            n.start_soon(receiver)
            n.start_soon(sender)
    e2e = [(received[i] - sent[i][0]) * 1e3 for i in received if i in sent]
    ack = [(received[i] - sent[i][1]) * 1e3 for i in received if i in sent]
    return {"messages": messages, "interval_ms": round(interval_s * 1e3), "delivered": len(received),
            "e2e": pcts(e2e), "after_ack": pcts(ack),
            "send_request": pcts([(b - a) * 1e3 for a, b in sent.values()])}


SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": True}},
                          "presence": {"types": []}, "account_data": {"types": []}})


async def latency_inproc(messages: int, interval_s: float, room_version: str) -> dict[str, Any]:
    from roomactors.testing import open_test_network

    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        status, body = await hs1.api("POST", "/_matrix/client/v3/createRoom", token=alice.access_token,
                                     json={"preset": "public_chat", "room_version": room_version})
        room = body["room_id"]
        status, body = await hs2.api("POST", f"/_matrix/client/v3/join/{room}?via=hs1", token=bob.access_token, json={})
        assert status == 200, body
        await net.settle()
        counter = iter(range(10**9))

        async def send(text: str) -> None:
            status, body = await hs1.api("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/l{next(counter)}",
                                         token=alice.access_token, json={"msgtype": "m.text", "body": text})
            assert status == 200, body

        async def sync(since: str | None, timeout_ms: int) -> dict:
            path = f"/_matrix/client/v3/sync?timeout={timeout_ms}&filter={q(SYNC_FILTER)}"
            if since:
                path += f"&since={q(since)}"
            status, body = await hs2.api("GET", path, token=bob.access_token)
            assert status == 200, body
            return body

        return await measure_latency(send, sync, room, messages, interval_s, "lat")


async def latency_https(a: Server, b: Server, messages: int, interval_s: float, room_version: str) -> dict[str, Any]:
    tag = f"l{secrets.token_hex(3)}"
    alice = await a.register(f"a{tag}")
    bob = await b.register(f"b{tag}")
    room = await alice.create_room(preset="public_chat", room_version=room_version)
    await bob.join(room, a.name)
    for _ in range(300):
        if ("m.room.member", bob.user_id) in await alice.state(room):
            break
        await trio.sleep(0.1)
    await trio.sleep(1.0)  # let the join's aftermath (device lists, presence) settle

    async def sync(since: str | None, timeout_ms: int) -> dict:
        params = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if since:
            params["since"] = since
        return await bob.req("GET", "/_matrix/client/v3/sync", params=params, timeout=timeout_ms / 1000 + 60)

    return await measure_latency(lambda text: alice.send(room, text), sync, room, messages, interval_s, tag)


# ====================================================================== main


async def run(a: argparse.Namespace) -> dict[str, Any]:
    only = set(a.only.split(","))
    res: dict[str, Any] = {"args": vars(a), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
    with common.scratch_dir("federation", a.keep) as root:
        async with httpx.AsyncClient(trust_env=False, limits=limits) as http:
            if "send" in only:
                log(f"send: in-process, {a.pdus} PDUs")
                res.setdefault("send", {})["ours_inproc"] = await send_inproc(a.pdus, a.room_version)
                log(f"  {res['send']['ours_inproc']}")
                if a.synapse:
                    async with ours_child(root, http, "send-ours") as ours, \
                            synapse_server(root, http, "send-syn") as syn:
                        res["synapse_version"] = syn.extra.get("version")
                        log(f"send: https, ours -> Synapse, {a.pdus} PDUs")
                        res["send"]["synapse_https"] = await send_https(syn, ours, a.pdus, a.room_version)
                        log(f"  {res['send']['synapse_https']}")
                        log(f"send: https, Synapse -> ours, {a.pdus} PDUs")
                        res["send"]["ours_https"] = await send_https(ours, syn, a.pdus, a.room_version)
                        log(f"  {res['send']['ours_https']}")
            if "join" in only:
                res["join"] = {"inproc": []}
                for n in a.join_sizes:
                    log(f"join: in-process, {n} members")
                    r = await join_inproc(n, a.room_version)
                    log(f"  {r}")
                    res["join"]["inproc"].append(r)
                if a.join_https:
                    log(f"join: https, {a.join_https} members (ours and Synapse joining ours)")
                    res["join"]["https"] = await join_https(root, http, a.join_https, a.room_version, a.synapse)
                    log(f"  {res['join']['https']}")
            if "latency" in only:
                interval = a.interval_ms / 1000
                res["latency"] = {}
                log(f"latency: in-process, {a.messages} messages every {a.interval_ms} ms")
                res["latency"]["ours_inproc"] = await latency_inproc(a.messages, interval, a.room_version)
                log(f"  {res['latency']['ours_inproc']}")
                async with ours_child(root, http, "lat-ours-a") as oa, ours_child(root, http, "lat-ours-b") as ob:
                    log("latency: https, ours -> ours")
                    res["latency"]["ours_https"] = await latency_https(oa, ob, a.messages, interval, a.room_version)
                    log(f"  {res['latency']['ours_https']}")
                if a.synapse:
                    async with synapse_server(root, http, "lat-syn-a") as sa, \
                            synapse_server(root, http, "lat-syn-b") as sb:
                        res["synapse_version"] = sa.extra.get("version")
                        log("latency: https, Synapse -> Synapse")
                        res["latency"]["synapse_https"] = await latency_https(sa, sb, a.messages, interval,
                                                                              a.room_version)
                        log(f"  {res['latency']['synapse_https']}")
    return res


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, Any, Any, Any]] = []
    s = res.get("send", {})
    if s:
        rows.append(("send: PDUs/s (in-process, ours)", s["ours_inproc"]["pdus_per_s"], None, None))
        rows.append(("send: CPU ms/PDU (in-process, both servers)", s["ours_inproc"]["cpu_ms_per_pdu"], None, None))
        if "ours_https" in s:
            o, y = s["ours_https"], s["synapse_https"]
            rows.append(("send: PDUs/s (HTTPS)", o["pdus_per_s"], y["pdus_per_s"],
                         ratio(o["pdus_per_s"], y["pdus_per_s"], True)))
            rows.append(("send: CPU ms/PDU (HTTPS, target process)", o["cpu_ms_per_pdu"], y["cpu_ms_per_pdu"],
                         ratio(o["cpu_ms_per_pdu"], y["cpu_ms_per_pdu"], False)))
    j = res.get("join", {})
    for r in j.get("inproc", []):
        rows.append((f"join {r['members']} members (in-process) s", r["join_s"], None, None))
        rows.append((f"  make_join / send_join / verify / adopt+rest s",
                     f"{r['make_join_s']}/{r['send_join_s']}/{r['verify_s']}/{r['adopt_and_rest_s']}", None, None))
    h = j.get("https")
    if h:
        o, y = h.get("ours", {}).get("join_s"), h.get("synapse", {}).get("join_s")
        rows.append((f"join {h['members']} members on ours (HTTPS) s", o, y, ratio(o, y, False)))
        o, y = h.get("ours", {}).get("joiner_cpu_s"), h.get("synapse", {}).get("joiner_cpu_s")
        rows.append(("  joiner CPU s", o, y, ratio(o, y, False)))
    lat = res.get("latency", {})
    if lat:
        syn = lat.get("synapse_https", {}).get("e2e", {})
        for key, label in (("ours_inproc", "in-process"), ("ours_https", "HTTPS")):
            if key not in lat:
                continue
            for p in ("p50_ms", "p99_ms"):
                o = lat[key]["e2e"][p]
                y = syn.get(p) if key == "ours_https" else None
                rows.append((f"latency e2e {p} ({label})", o, y, ratio(o, y, False) if y else None))
        if syn and "ours_https" not in lat:
            rows.append(("latency e2e p50/p99 Synapse", f"{syn['p50_ms']}/{syn['p99_ms']}", None, None))
    return common.format_table(rows, 14, 10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke test")
    p.add_argument("--only", default="send,join,latency")
    p.add_argument("--no-synapse", dest="synapse", action="store_false")
    p.add_argument("--room-version", default="10")
    p.add_argument("--pdus", type=int, default=1000, help="timed PDUs per /send run (multiple of 50)")
    p.add_argument("--join-sizes", default="1000,10000")
    p.add_argument("--join-https", type=int, default=1000, help="members of the HTTPS join room (0: skip)")
    p.add_argument("--messages", type=int, default=150)
    p.add_argument("--interval-ms", type=float, default=200)
    p.add_argument("--results-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the data directories (logs, databases)")
    # Child mode (internal).
    p.add_argument("--serve-ours", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--populate", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_ours:
        serve_ours_child(a)
        return
    if a.quick:
        a.pdus, a.join_sizes, a.join_https, a.messages = 500, "1000", 300, 60
    a.join_sizes = [int(x) for x in a.join_sizes.split(",") if x]
    common.run_and_report("federation", run, a, table)


if __name__ == "__main__":
    main()
