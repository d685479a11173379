"""Settings: ``settings.toml`` -> frozen dataclasses. The ONLY reader of that file.

Theory of operation
-------------------
``load_settings(path)`` reads the TOML file with stdlib ``tomllib`` and hands the
parsed mapping to ``parse_settings(data, base_dir=...)``, a pure function that
validates every key and returns a frozen ``Settings`` tree. Everything else in the
process receives the pieces it needs explicitly (``settings.http``,
``settings.actors``...); nobody else opens the file.

Invariants:

* Every key is optional; a missing key takes the default in ``DEFAULTS``, which
  mirrors the documented ``settings.toml`` at the repository root. That file is
  also the development configuration ``make serve`` runs, so it may depart from
  ``DEFAULTS`` only at keys marked ``DEV OVERRIDE`` (today: ``[registration]
  enabled = true``); ``tests/api/test_settings.py`` keeps the two in step.
* Unknown sections and keys are errors, so a typo never silently falls back to a
  default.
* Relative paths are resolved against the directory holding the settings file
  (``base_dir``), so ``roomactors serve --config /etc/roomactors/settings.toml``
  keeps its data next to its configuration whatever the working directory.
* Every problem raises ``SettingsError`` naming the file and the ``[section] key``.
* Values the rest of the process consumes are normalised here, once: paths are
  absolute, "0 means off" settings become ``None``, ``public_baseurl`` loses its
  trailing slash, token-bucket pairs become ``Bucket`` values.

``client_base_url(settings)`` derives the URL clients should use (well-known
discovery, ``roomactors register-user``): ``[server] public_baseurl`` when set,
otherwise the first ``[http] client_bind`` address.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from roomactors.media.config import MediaSettings
from roomactors.protocol.ids import is_valid_server_name
from roomactors.registry import RegistrySettings

__all__ = [
    "ActorSettings",
    "AuthSettings",
    "Bucket",
    "DEFAULTS",
    "DatabaseSettings",
    "HttpSettings",
    "RateLimitSettings",
    "RegistrationSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "SyncSettings",
    "FederationSettings",
    "MediaSettings",
    "DEFAULT_IP_RANGE_DENYLIST",
    "client_base_url",
    "load_settings",
    "parse_settings",
]


class SettingsError(Exception):
    """The settings file is missing, is not valid TOML, or holds an invalid value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    server_name: str
    signing_key_path: Path
    #: ``""`` (derive from ``[http] client_bind``) or an http(s) URL without a
    #: trailing slash; use ``client_base_url(settings)`` rather than reading this.
    public_baseurl: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    client_bind: tuple[str, ...]
    max_request_size: int
    graceful_timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    path: Path


#: ``[actors]``: the room registry's settings, defined next to the registry
#: (``roomactors`` must not import ``api``); its field defaults are the documented ones.
ActorSettings = RegistrySettings


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSettings:
    #: Open registration (``POST /register`` with ``m.login.dummy``).
    enabled: bool
    #: Open registration also needs ``m.login.registration_token``.
    require_token: bool
    #: ``""`` disables ``/_synapse/admin/v1/register``. Kept out of ``repr``, so
    #: logging the settings never logs the secret.
    shared_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: refills at ``per_second`` tokens a second, holds up to ``burst``."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSettings:
    #: False turns every limit off (the buckets below are still validated).
    enabled: bool
    #: Per user: sending events (messages and state).
    message: Bucket
    #: Per client IP: ``POST /login``.
    login: Bucket
    #: Per client IP: ``POST /register``.
    register: Bucket
    #: Per client IP: every request.
    request: Bucket
    #: Per user: ``POST /createRoom``.
    room_create: Bucket

    def buckets(self) -> dict[str, Bucket]:
        """Every bucket by action name: ``{"message": Bucket(...), "login": ..., ...}``."""
        return {name: getattr(self, name) for name in _BUCKETS}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    #: Lifetime of access tokens issued without a refresh token; ``None``: no expiry.
    access_token_lifetime_s: float | None
    #: Lifetime of access tokens issued with a refresh token (``refresh_token: true``).
    refresh_access_token_lifetime_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSettings:
    #: A ``/sync`` ``timeout`` above this is clamped to it, in milliseconds.
    max_timeout_ms: int
    #: Timeline events per room when the filter sets no limit.
    default_timeline_limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSettings:
    #: False: no federation listener and no outbound federation traffic.
    enabled: bool
    #: HTTPS listener addresses for the server-server API ("host:port").
    bind: tuple[str, ...]
    #: Plain-HTTP listener addresses for use behind a TLS-terminating reverse proxy.
    plain_bind: tuple[str, ...]
    #: PEM certificate chain and private key of the HTTPS listener.
    tls_certificate_path: Path
    tls_private_key_path: Path
    #: Verify remote servers' TLS certificates (spec: "Server discovery"/TLS).
    verify_certificates: bool
    #: Outbound requests never connect to an address in these CIDR ranges ...
    ip_range_denylist: tuple[str, ...]
    #: ... unless it is also in one of these (e.g. loopback for local testing).
    ip_range_allowlist: tuple[str, ...]
    #: Notary servers asked for keys a server does not serve itself.
    trusted_key_servers: tuple[str, ...]
    #: How long our published signing key is declared valid (``valid_until_ts``).
    key_validity_s: float
    #: Timeout of one outbound federation request, in seconds.
    request_timeout_s: float
    #: Outbound backoff after a failed transaction: first wait, doubling to the cap.
    backoff_initial_s: float
    backoff_max_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server: ServerSettings
    http: HttpSettings
    database: DatabaseSettings
    actors: ActorSettings
    registration: RegistrationSettings
    ratelimit: RateLimitSettings
    auth: AuthSettings
    sync: SyncSettings
    federation: FederationSettings
    #: ``[media]``: the media repository (roomactors/media); defined there.
    media: MediaSettings


#: Outbound federation never connects here by default (Synapse's
#: ``ip_range_blacklist`` defaults): loopback, private, link-local, CGNAT,
#: multicast, documentation and reserved ranges.
DEFAULT_IP_RANGE_DENYLIST: tuple[str, ...] = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "0.0.0.0/8", "240.0.0.0/4",
    "::1/128", "::/128", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10",
)

# The documented defaults; settings.toml at the repository root spells out the same
# values with a comment per key, except its marked DEV OVERRIDEs
# (tests/api/test_settings.py checks they agree).
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "server": {
        "server_name": "localhost",
        "signing_key_path": "data/signing.key",
        "public_baseurl": "",
    },
    "http": {
        "client_bind": ["127.0.0.1:8008"],
        "max_request_size": 50 * 1024 * 1024,
        "graceful_timeout_s": 5.0,
    },
    "database": {
        "path": "data/roomactors.db",
    },
    "actors": {f.name: f.default for f in fields(RegistrySettings)},
    "registration": {
        "enabled": False,
        "require_token": False,
        "shared_secret": "",
    },
    "ratelimit": {
        "enabled": True,
        "message_per_second": 10.0,
        "message_burst": 50,
        "login_per_second": 0.5,
        "login_burst": 10,
        "register_per_second": 0.5,
        "register_burst": 10,
        "request_per_second": 100.0,
        "request_burst": 500,
        "room_create_per_second": 1.0,
        "room_create_burst": 20,
    },
    "auth": {
        "access_token_lifetime_s": 0.0,
        "refresh_access_token_lifetime_s": 300.0,
    },
    "sync": {
        "max_timeout_ms": 120000,
        "default_timeline_limit": 10,
    },
    "federation": {
        "enabled": True,
        "bind": ["127.0.0.1:8448"],
        "plain_bind": [],
        "tls_certificate_path": "data/federation.crt",
        "tls_private_key_path": "data/federation.key",
        "verify_certificates": True,
        "ip_range_denylist": list(DEFAULT_IP_RANGE_DENYLIST),
        "ip_range_allowlist": [],
        "trusted_key_servers": ["matrix.org"],
        "key_validity_s": 86400.0,
        "request_timeout_s": 60.0,
        "backoff_initial_s": 5.0,
        "backoff_max_s": 3600.0,
    },
    "media": {
        "directory": "data/media",
        "max_upload_size": 50 * 1024 * 1024,
        "enable_legacy_unauthenticated_media": True,
        "max_image_pixels": 32_000_000,
        "remote_max_size": 50 * 1024 * 1024,
        "remote_timeout_s": 60.0,
    },
}

#: The ``[ratelimit]`` buckets, each spelled ``<name>_per_second`` / ``<name>_burst``.
_BUCKETS = ("message", "login", "register", "request", "room_create")


def client_base_url(settings: Settings) -> str:
    """The base URL clients reach this server's client API at, without a trailing slash.

    ``[server] public_baseurl`` if set; otherwise ``http://host:port`` of the first
    ``[http] client_bind``, with a wildcard host shown as loopback (``0.0.0.0`` ->
    ``127.0.0.1``; ``[::]`` -> ``[::1]``, which an IPv6 wildcard listener always
    answers, dual-stack or not). A ``:0`` bind yields port 0: only the running
    server knows its ephemeral port.
    """
    if settings.server.public_baseurl:
        return settings.server.public_baseurl
    split = _split_host_port(settings.http.client_bind[0])
    assert split is not None and split[1] is not None  # validated by parse_settings
    host, port = split
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(_normalise_wildcard(host), host)
    return f"http://{host}:{int(port)}"


def load_settings(path: str | Path) -> Settings:
    """Read and validate the settings file at ``path``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SettingsError(f"{path}: settings file not found") from None
    except OSError as e:
        raise SettingsError(f"{path}: cannot read settings file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: settings file is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: invalid TOML: {e}") from None
    try:
        return parse_settings(data, base_dir=path.resolve().parent)
    except SettingsError as e:
        raise SettingsError(f"{path}: {e}") from None


def parse_settings(data: Mapping[str, Any], *, base_dir: Path) -> Settings:
    """Validate an already-parsed TOML mapping; relative paths resolve against ``base_dir``."""
    for section, value in data.items():
        if section not in DEFAULTS:
            raise SettingsError(f"unknown section [{section}] (known: {_names(DEFAULTS)})")
        if not isinstance(value, Mapping):
            raise SettingsError(f"[{section}] must be a table")
        unknown = set(value) - set(DEFAULTS[section])
        if unknown:
            raise SettingsError(
                f"unknown key [{section}] {sorted(unknown)[0]} (known: {_names(DEFAULTS[section])})"
            )

    def get(section: str, key: str) -> Any:
        return data.get(section, {}).get(key, DEFAULTS[section][key])

    server_name = _string(get("server", "server_name"), "server", "server_name")
    if not is_valid_server_name(server_name) or not _port_in_range(server_name):
        raise SettingsError(
            f"[server] server_name {server_name!r} is not a valid server name "
            "(hostname, IPv4 or [IPv6] literal, optionally :port)"
        )

    client_bind = get("http", "client_bind")
    if (
        not isinstance(client_bind, list)
        or not client_bind
        or not all(isinstance(b, str) for b in client_bind)
    ):
        raise SettingsError("[http] client_bind must be a non-empty list of \"host:port\" strings")
    for bind in client_bind:
        if not _is_bind(bind):
            raise SettingsError(
                f"[http] client_bind entry {bind!r} is not \"host:port\" "
                "(IPv6 hosts in brackets, port 0-65535)"
            )

    return Settings(
        server=ServerSettings(
            server_name=server_name,
            signing_key_path=_path(
                get("server", "signing_key_path"), "server", "signing_key_path", base_dir
            ),
            public_baseurl=_base_url(get("server", "public_baseurl"), "server", "public_baseurl"),
        ),
        http=HttpSettings(
            client_bind=tuple(client_bind),
            max_request_size=_int(get("http", "max_request_size"), "http", "max_request_size", minimum=1024),
            graceful_timeout_s=_number(
                get("http", "graceful_timeout_s"), "http", "graceful_timeout_s", minimum=0
            ),
        ),
        database=DatabaseSettings(
            path=_path(get("database", "path"), "database", "path", base_dir),
        ),
        actors=_actor_settings(get),
        registration=RegistrationSettings(
            enabled=_bool(get("registration", "enabled"), "registration", "enabled"),
            require_token=_bool(get("registration", "require_token"), "registration", "require_token"),
            shared_secret=_secret(get("registration", "shared_secret"), "registration", "shared_secret"),
        ),
        ratelimit=RateLimitSettings(
            enabled=_bool(get("ratelimit", "enabled"), "ratelimit", "enabled"),
            **{name: _bucket(get, name) for name in _BUCKETS},
        ),
        auth=_auth_settings(get),
        sync=SyncSettings(
            max_timeout_ms=_int(get("sync", "max_timeout_ms"), "sync", "max_timeout_ms", minimum=0),
            default_timeline_limit=_int(
                get("sync", "default_timeline_limit"), "sync", "default_timeline_limit", minimum=1
            ),
        ),
        federation=_federation_settings(get, base_dir),
        media=_media_settings(get, base_dir),
    )


def _media_settings(get: Any, base_dir: Path) -> MediaSettings:
    return MediaSettings(
        directory=_path(get("media", "directory"), "media", "directory", base_dir),
        max_upload_size=_int(get("media", "max_upload_size"), "media", "max_upload_size", minimum=1),
        enable_legacy_unauthenticated_media=_bool(
            get("media", "enable_legacy_unauthenticated_media"), "media", "enable_legacy_unauthenticated_media"
        ),
        max_image_pixels=_int(get("media", "max_image_pixels"), "media", "max_image_pixels", minimum=1),
        remote_max_size=_int(get("media", "remote_max_size"), "media", "remote_max_size", minimum=1),
        remote_timeout_s=_number(get("media", "remote_timeout_s"), "media", "remote_timeout_s", minimum=0, exclusive=True),
    )


def _federation_settings(get: Any, base_dir: Path) -> FederationSettings:
    def binds(key: str) -> tuple[str, ...]:
        value = get("federation", key)
        if not isinstance(value, list) or not all(isinstance(b, str) and _is_bind(b) for b in value):
            raise SettingsError(f"[federation] {key} must be a list of \"host:port\" strings")
        return tuple(value)

    def networks(key: str) -> tuple[str, ...]:
        value = get("federation", key)
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise SettingsError(f"[federation] {key} must be a list of CIDR strings")
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise SettingsError(f"[federation] {key} entry {net!r} is not an IP range") from None
        return tuple(value)

    servers = get("federation", "trusted_key_servers")
    if not isinstance(servers, list) or not all(isinstance(n, str) and is_valid_server_name(n) for n in servers):
        raise SettingsError("[federation] trusted_key_servers must be a list of server names")

    def seconds(key: str) -> float:
        return _number(get("federation", key), "federation", key, minimum=0, exclusive=True)

    return FederationSettings(
        enabled=_bool(get("federation", "enabled"), "federation", "enabled"),
        bind=binds("bind"),
        plain_bind=binds("plain_bind"),
        tls_certificate_path=_path(get("federation", "tls_certificate_path"), "federation", "tls_certificate_path", base_dir),
        tls_private_key_path=_path(get("federation", "tls_private_key_path"), "federation", "tls_private_key_path", base_dir),
        verify_certificates=_bool(get("federation", "verify_certificates"), "federation", "verify_certificates"),
        ip_range_denylist=networks("ip_range_denylist"),
        ip_range_allowlist=networks("ip_range_allowlist"),
        trusted_key_servers=tuple(servers),
        key_validity_s=seconds("key_validity_s"),
        request_timeout_s=seconds("request_timeout_s"),
        backoff_initial_s=seconds("backoff_initial_s"),
        backoff_max_s=seconds("backoff_max_s"),
    )


def _bucket(get: Any, name: str) -> Bucket:
    rate_key, burst_key = f"{name}_per_second", f"{name}_burst"
    rate = get("ratelimit", rate_key)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise SettingsError(f"[ratelimit] {rate_key} must be a number of requests per second, got {rate!r}")
    if not 0 < rate < math.inf:  # also rejects nan
        raise SettingsError(f"[ratelimit] {rate_key} must be a finite number greater than 0, got {rate}")
    return Bucket(float(rate), _int(get("ratelimit", burst_key), "ratelimit", burst_key, minimum=1))


def _auth_settings(get: Any) -> AuthSettings:
    lifetime = _number(
        get("auth", "access_token_lifetime_s"), "auth", "access_token_lifetime_s", minimum=0
    )
    return AuthSettings(
        access_token_lifetime_s=lifetime or None,
        refresh_access_token_lifetime_s=_number(
            get("auth", "refresh_access_token_lifetime_s"),
            "auth",
            "refresh_access_token_lifetime_s",
            minimum=0,
            exclusive=True,
        ),
    )


def _actor_settings(get: Any) -> ActorSettings:
    def positive(key: str) -> float:
        return _number(get("actors", key), "actors", key, minimum=0, exclusive=True)

    def at_least_one(key: str) -> int:
        return _int(get("actors", key), "actors", key, minimum=1)

    backoff_initial = positive("restart_backoff_initial_s")
    backoff_max = _number(
        get("actors", "restart_backoff_max_s"), "actors", "restart_backoff_max_s", minimum=backoff_initial
    )
    return ActorSettings(
        mailbox_size=at_least_one("mailbox_size"),
        idle_timeout_s=positive("idle_timeout_s"),
        restart_backoff_initial_s=backoff_initial,
        restart_backoff_max_s=backoff_max,
        quarantine_crashes=at_least_one("quarantine_crashes"),
        quarantine_window_s=positive("quarantine_window_s"),
        max_loaded_rooms=at_least_one("max_loaded_rooms"),
        request_timeout_s=positive("request_timeout_s"),
    )


def _names(mapping: Mapping[str, Any]) -> str:
    return ", ".join(mapping)


def _string(value: Any, section: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(f"[{section}] {key} must be a non-empty string, got {value!r}")
    return value


def _bool(value: Any, section: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"[{section}] {key} must be true or false, got {value!r}")
    return value


def _secret(value: Any, section: str, key: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"[{section}] {key} must be a string (\"\" to disable), got {type(value).__name__}")
    if value != value.strip():
        # Never echo the value: it is a secret.
        raise SettingsError(f"[{section}] {key} must not start or end with whitespace")
    return value


def _base_url(value: Any, section: str, key: str) -> str:
    """``""``, or an absolute http(s) URL with a valid host and no query, fragment or user."""
    if not isinstance(value, str):
        raise SettingsError(f"[{section}] {key} must be a string, got {value!r}")
    if not value:
        return ""
    problem = f"[{section}] {key} {value!r} is not an http:// or https:// URL"
    try:
        url = urllib.parse.urlsplit(value)
        port = url.port  # raises ValueError when out of range
    except ValueError:
        raise SettingsError(problem) from None
    host = url.hostname or ""
    valid_host = _is_host(f"[{host}]" if ":" in host else host) if host else False
    if url.scheme not in ("http", "https") or not valid_host or port == 0:
        raise SettingsError(problem)
    if "?" in value or "#" in value or "@" in url.netloc:
        raise SettingsError(f"{problem} without query, fragment or user info")
    return value.rstrip("/")


def _path(value: Any, section: str, key: str, base_dir: Path) -> Path:
    path = Path(_string(value, section, key))
    return path if path.is_absolute() else base_dir / path


def _int(value: Any, section: str, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"[{section}] {key} must be an integer, got {value!r}")
    if value < minimum:
        raise SettingsError(f"[{section}] {key} must be at least {minimum}, got {value}")
    return value


def _number(value: Any, section: str, key: str, *, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"[{section}] {key} must be a number of seconds, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        bound = "greater than" if exclusive else "at least"
        raise SettingsError(f"[{section}] {key} must be {bound} {minimum}, got {value}")
    return float(value)


# Listener addresses: host (DNS name, IPv4 or [IPv6]) and port. Server names use the
# spec grammar from roomactors.protocol.ids.
_DNS_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
_PORT = re.compile(r"[0-9]{1,5}")


def _split_host_port(value: str) -> tuple[str, str | None] | None:
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if not rest:
            return host, None
        return (host, rest[1:]) if rest.startswith(":") else None
    host, sep, port = value.partition(":")
    return host, (port if sep else None)


def _is_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _DNS_NAME.fullmatch(host) is not None


def _normalise_wildcard(host: str) -> str:
    """``0.0.0.0`` or ``[::]`` however spelled (``[0:0::0]``), else ``host`` unchanged."""
    if host.startswith("["):
        try:
            return "[::]" if ipaddress.IPv6Address(host[1:-1]).is_unspecified else host
        except ValueError:
            return host
    return host


def _is_port(port: str, *, allow_zero: bool) -> bool:
    return _PORT.fullmatch(port) is not None and (0 if allow_zero else 1) <= int(port) <= 65535


def _port_in_range(server_name: str) -> bool:
    """The spec grammar allows any 1-5 digit port; our own name must also be usable."""
    split = _split_host_port(server_name)
    return split is not None and (split[1] is None or _is_port(split[1], allow_zero=False))


def _is_bind(value: str) -> bool:
    split = _split_host_port(value)
    if split is None:
        return False
    host, port = split
    return _is_host(host) and port is not None and _is_port(port, allow_zero=True)
