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
  mirrors the documented ``settings.toml`` at the repository root.
* Unknown sections and keys are errors, so a typo never silently falls back to a
  default.
* Relative paths are resolved against the directory holding the settings file
  (``base_dir``), so ``roomactors serve --config /etc/roomactors/settings.toml``
  keeps its data next to its configuration whatever the working directory.
* Every problem raises ``SettingsError`` naming the file and the ``[section] key``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from roomactors.protocol.ids import is_valid_server_name
from roomactors.registry import RegistrySettings

__all__ = [
    "ActorSettings",
    "DEFAULTS",
    "DatabaseSettings",
    "HttpSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "load_settings",
    "parse_settings",
]


class SettingsError(Exception):
    """The settings file is missing, is not valid TOML, or holds an invalid value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    server_name: str
    signing_key_path: Path


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
class Settings:
    server: ServerSettings
    http: HttpSettings
    database: DatabaseSettings
    actors: ActorSettings


# The documented defaults; settings.toml at the repository root spells out the same
# values with a comment per key (tests/api/test_settings.py checks they agree).
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "server": {
        "server_name": "localhost",
        "signing_key_path": "data/signing.key",
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
}


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
