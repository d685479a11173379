"""A real Synapse (from PyPI, ``.venv-synapse``) as a federation peer, on loopback with TLS.

Theory of operation
-------------------
The federation interop tests need a second homeserver that is not ours.
:class:`SynapsePeer` makes one from scratch in a data directory:

* two free loopback ports: ``fed_port`` (TLS, the ``federation`` resource, which also
  serves ``/_matrix/key/v2``) and ``client_port`` (plain HTTP, the ``client``
  resource, which also serves ``/_synapse/admin``), both bound to ``127.0.0.1``;
* ``server_name = "localhost:<fed_port>"``: an explicit port, so a peer connects
  straight to ``localhost:<fed_port>`` (spec, server-server API, "Resolving server
  names", step 2: no ``.well-known``, no SRV; ``Host: localhost:<fed_port>``;
  TLS certificate for ``localhost``);
* a self-signed certificate for ``localhost`` (SAN ``DNS:localhost``,
  ``IP:127.0.0.1``; RSA 2048, 30 days), written with ``cryptography``
  (``tls.crt`` / ``tls.key``); an ed25519 signing key written with
  ``signedjson`` in Synapse's file format (``signing.key``);
* ``homeserver.yaml`` (JSON, which is YAML) and ``log.yaml``: sqlite, both
  listeners, ``federation_verify_certificates: false``, ``ip_range_whitelist``
  for 127.0.0.0/8, no trusted key servers, registration closed except through the
  shared secret, every rate limit out of the way, short federation retry delays,
  presence off (see :func:`build_config`; ``extra_config`` is merged over it, one
  top-level key at a time);
* ``.venv-synapse/bin/python -m synapse.app.homeserver -c homeserver.yaml`` as a
  subprocess (stdout/stderr to ``stdout.log``, Synapse's own log to
  ``homeserver.log`` at INFO), polled until ``GET https://127.0.0.1:<fed_port>
  /_matrix/federation/v1/version`` and ``GET /_matrix/client/versions`` both answer
  200 (deadline ``startup_timeout_s``, 60 s by default); if it dies or the deadline
  passes, the tail of both logs is printed to stderr and :class:`SynapsePeerError`
  is raised. ``stop()`` sends SIGTERM to that PID only, then SIGKILL after 15 s;
  the data directory (logs, database) is kept.

Everything here is synchronous (httpx's sync client, one per thread, so helpers may
be called from several threads at once). In a trio test where OUR server runs in
the same trio loop, never call a helper directly: it blocks the loop, and Synapse
calling our server back would deadlock. Go through ``peer.trio``, which runs any
method in a worker thread::

    room_id = await peer.trio.create_room(tok, room_version="12", preset="public_chat")
    await peer.trio.wait_for_event(tok, room_id, lambda ev: ev["type"] == "m.room.message")

pytest: the session-scoped fixture ``synapse_peer`` (``tests/interop/conftest.py``)
starts one peer per session under ``tmp_path_factory``. Without ``.venv-synapse``
it skips, unless ``ROOMACTORS_REQUIRE_SYNAPSE`` is set (CI, ``make test``), in which
case it fails, as the differential tests do. By hand, from the repository root::

    .venv/bin/python tests/interop/synapse_peer.py --data /tmp/syn   # Ctrl-C stops it

API (all helpers take the user's access token first; errors raise
:class:`SynapseHTTPError` with ``status``, ``errcode`` and ``body``):
``register_user(localpart, password="password", admin=False) -> (user_id, token)``,
``create_room(token, **body) -> room_id``,
``join(token, room_id_or_alias, server_name=()) -> room_id`` (sent as ``via``,
which Synapse prefers over the deprecated ``server_name``),
``leave``, ``invite``, ``kick``, ``ban``, ``unban``,
``send_message(token, room_id, body, msgtype="m.text") -> event_id``,
``send_event(token, room_id, type, content) -> event_id``,
``send_state(token, room_id, type, state_key, content) -> event_id``,
``get_state(token, room_id) -> list``, ``get_state_event(token, room_id, type,
state_key="") -> dict`` (content), ``get_event(token, room_id, event_id) -> dict``,
``sync(token, since=None, timeout=0, filter=None) -> dict``,
``wait_for(token, predicate, timeout_s=30, since=None) -> dict`` (long-polls /sync
until ``predicate(sync_response)`` is truthy; returns that response),
``wait_for_event(token, room_id, predicate, timeout_s=30) -> dict`` (the first
event of the room, in any section of /sync (timeline, state, invite_state), that
satisfies ``predicate``), ``request(method, path, token=None, json=None,
params=None, base=None) -> dict`` for anything else.

Facts about Synapse 1.163.2 (read in the installed source; file paths relative to
``synapse/``)
---------------------------------------------------------------------------------------
Resolving our server name (``http/federation/matrix_federation_agent.py``):
``.well-known`` is looked up only when the destination has no explicit port and is
not an IP literal; ``MatrixHostnameEndpoint._resolve_server`` skips SRV when there
is a port (or an IP literal) and connects to ``host:port`` directly. So a
destination ``localhost:<port>`` means: no well-known, no SRV, a TCP connection to
whatever ``localhost`` resolves to (here ``/etc/hosts``: 127.0.0.1), and a ``Host``
header of ``localhost:<port>`` (the netloc of the ``matrix-federation://`` URI).
Outgoing requests carry ``Authorization: X-Matrix origin="…",key="…",sig="…",
destination="…"`` (``http/matrixfederationclient.py``).

TLS (``crypto/context_factory.py``): SNI is set to the destination host
(``localhost``) unless it is an IP literal, whether or not certificates are
verified. With ``federation_verify_certificates: false`` the client context has no
trust root and ``ConnectionVerifier`` skips ``verify_hostname`` entirely, so a
self-signed certificate for any name is accepted: no extra setting is needed.
``federation_certificate_verification_whitelist`` (globs of host names) only
matters when ``federation_verify_certificates`` is true; ``federation_custom_ca_list``
would be the strict alternative (trust our self-signed cert as a CA, keep hostname
checks).

IP blocking (``config/server.py``): the keys are still ``ip_range_blacklist``
(default ``DEFAULT_IP_RANGE_BLOCKLIST``, which includes 127.0.0.0/8 and ::1/128;
0.0.0.0 and :: are always blocked) and ``ip_range_whitelist``; internally they are
named ``ip_range_blocklist`` / ``ip_range_allowlist``, but the YAML keys did not
change. They apply to federation unless the legacy ``federation_ip_range_blacklist``
is given. Blocked addresses are dropped at name resolution, so with only
127.0.0.0/8 allowed, ``localhost`` can only mean 127.0.0.1 (never ::1): our
server must listen on 127.0.0.1. Synapse also honours ``http_proxy`` /
``https_proxy`` / ``no_proxy`` from its environment for federation; the peer is
started with those removed.

Our key server (``crypto/keyring.py``, ``ServerKeyFetcher`` /
``process_v2_response``): Synapse fetches ``GET /_matrix/key/v2/server`` from us
directly (``trusted_key_servers: []``), itself a signed federation request, with a
10 s timeout. The response must have ``server_name`` equal to the name asked
for (else ``KeyLookupError``), ``valid_until_ts`` (required; it becomes the
validity of every key in ``verify_keys``), ``verify_keys`` ``{key_id: {"key":
unpadded base64}}`` (only ``ed25519:`` IDs are used), and ``signatures[server_name]``
with a signature by a key in ``verify_keys`` (the first such one listed is checked,
and must verify over the response: signedjson, canonical JSON without
``signatures``/``unsigned``). ``old_verify_keys`` is optional
(``{key_id: {"key", "expired_ts"}}``). A key is used for a request or PDU only if
``valid_until_ts`` >= the time needed: now for the X-Matrix header of an incoming
request, the PDU's ``origin_server_ts`` for events of room versions that enforce
key validity (v5+, so 10 and 12), so ``valid_until_ts`` must be in the future.
Backoff (``config/federation.py``, the ``federation:`` section): a destination
that fails is skipped until ``destination_min_retry_interval`` (default 10 min;
1 s here, x2, at most 10 s) has passed, and the next event for it (or Synapse's
periodic catch-up, every 60 s) resumes sending; request retries are capped here too
(``max_long_retries`` 3, ``max_long_retry_delay`` 2 s), so a test against a
half-working server of ours fails in seconds rather than minutes.
The inbound side (``federation/transport/server/_base.py``) rejects an X-Matrix
header whose ``destination`` is present and not Synapse's own server name.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = REPO / ".venv-synapse"
SYNAPSE_PYTHON = SYNAPSE_VENV / "bin" / "python"
REQUIRE_ENV = "ROOMACTORS_REQUIRE_SYNAPSE"

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
             "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

# Rate limits nobody reaches in a test.
_UNLIMITED = {"per_second": 100000, "burst_count": 100000}


class SynapsePeerError(RuntimeError):
    """Synapse did not start, or died."""


class SynapseHTTPError(RuntimeError):
    """A request to the peer answered with a non-2xx status."""

    def __init__(self, method: str, url: str, status: int, body: Any):
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{method} {url} -> {status}: {body}")


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ours_federation_overrides(port: int, request_timeout_s: float = 20.0) -> dict[str, dict[str, Any]]:
    """Settings overrides for OUR server as ``localhost:<port>`` federating with a
    :class:`SynapsePeer` on loopback: federation TLS bound to ``127.0.0.1:<port>``,
    self-signed certificates accepted, loopback allowed (``ip_range_allowlist``), no
    notary (keys fetched from the peer itself), short retry backoff. Used by the
    ``ours_federating`` fixture (``conftest.py``) and ``bench/federation.py``."""
    return {
        "federation": {
            "bind": [f"127.0.0.1:{port}"],
            "verify_certificates": False,
            "ip_range_allowlist": ["127.0.0.0/8"],
            "trusted_key_servers": [],
            "request_timeout_s": request_timeout_s,
            "backoff_initial_s": 0.5,
            "backoff_max_s": 5.0,
        },
    }


def write_self_signed_cert(cert_path: Path, key_path: Path, hostname: str = "localhost",
                           days: int = 30) -> None:
    """A self-signed RSA certificate for ``hostname`` (SAN DNS:hostname, IP:127.0.0.1), PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_signing_key(path: Path) -> tuple[str, str]:
    """A fresh ed25519 signing key in Synapse's file format; returns (key_id, verify key base64)."""
    from signedjson.key import encode_verify_key_base64, generate_signing_key, write_signing_keys

    key = generate_signing_key("a_" + secrets.token_hex(2))
    with open(path, "w") as f:
        write_signing_keys(f, [key])
    return f"{key.alg}:{key.version}", encode_verify_key_base64(key.verify_key)


def build_config(data: Path, *, server_name: str, fed_port: int, client_port: int,
                 shared_secret: str, log_config: Path) -> dict[str, Any]:
    """homeserver.yaml as a dict: see the module docstring."""
    return {
        "server_name": server_name,
        "pid_file": str(data / "homeserver.pid"),
        "public_baseurl": f"http://127.0.0.1:{client_port}/",
        "report_stats": False,
        "listeners": [
            {"port": fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
             "x_forwarded": False, "resources": [{"names": ["federation"], "compress": False}]},
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
             "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]},
        ],
        "tls_certificate_path": str(data / "tls.crt"),
        "tls_private_key_path": str(data / "tls.key"),
        "federation_verify_certificates": False,
        "ip_range_whitelist": ["127.0.0.0/8"],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "signing_key_path": str(data / "signing.key"),
        "database": {"name": "sqlite3", "args": {"database": str(data / "homeserver.db")}},
        "media_store_path": str(data / "media_store"),
        "log_config": str(log_config),
        "registration_shared_secret": shared_secret,
        "enable_registration": False,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "allow_public_rooms_over_federation": True,
        "room_list_publication_rules": [{"action": "allow"}],
        "default_room_version": "10",
        "presence": {"enabled": False},
        "enable_metrics": False,
        "url_preview_enabled": False,
        # Give up fast and come back fast: a test peer that is down is down for seconds.
        "federation": {
            "client_timeout": "20s",
            "max_long_retry_delay": "2s", "max_long_retries": 3,
            "max_short_retry_delay": "1s", "max_short_retries": 2,
            "destination_min_retry_interval": "1s", "destination_retry_multiplier": 2,
            "destination_max_retry_interval": "10s",
        },
        "rc_message": _UNLIMITED,
        "rc_registration": _UNLIMITED,
        "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
        "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
        "rc_joins_per_room": _UNLIMITED,
        "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
        "rc_third_party_invite": _UNLIMITED,
        "rc_room_creation": _UNLIMITED,
        "rc_key_requests": _UNLIMITED,
        "rc_admin_redaction": _UNLIMITED,
        "rc_profile": _UNLIMITED,
        "rc_presence": {"per_user": _UNLIMITED},
        "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 1,
                          "reject_limit": 100000, "concurrent": 100000},
    }


def build_log_config(log_file: Path, level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                                             "%(request)s - %(message)s"}},
        "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                              "filename": str(log_file), "filters": ["context"], "encoding": "utf8"}},
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


# --------------------------------------------------------------------------------------
# the peer
# --------------------------------------------------------------------------------------


class _InThread:
    """``peer.trio.<method>(...)``: the method in a trio worker thread, awaitable."""

    def __init__(self, peer: SynapsePeer):
        self._peer = peer

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self._peer, name)
        if not callable(fn):
            raise AttributeError(f"SynapsePeer.{name} is not a method")

        async def run(*args: Any, **kwargs: Any) -> Any:
            import trio

            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

        return run


class SynapsePeer:
    """One Synapse homeserver on loopback (see the module docstring).

    ``with SynapsePeer(data_dir) as peer: ...`` or ``peer = SynapsePeer(d).start()``
    ... ``peer.stop()``. Attributes (set by the constructor): ``data_dir``,
    ``fed_port``, ``client_port``, ``server_name`` (``localhost:<fed_port>``),
    ``federation_url`` (``https://localhost:<fed_port>``), ``client_url``
    (``http://127.0.0.1:<client_port>``), ``tls_cert_path``, ``tls_key_path``,
    ``signing_key_path``, ``signing_key_id``, ``verify_key_base64``,
    ``registration_shared_secret``, ``config_path``, ``log_path`` (Synapse's log),
    ``stdout_path``; after ``start()``: ``proc``, ``version`` (from
    ``/_matrix/federation/v1/version``), ``startup_s``.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, python: str | os.PathLike[str] | None = None,
                 extra_config: Mapping[str, Any] | None = None, log_level: str = "INFO",
                 startup_timeout_s: float = 60.0):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.python = Path(python) if python else SYNAPSE_PYTHON
        self.startup_timeout_s = startup_timeout_s
        self.fed_port, self.client_port = free_ports(2)
        self.server_name = f"localhost:{self.fed_port}"
        self.federation_url = f"https://localhost:{self.fed_port}"
        self.client_url = f"http://127.0.0.1:{self.client_port}"
        self.tls_cert_path = self.data_dir / "tls.crt"
        self.tls_key_path = self.data_dir / "tls.key"
        self.signing_key_path = self.data_dir / "signing.key"
        self.config_path = self.data_dir / "homeserver.yaml"
        self.log_path = self.data_dir / "homeserver.log"
        self.stdout_path = self.data_dir / "stdout.log"
        self.registration_shared_secret = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.version: str | None = None
        self.startup_s: float | None = None
        self.trio = _InThread(self)
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()

        write_self_signed_cert(self.tls_cert_path, self.tls_key_path)
        self.signing_key_id, self.verify_key_base64 = write_signing_key(self.signing_key_path)
        log_config = self.data_dir / "log.yaml"
        log_config.write_text(json.dumps(build_log_config(self.log_path, log_level), indent=2))
        config = build_config(self.data_dir, server_name=self.server_name, fed_port=self.fed_port,
                              client_port=self.client_port, shared_secret=self.registration_shared_secret,
                              log_config=log_config)
        config.update(extra_config or {})
        (self.data_dir / "media_store").mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=2))

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SynapsePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SynapsePeer:
        if self.proc is not None:
            raise SynapsePeerError("already started")
        if not self.python.exists():
            raise SynapsePeerError(f"{self.python} does not exist; run `make synapse-venv`")
        env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV and not k.startswith("PYTHON")}
        t0 = time.monotonic()
        with open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.data_dir, env=env)
        try:
            self._wait_ready(t0 + self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        fed = f"https://127.0.0.1:{self.fed_port}/_matrix/federation/v1/version"
        cli = f"{self.client_url}/_matrix/client/versions"
        with httpx.Client(verify=False, timeout=2.0, trust_env=False) as c:
            pending = {fed, cli}
            while pending:
                if self.proc.poll() is not None:
                    self._fail(f"Synapse exited with {self.proc.returncode} during start-up")
                if time.monotonic() > deadline:
                    self._fail(f"Synapse did not answer {sorted(pending)} within {self.startup_timeout_s} s")
                for url in sorted(pending):
                    try:
                        r = c.get(url)
                    except httpx.TransportError:
                        continue
                    if r.status_code == 200:
                        pending.discard(url)
                        if url == fed:
                            self.version = r.json()["server"]["version"]
                if pending:
                    time.sleep(0.1)

    def _fail(self, msg: str) -> None:
        text = (f"{msg}\n--- {self.stdout_path} (tail) ---\n{_tail(self.stdout_path)}"
                f"\n--- {self.log_path} (tail) ---\n{_tail(self.log_path)}")
        print(text, file=sys.stderr, flush=True)
        raise SynapsePeerError(text)

    def stop(self) -> None:
        """SIGTERM to our Synapse PID, SIGKILL after 15 s; the data directory stays."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        self._local = threading.local()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            print(f"Synapse pid {proc.pid} ignored SIGTERM for 15 s; SIGKILL", file=sys.stderr)
            proc.kill()
            proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ HTTP

    def _client(self) -> httpx.Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = httpx.Client(timeout=30.0, verify=False, trust_env=False)
            self._local.client = c
            with self._clients_lock:
                self._clients.append(c)
        return c

    def request(self, method: str, path: str, token: str | None = None, json: Any = None,
                params: Any = None, base: str | None = None, timeout: float = 30.0) -> Any:
        """One request to the client listener (or ``base``); the decoded JSON body, or raise."""
        url = (base or self.client_url) + path
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = self._client().request(method, url, json=json, params=params, headers=headers, timeout=timeout)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        if not 200 <= r.status_code < 300:
            raise SynapseHTTPError(method, url, r.status_code, body)
        return body

    @staticmethod
    def _q(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    # ------------------------------------------------------------------ users

    def register_user(self, localpart: str, password: str = "password",
                      admin: bool = False) -> tuple[str, str]:
        """Shared-secret registration (``/_synapse/admin/v1/register``): (user_id, access_token)."""
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        msg = b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                            b"admin" if admin else b"notadmin"])
        mac = hmac.new(self.registration_shared_secret.encode(), msg, hashlib.sha1).hexdigest()
        r = self.request("POST", "/_synapse/admin/v1/register",
                         json={"nonce": nonce, "username": localpart, "password": password,
                               "admin": admin, "mac": mac})
        return r["user_id"], r["access_token"]

    # ------------------------------------------------------------------ media

    def upload_media(self, token: str, data: bytes, content_type: str, filename: str | None = None) -> str:
        """``POST /_matrix/media/v3/upload`` as the user; the ``mxc://`` URI."""
        params = {"filename": filename} if filename else None
        r = self._client().post(self.client_url + "/_matrix/media/v3/upload", content=data, params=params,
                                headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
        if r.status_code != 200:
            raise SynapseHTTPError("POST", "/_matrix/media/v3/upload", r.status_code, r.text)
        return r.json()["content_uri"]

    def get_media(self, token: str, path: str, params: Any = None, timeout: float = 60.0) -> httpx.Response:
        """A raw GET on the client listener (e.g. ``/_matrix/client/v1/media/download/...``)."""
        return self._client().get(self.client_url + path, params=params, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    # ------------------------------------------------------------------ rooms

    def create_room(self, token: str, **body: Any) -> str:
        return self.request("POST", "/_matrix/client/v3/createRoom", token, json=body)["room_id"]

    def join(self, token: str, room_id_or_alias: str, server_name: Iterable[str] = ()) -> str:
        params = [("via", s) for s in server_name]
        return self.request("POST", f"/_matrix/client/v3/join/{self._q(room_id_or_alias)}", token,
                            json={}, params=params, timeout=60.0)["room_id"]

    def leave(self, token: str, room_id: str) -> None:
        self.request("POST", f"/_matrix/client/v3/rooms/{self._q(room_id)}/leave", token, json={})

    def _membership(self, action: str, token: str, room_id: str, user_id: str, reason: str | None) -> None:
        body = {"user_id": user_id, **({"reason": reason} if reason else {})}
        self.request("POST", f"/_matrix/client/v3/rooms/{self._q(room_id)}/{action}", token, json=body,
                     timeout=60.0)

    def invite(self, token: str, room_id: str, user_id: str, reason: str | None = None) -> None:
        self._membership("invite", token, room_id, user_id, reason)

    def kick(self, token: str, room_id: str, user_id: str, reason: str | None = None) -> None:
        self._membership("kick", token, room_id, user_id, reason)

    def ban(self, token: str, room_id: str, user_id: str, reason: str | None = None) -> None:
        self._membership("ban", token, room_id, user_id, reason)

    def unban(self, token: str, room_id: str, user_id: str, reason: str | None = None) -> None:
        self._membership("unban", token, room_id, user_id, reason)

    def send_event(self, token: str, room_id: str, type: str, content: Mapping[str, Any]) -> str:
        txn = uuid.uuid4().hex
        return self.request("PUT", f"/_matrix/client/v3/rooms/{self._q(room_id)}/send/{self._q(type)}/{txn}",
                            token, json=dict(content))["event_id"]

    def send_message(self, token: str, room_id: str, body: str, msgtype: str = "m.text") -> str:
        return self.send_event(token, room_id, "m.room.message", {"msgtype": msgtype, "body": body})

    def send_state(self, token: str, room_id: str, type: str, state_key: str,
                   content: Mapping[str, Any]) -> str:
        path = f"/_matrix/client/v3/rooms/{self._q(room_id)}/state/{self._q(type)}/{self._q(state_key)}"
        return self.request("PUT", path, token, json=dict(content))["event_id"]

    def get_state(self, token: str, room_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/_matrix/client/v3/rooms/{self._q(room_id)}/state", token)

    def get_state_event(self, token: str, room_id: str, type: str, state_key: str = "") -> dict[str, Any]:
        path = f"/_matrix/client/v3/rooms/{self._q(room_id)}/state/{self._q(type)}/{self._q(state_key)}"
        return self.request("GET", path, token)

    def get_event(self, token: str, room_id: str, event_id: str) -> dict[str, Any]:
        return self.request("GET", f"/_matrix/client/v3/rooms/{self._q(room_id)}/event/{self._q(event_id)}",
                            token)

    # ------------------------------------------------------------------ sync

    def sync(self, token: str, since: str | None = None, timeout: int = 0,
             filter: str | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One /sync; ``timeout`` in milliseconds (the long-poll)."""
        params: dict[str, Any] = {"timeout": int(timeout)}
        if since:
            params["since"] = since
        if filter is not None:
            params["filter"] = filter if isinstance(filter, str) else json.dumps(filter)
        return self.request("GET", "/_matrix/client/v3/sync", token, params=params,
                            timeout=timeout / 1000 + 30.0)

    def wait_for(self, token: str, predicate: Callable[[dict[str, Any]], Any], timeout_s: float = 30.0,
                 since: str | None = None) -> dict[str, Any]:
        """Long-poll /sync from ``since`` (None: an initial sync first) until
        ``predicate(response)`` is truthy; return that response (its ``next_batch``
        continues from there). Raises ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        poll_ms = 0
        while True:
            resp = self.sync(token, since=since, timeout=poll_ms)
            if predicate(resp):
                return resp
            since = resp["next_batch"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.server_name}: sync predicate not met within {timeout_s} s")
            poll_ms = int(min(left, 5.0) * 1000)

    @staticmethod
    def room_events(resp: Mapping[str, Any], room_id: str) -> Iterator[dict[str, Any]]:
        """Every event of ``room_id`` in one /sync response: state, timeline, invite_state,
        knock_state, for joined, invited, left and knocked rooms."""
        rooms = resp.get("rooms", {})
        for section in ("join", "leave"):
            room = rooms.get(section, {}).get(room_id)
            if room:
                yield from room.get("state", {}).get("events", [])
                yield from room.get("timeline", {}).get("events", [])
        room = rooms.get("invite", {}).get(room_id)
        if room:
            yield from room.get("invite_state", {}).get("events", [])
        room = rooms.get("knock", {}).get(room_id)
        if room:
            yield from room.get("knock_state", {}).get("events", [])

    def wait_for_event(self, token: str, room_id: str, predicate: Callable[[dict[str, Any]], Any],
                       timeout_s: float = 30.0, since: str | None = None) -> dict[str, Any]:
        """The first event of ``room_id`` seen through /sync (from ``since``; None: an
        initial sync first) for which ``predicate(event)`` is truthy."""
        found: list[dict[str, Any]] = []

        def check(resp: dict[str, Any]) -> bool:
            for ev in self.room_events(resp, room_id):
                if predicate(ev):
                    found.append(ev)
                    return True
            return False

        self.wait_for(token, check, timeout_s=timeout_s, since=since)
        return found[0]


# --------------------------------------------------------------------------------------
# pytest support (used by tests/interop/conftest.py)
# --------------------------------------------------------------------------------------


def synapse_python_or_skip() -> Path:
    """``.venv-synapse``'s interpreter; pytest skip without it, or fail when
    ``ROOMACTORS_REQUIRE_SYNAPSE`` is set (the differential tests' convention)."""
    import pytest

    if not SYNAPSE_VENV.exists():
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {SYNAPSE_VENV} does not exist; run `make synapse-venv`")
        pytest.skip(f"{SYNAPSE_VENV} does not exist; run `make synapse-venv` (or set {REQUIRE_ENV} to require it)")
    if not SYNAPSE_PYTHON.exists():
        pytest.fail(f"{SYNAPSE_VENV} exists but has no bin/python; rerun `make synapse-venv`")
    return SYNAPSE_PYTHON


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start one Synapse peer on loopback (TLS federation) "
                                             "and keep it running until Ctrl-C.")
    ap.add_argument("--data", required=True, help="data directory (created; config, keys, db, logs)")
    ap.add_argument("--python", default=None, help=f"Synapse's interpreter (default {SYNAPSE_PYTHON})")
    ap.add_argument("--user", action="append", default=[], help="register this localpart (repeatable)")
    a = ap.parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # stop Synapse on SIGTERM too, not only Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    with SynapsePeer(a.data, python=a.python) as peer:
        info = {"server_name": peer.server_name, "federation_url": peer.federation_url,
                "client_url": peer.client_url, "version": peer.version, "pid": peer.proc.pid if peer.proc else None,
                "signing_key": f"{peer.signing_key_id} {peer.verify_key_base64}",
                "registration_shared_secret": peer.registration_shared_secret,
                "tls_cert": str(peer.tls_cert_path), "log": str(peer.log_path),
                "startup_s": round(peer.startup_s or 0, 2)}
        for lp in a.user:
            uid, tok = peer.register_user(lp)
            info.setdefault("users", {})[uid] = tok
        print(json.dumps(info, indent=2), flush=True)
        try:
            while peer.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        if not peer.alive() and peer.proc is not None:
            print(f"Synapse exited with {peer.proc.returncode}; see {peer.log_path}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
