"""Server discovery with I/O: well-known fetch and cache, SRV and address lookups, the IP deny-list.

Theory of operation
-------------------
:class:`ServerDiscovery` runs the spec's "Resolving server names" steps in order,
calling the pure decisions in ``roomactors.protocol.server_discovery`` between
lookups (see that module's diagram)::

    resolve("example.org")
      1/2  direct_resolution                      (no I/O)
      3    well_known(hostname)  ── cached per hostname ──► delegated name or error
      3.x  delegated_resolution | SRV _matrix-fed._tcp / _matrix._tcp | :8448
      4-6  SRV _matrix-fed._tcp / _matrix._tcp on the hostname | :8448

    addresses(Endpoint)  A/AAAA (or the IP literal) ─► IpFilter ─► ["203.0.113.7", ...]

Two injected collaborators keep it testable without a network:

* a :class:`Resolver` (``srv(name)``, ``addresses(host)``); :class:`SystemResolver`
  uses dnspython's async resolver for SRV (it runs on trio) and the system's
  ``getaddrinfo`` (through ``trio.socket``: CNAMEs, ``/etc/hosts``) for addresses;
* a well-known fetcher, ``async (hostname) -> WellKnownResponse | None``: the
  HTTPS GET of ``https://<hostname>/.well-known/matrix/server`` (redirects
  followed), ``None`` when the host could not be reached at all.
  ``roomactors.federation_client.HttpsTransport`` supplies one that goes through
  the same deny-list and TLS rules as every other federation request.

Caches (invalidation is by expiry only):

* well-known per hostname: a valid answer for ``well_known_cache_seconds`` of its
  headers (24 h default, 5 min floor, 48 h cap); an invalid one or an error for
  ``error_cache_seconds(n)`` (5 min doubling to 1 h for repeated failures). When
  the host cannot be reached but an earlier valid answer exists, that answer is
  kept for the error period instead (a blip must not undo delegation).
* the final :class:`Resolution` per server name, for at most ``SRV_CACHE_S``
  (SRV answers are not cached elsewhere) and never past its well-known entry.

Concurrent lookups of one hostname share a single well-known fetch.
Expiry uses ``trio.current_time()`` (so tests can use trio's mock clocks); only
``Expires`` headers need the wall clock (``wall_clock``, injectable).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from roomactors.protocol.server_discovery import (
    Endpoint,
    IpFilter,
    Resolution,
    ServerName,
    SrvRecord,
    delegated_resolution,
    direct_resolution,
    error_cache_seconds,
    fallback_resolution,
    order_srv,
    parse_server_name,
    parse_well_known,
    srv_resolution,
    srv_service_names,
    well_known_cache_seconds,
)

__all__ = [
    "AddressDenied",
    "DiscoveryError",
    "Resolver",
    "SRV_CACHE_S",
    "ServerDiscovery",
    "SystemResolver",
    "WellKnownFetcher",
    "WellKnownResponse",
]

log = logging.getLogger(__name__)

#: How long a resolution that involved SRV (or the 8448 fallback) is reused.
SRV_CACHE_S = 300.0
#: Cap on cached server names / hostnames (oldest entries are dropped first).
CACHE_MAX_ENTRIES = 10_000


class DiscoveryError(Exception):
    """The server name cannot be resolved to an address we may connect to."""


class AddressDenied(DiscoveryError):
    """Every address of the target is in ``[federation] ip_range_denylist``."""


@dataclass(frozen=True, slots=True)
class WellKnownResponse:
    """What a well-known fetch returned (after redirects): status, lower-case headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


#: ``async (hostname) -> WellKnownResponse | None`` (``None``: unreachable).
WellKnownFetcher = Callable[[str], Awaitable[WellKnownResponse | None]]


class Resolver(Protocol):
    async def srv(self, name: str) -> list[SrvRecord]:
        """The SRV records at ``name``; ``[]`` when there are none (or the lookup failed)."""
        ...

    async def addresses(self, host: str) -> list[str]:
        """IP addresses of ``host`` (CNAME, AAAA, A); ``[]`` when it does not resolve."""
        ...


class SystemResolver:
    """SRV through dnspython's async resolver (trio backend), addresses through getaddrinfo."""

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        self._dns: Any = None  # made on first use: reading resolv.conf is I/O

    async def srv(self, name: str) -> list[SrvRecord]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        try:
            if self._dns is None:
                self._dns = dns.asyncresolver.Resolver()
                self._dns.lifetime = self._timeout_s
            answer = await self._dns.resolve(name, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as e:
            # SERVFAIL, timeouts: the spec's "SRV record was not found" path.
            log.info("SRV lookup of %s failed: %s", name, e)
            return []
        return [
            SrvRecord(priority=r.priority, weight=r.weight, port=r.port, target=r.target.to_text())
            for r in answer
        ]

    async def addresses(self, host: str) -> list[str]:
        try:
            infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
        except (trio.socket.gaierror, UnicodeError):
            return []
        out: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = str(sockaddr[0])
            if ip not in out:
                out.append(ip)
        return out


@dataclass(slots=True)
class _WellKnownEntry:
    delegated: ServerName | None
    expires_at: float
    failures: int


class ServerDiscovery:
    """Resolve server names (cached) and their endpoints' addresses (deny-list applied)."""

    def __init__(
        self,
        *,
        resolver: Resolver,
        well_known: WellKnownFetcher,
        ip_filter: IpFilter,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._fetch_well_known = well_known
        self._ip_filter = ip_filter
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._well_known: dict[str, _WellKnownEntry] = {}
        self._resolutions: dict[str, tuple[float, Resolution]] = {}
        self._inflight: dict[str, trio.Event] = {}

    # ------------------------------------------------------------ resolution

    async def resolve(self, server_name: str) -> Resolution:
        """The spec's steps 1-6 for ``server_name``. Raises :class:`DiscoveryError`
        for a name that is not a valid server name."""
        try:
            name = parse_server_name(server_name)
        except ValueError as e:
            raise DiscoveryError(str(e)) from None
        direct = direct_resolution(server_name, name)
        if direct is not None:
            return direct  # steps 1 and 2: nothing to cache

        now = trio.current_time()
        cached = self._resolutions.get(server_name)
        if cached is not None and cached[0] > now:
            return cached[1]

        entry = await self._well_known_entry(name.host)
        if entry.delegated is not None:
            delegated = entry.delegated
            resolution = delegated_resolution(server_name, delegated)  # 3.1, 3.2
            if resolution is None:
                resolution = await self._srv_or_fallback(server_name, delegated.host, ("3.3", "3.4", "3.5"))
        else:
            resolution = await self._srv_or_fallback(server_name, name.host, ("4", "5", "6"))
        expires_at = min(entry.expires_at, trio.current_time() + SRV_CACHE_S)
        _put(self._resolutions, server_name, (expires_at, resolution))
        log.debug("resolved %s (step %s): %s", server_name, resolution.step, resolution)
        return resolution

    async def _srv_or_fallback(self, server_name: str, hostname: str, steps: tuple[str, str, str]) -> Resolution:
        for service, step in zip(srv_service_names(hostname), steps[:2]):
            targets = order_srv(await self._resolver.srv(service), self._rng)
            if targets:
                return srv_resolution(server_name, hostname, targets, step=step)
        return fallback_resolution(server_name, hostname, step=steps[2])

    async def _well_known_entry(self, hostname: str) -> _WellKnownEntry:
        while True:
            entry = self._well_known.get(hostname)
            if entry is not None and entry.expires_at > trio.current_time():
                return entry
            inflight = self._inflight.get(hostname)
            if inflight is None:
                break
            await inflight.wait()  # someone else is fetching: use their answer
        done = self._inflight[hostname] = trio.Event()
        try:
            entry = await self._refresh_well_known(hostname, entry)
            _put(self._well_known, hostname, entry)
            return entry
        finally:
            del self._inflight[hostname]
            done.set()

    async def _refresh_well_known(self, hostname: str, previous: _WellKnownEntry | None) -> _WellKnownEntry:
        failures = (previous.failures if previous is not None else 0) + 1
        response = await self._fetch_well_known(hostname)
        now = trio.current_time()
        if response is None:
            if previous is not None and previous.delegated is not None:
                # Unreachable, but delegation was known: keep it for the error period.
                return _WellKnownEntry(previous.delegated, now + error_cache_seconds(failures), failures)
            return _WellKnownEntry(None, now + error_cache_seconds(failures), failures)
        if response.status != 200:
            return _WellKnownEntry(None, now + error_cache_seconds(failures), failures)
        try:
            delegated = parse_well_known(response.body)
        except ValueError as e:
            log.info("invalid well-known for %s: %s", hostname, e)
            return _WellKnownEntry(None, now + error_cache_seconds(failures), failures)
        lifetime = well_known_cache_seconds(response.headers, now=self._wall_clock())
        return _WellKnownEntry(delegated, now + lifetime, 0)

    # ------------------------------------------------------------ addresses

    async def addresses(self, endpoint: Endpoint) -> list[str]:
        """The IP addresses to try for ``endpoint``, in order, denied ones removed.

        Raises :class:`DiscoveryError` when the host does not resolve and
        :class:`AddressDenied` when every address is denied.
        """
        if _is_ip(endpoint.host):
            candidates = [endpoint.host]
        else:
            candidates = await self._resolver.addresses(endpoint.host)
            if not candidates:
                raise DiscoveryError(f"{endpoint.host} does not resolve")
        allowed = [ip for ip in candidates if not self._ip_filter.denies(ip)]
        if not allowed:
            raise AddressDenied(f"{endpoint.host}: every address is in ip_range_denylist ({', '.join(candidates)})")
        return allowed

    def denies(self, ip: str) -> bool:
        """Whether the deny-list refuses ``ip``."""
        return self._ip_filter.denies(ip)


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _put(cache: dict, key: str, value: object) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > CACHE_MAX_ENTRIES:
        del cache[next(iter(cache))]
