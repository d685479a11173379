"""Benchmark: end-to-end encryption plumbing — to-device delivery and ``/keys/query``
for 100 users; roomactors against Synapse on this machine.

Run from the repository root (``make bench-e2ee`` does the same)::

    .venv/bin/python bench/e2ee.py                 # full run, 2 rounds (~10 minutes on a busy host)
    .venv/bin/python bench/e2ee.py --quick         # smaller numbers, 1 round
    .venv/bin/python bench/e2ee.py --only todevice --no-synapse
    .venv/bin/python bench/e2ee.py --quick --no-ours    # Synapse alone (its figures in the "ours" column)

Both servers are separate processes on loopback, driven over HTTP by this process
(trio + httpx) with the same requests: ours is this file with ``--serve-ours``
(``roomactors.testing.homeserver_in_thread``: SQLite, rate limits off); Synapse is
the pinned release in ``.venv-synapse`` started through
``tests/interop/synapse_peer.py`` (SQLite, rate limits off, ``bcrypt_rounds`` 4
so that set-up logins are quick; nothing timed hashes a password). Both run for
the whole bench (the idle one is quiet); each figure is measured on one server
then the other, back to back, the order alternating by round, so a shared host's
changing load hits both alike; the table shows medians over ``--rounds``. Server
CPU is read from ``/proc/<pid>/stat`` (all threads) around each timed phase.

Figures (ratio "ours vs Synapse": > 1 means roomactors is better):

1. **to-device delivered/s**, end to end: from the first ``PUT /sendToDevice``
   until the recipient's ``/sync`` has returned the last message (long-polls with
   ``since``, so each sync acknowledges the previous batch). Messages of type
   ``org.bench.todevice`` (about 200 bytes of content, a sequence number), three ways:

   * ``single``: one message per call, one call at a time, to one recipient device
     (``--single-messages``, default 1000: it is latency-bound and slow);
   * ``pipelined``: one message per call, ``--inflight`` calls in flight, to one
     recipient device (arrival order is then up to the server); ``--messages``;
   * ``batched``: one call carries one message for each of ``--batch-devices``
     recipient devices (one device each of that many users; the shape of a room-key
     share), every recipient long-polling its own ``/sync``; ``--messages`` counts
     messages, so there are ``messages / batch-devices`` calls.

   A ``sendToDevice`` body maps user → device → content, so a call can hold at most
   one message per recipient device: "batching" necessarily means several devices.
   Also recorded: the send phase alone (messages/s acknowledged), server CPU per
   message (sending and syncing), and delivery correctness (every message exactly
   once; per-device order for ``single`` and ``batched``).

2. **/keys/query for 100 users**: 100 users, each with two devices (the registration
   one and a password login), upload signed device keys for both (real ed25519
   signatures, ``signedjson``); a separate user then queries all 100
   (``{"device_keys": {user: []}}``). Set up once per server; each round checks
   the first answer (100 users, 200 devices with keys), then measures latency
   (median and p90 of ``--queries`` sequential queries after 3 warm-up ones) and
   throughput (``--queries`` queries with 8 in flight).

Results: a table on stdout and ``bench/results/<UTC time>/e2ee.json`` (every
round, and the medians). The data directories go to a temporary directory,
removed at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import trio  # noqa: E402

from bench import common  # noqa: E402
from bench.common import pct, proc_cpu_s, q, ratio  # noqa: E402

log = common.logger("e2ee")
EVENT_TYPE = "org.bench.todevice"
SYNC_FILTER = json.dumps({"room": {"rooms": []}, "presence": {"types": []}, "account_data": {"types": []}})
PAD = "x" * 160


async def gather(n_workers: int, items: list[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """``fn(item)`` for every item, ``n_workers`` at a time; results in item order."""
    results: list[Any] = [None] * len(items)
    it = iter(enumerate(items))

    async def worker() -> None:
        for i, item in it:
            results[i] = await fn(item)

    async with trio.open_nursery() as n:
        for _ in range(min(n_workers, len(items)) or 1):
            n.start_soon(worker)
    return results


# ====================================================================== servers and users


class User:
    """One logged-in device of a user, on either server (async httpx)."""

    def __init__(self, http: httpx.AsyncClient, base: str, user_id: str, device_id: str, token: str) -> None:
        self.http, self.base, self.user_id, self.device_id, self.token = http, base, user_id, device_id, token

    async def req(self, method: str, path: str, body: Any = None, params: Any = None, timeout: float = 120.0) -> Any:
        r = await self.http.request(method, self.base + path, json=body, params=params, timeout=timeout,
                                    headers={"Authorization": f"Bearer {self.token}"})
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    async def sync(self, since: str | None, timeout_ms: int) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if since:
            params["since"] = since
        return await self.req("GET", "/_matrix/client/v3/sync", params=params, timeout=timeout_ms / 1000 + 60)

    async def send_to_device(self, messages: dict[str, dict[str, Any]], txn: str) -> None:
        await self.req("PUT", f"/_matrix/client/v3/sendToDevice/{EVENT_TYPE}/{q(txn)}", {"messages": messages})

    async def upload_device_keys(self) -> None:
        """Signed device keys for this device (ed25519 signing key, a curve25519 key)."""
        from signedjson.key import encode_verify_key_base64, generate_signing_key
        from signedjson.sign import sign_json

        signing_key = generate_signing_key(self.device_id)
        curve = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        device_keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": curve,
                     f"ed25519:{self.device_id}": encode_verify_key_base64(signing_key.verify_key)},
        }
        sign_json(device_keys, self.user_id, signing_key)
        await self.req("POST", "/_matrix/client/v3/keys/upload", {"device_keys": device_keys})


class Server:
    """A server under test: ``kind`` ("ours" / "synapse"), client base URL, PID, shared secret."""

    def __init__(self, kind: str, base: str, pid: int, secret: str, http: httpx.AsyncClient, version: str = "") -> None:
        self.kind, self.base, self.pid, self.secret, self.http, self.version = kind, base, pid, secret, http, version

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    async def register(self, localpart: str) -> User:
        body = await common.register_shared_secret(self.http, self.base, self.secret, localpart, timeout=60)
        return User(self.http, self.base, body["user_id"], body["device_id"], body["access_token"])

    async def login(self, user: User) -> User:
        """A second device of ``user`` (password login)."""
        r = await self.http.post(self.base + "/_matrix/client/v3/login", timeout=60,
                                 json={"type": "m.login.password", "password": "password",
                                       "identifier": {"type": "m.id.user", "user": user.user_id}})
        r.raise_for_status()
        body = r.json()
        return User(self.http, self.base, body["user_id"], body["device_id"], body["access_token"])


@asynccontextmanager
async def ours_child(root: Path, http: httpx.AsyncClient):
    """Our server as a child process (this file, ``--serve-ours``)."""
    async with common.ours_child(__file__, root / "ours") as (proc, info):
        yield Server("ours", info["base_url"], proc.pid, info["shared_secret"], http)


@asynccontextmanager
async def synapse_server(root: Path, http: httpx.AsyncClient):
    async with common.synapse_peer(root / "synapse", {"bcrypt_rounds": 4}) as peer:
        yield Server("synapse", peer.client_url, peer.proc.pid, peer.registration_shared_secret, http,
                     peer.version or "")


def serve_ours_child(data_dir: str) -> None:
    """``--serve-ours``: run our server until stdin closes; print its details as one JSON line."""
    from roomactors.testing import homeserver_in_thread

    with homeserver_in_thread(data_dir=Path(data_dir).resolve()) as hs:
        common.serve_until_stdin_closes({"base_url": hs.base_url, "pid": os.getpid(),
                                         "shared_secret": hs.settings.registration.shared_secret})


# ====================================================================== 1. to-device


class Receiver:
    """One recipient device long-polling /sync, recording when each message arrives."""

    def __init__(self, user: User, tag: str, expected: int) -> None:
        self.user, self.tag, self.expected = user, tag, expected
        self.arrivals: list[tuple[int, float]] = []  # (seq, monotonic time)
        self.since: str | None = None

    async def prime(self) -> None:
        self.since = (await self.user.sync(None, 0))["next_batch"]

    async def run(self, deadline: float) -> None:
        while len(self.arrivals) < self.expected and time.monotonic() < deadline:
            resp = await self.user.sync(self.since, 10_000)
            now = time.monotonic()
            self.since = resp["next_batch"]
            for ev in resp.get("to_device", {}).get("events", []):
                content = ev.get("content", {})
                if ev.get("type") == EVENT_TYPE and content.get("tag") == self.tag:
                    self.arrivals.append((content["seq"], now))


async def todevice_run(server: Server, mode: str, n: int, inflight: int, batch_devices: int,
                       timeout_s: float) -> dict[str, Any]:
    tag = f"{mode}{secrets.token_hex(3)}"
    sender = await server.register(f"snd{tag}")
    n_recipients = batch_devices if mode == "batched" else 1
    recipients = await gather(8, [f"rcv{tag}x{i}" for i in range(n_recipients)], server.register)
    per_device = n // n_recipients
    total = per_device * n_recipients
    receivers = [Receiver(r, tag, per_device) for r in recipients]
    for r in receivers:
        await r.prime()

    def content(seq: int) -> dict[str, Any]:
        return {"tag": tag, "seq": seq, "pad": PAD}

    # Calls: (txn, messages) in send order.
    if mode == "batched":
        calls = [(f"{tag}-{k}", {r.user_id: {r.device_id: content(k)} for r in recipients}) for k in range(per_device)]
    else:
        (r,) = recipients
        calls = [(f"{tag}-{k}", {r.user_id: {r.device_id: content(k)}}) for k in range(per_device)]
    sent_done = 0.0
    cpu0 = server.cpu_s()
    t0 = time.monotonic()
    deadline = t0 + timeout_s

    async def send_all() -> None:
        nonlocal sent_done
        if mode == "pipelined":
            await gather(inflight, calls, lambda c: sender.send_to_device(c[1], c[0]))
        else:
            for txn, messages in calls:
                await sender.send_to_device(messages, txn)
        sent_done = time.monotonic()

    with trio.move_on_after(timeout_s + 30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            for r in receivers:
                nursery.start_soon(r.run, deadline)
    cpu = server.cpu_s() - cpu0
    arrivals = [a for r in receivers for a in r.arrivals]
    delivered = len(arrivals)
    t_last = max((t for _, t in arrivals), default=time.monotonic())
    seqs_ok = all(sorted(s for s, _ in r.arrivals) == list(range(per_device)) for r in receivers)
    in_order = all([s for s, _ in r.arrivals] == list(range(per_device)) for r in receivers)
    out = {
        "mode": mode, "messages": total, "calls": len(calls), "recipient_devices": n_recipients,
        "delivered": delivered, "exactly_once": seqs_ok and delivered == total,
        "in_order": in_order if mode != "pipelined" else None,
        "delivered_per_s": round(delivered / (t_last - t0), 1) if delivered else 0.0,
        "e2e_s": round(t_last - t0, 3),
        "send_phase_s": round(sent_done - t0, 3) if sent_done else None,
        "sent_per_s": round(total / (sent_done - t0), 1) if sent_done else None,
        "server_cpu_ms_per_message": round(cpu * 1e3 / max(delivered, 1), 3),
    }
    if mode == "pipelined":
        out["inflight"] = inflight
    return out


# ====================================================================== 2. /keys/query


async def keys_setup(server: Server, users: int) -> dict[str, Any]:
    """``users`` users with two devices each, all with signed device keys, and a querier."""
    tag = secrets.token_hex(3)
    t0 = time.monotonic()
    firsts = await gather(8, [f"kq{tag}x{i}" for i in range(users)], server.register)
    seconds = await gather(8, firsts, server.login)
    await gather(8, firsts + seconds, lambda u: u.upload_device_keys())
    querier = await server.register(f"kq{tag}q")
    return {"querier": querier, "users": [u.user_id for u in firsts], "setup_s": round(time.monotonic() - t0, 1)}


async def keys_query_run(server: Server, setup: dict[str, Any], queries: int) -> dict[str, Any]:
    querier: User = setup["querier"]
    users = len(setup["users"])
    body = {"device_keys": {u: [] for u in setup["users"]}, "timeout": 10_000}

    async def query() -> dict[str, Any]:
        return await querier.req("POST", "/_matrix/client/v3/keys/query", body)

    first = await query()
    got = first.get("device_keys", {})
    devices = sum(len(d) for d in got.values())
    if len(got) != users or devices != 2 * users:
        raise RuntimeError(f"{server.kind}: /keys/query answered {len(got)} users, {devices} devices "
                           f"(expected {users}, {2 * users}); failures: {first.get('failures')}")
    for _ in range(2):
        await query()
    latencies = []
    cpu0 = server.cpu_s()
    for _ in range(queries):
        t = time.monotonic()
        await query()
        latencies.append((time.monotonic() - t) * 1e3)
    cpu_seq = server.cpu_s() - cpu0
    t = time.monotonic()
    await gather(8, list(range(queries)), lambda _: query())
    wall = time.monotonic() - t
    return {"users": users, "devices": devices, "queries": queries, "setup_s": setup["setup_s"],
            "response_bytes": len(json.dumps(first)),
            "latency_p50_ms": pct(latencies, 0.5), "latency_p90_ms": pct(latencies, 0.9),
            "latency_mean_ms": round(statistics.fmean(latencies), 2),
            "sequential_queries_per_s": round(queries / (sum(latencies) / 1e3), 1),
            "queries_per_s_8_inflight": round(queries / wall, 1),
            "server_cpu_ms_per_query": round(cpu_seq * 1e3 / queries, 2)}


# ====================================================================== main


MODES = ("single", "pipelined", "batched")


async def run_figure(server: Server, figure: str, a: argparse.Namespace, keys_setups: dict[str, Any]) -> dict[str, Any]:
    if figure in MODES:
        n = a.single_messages if figure == "single" else a.messages
        log(f"{server.kind}: to-device {figure}, {n} messages")
        r = await todevice_run(server, figure, n, a.inflight, a.batch_devices, a.timeout)
    else:
        if server.kind not in keys_setups:
            log(f"{server.kind}: /keys/query set-up, {a.users} users x 2 devices")
            keys_setups[server.kind] = await keys_setup(server, a.users)
        log(f"{server.kind}: /keys/query for {a.users} users")
        r = await keys_query_run(server, keys_setups[server.kind], a.queries)
    log(f"  {r}")
    return r


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per field: the median of the rounds' numbers (or the first value, or all
    booleans and-ed); a single round is returned as is."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, bool) or first is None:
            out[key] = None if any(v is None for v in values) else all(values)
        elif all(v == first for v in values):
            out[key] = first
        elif isinstance(first, (int, float)):
            out[key] = round(statistics.median(v for v in values if v is not None), 3)
        else:
            out[key] = first
    return out


async def run(a: argparse.Namespace) -> dict[str, Any]:
    """Both servers up at once (the idle one is quiet); each figure measured on one
    then the other, back to back, the order alternating by round; medians over rounds."""
    res: dict[str, Any] = {"args": vars(a), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    figures = [m for m in MODES if "todevice" in a.only] + (["keys"] if "keys" in a.only else [])
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    keys_setups: dict[str, Any] = {}
    with common.scratch_dir("e2ee", a.keep) as root:
        async with httpx.AsyncClient(trust_env=False, limits=limits) as http, AsyncExitStack() as stack:
            servers = []
            if a.ours:
                servers.append(await stack.enter_async_context(ours_child(root, http)))
            if a.synapse:
                syn = await stack.enter_async_context(synapse_server(root, http))
                res["synapse_version"] = syn.version
                servers.append(syn)
            for rnd in range(a.rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]
                log(f"round {rnd + 1} of {a.rounds}: {', '.join(s.kind for s in order)}")
                for figure in figures:
                    for server in order:
                        r = await run_figure(server, figure, a, keys_setups)
                        rounds.setdefault(server.kind, {}).setdefault(figure, []).append(r)
    res["rounds"] = rounds
    for kind, by_figure in rounds.items():
        summary: dict[str, Any] = {}
        for figure, runs in by_figure.items():
            if figure in MODES:
                summary.setdefault("todevice", {})[figure] = median_of(runs)
            else:
                summary["keys_query"] = median_of(runs)
        res[kind] = summary
    return res


def table(res: dict[str, Any]) -> str:
    o, y = res.get("ours") or res.get("synapse", {}), res.get("synapse", {}) if "ours" in res else {}
    rows: list[tuple[str, Any, Any, Any]] = []

    def row(name: str, ov: Any, yv: Any, higher_is_better: bool | None) -> None:
        r = ratio(ov, yv, higher_is_better) if higher_is_better is not None and isinstance(ov, (int, float)) \
            and isinstance(yv, (int, float)) else None
        rows.append((name, ov, yv, r))

    for mode in ("single", "pipelined", "batched"):
        ot, yt = o.get("todevice", {}).get(mode), y.get("todevice", {}).get(mode)
        if not ot:
            continue
        yt = yt or {}
        label = {"single": "1 msg/call, sequential", "pipelined": f"1 msg/call, {ot.get('inflight')} in flight",
                 "batched": f"{ot['recipient_devices']} devices/call"}[mode]
        row(f"to-device delivered/s ({label})", ot["delivered_per_s"], yt.get("delivered_per_s"), True)
        row("  sent/s (send phase only)", ot["sent_per_s"], yt.get("sent_per_s"), True)
        row("  server CPU ms/message", ot["server_cpu_ms_per_message"], yt.get("server_cpu_ms_per_message"), False)
        row("  exactly once / in order", f"{ot['exactly_once']}/{ot['in_order']}",
            f"{yt.get('exactly_once')}/{yt.get('in_order')}" if yt else None, None)
    ok, yk = o.get("keys_query"), y.get("keys_query") or {}
    if ok:
        row(f"/keys/query {ok['users']} users ({ok['devices']} devices) p50 ms", ok["latency_p50_ms"],
            yk.get("latency_p50_ms"), False)
        row("  p90 ms", ok["latency_p90_ms"], yk.get("latency_p90_ms"), False)
        row("  queries/s (sequential)", ok["sequential_queries_per_s"], yk.get("sequential_queries_per_s"), True)
        row("  queries/s (8 in flight)", ok["queries_per_s_8_inflight"], yk.get("queries_per_s_8_inflight"), True)
        row("  server CPU ms/query", ok["server_cpu_ms_per_query"], yk.get("server_cpu_ms_per_query"), False)
    return common.format_table(rows, 12, 12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke test")
    p.add_argument("--only", default="todevice,keys")
    p.add_argument("--no-synapse", dest="synapse", action="store_false")
    p.add_argument("--no-ours", dest="ours", action="store_false", help="Synapse only (to check the load)")
    p.add_argument("--messages", type=int, default=2000, help="to-device messages, pipelined and batched")
    p.add_argument("--single-messages", type=int, default=1000, help="to-device messages, single")
    p.add_argument("--inflight", type=int, default=8, help="calls in flight in the pipelined mode")
    p.add_argument("--batch-devices", type=int, default=20, help="recipient devices per call, batched mode")
    p.add_argument("--users", type=int, default=100, help="users in the /keys/query")
    p.add_argument("--queries", type=int, default=50, help="timed /keys/query calls (each of two phases)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the table shows medians over them")
    p.add_argument("--timeout", type=float, default=300.0, help="limit on one to-device run, s")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the data directories (logs, databases)")
    p.add_argument("--serve-ours", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_ours:
        serve_ours_child(a.serve_ours)
        return
    if a.quick:
        a.messages, a.single_messages, a.queries, a.rounds = 400, 200, 20, 1
    a.only = set(a.only.split(","))
    common.run_and_report("e2ee", run, a, table)


if __name__ == "__main__":
    main()
