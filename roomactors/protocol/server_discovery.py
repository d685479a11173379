"""Server discovery, the pure parts (s2s "Server discovery" > "Resolving server names").

Theory of operation
-------------------
A server name (``example.org``, ``example.org:8448``, ``1.2.3.4``, ``[::1]:8448``)
becomes a :class:`Resolution`: which hosts and ports to connect to, which ``Host``
header to send, and which name the TLS certificate must be valid for (sent as SNI
unless it is an IP address). The spec's steps, and the function here deciding each
(the I/O — well-known fetch, SRV and address lookups — lives in
``roomactors.discovery``, which calls these in order)::

    parse_server_name(name)
      ├─ step 1  IP literal             ─► direct_resolution()   Host = server name
      ├─ step 2  hostname + port        ─► direct_resolution()   Host = server name
      └─ step 3  GET https://host/.well-known/matrix/server
           │      parse_well_known(body) ─► delegated name, cached for
           │      well_known_cache_seconds(headers) / error_cache_seconds(n)
           ├─ valid: delegated_resolution()
           │    ├─ 3.1 IP literal         Host = delegated name
           │    ├─ 3.2 hostname + port    Host = delegated name
           │    ├─ 3.3 SRV _matrix-fed._tcp.<delegated> ─► srv_resolution()   Host = delegated host
           │    ├─ 3.4 SRV _matrix._tcp.<delegated> (deprecated)
           │    └─ 3.5 <delegated>:8448   ─► fallback_resolution()
           └─ invalid / error:
                ├─ 4   SRV _matrix-fed._tcp.<host>   Host = host
                ├─ 5   SRV _matrix._tcp.<host> (deprecated)
                └─ 6   <host>:8448

In every case the certificate is checked against the host the ``Host`` header
names (never an SRV target: DNS is not trusted to delegate). SRV answers are
ordered by :func:`order_srv` (RFC 2782: priority, then weighted random within a
priority, the randomness injected).

:class:`IpFilter` is the outbound IP deny-list (Synapse's ``ip_range_blacklist``
semantics): an address in a denied range is refused unless an allowed range also
holds it; IPv4-mapped/-compatible IPv6 addresses are checked as their IPv4
address too.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from .ids import is_valid_server_name

__all__ = [
    "DEFAULT_PORT",
    "ERROR_CACHE_MAX_S",
    "ERROR_CACHE_MIN_S",
    "WELL_KNOWN_CACHE_DEFAULT_S",
    "WELL_KNOWN_CACHE_MAX_S",
    "WELL_KNOWN_CACHE_MIN_S",
    "WELL_KNOWN_PATH",
    "Endpoint",
    "IpFilter",
    "Resolution",
    "ServerName",
    "SrvRecord",
    "delegated_resolution",
    "direct_resolution",
    "error_cache_seconds",
    "fallback_resolution",
    "order_srv",
    "parse_server_name",
    "parse_well_known",
    "srv_resolution",
    "srv_service_names",
    "well_known_cache_seconds",
]

DEFAULT_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
#: "The recommended sensible default is 24 hours."
WELL_KNOWN_CACHE_DEFAULT_S = 24 * 3600.0
#: "Servers should additionally impose a maximum cache time for responses: 48 hours is recommended."
WELL_KNOWN_CACHE_MAX_S = 48 * 3600.0
#: Our floor (not the spec's): a response saying ``no-store`` or ``max-age=0`` is
#: still remembered this long, so a busy destination is not re-fetched per request.
WELL_KNOWN_CACHE_MIN_S = 300.0
#: "Errors are recommended to be cached for up to an hour, and servers are
#: encouraged to exponentially back off for repeated failures": 5 min, doubling, 1 h cap.
ERROR_CACHE_MIN_S = 300.0
ERROR_CACHE_MAX_S = 3600.0


@dataclass(frozen=True, slots=True)
class ServerName:
    """A parsed server name (appendices "Server Name")."""

    #: DNS name (lower-cased) or IP address (IPv6 without brackets)
    host: str
    port: int | None
    is_ip: bool

    def netloc(self) -> str:
        """``host[:port]`` as it appears in a server name or ``Host`` header."""
        host = f"[{self.host}]" if self.is_ip and ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_server_name(name: str) -> ServerName:
    """Split ``name`` into host and port; ``ValueError`` unless it is a valid server name
    with a port in 1-65535."""
    if not is_valid_server_name(name):
        raise ValueError(f"{name!r} is not a valid server name")
    if name.startswith("["):
        end = name.index("]")
        host, rest = name[1:end], name[end + 1 :]
        port_text = rest[1:] if rest else None
        is_ip = True
        host = ipaddress.IPv6Address(host).compressed
    else:
        host, sep, port_text_ = name.rpartition(":")
        if not sep:
            host, port_text = name, None
        else:
            port_text = port_text_
        try:
            ipaddress.IPv4Address(host)
            is_ip = True
        except ValueError:
            is_ip = False
            host = host.lower()
    port = None
    if port_text is not None:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"{name!r}: port {port} is out of range")
    return ServerName(host=host, port=port, is_ip=is_ip)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to connect: a DNS name or IP address, and a port."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where and how to send requests for one server name."""

    server_name: str
    #: tried in order (several only after SRV)
    endpoints: tuple[Endpoint, ...]
    host_header: str
    #: the name the certificate must be valid for: a DNS name or an IP address
    tls_name: str
    #: the spec step that decided (``"1"``, ``"3.3"``, ``"6"``...), for logs and tests
    step: str

    @property
    def sni(self) -> str | None:
        """SNI to send: ``tls_name``, except none for an IP address (s2s "TLS")."""
        return None if _is_ip(self.tls_name) else self.tls_name


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    #: target host name (a trailing dot is ignored; ``"."`` means "no service")
    target: str


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def direct_resolution(server_name: str, name: ServerName) -> Resolution | None:
    """Steps 1 and 2: an IP literal, or an explicit port, means no well-known and no SRV."""
    if name.is_ip:
        step = "1"
    elif name.port is not None:
        step = "2"
    else:
        return None
    return Resolution(
        server_name=server_name,
        endpoints=(Endpoint(name.host, name.port or DEFAULT_PORT),),
        host_header=server_name,
        tls_name=name.host,
        step=step,
    )


def delegated_resolution(server_name: str, delegated: ServerName) -> Resolution | None:
    """Steps 3.1 and 3.2: the well-known named an IP literal or an explicit port."""
    if delegated.is_ip:
        step = "3.1"
    elif delegated.port is not None:
        step = "3.2"
    else:
        return None  # 3.3-3.5: SRV, then the default port
    return Resolution(
        server_name=server_name,
        endpoints=(Endpoint(delegated.host, delegated.port or DEFAULT_PORT),),
        host_header=delegated.netloc(),
        tls_name=delegated.host,
        step=step,
    )


def srv_service_names(hostname: str) -> tuple[str, str]:
    """The SRV names to try, in order: ``_matrix-fed._tcp`` (v1.8), then the deprecated ``_matrix._tcp``."""
    return f"_matrix-fed._tcp.{hostname}", f"_matrix._tcp.{hostname}"


def srv_resolution(server_name: str, hostname: str, targets: Sequence[Endpoint], *, step: str) -> Resolution:
    """Steps 3.3/3.4 (``hostname`` = delegated host) and 4/5 (the server name's host):
    connect to the SRV targets, but send ``Host: hostname`` and expect its certificate."""
    if not targets:
        raise ValueError("an SRV resolution needs at least one target")
    return Resolution(
        server_name=server_name, endpoints=tuple(targets), host_header=hostname, tls_name=hostname, step=step
    )


def fallback_resolution(server_name: str, hostname: str, *, step: str) -> Resolution:
    """Steps 3.5 and 6: no SRV record, so ``hostname`` on port 8448."""
    return Resolution(
        server_name=server_name,
        endpoints=(Endpoint(hostname, DEFAULT_PORT),),
        host_header=hostname,
        tls_name=hostname,
        step=step,
    )


def parse_well_known(body: bytes | str) -> ServerName:
    """The delegated server name from a ``/.well-known/matrix/server`` body.

    ``ValueError`` for anything invalid (not JSON, not an object, no string
    ``m.server``, not a server name): the caller then goes on to step 4.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("well-known response is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("well-known response is not a JSON object")
    delegated = data.get("m.server")
    if not isinstance(delegated, str):
        raise ValueError("well-known response has no string m.server")
    return parse_server_name(delegated)


_MAX_AGE = re.compile(r'^max-age\s*=\s*"?([0-9]+)"?$')


def well_known_cache_seconds(headers: Mapping[str, str], *, now: float) -> float:
    """How long to cache a *valid* well-known response (step 3: "respect the cache
    control headers ... or use a sensible default").

    ``headers`` uses lower-case names; ``now`` is the wall clock (seconds) for
    ``Expires``. ``Cache-Control`` wins over ``Expires`` (RFC 9111 §5.3); the result
    is clamped to [``WELL_KNOWN_CACHE_MIN_S``, ``WELL_KNOWN_CACHE_MAX_S``].
    """
    lifetime: float | None = None
    cache_control = headers.get("cache-control")
    if cache_control is not None:
        directives = [d.strip().lower() for d in cache_control.split(",")]
        if "no-store" in directives or "no-cache" in directives:
            lifetime = 0.0
        else:
            for directive in directives:
                match = _MAX_AGE.match(directive)
                if match:
                    lifetime = float(match.group(1))
                    break
    if lifetime is None and "expires" in headers:
        try:
            expires = parsedate_to_datetime(headers["expires"]).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            lifetime = 0.0  # an invalid Expires means "already expired" (RFC 9111 §5.3)
        else:
            lifetime = expires - now
    if lifetime is None:
        lifetime = WELL_KNOWN_CACHE_DEFAULT_S
    return min(max(lifetime, WELL_KNOWN_CACHE_MIN_S), WELL_KNOWN_CACHE_MAX_S)


def error_cache_seconds(consecutive_failures: int) -> float:
    """How long to remember a failed or invalid well-known (the ``n``-th failure in a row)."""
    n = max(consecutive_failures, 1)
    return min(ERROR_CACHE_MIN_S * 2 ** min(n - 1, 16), ERROR_CACHE_MAX_S)


def order_srv(records: Iterable[SrvRecord], rng: random.Random) -> list[Endpoint]:
    """SRV records in the order to try them (RFC 2782 "Usage rules").

    Lowest priority first; within one priority a weighted random order (zero
    weights first in the running sum, so they are chosen rarely). A lone record
    with target ``.`` means the service is decidedly unavailable: ``[]``.
    """
    records = list(records)
    if len(records) == 1 and records[0].target.rstrip(".") == "":
        return []
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        if record.target.rstrip(".") == "":
            continue
        by_priority.setdefault(record.priority, []).append(record)
    out: list[Endpoint] = []
    for priority in sorted(by_priority):
        group = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                index = rng.randrange(len(group))  # all zero: a uniform choice
            else:
                pick = rng.randint(0, total)
                running = 0
                for index, record in enumerate(group):
                    running += record.weight
                    if running >= pick:
                        break
            chosen = group.pop(index)
            out.append(Endpoint(chosen.target.rstrip(".").lower(), chosen.port))
    return out


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpFilter:
    """The outbound IP deny-list: ``denies(ip)`` unless an allowed range holds it."""

    __slots__ = ("_deny", "_allow")

    def __init__(self, denylist: Iterable[str], allowlist: Iterable[str] = ()) -> None:
        self._deny: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in denylist)
        self._allow: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowlist)

    def denies(self, ip: str) -> bool:
        """True when ``ip`` (an address string; a zone index is ignored) must not be contacted."""
        address = ipaddress.ip_address(ip.split("%", 1)[0])
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                candidates.append(address.ipv4_mapped)
            elif address.sixtofour is not None:
                candidates.append(address.sixtofour)
            elif address.teredo is not None:
                candidates.append(address.teredo[1])
        if any(a in net for a in candidates for net in self._allow):
            return False
        return any(a in net for a in candidates for net in self._deny)
