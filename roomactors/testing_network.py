"""In-process federation: N homeservers in one trio process, wired by a fake network.

Theory of operation
-------------------
``async with open_test_network(2) as net:`` starts homeservers named ``"hs1"``,
``"hs2"``, … (``server_name`` exactly that), each with its own temporary data
directory, SQLite file and signing key, each the real composition
(``api.services.open_homeserver`` + ``api.app.create_app``, the app's lifespan run
by quart-trio's ``test_app()``), all as tasks under the context manager. No socket
is opened: federation is enabled in their settings, but with no listener, and the
outbound :class:`FederationClient` of each server gets ``net.transport_for(name)``
instead of its HTTPS transport (``open_homeserver(..., federation_transport=)``).

A transport's ``send(request)`` routes by ``request.destination`` straight into
that server's ASGI app, the way hypercorn would hand it over: ``scope["raw_path"]``
and ``scope["query_string"]`` are the bytes of ``request.target`` unchanged (X-Matrix
signs that URI, so ``/_matrix/federation/v1/state/%21r%3Ahs1?event_id=%24e`` must
arrive as sent) and ``scope["path"]`` is its percent-decoded form. This is h11's
``ConnectionPair`` idea one level up, at HTTP (docs/ARCHITECTURE.md, "Testing
conventions"). Before delivery the network applies its faults, which a test may
change at any time:

* ``net.partition({"hs1"}, {"hs2", "hs3"})`` cuts every pair of servers that sit in
  different groups, both ways (servers named in no group are not cut);
  ``net.heal()`` removes the partition;
* ``net.drop(from_=, to=, count=)`` loses matching requests (``count`` of them, or
  all until the rule is cancelled);
* ``net.delay(seconds, from_=, to=)`` holds matching requests back with
  ``trio.sleep``: virtual time under ``autojump_clock``, and a request held past the
  caller's ``timeout_s`` fails like a real timeout;
* ``net.intercept(fn, from_=, to=, deliver=)`` lets a test play an adversarial peer
  by replacing the response (``fn(origin, request, response)`` returns a
  :class:`FederationResponse`, or None to keep the real one; with ``deliver=False``
  the destination never sees the request and ``response`` is None).

A lost request (partition, drop, unknown destination, timeout) raises
``FederationUnreachable`` in the sender, exactly what the HTTPS transport raises
when a peer is down. Every request is logged in ``net.requests`` as a
:class:`NetworkRequest` (origin, destination, method, path, status, error).

``await net.settle()`` waits until the network is quiescent: every task blocked
(``trio.testing.wait_all_tasks_blocked``), no database call in flight on any
server (``db.statistics().in_flight``: database work runs on threads, which trio
cannot see), no request in flight on the network, and every outbound sender idle,
twice in a row. It never sleeps: while only delayed requests keep the network busy
it waits on the network's progress event, so ``autojump_clock`` can move time on.

Layering: like ``roomactors.testing`` this is a composition entry point (it starts
whole servers), so it may import ``api`` (``tests/test_layering.py``), but only
inside functions, never quart or hypercorn (it reaches the app through its own
``test_app``/``test_client`` methods). ``roomactors.testing`` re-exports the public
names; nothing else under ``roomactors/`` may import this module.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import time

import trio
import trio.testing

if TYPE_CHECKING:
    from api.deps import Deps
    from roomactors.clock import Clock
    from roomactors.federation_client import FederationRequest, FederationResponse
    from roomactors.testing import RegisteredUser

__all__ = [
    "FaultRule",
    "InProcessNetwork",
    "NetworkHomeserver",
    "NetworkRequest",
    "NetworkTransport",
    "open_test_network",
]

#: Seconds allowed for one server to start (its lifespan) and for ``settle()``.
_TIMEOUT_S = 30.0
#: ``settle()``'s poll while a sender with work waits on a timer of its own (trio time).
_POLL_S = 0.01
_REGISTER_PATH = "/_synapse/admin/v1/register"
_CLIENT_REGISTER_PATH = "/_matrix/client/v3/register"

#: Settings every network server gets under the caller's overrides: federation on,
#: but no listener (requests arrive in-process) and no notary outside the network.
_NETWORK_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "federation": {"enabled": True, "bind": [], "plain_bind": [], "trusted_key_servers": []},
}

Interceptor = Callable[[str, "FederationRequest", "FederationResponse | None"], Any]


# ------------------------------------------------------------------ records and rules


@dataclass(frozen=True, slots=True)
class NetworkRequest:
    """One request the network saw, in ``net.requests``.

    ``path`` is the target without its query, as sent (percent-encoded); ``target``
    the whole of it. ``status`` is the HTTP status the origin got, or None when the
    request was lost; ``error`` then says why (``"unknown destination"``,
    ``"partitioned"``, ``"dropped"``, ``"timeout"``), and is None for an answer.
    """

    origin: str
    destination: str
    method: str
    path: str
    status: int | None
    error: str | None = None
    target: str = ""
    intercepted: bool = False


@dataclass(eq=False, slots=True)
class FaultRule:
    """A drop, delay or intercept rule; ``cancel()`` removes it, ``matched`` counts hits."""

    kind: str
    from_: frozenset[str] | None
    to: frozenset[str] | None
    count: int | None = None  # drops left (None: unlimited)
    seconds: float = 0.0
    fn: Interceptor | None = None
    deliver: bool = True
    matched: int = 0
    _network: InProcessNetwork | None = field(default=None, repr=False)

    def matches(self, origin: str, destination: str) -> bool:
        return (self.from_ is None or origin in self.from_) and (self.to is None or destination in self.to)

    @property
    def active(self) -> bool:
        return self._network is not None and self in self._network._rules

    def cancel(self) -> None:
        if self._network is not None and self in self._network._rules:
            self._network._rules.remove(self)


def _names(value: str | Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value]) if isinstance(value, str) else frozenset(value)


class _Headers(Mapping[str, str]):
    """Response headers, case-insensitive like HTTP's (repeated fields joined by ", ")."""

    __slots__ = ("_items",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        items: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            items[key] = f"{items[key]}, {value}" if key in items else value
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"_Headers({self._items!r})"


# ------------------------------------------------------------------ the transport


class NetworkTransport:
    """The ``FederationTransport`` of one server (``origin``) on the network."""

    __slots__ = ("network", "origin")

    def __init__(self, network: InProcessNetwork, origin: str) -> None:
        self.network = network
        self.origin = origin

    async def send(self, request: FederationRequest, *, timeout_s: float) -> FederationResponse:
        return await self.network._deliver(self.origin, request, timeout_s)

    def __repr__(self) -> str:
        return f"<NetworkTransport from {self.origin}>"


# ------------------------------------------------------------------ one server


class NetworkHomeserver:
    """One homeserver on the network: ``net["hs1"]``."""

    __test__ = False

    def __init__(self, name: str, data_dir: Path, settings: Any, deps: Deps, app: Any) -> None:
        self.server_name = name
        self.data_dir = data_dir
        self.settings = settings
        self.deps = deps
        #: The QuartTrio app; ``client`` is a quart test client on it (client-server API).
        self.app = app
        self.client = app.test_client(use_cookies=False)

    async def api(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One client-server request: ``(status, parsed JSON body or None)``.

        ``path`` is sent as given (``/_matrix/client/v3/...``, query included).
        """
        import orjson

        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if json is not None:
            data = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        response = await self.client.open(path, method=method, headers=hdrs, data=data)
        raw = await response.get_data()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        return response.status_code, body

    async def register(self, localpart: str, password: str = "password", *, admin: bool = False) -> RegisteredUser:
        """Create ``@localpart:server_name`` and log it in on a new device.

        Uses the shared-secret admin API when ``[registration] shared_secret`` is
        set (the default here, so ``admin=True`` works), else the ``m.login.dummy`` flow.
        """
        from roomactors.testing import HomeserverError, _dummy_register_body, _registered

        secret = self.settings.registration.shared_secret
        if secret:
            from api.shared_secret import registration_mac

            status, body = await self.api("GET", _REGISTER_PATH)
            if status != 200 or not isinstance(body, dict):
                raise HomeserverError(f"registering {localpart!r} failed: HTTP {status}: {body}")
            nonce = body["nonce"]
            mac = registration_mac(secret, nonce, localpart, password, admin)
            status, body = await self.api(
                "POST",
                _REGISTER_PATH,
                json={"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac},
            )
        else:
            status, body = await self.api(
                "POST", _CLIENT_REGISTER_PATH, json=_dummy_register_body(localpart, password, admin)
            )
        if status != 200 or not isinstance(body, dict):
            raise HomeserverError(f"registering {localpart!r} failed: HTTP {status}: {body}")
        return _registered(body, password)

    def __repr__(self) -> str:
        return f"<NetworkHomeserver {self.server_name}>"


# ------------------------------------------------------------------ the network


class InProcessNetwork:
    """N homeservers and the fake network between them; made by ``open_test_network``."""

    def __init__(self) -> None:
        self.servers: dict[str, NetworkHomeserver] = {}
        #: Every request seen, oldest first.
        self.requests: list[NetworkRequest] = []
        self._rules: list[FaultRule] = []
        self._groups: tuple[frozenset[str], ...] = ()
        self._in_flight = 0
        self._progress = trio.Event()

    # -------------------------------------------------------------- servers

    def __getitem__(self, name: str) -> NetworkHomeserver:
        return self.servers[name]

    def __iter__(self) -> Iterator[NetworkHomeserver]:
        return iter(self.servers.values())

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def names(self) -> list[str]:
        return list(self.servers)

    def transport_for(self, origin: str) -> NetworkTransport:
        """The transport a server named ``origin`` sends its federation requests through."""
        return NetworkTransport(self, origin)

    # -------------------------------------------------------------- faults

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every pair of servers in different ``groups``, both ways (replaces any
        earlier partition). A server named in no group keeps talking to everyone."""
        frozen = tuple(frozenset([g]) if isinstance(g, str) else frozenset(g) for g in groups)
        seen: set[str] = set()
        for group in frozen:
            if seen & group:
                raise ValueError(f"{sorted(seen & group)} in more than one partition group")
            seen |= group
        self._groups = frozen

    def heal(self) -> None:
        """Remove the partition (drop, delay and intercept rules stay). Every
        server's outbound queues are woken, as a peer's next request would
        (``SenderHub.wake``), so delivery resumes without waiting out a backoff."""
        self._groups = ()
        for server in self.servers.values():
            sender = getattr(server.deps, "sender", None)
            if sender is not None:
                for name in self.servers:
                    if name != server.server_name:
                        sender.wake(name)

    def partitioned(self, origin: str, destination: str) -> bool:
        side_a = next((g for g in self._groups if origin in g), None)
        side_b = next((g for g in self._groups if destination in g), None)
        return side_a is not None and side_b is not None and side_a is not side_b

    def drop(
        self, from_: str | Iterable[str] | None = None, to: str | Iterable[str] | None = None, count: int | None = None
    ) -> FaultRule:
        """Lose the next ``count`` requests from ``from_`` to ``to`` (None: any; all
        of them while the rule lasts if ``count`` is None)."""
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        return self._add(FaultRule("drop", _names(from_), _names(to), count=count))

    def delay(
        self, seconds: float, from_: str | Iterable[str] | None = None, to: str | Iterable[str] | None = None
    ) -> FaultRule:
        """Hold matching requests back for ``seconds`` (trio time) before delivery.
        Delays of several matching rules add up."""
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative ({seconds})")
        return self._add(FaultRule("delay", _names(from_), _names(to), seconds=seconds))

    def intercept(
        self,
        fn: Interceptor,
        from_: str | Iterable[str] | None = None,
        to: str | Iterable[str] | None = None,
        *,
        deliver: bool = True,
    ) -> FaultRule:
        """Let ``fn(origin, request, response)`` (sync or async) replace responses.

        It returns a ``FederationResponse`` to send back instead, or None to keep
        ``response``. With ``deliver=False`` the destination never sees the request,
        ``response`` is None and ``fn`` must answer. The first matching rule wins.
        """
        return self._add(FaultRule("intercept", _names(from_), _names(to), fn=fn, deliver=deliver))

    def clear_faults(self) -> None:
        """Heal the partition and cancel every drop, delay and intercept rule."""
        self._groups = ()
        self._rules.clear()

    def _add(self, rule: FaultRule) -> FaultRule:
        rule._network = self
        self._rules.append(rule)
        return rule

    # -------------------------------------------------------------- delivery

    async def _deliver(self, origin: str, request: FederationRequest, timeout_s: float) -> FederationResponse:
        from roomactors.federation_client import FederationResponse, FederationUnreachable

        destination = request.destination
        path = request.target.partition("?")[0]

        def lost(reason: str) -> FederationUnreachable:
            self.requests.append(NetworkRequest(origin, destination, request.method, path, None, reason, request.target))
            return FederationUnreachable(f"{origin} -> {destination}: {reason} (in-process network)")

        self._in_flight += 1
        try:
            server = self.servers.get(destination)
            if server is None:
                raise lost("unknown destination")
            if self.partitioned(origin, destination):
                raise lost("partitioned")
            for rule in self._rules:
                if rule.kind == "drop" and rule.matches(origin, destination):
                    rule.matched += 1
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count == 0:
                            rule.cancel()
                    raise lost("dropped")
            interceptor = next(
                (r for r in self._rules if r.kind == "intercept" and r.matches(origin, destination)), None
            )
            delay = sum(r.seconds for r in self._rules if r.kind == "delay" and r.matches(origin, destination))
            for rule in self._rules:
                if rule.kind == "delay" and rule.matches(origin, destination):
                    rule.matched += 1
            response: FederationResponse | None = None
            with trio.move_on_after(timeout_s) as scope:
                if delay:
                    await trio.sleep(delay)
                    # A partition made while the request travelled loses it too.
                    if self.partitioned(origin, destination):
                        raise lost("partitioned")
                if interceptor is None or interceptor.deliver:
                    response = await _call_app(server.app, request)
            if scope.cancelled_caught:
                raise lost("timeout")
            if interceptor is not None:
                interceptor.matched += 1
                assert interceptor.fn is not None
                replacement = interceptor.fn(origin, request, response)
                if isinstance(replacement, Awaitable):
                    replacement = await replacement
                if replacement is not None:
                    response = replacement
                if response is None:
                    raise TypeError("an intercept rule with deliver=False must return a FederationResponse")
            assert response is not None
            if not isinstance(response, FederationResponse):
                response = FederationResponse(response.status, response.headers, response.body)
            self.requests.append(
                NetworkRequest(
                    origin, destination, request.method, path, response.status, None, request.target,
                    intercepted=interceptor is not None,
                )
            )
            return response
        finally:
            self._in_flight -= 1
            self._progress.set()
            self._progress = trio.Event()

    # -------------------------------------------------------------- quiescence

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered or lost."""
        return self._in_flight

    def busy(self) -> list[str]:
        """Why the network is not quiescent right now (empty: it is, as far as
        counters go; ``settle()`` also needs every task blocked)."""
        reasons = []
        if self._in_flight:
            reasons.append(f"{self._in_flight} request(s) in flight")
        for server in self.servers.values():
            db = server.deps.db.statistics()
            pending = getattr(db, "in_flight", 0) + db.queue_depth
            if pending:
                reasons.append(f"{server.server_name}: {pending} database call(s) pending")
            sender = getattr(server.deps, "sender", None)
            if sender is not None and hasattr(sender, "statistics"):
                peers = [name for name in self.servers if name != server.server_name]
                reason = _sender_busy(sender, peers)
                if reason:
                    reasons.append(f"{server.server_name}: sender: {reason}")
        return reasons

    async def settle(self, *, timeout_s: float = _TIMEOUT_S, cushion: float = 0.0) -> None:
        """Wait until nothing is left to do on any server or the network (see the
        module docstring). Raises ``trio.TooSlowError`` after ``timeout_s`` (trio time)."""
        try:
            await self._settle(timeout_s=timeout_s, cushion=cushion)
        except trio.TooSlowError:
            raise trio.TooSlowError(f"the network did not settle in {timeout_s} s: {'; '.join(self.busy())}") from None

    async def _settle(self, *, timeout_s: float, cushion: float) -> None:
        with trio.fail_after(timeout_s):
            quiet = 0
            while quiet < 2:
                await trio.testing.wait_all_tasks_blocked(cushion)
                reasons = self.busy()
                if not reasons:
                    quiet += 1
                    continue
                quiet = 0
                if any("database" in reason for reason in reasons):
                    # A database thread is working. Give it the GIL for a moment of
                    # real time rather than spinning (a spin starves it). Blocking the
                    # loop, not awaiting: an autojump clock must not see every task
                    # blocked and jump to the next deadline meanwhile.
                    time.sleep(0.001)
                    continue
                if self._in_flight:
                    # Requests held by delay(), or waiting on a peer's timers: block
                    # on the network's progress so an autojump clock can jump.
                    await self._progress.wait()
                else:
                    # A sender with work, every task blocked: it waits on a timer
                    # of its own. Let trio time pass (virtual under autojump_clock).
                    await trio.sleep(_POLL_S)

    # -------------------------------------------------------------- misc

    def requests_between(self, origin: str | None = None, destination: str | None = None) -> list[NetworkRequest]:
        return [
            r for r in self.requests
            if (origin is None or r.origin == origin) and (destination is None or r.destination == destination)
        ]

    def __repr__(self) -> str:
        return f"<InProcessNetwork {', '.join(self.servers)}>"


def _sender_busy(sender: Any, destinations: Iterable[str]) -> str | None:
    """Why an outbound sender (``roomactors.sender.SenderHub``) is not idle, or None.

    Busy: a transaction in flight anywhere, or a queue to a server on this network
    with PDUs/EDUs or catch-up to do and no backoff to wait out (work it can do now).
    Queues waiting out a backoff are idle: their retry needs time to pass.
    """
    queue_statistics = getattr(sender, "queue_statistics", None)
    if queue_statistics is None:
        stats = sender.statistics()
        return f"{stats.in_flight} transaction(s) in flight" if getattr(stats, "in_flight", 0) else None
    for destination in destinations:
        queue = queue_statistics(destination)
        if queue is None or queue.backing_off:
            continue  # a transaction waiting out its backoff needs time to pass
        if queue.in_flight:
            return f"a transaction to {destination} is in flight"
        if queue.pending_pdus or queue.pending_edus or queue.catching_up or getattr(queue, "outbox_pending", False):
            return f"queue to {destination} has work"
    return None


async def _call_app(app: Any, request: FederationRequest) -> FederationResponse:
    """Hand ``request`` to ``app`` as hypercorn would: raw path and query unchanged."""
    from roomactors.federation_client import FederationResponse

    raw_path, _, query = request.target.partition("?")
    headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
    headers["Host"] = request.destination
    client = app.test_client(use_cookies=False)
    response = await client.open(
        raw_path,
        method=request.method,
        headers=headers,
        data=request.body if request.body is not None else None,
        scope_base={
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "scheme": "https",
            "client": ("127.0.0.1", 0),
        },
    )
    body = await response.get_data()
    return FederationResponse(response.status_code, _Headers(response.headers.items()), body)


# ------------------------------------------------------------------ opening one


def _clock_for(clock: Any, name: str) -> Clock | None:
    if clock is None:
        return None
    if isinstance(clock, Mapping):
        return clock.get(name)
    if callable(clock) and not hasattr(clock, "time_ms"):
        return clock(name)
    return clock


def _merge(*layers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            merged.setdefault(section, {}).update(values)
    return merged


@asynccontextmanager
async def open_test_network(
    n: int = 2,
    *,
    names: Sequence[str] | None = None,
    clock: Clock | Mapping[str, Clock] | Callable[[str], Clock] | None = None,
    settings_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    server_overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> AsyncIterator[InProcessNetwork]:
    """Start ``n`` homeservers ``hs1``…``hsN`` (or ``names``) on one in-process network.

    ``clock``: one ``Clock`` for all, a mapping or a function from server name to
    its ``Clock`` (``roomactors.clock.ManualClock``); default the system clock.
    ``settings_overrides`` apply to every server, one ``settings.toml`` section at a
    time over the embedded-test defaults (``roomactors.testing.homeserver_settings``);
    ``server_overrides[name]`` then to that server only. The servers stop, and
    their temporary directories go, when the block ends.
    """
    import inspect

    from api.app import create_app
    from api.services import open_homeserver
    from roomactors.testing import homeserver_settings

    server_names = list(names) if names is not None else [f"hs{i}" for i in range(1, n + 1)]
    if len(set(server_names)) != len(server_names):
        raise ValueError(f"server names must be distinct: {server_names}")
    network = InProcessNetwork()
    takes_transport = "federation_transport" in inspect.signature(open_homeserver).parameters
    root = Path(tempfile.mkdtemp(prefix="roomactors-network-"))
    try:
        async with AsyncExitStack() as stack:
            for name in server_names:
                data_dir = root / name
                data_dir.mkdir()
                overrides = _merge(
                    _NETWORK_SETTINGS,
                    {"registration": {"shared_secret": secrets.token_urlsafe(24)}},
                    settings_overrides,
                    (server_overrides or {}).get(name),
                )
                settings = homeserver_settings(data_dir, server_name=name, settings_overrides=overrides)
                options: dict[str, Any] = {"clock": _clock_for(clock, name)}
                if takes_transport:
                    options["federation_transport"] = network.transport_for(name)
                deps = await stack.enter_async_context(open_homeserver(settings, **options))
                app = create_app(deps)
                # Run the app's lifespan like hypercorn would (quart-trio's own
                # startup/shutdown timeouts apply).
                await stack.enter_async_context(app.test_app())
                network.servers[name] = NetworkHomeserver(name, data_dir, settings, deps, app)
            yield network
    finally:
        shutil.rmtree(root, ignore_errors=True)
