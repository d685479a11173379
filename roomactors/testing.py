"""Embedded test mode: a real roomactors homeserver for your tests, on a loopback port.

Theory of operation
-------------------
``start_homeserver(nursery)`` runs the whole server (``api.server.serve``: the
database, the room actors, hypercorn with its guards) as a task of the caller's
trio nursery, bound to an ephemeral port on ``127.0.0.1``, with its database and
signing key in a fresh temporary directory. It returns once the server accepts
connections, as a :class:`TestHomeserver`: ``base_url`` (``http://127.0.0.1:PORT``)
for any Matrix client, and ``register_user()``, which creates an account over real
HTTP and returns its access token. ``stop()`` shuts the server down gracefully and
deletes the temporary directory::

    async with trio.open_nursery() as nursery:
        hs = await start_homeserver(nursery)
        alice = await hs.register_user("alice")
        ...  # talk to hs.base_url with alice.access_token
        await hs.stop()

``open_test_homeserver()`` is the same as an ``async with`` block with its own
nursery. A server that crashes raises into the nursery that runs it, so a test
cannot pass over a dead server.

Clients on asyncio (matrix-nio, mautrix, most bot frameworks) cannot share a
thread with a trio server: ``homeserver_in_thread()`` runs the same server under
its own ``trio.run`` in a background thread and hands back a
:class:`ThreadedHomeserver` with blocking ``register_user()`` and ``stop()``; an
error that ended the server thread is raised again by ``stop()``.

Defaults: ``server_name`` ``localhost``; open registration (``m.login.dummy``);
rate limits off; the federation listener on an ephemeral ``127.0.0.1`` TLS port
(self-signed certificate in the data directory; ``api.server.serve`` reports its
URL after the client one); a random shared secret, used by ``register_user()`` through the
Synapse-compatible ``/_synapse/admin/v1/register`` (so ``admin=True`` works);
``graceful_timeout_s`` 1. ``settings_overrides`` is merged over these, one
``settings.toml`` section at a time (``{"registration": {"enabled": False}}``), and
validated by ``api.settings.parse_settings`` like a real settings file. A given
``data_dir`` is kept after ``stop()``, so a second server on the same directory
sees the first one's data (restart tests).

Federation: ``open_test_network(n)`` runs ``hs1``…``hsN`` in the caller's trio run,
joined by an in-process network with faults (``roomactors.testing_network``, whose
public names are re-exported here)::

    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        net.partition({"hs1"}, {"hs2"}); ...; net.heal()
        await net.settle()

pytest
------
Three fixtures, defined when pytest is importable (``roomactors_network`` gives
``hs1`` and ``hs2`` on an in-process network):

* ``roomactors_homeserver``: a :class:`TestHomeserver` in the test's trio run
  (needs pytest-trio: ``trio_mode = true`` or ``@pytest.mark.trio``);
* ``roomactors_homeserver_thread``: a :class:`ThreadedHomeserver`, for sync and
  asyncio tests.

Make them visible with ``from roomactors.testing import roomactors_homeserver  #
noqa: F401`` in a ``conftest.py``, or ``pytest_plugins = ["roomactors.testing"]``
in the rootdir's ``conftest.py``.

Layering: ``roomactors`` must not import ``api`` (``tests/test_layering.py``).
This module is the one documented exception, because it is a composition entry
point like ``api.server``; it imports ``api`` only inside functions, so ``import
roomactors.testing`` stays cheap and never creates an import cycle, and nothing
else under ``roomactors/`` may import it.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from api.settings import Settings
    from roomactors.clock import Clock

__all__ = [
    "FaultRule",
    "HomeserverError",
    "InProcessNetwork",
    "NetworkHomeserver",
    "NetworkRequest",
    "NetworkTransport",
    "open_test_network",
    "RegisteredUser",
    "TestHomeserver",
    "ThreadedHomeserver",
    "homeserver_in_thread",
    "homeserver_settings",
    "open_test_homeserver",
    "start_homeserver",
]

#: Seconds allowed for the server to start or stop, and for one helper request.
_TIMEOUT_S = 30.0
_REGISTER_PATH = "/_synapse/admin/v1/register"
_CLIENT_REGISTER_PATH = "/_matrix/client/v3/register"


class HomeserverError(Exception):
    """A helper request (``register_user``) was refused, or the server failed."""


@dataclass(frozen=True, slots=True)
class RegisteredUser:
    """An account created by ``register_user()``, logged in on one device."""

    user_id: str
    access_token: str
    device_id: str
    password: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def homeserver_settings(
    data_dir: str | Path,
    *,
    server_name: str = "localhost",
    settings_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """The validated ``Settings`` of a test homeserver keeping its files in ``data_dir``."""
    from api.settings import parse_settings

    sections: dict[str, dict[str, Any]] = {
        "server": {"server_name": server_name, "signing_key_path": "signing.key"},
        "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 1.0},
        "database": {"path": "roomactors.db"},
        "registration": {"enabled": True, "shared_secret": secrets.token_urlsafe(24)},
        "ratelimit": {"enabled": False},
        # Federation on an ephemeral loopback TLS port, with a self-signed pair made
        # in the data directory at startup (never the fixed default port 8448).
        # No notary: test servers never ask the internet for keys.
        "federation": {"bind": ["127.0.0.1:0"], "trusted_key_servers": []},
    }
    for section, values in (settings_overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    return parse_settings(sections, base_dir=Path(data_dir).resolve())



class TestHomeserver:
    """A running homeserver in a trio nursery; made by ``start_homeserver()``."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, settings: Settings, data_dir: Path, *, remove_data_dir: bool) -> None:
        self.settings = settings
        self.server_name: str = settings.server.server_name
        self.data_dir = data_dir
        #: ``http://127.0.0.1:PORT``, without a trailing slash; set once serving.
        self.base_url: str = ""
        #: ``https://127.0.0.1:PORT`` of the federation TLS listener ("" if none); set once serving.
        self.federation_url: str = ""
        self._remove_data_dir = remove_data_dir
        self._stop = trio.Event()
        self._stopped = trio.Event()

    @property
    def running(self) -> bool:
        return bool(self.base_url) and not self._stopped.is_set()

    async def _run(self, clock: Clock | None, *, task_status: trio.TaskStatus[TestHomeserver]) -> None:
        from api.server import serve

        try:
            await serve(
                self.settings,
                shutdown_trigger=self._stop.wait,
                clock=clock,
                task_status=_OnStarted(self, task_status),  # type: ignore[arg-type]
            )
        finally:
            self._stopped.set()
            if self._remove_data_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    async def stop(self) -> None:
        """Shut down gracefully (in-flight requests get ``graceful_timeout_s``) and wait.

        Idempotent. Removes the data directory if ``start_homeserver`` created it.
        """
        self._stop.set()
        with trio.fail_after(_TIMEOUT_S + self.settings.http.graceful_timeout_s):
            await self._stopped.wait()

    async def register_user(
        self, localpart: str, password: str = "password", *, admin: bool = False
    ) -> RegisteredUser:
        """Create ``@localpart:server_name`` over HTTP and log it in on a new device."""
        import httpx

        if not self.running:
            raise HomeserverError("the homeserver is not running")
        async with httpx.AsyncClient(base_url=self.base_url, timeout=_TIMEOUT_S) as client:
            if self.settings.registration.shared_secret:
                nonce = _json(await client.get(_REGISTER_PATH), localpart)["nonce"]
                response = await client.post(
                    _REGISTER_PATH, json=self._admin_register_body(nonce, localpart, password, admin)
                )
            else:
                response = await client.post(
                    _CLIENT_REGISTER_PATH, json=_dummy_register_body(localpart, password, admin)
                )
        return _registered(_json(response, localpart), password)

    def _admin_register_body(self, nonce: str, localpart: str, password: str, admin: bool) -> dict[str, Any]:
        from api.shared_secret import registration_mac

        secret = self.settings.registration.shared_secret
        mac = registration_mac(secret, nonce, localpart, password, admin)
        return {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac}

    def __repr__(self) -> str:
        return f"<TestHomeserver {self.server_name} at {self.base_url or '(not started)'}>"


class _OnStarted:
    """The ``task_status`` handed to ``serve``: records the bound URL, then reports the
    homeserver itself as started (no nursery of our own, so startup errors stay bare)."""

    def __init__(self, homeserver: TestHomeserver, outer: trio.TaskStatus[TestHomeserver]) -> None:
        self._homeserver = homeserver
        self._outer = outer

    def started(self, binds: list[str]) -> None:
        self._homeserver.base_url = binds[0].rstrip("/")
        self._homeserver.federation_url = next((b.rstrip("/") for b in binds[1:] if b.startswith("https://")), "")
        self._outer.started(self._homeserver)


async def start_homeserver(
    nursery: trio.Nursery,
    *,
    server_name: str = "localhost",
    data_dir: str | Path | None = None,
    settings_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    clock: Clock | None = None,
) -> TestHomeserver:
    """Start a homeserver as a task of ``nursery``; return it once it accepts connections.

    Without ``data_dir`` the server lives in a new temporary directory, removed when it
    stops (``stop()``, or ``nursery`` being cancelled). ``clock`` replaces the wall
    clock for ``origin_server_ts`` and friends (``roomactors.clock.ManualClock``).
    """
    if data_dir is None:
        directory, remove = Path(tempfile.mkdtemp(prefix="roomactors-test-")), True
    else:
        directory, remove = Path(data_dir).resolve(), False
    try:
        settings = homeserver_settings(directory, server_name=server_name, settings_overrides=settings_overrides)
    except BaseException:
        if remove:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    homeserver = TestHomeserver(settings, directory, remove_data_dir=remove)
    with trio.fail_after(_TIMEOUT_S):
        return await nursery.start(homeserver._run, clock)


@asynccontextmanager
async def open_test_homeserver(
    *,
    server_name: str = "localhost",
    data_dir: str | Path | None = None,
    settings_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[TestHomeserver]:
    """``start_homeserver`` in a nursery of its own; the server stops when the block ends."""
    async with trio.open_nursery() as nursery:
        homeserver = await start_homeserver(
            nursery, server_name=server_name, data_dir=data_dir, settings_overrides=settings_overrides, clock=clock
        )
        try:
            yield homeserver
        finally:
            with trio.CancelScope(shield=True):
                await homeserver.stop()


# ------------------------------------------------------------------ in a thread


class ThreadedHomeserver:
    """A homeserver running under its own ``trio.run`` in a background thread.

    For clients that bring their own event loop (asyncio): everything here blocks.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._homeserver: TestHomeserver | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(target=self._main, name="roomactors-test-homeserver", daemon=True)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def server_name(self) -> str:
        return self._server.server_name

    @property
    def settings(self) -> Settings:
        return self._server.settings

    @property
    def data_dir(self) -> Path:
        return self._server.data_dir

    @property
    def _server(self) -> TestHomeserver:
        if self._homeserver is None or not self._homeserver.running:
            raise HomeserverError("the homeserver is not running")
        return self._homeserver

    def start(self) -> ThreadedHomeserver:
        self._thread.start()
        if not self._ready.wait(_TIMEOUT_S):
            raise HomeserverError(f"the homeserver did not start within {_TIMEOUT_S} s")
        if self._error is not None:
            self._thread.join()
            raise HomeserverError("the homeserver failed to start") from self._error
        return self

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as error:  # reported to the test by start() or stop()
            self._error = error
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with open_test_homeserver(**self._options) as homeserver:
            self._homeserver = homeserver
            self._ready.set()
            await homeserver._stop.wait()

    def stop(self) -> None:
        """Shut down gracefully and join the thread; re-raise whatever ended it early."""
        if self._thread.is_alive() and self._token is not None and self._homeserver is not None:
            try:
                trio.from_thread.run_sync(self._homeserver._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(_TIMEOUT_S + 5)
        if self._thread.is_alive():
            raise HomeserverError(f"the homeserver did not stop within {_TIMEOUT_S + 5} s")
        if self._error is not None:
            error, self._error = self._error, None
            raise HomeserverError("the homeserver thread failed") from error

    def register_user(self, localpart: str, password: str = "password", *, admin: bool = False) -> RegisteredUser:
        """Create ``@localpart:server_name`` over HTTP (blocking) and log it in."""
        import httpx

        server = self._server
        with httpx.Client(base_url=server.base_url, timeout=_TIMEOUT_S) as client:
            if server.settings.registration.shared_secret:
                nonce = _json(client.get(_REGISTER_PATH), localpart)["nonce"]
                response = client.post(
                    _REGISTER_PATH, json=server._admin_register_body(nonce, localpart, password, admin)
                )
            else:
                response = client.post(_CLIENT_REGISTER_PATH, json=_dummy_register_body(localpart, password, admin))
        return _registered(_json(response, localpart), password)

    def __repr__(self) -> str:
        where = self._homeserver.base_url if self._homeserver else "(not running)"
        return f"<ThreadedHomeserver at {where}>"


@contextmanager
def homeserver_in_thread(
    *,
    server_name: str = "localhost",
    data_dir: str | Path | None = None,
    settings_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    clock: Clock | None = None,
) -> Iterator[ThreadedHomeserver]:
    """A homeserver in a background thread for the duration of the ``with`` block."""
    homeserver = ThreadedHomeserver(
        server_name=server_name, data_dir=data_dir, settings_overrides=settings_overrides, clock=clock
    ).start()
    try:
        yield homeserver
    finally:
        homeserver.stop()


# ------------------------------------------------------------------ helpers


def _dummy_register_body(localpart: str, password: str, admin: bool) -> dict[str, Any]:
    if admin:
        raise HomeserverError("admin=True needs [registration] shared_secret (it is empty)")
    return {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}


def _json(response: Any, localpart: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code != 200 or not isinstance(body, dict):
        raise HomeserverError(f"registering {localpart!r} failed: HTTP {response.status_code}: {body}")
    return body


def _registered(body: dict[str, Any], password: str) -> RegisteredUser:
    return RegisteredUser(
        user_id=body["user_id"], access_token=body["access_token"], device_id=body["device_id"], password=password
    )


# ------------------------------------------------------------------ pytest

try:
    import pytest
except ImportError:  # pytest is a test-only dependency; the rest works without it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    async def roomactors_homeserver() -> AsyncIterator[TestHomeserver]:
        """A fresh homeserver in the test's trio run (pytest-trio), stopped afterwards."""
        async with open_test_homeserver() as homeserver:
            yield homeserver

    @pytest.fixture
    def roomactors_homeserver_thread() -> Iterator[ThreadedHomeserver]:
        """A fresh homeserver in a background thread, for sync and asyncio tests."""
        with homeserver_in_thread() as homeserver:
            yield homeserver

    @pytest.fixture
    async def roomactors_network() -> AsyncIterator[InProcessNetwork]:
        """Two homeservers, ``hs1`` and ``hs2``, on an in-process network (pytest-trio)."""
        async with open_test_network(2) as network:
            yield network


# ------------------------------------------------------------------ N servers, one network
# Re-exported so this module stays the one entry point; testing_network imports this
# module only inside functions, so there is no import cycle.
from roomactors.testing_network import (  # noqa: E402
    FaultRule,
    InProcessNetwork,
    NetworkHomeserver,
    NetworkRequest,
    NetworkTransport,
    open_test_network,
)
