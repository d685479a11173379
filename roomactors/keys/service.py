"""KeyService: our published keys, and other servers' verify keys on demand.

Theory of operation
-------------------
Two jobs (s2s "Retrieving server keys"):

**Our keys.** :meth:`KeyService.own_server_keys` is the self-signed
``/_matrix/key/v2/server`` body (:func:`~roomactors.protocol.server_keys.build_server_keys_response`),
valid for ``validity_s`` and rebuilt once half of that has passed, so we never
publish a response about to expire ("Originating servers should avoid returning
responses that expire in less than an hour"). Keys retired by ``roomactors
rotate-key`` are published under ``old_verify_keys``.

**Their keys.** :meth:`KeyService.get_verify_keys` takes ``server -> {key_id:
minimum_valid_until_ts}`` and answers a :data:`~roomactors.protocol.signing.VerifyKeys`
mapping. Lookups go, in order::

    own server ── answered from memory (current key + old keys)
    memory LRU (server -> every stored key of it) ─ miss ─► one db.read (server_keys)
    still missing or not valid long enough ─► fetch, one task per server (nursery):
        GET  /_matrix/key/v2/server            from the server itself
        POST /_matrix/key/v2/query             each trusted key server, in order,
                                               until the keys are there

Every fetched response is checked (:func:`check_server_keys_response`,
:func:`check_notary_response`; a notary's signature is checked with the notary's
keys, fetched directly from it) before it is stored (``storage.keys``) and
remembered. A key that cannot be found is simply absent from the answer, and a
key valid for less than asked is still returned (room versions 1-4 ignore
validity): the caller's check decides.

* **One fetch per server.** Concurrent lookups of one server share a single
  fetch: the first becomes the fetcher, the others wait for its ``trio.Event``
  (no thundering herd). If the fetcher is cancelled (its HTTP request went away)
  a waiter takes over.
* **Negative cache.** A completed fetch, successful or not, is not repeated for
  ``negative_cache_s`` (trio clock), so a flood of requests signed with unknown
  keys does not become a flood of outbound fetches.
* **Cache invalidation.** This service is the only writer of ``server_keys``; each
  store updates the memory entry of that server if it is loaded (same "newer
  wins" rule as the table), so memory never lags the table. A server's memory
  entry holds *all* its stored keys, so a memory hit never needs the table.
* **The notary side** (:meth:`query_server_keys`, for ``/_matrix/key/v2/query``)
  serves stored responses co-signed by us, fetching directly from the server
  when what is stored is not valid long enough (s2s "Querying Keys Through
  Another Server"; notaries fetch with ``/_matrix/key/v2/server`` only).

``client`` is the outbound :class:`~roomactors.federation_client.FederationClient`;
while it is ``None`` nothing is fetched (the composition root sets it).
The service starts no tasks of its own.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import trio
from signedjson.key import decode_verify_key_bytes, get_verify_key

from roomactors.clock import Clock
from roomactors.federation_client import FederationError, FederationUnreachable
from roomactors.protocol.b64 import decode_base64
from roomactors.protocol.ids import is_valid_server_name
from roomactors.protocol.server_keys import (
    KeyResponseError,
    OldVerifyKey,
    ServerKey,
    ServerKeys,
    add_notary_signature,
    build_server_keys_response,
    check_notary_response,
    check_server_keys_response,
    key_id_of,
)
from roomactors.protocol.signing import VerifyKeys
from storage.keys import KeyRow, StoredServerKey, get_server_keys, upsert_server_keys

__all__ = ["KeyService", "KeyServiceStatistics", "SERVER_KEYS_PATH", "QUERY_PATH"]

log = logging.getLogger(__name__)

SERVER_KEYS_PATH = "/_matrix/key/v2/server"
QUERY_PATH = "/_matrix/key/v2/query"


#: What a fetch may fail with, all expected: the peer is down, answered an error, or
#: answered something that fails the spec's checks.
_FETCH_ERRORS = (FederationError, FederationUnreachable, KeyResponseError)


@dataclass(frozen=True, slots=True)
class KeyServiceStatistics:
    cached_servers: int
    fetches: int
    fetch_failures: int
    inflight: int
    negative_cached: int


class KeyService:
    def __init__(
        self,
        *,
        db: Any,
        server_name: str,
        signing_key: Any,
        old_verify_keys: Iterable[OldVerifyKey],
        client: Any,
        clock: Clock,
        validity_s: float,
        trusted_key_servers: Iterable[str],
        negative_cache_s: float = 60.0,
        max_cached_servers: int = 10_000,
        max_concurrent_fetches: int = 16,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.signing_key = signing_key
        self.old_verify_keys = tuple(old_verify_keys)
        #: The outbound FederationClient (``get_json``/``post_json``); ``None``: no fetching.
        self.client = client
        self.clock = clock
        self.trusted_key_servers = tuple(trusted_key_servers)
        self._validity_ms = int(validity_s * 1000)
        self._negative_cache_s = negative_cache_s
        self._max_cached = max_cached_servers
        #: bounds outbound key requests in flight (each HTTP call holds one token)
        self._fetch_limiter = trio.CapacityLimiter(max_concurrent_fetches)
        self._own: dict[str, Any] | None = None
        self._own_valid_until = 0
        self._own_refresh_at = 0
        self._own_keys: dict[str, tuple[Any, int | None]] = {}
        #: server -> key ID -> ServerKey: every stored key of the server (LRU).
        #: Invalidation: _remember() merges each store; eviction drops whole servers.
        self._cache: OrderedDict[str, dict[str, ServerKey]] = OrderedDict()
        #: (server, via_notaries) -> Event of the fetch in flight
        self._inflight: dict[tuple[str, bool], trio.Event] = {}
        #: (server, via_notaries) -> trio time the last fetch completed (oldest first)
        self._last_fetch: OrderedDict[tuple[str, bool], float] = OrderedDict()
        self._fetches = 0
        self._fetch_failures = 0

    # -- our own keys ------------------------------------------------------------

    def own_server_keys(self) -> dict[str, Any]:
        """Our signed ``/_matrix/key/v2/server`` body (shared: do not mutate it)."""
        now = self.clock.time_ms()
        if self._own is None or now >= self._own_refresh_at:
            valid_until = now + self._validity_ms
            self._own = build_server_keys_response(
                server_name=self.server_name,
                signing_key=self.signing_key,
                valid_until_ts=valid_until,
                old_verify_keys=self.old_verify_keys,
            )
            self._own_valid_until = valid_until
            self._own_refresh_at = now + self._validity_ms // 2
            current = key_id_of(self.signing_key)
            own: dict[str, tuple[Any, int | None]] = {
                k.key_id: (k.verify_key, k.expired_ts) for k in self.old_verify_keys if k.key_id != current
            }
            own[current] = (get_verify_key(self.signing_key), valid_until)
            self._own_keys = own
        return self._own

    def own_verify_keys(self) -> Mapping[str, tuple[Any, int | None]]:
        """Our key ID -> (verify key, valid until / expired_ts), old keys included."""
        self.own_server_keys()
        return self._own_keys

    # -- remote keys -------------------------------------------------------------

    async def get_verify_keys(self, wanted: Mapping[str, Mapping[str, int]]) -> VerifyKeys:
        """``server -> {key_id: (verify_key, valid_until_ts)}`` for the wanted keys that
        could be found (see the module docstring)."""
        result: dict[str, dict[str, tuple[Any, int | None]]] = {}
        remote: dict[str, Mapping[str, int]] = {}
        for server, key_ids in wanted.items():
            if server == self.server_name:
                own = self.own_verify_keys()
                result[server] = {k: own[k] for k in key_ids if k in own}
            elif key_ids and is_valid_server_name(server):
                remote[server] = key_ids  # (an invalid name has no keys to find)
        if not remote:
            return result
        await self._load(remote)
        missing = {s: kids for s, kids in remote.items() if not self._satisfied(s, kids)}
        if missing and self.client is not None:
            async with trio.open_nursery() as nursery:
                for server, kids in missing.items():
                    nursery.start_soon(self._ensure_fetched, server, kids, True)
        loaded = await self._load(remote)
        for server, key_ids in remote.items():
            known = loaded.get(server, {})
            found = {k: (known[k].verify_key, known[k].valid_until_ts) for k in key_ids if k in known}
            if found:
                result[server] = found
        return result

    async def query_server_keys(
        self, criteria: Mapping[str, Mapping[str, int]], *, minimum_valid_until_ts: int | None = None
    ) -> list[dict[str, Any]]:
        """The notary: stored key responses for ``criteria`` (server -> {key_id:
        minimum_valid_until_ts}), each co-signed by us. An empty mapping means every
        key of the server, valid until at least ``minimum_valid_until_ts`` (default:
        now). A server with nothing stored and nothing fetched contributes nothing
        ("Servers which are offline and have no cached keys will not be included in
        the result"); a stored response is served even when a fresh one could not be
        fetched ("notary servers should continue to return the last response they
        received")."""
        out: list[dict[str, Any]] = []
        default_minimum = self.clock.time_ms() if minimum_valid_until_ts is None else minimum_valid_until_ts

        async def one(server: str, kids: Mapping[str, int]) -> None:
            out.extend(await self._notary_answer(server, kids, default_minimum))

        async with trio.open_nursery() as nursery:
            for server, kids in criteria.items():
                nursery.start_soon(one, server, kids)
        return out

    async def _notary_answer(self, server: str, kids: Mapping[str, int], default_minimum: int) -> list[dict[str, Any]]:
        if server == self.server_name:
            return [self.own_server_keys()]
        rows = await self.db.read(get_server_keys, [server])
        if not _rows_satisfy(rows, kids, default_minimum) and self.client is not None:
            # "The notary server will retrieve keys from the queried servers through
            # use of the /_matrix/key/v2/server API": directly, never via notaries.
            await self._ensure_fetched(server, kids, False)
            rows = await self.db.read(get_server_keys, [server])
        if kids:
            rows = [r for r in rows if r.key_id in kids]
        responses: dict[str, None] = dict.fromkeys(r.response_json for r in rows)
        return [add_notary_signature(orjson.loads(text), self.server_name, self.signing_key) for text in responses]

    def statistics(self) -> KeyServiceStatistics:
        return KeyServiceStatistics(
            cached_servers=len(self._cache),
            fetches=self._fetches,
            fetch_failures=self._fetch_failures,
            inflight=len(self._inflight),
            negative_cached=len(self._last_fetch),
        )

    # -- cache -------------------------------------------------------------------

    def _satisfied(self, server: str, kids: Mapping[str, int]) -> bool:
        known = self._cache.get(server, {})
        return all(k in known and known[k].valid_until_ts >= minimum for k, minimum in kids.items())

    async def _load(self, servers: Iterable[str]) -> dict[str, dict[str, ServerKey]]:
        """The memory entries of ``servers``, read from the table for those not loaded."""
        out: dict[str, dict[str, ServerKey]] = {}
        absent: list[str] = []
        for server in servers:
            entry = self._cache.get(server)
            if entry is None:
                absent.append(server)
            else:
                self._cache.move_to_end(server)
                out[server] = entry
        if absent:
            rows = await self.db.read(get_server_keys, absent)
            loaded: dict[str, dict[str, ServerKey]] = {s: {} for s in absent}
            for row in rows:
                key = _server_key(row)
                if key is not None:
                    loaded[row.server_name][row.key_id] = key
            for server, keys in loaded.items():
                # A store may have landed while we read: keep what is in memory then.
                entry = self._cache.get(server)
                if entry is None:
                    entry = keys
                    self._cache[server] = entry
                self._cache.move_to_end(server)
                out[server] = entry
            self._evict()
        return out

    def _evict(self) -> None:
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    def _remember(self, keys: ServerKeys) -> None:
        entry = self._cache.get(keys.server_name)
        if entry is None:
            return  # not loaded: the next _load reads the table, which has it
        for key_id, key in keys.keys.items():
            old = entry.get(key_id)
            if old is None or _newer(key, old):
                entry[key_id] = key

    async def _store(self, results: Iterable[ServerKeys], fetched_ts: int) -> None:
        results = list(results)
        if not results:
            return

        def write(conn: Any) -> None:
            for keys in results:
                rows = [KeyRow(k.key_id, k.key_b64, k.valid_until_ts, k.expired_ts) for k in keys.keys.values()]
                upsert_server_keys(
                    conn, keys.server_name, rows, fetched_ts=fetched_ts, response_json=orjson.dumps(keys.response).decode()
                )

        await self.db.write(write)
        for keys in results:
            self._remember(keys)

    # -- fetching ----------------------------------------------------------------

    async def _ensure_fetched(self, server: str, kids: Mapping[str, int], via_notaries: bool) -> None:
        """Fetch ``server``'s keys unless a fetch is running (then wait for it) or one
        completed within ``negative_cache_s``."""
        gate = (server, via_notaries)
        while True:
            last = self._last_fetch.get(gate)
            if last is not None and trio.current_time() - last < self._negative_cache_s:
                return
            running = self._inflight.get(gate)
            if running is None:
                break
            await running.wait()  # then re-check: a cancelled fetcher records nothing
        done = trio.Event()
        self._inflight[gate] = done
        try:
            await self._fetch(server, kids, via_notaries)
            self._last_fetch[gate] = trio.current_time()
            self._last_fetch.move_to_end(gate)
            self._prune_negative_cache()
        finally:
            del self._inflight[gate]
            done.set()

    def _prune_negative_cache(self) -> None:
        horizon = trio.current_time() - self._negative_cache_s
        while self._last_fetch:
            gate, when = next(iter(self._last_fetch.items()))
            if when >= horizon:
                break
            del self._last_fetch[gate]

    async def _fetch(self, server: str, kids: Mapping[str, int], via_notaries: bool) -> None:
        client = self.client
        self._fetches += 1
        now = self.clock.time_ms()
        # s2s "Retrieving server keys": first the server's own /_matrix/key/v2/server.
        try:
            async with self._fetch_limiter:
                response = await client.get_json(server, SERVER_KEYS_PATH)
            await self._store([check_server_keys_response(response, expected_server=server, now_ms=now)], now)
        except _FETCH_ERRORS as e:
            self._fetch_failures += 1
            log.info("fetching keys of %s directly failed: %s", server, e)
        if not via_notaries:
            return
        await self._load([server])
        if self._satisfied(server, kids):
            return
        # s2s "Querying Keys Through Another Server": the trusted notaries, in order.
        for notary in self.trusted_key_servers:
            if notary in (server, self.server_name):
                continue
            notary_keys = await self._notary_keys(notary)
            query = {"server_keys": {server: {k: {"minimum_valid_until_ts": m} for k, m in kids.items()}}}
            try:
                async with self._fetch_limiter:
                    response = await client.post_json(notary, QUERY_PATH, query)
                result = check_notary_response(
                    response, notary=notary, notary_keys=notary_keys, requested=[server], now_ms=now
                )
            except _FETCH_ERRORS as e:
                self._fetch_failures += 1
                log.info("querying notary %s for keys of %s failed: %s", notary, server, e)
                continue
            for rejected_server, reason in result.rejected:
                log.warning("notary %s: dropped keys of %s: %s", notary, rejected_server, reason)
            await self._store(result.accepted, now)
            await self._load([server])
            if self._satisfied(server, kids):
                return

    async def _notary_keys(self, notary: str) -> dict[str, Any] | None:
        """The notary's current keys, fetched directly from it when unknown; ``None``
        when we have none (its signature then goes unchecked: the TLS connection
        authenticated the response, s2s "Response Authentication")."""
        loaded = await self._load([notary])
        if not _current(loaded[notary]):
            await self._ensure_fetched(notary, {}, False)
            loaded = await self._load([notary])
        current = _current(loaded[notary])
        return current or None


def _current(keys: Mapping[str, ServerKey]) -> dict[str, Any]:
    return {k: v.verify_key for k, v in keys.items() if v.expired_ts is None}


def _newer(new: ServerKey, old: ServerKey) -> bool:
    """storage.keys' upsert rule: newly retired, or valid at least as long without un-retiring."""
    if new.expired_ts is not None and old.expired_ts is None:
        return True
    return new.valid_until_ts >= old.valid_until_ts and (new.expired_ts is not None or old.expired_ts is None)


def _rows_satisfy(rows: list[StoredServerKey], kids: Mapping[str, int], default_minimum: int) -> bool:
    if not kids:
        return any(r.expired_ts is None and r.valid_until_ts >= default_minimum for r in rows)
    by_id = {r.key_id: r for r in rows}
    return all(k in by_id and by_id[k].valid_until_ts >= minimum for k, minimum in kids.items())


def _server_key(row: StoredServerKey) -> ServerKey | None:
    try:
        verify_key = decode_verify_key_bytes(row.key_id, decode_base64(row.verify_key))
    except ValueError:
        log.error("server_keys row %s %s holds an undecodable key; ignored", row.server_name, row.key_id)
        return None
    return ServerKey(row.key_id, verify_key, row.valid_until_ts, row.expired_ts)
