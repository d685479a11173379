"""settings.toml loading: documented defaults, path resolution, and clear errors."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from roomactors.media.config import MediaSettings
from api.settings import (
    DEFAULTS,
    ActorSettings,
    AuthSettings,
    Bucket,
    DEFAULT_IP_RANGE_DENYLIST,
    DatabaseSettings,
    FederationSettings,
    HttpSettings,
    RateLimitSettings,
    RegistrationSettings,
    ServerSettings,
    Settings,
    SettingsError,
    SyncSettings,
    client_base_url,
    load_settings,
    parse_settings,
)

REPO_SETTINGS = Path(__file__).resolve().parents[2] / "settings.toml"

#: Where the repository's settings.toml, which is also the development configuration
#: `make serve` runs, departs from DEFAULTS. Each entry is marked in the file with
#: "DEV OVERRIDE (default: <value>)" in the comment above the key. Keep this short:
#: anything here is a difference between development and a fresh deployment.
DEV_OVERRIDES: dict[str, dict[str, object]] = {
    # The load generator and local clients register their own accounts.
    "registration": {"enabled": True},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path) -> None:
    assert parse_settings({}, base_dir=tmp_path) == Settings(
        server=ServerSettings(
            server_name="localhost", signing_key_path=tmp_path / "data/signing.key", public_baseurl=""
        ),
        http=HttpSettings(client_bind=("127.0.0.1:8008",), max_request_size=52428800, graceful_timeout_s=5.0),
        database=DatabaseSettings(path=tmp_path / "data/roomactors.db"),
        actors=ActorSettings(mailbox_size=64, idle_timeout_s=300.0),
        registration=RegistrationSettings(enabled=False, require_token=False, shared_secret=""),
        ratelimit=RateLimitSettings(
            enabled=True,
            message=Bucket(10.0, 50),
            login=Bucket(0.5, 10),
            register=Bucket(0.5, 10),
            request=Bucket(100.0, 500),
            room_create=Bucket(1.0, 20),
        ),
        auth=AuthSettings(access_token_lifetime_s=None, refresh_access_token_lifetime_s=300.0),
        sync=SyncSettings(max_timeout_ms=120000, default_timeline_limit=10),
        federation=FederationSettings(
            enabled=True,
            bind=("127.0.0.1:8448",),
            plain_bind=(),
            tls_certificate_path=tmp_path / "data/federation.crt",
            tls_private_key_path=tmp_path / "data/federation.key",
            verify_certificates=True,
            ip_range_denylist=DEFAULT_IP_RANGE_DENYLIST,
            ip_range_allowlist=(),
            trusted_key_servers=("matrix.org",),
            key_validity_s=86400.0,
            request_timeout_s=60.0,
            backoff_initial_s=5.0,
            backoff_max_s=3600.0,
        ),
        media=MediaSettings(
            directory=tmp_path / "data/media",
            max_upload_size=52428800,
            enable_legacy_unauthenticated_media=True,
            max_image_pixels=32_000_000,
            remote_max_size=52428800,
            remote_timeout_s=60.0,
        ),
    )


def test_repository_settings_file_is_the_defaults_plus_the_dev_overrides() -> None:
    text = REPO_SETTINGS.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    # Every section and key is spelled out, and each value is the default unless
    # it is a listed dev override.
    expected = {section: {**keys, **DEV_OVERRIDES.get(section, {})} for section, keys in DEFAULTS.items()}
    assert {s: list(keys) for s, keys in raw.items()} == {s: list(keys) for s, keys in expected.items()}
    assert raw == expected
    assert load_settings(REPO_SETTINGS) == parse_settings(expected, base_dir=REPO_SETTINGS.parent)

    # An override really differs from the default, and the file says so right above
    # the key, with the default; no other key carries the mark.
    lines = text.splitlines()
    marked = 0
    for section, overrides in DEV_OVERRIDES.items():
        for key, value in overrides.items():
            assert value != DEFAULTS[section][key], f"[{section}] {key} is listed but is the default"
            start = lines.index(f"[{section}]")
            at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{key} = "))
            comments = []
            while lines[at - 1].startswith("#"):
                at -= 1
                comments.append(lines[at])
            mark = f"DEV OVERRIDE (default: {json.dumps(DEFAULTS[section][key])})"
            assert any(mark in c for c in comments), f"[{section}] {key}: no '{mark}' comment"
            marked += 1
    assert text.count("DEV OVERRIDE (default:") == marked


def test_every_default_section_has_a_settings_dataclass(tmp_path: Path) -> None:
    settings = parse_settings({}, base_dir=tmp_path)
    assert [f.name for f in dataclasses.fields(settings)] == list(DEFAULTS)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == parse_settings({}, base_dir=tmp_path)


def test_values_and_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    path = write(
        conf,
        """
        [server]
        server_name = "example.org:8448"
        signing_key_path = "/var/lib/roomactors/signing.key"
        [http]
        client_bind = ["0.0.0.0:8008", "[::1]:8009"]
        max_request_size = 1048576
        [database]
        path = "db/homeserver.db"
        [actors]
        mailbox_size = 8
        idle_timeout_s = 30
        """,
    )
    settings = load_settings(path)
    assert settings.server == ServerSettings(
        server_name="example.org:8448", signing_key_path=Path("/var/lib/roomactors/signing.key")
    )
    assert settings.http.client_bind == ("0.0.0.0:8008", "[::1]:8009")
    assert settings.http.max_request_size == 1048576
    assert settings.database.path == conf.resolve() / "db/homeserver.db"
    assert settings.actors == ActorSettings(mailbox_size=8, idle_timeout_s=30.0)


def test_new_sections_parse(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        public_baseurl = "https://matrix.example.org/"
        [registration]
        enabled = true
        require_token = true
        shared_secret = "s3cret"
        [ratelimit]
        enabled = false
        message_per_second = 2
        message_burst = 3
        login_per_second = 0.1
        room_create_burst = 1
        [auth]
        access_token_lifetime_s = 86400
        refresh_access_token_lifetime_s = 60
        [sync]
        max_timeout_ms = 0
        default_timeline_limit = 50
        """,
    )
    settings = load_settings(path)
    assert settings.server.public_baseurl == "https://matrix.example.org"
    assert settings.registration == RegistrationSettings(enabled=True, require_token=True, shared_secret="s3cret")
    assert settings.ratelimit == RateLimitSettings(
        enabled=False,
        message=Bucket(2.0, 3),
        login=Bucket(0.1, 10),
        register=Bucket(0.5, 10),
        request=Bucket(100.0, 500),
        room_create=Bucket(1.0, 1),
    )
    assert isinstance(settings.ratelimit.message.per_second, float)
    assert settings.ratelimit.buckets() == {
        "message": Bucket(2.0, 3),
        "login": Bucket(0.1, 10),
        "register": Bucket(0.5, 10),
        "request": Bucket(100.0, 500),
        "room_create": Bucket(1.0, 1),
    }
    assert settings.auth == AuthSettings(access_token_lifetime_s=86400.0, refresh_access_token_lifetime_s=60.0)
    assert settings.sync == SyncSettings(max_timeout_ms=0, default_timeline_limit=50)


def test_shared_secret_is_not_in_repr(tmp_path: Path) -> None:
    settings = parse_settings({"registration": {"shared_secret": "hunter2-hunter2"}}, base_dir=tmp_path)
    assert settings.registration.shared_secret == "hunter2-hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("server", "http", "url"),
    [
        ({}, {}, "http://127.0.0.1:8008"),
        ({}, {"client_bind": ["0.0.0.0:8448", "[::1]:9"]}, "http://127.0.0.1:8448"),
        ({}, {"client_bind": ["[::]:8008"]}, "http://[::1]:8008"),
        ({}, {"client_bind": ["[0:0::0]:8008"]}, "http://[::1]:8008"),
        ({}, {"client_bind": ["[2001:db8::1]:80"]}, "http://[2001:db8::1]:80"),
        ({}, {"client_bind": ["matrix.local:08008"]}, "http://matrix.local:8008"),
        ({"public_baseurl": "https://matrix.example.org"}, {}, "https://matrix.example.org"),
        ({"public_baseurl": "https://example.org/matrix/"}, {}, "https://example.org/matrix"),
        ({"public_baseurl": "http://[::1]:8008/"}, {}, "http://[::1]:8008"),
    ],
)
def test_client_base_url(tmp_path: Path, server: dict, http: dict, url: str) -> None:
    settings = parse_settings({"server": server, "http": http}, base_dir=tmp_path)
    assert client_base_url(settings) == url


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = parse_settings({}, base_dir=tmp_path)
    with pytest.raises(AttributeError):
        settings.server.server_name = "evil.example"  # type: ignore[misc]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope\.toml: settings file not found"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"settings\.toml: invalid TOML: .*line 2"):
        load_settings(write(tmp_path, "[server]\nserver_name = \n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sever]\n", r"unknown section \[sever\]"),
        ("[server]\nservername = 'x'\n", r"unknown key \[server\] servername"),
        ("server = 3\n", r"\[server\] must be a table"),
        ("[server]\nserver_name = ''\n", r"\[server\] server_name must be a non-empty string"),
        ("[server]\nserver_name = 'bad name'\n", r"server_name 'bad name' is not a valid server name"),
        ("[server]\nserver_name = 'example.org:99999'\n", r"not a valid server name"),
        ("[server]\nserver_name = '[::1'\n", r"not a valid server name"),
        ("[http]\nclient_bind = '127.0.0.1:8008'\n", r"client_bind must be a non-empty list"),
        ("[http]\nclient_bind = []\n", r"client_bind must be a non-empty list"),
        ("[http]\nclient_bind = ['127.0.0.1']\n", r"client_bind entry '127.0.0.1' is not \"host:port\""),
        ("[http]\nclient_bind = ['::1:8008']\n", r"client_bind entry '::1:8008'"),
        ("[http]\nmax_request_size = '50M'\n", r"max_request_size must be an integer"),
        ("[http]\nmax_request_size = true\n", r"max_request_size must be an integer"),
        ("[http]\nmax_request_size = 10\n", r"max_request_size must be at least 1024"),
        ("[http]\ngraceful_timeout_s = -1\n", r"graceful_timeout_s must be at least 0"),
        ("[database]\npath = 3\n", r"\[database\] path must be a non-empty string"),
        ("[actors]\nmailbox_size = 0\n", r"mailbox_size must be at least 1"),
        ("[actors]\nidle_timeout_s = 0\n", r"idle_timeout_s must be greater than 0"),
        ("[actors]\nrestart_backoff_initial_s = 0\n", r"restart_backoff_initial_s must be greater than 0"),
        (
            "[actors]\nrestart_backoff_initial_s = 5\nrestart_backoff_max_s = 1\n",
            r"restart_backoff_max_s must be at least 5",
        ),
        ("[actors]\nquarantine_crashes = 0\n", r"quarantine_crashes must be at least 1"),
        ("[actors]\nquarantine_window_s = -1\n", r"quarantine_window_s must be greater than 0"),
        ("[actors]\nmax_loaded_rooms = 1.5\n", r"max_loaded_rooms must be an integer"),
        ("[actors]\nrequest_timeout_s = 'soon'\n", r"request_timeout_s must be a number of seconds"),
        ("[server]\npublic_baseurl = 8008\n", r"\[server\] public_baseurl must be a string"),
        ("[server]\npublic_baseurl = 'matrix.example.org'\n", r"public_baseurl 'matrix.example.org' is not an http"),
        ("[server]\npublic_baseurl = 'ftp://example.org'\n", r"public_baseurl 'ftp://example.org' is not an http"),
        ("[server]\npublic_baseurl = 'https://'\n", r"is not an http:// or https:// URL"),
        ("[server]\npublic_baseurl = 'https://bad host/'\n", r"is not an http:// or https:// URL"),
        ("[server]\npublic_baseurl = 'https://example.org:99999'\n", r"is not an http:// or https:// URL"),
        ("[server]\npublic_baseurl = 'https://example.org:0'\n", r"is not an http:// or https:// URL"),
        ("[server]\npublic_baseurl = 'https://[::1/'\n", r"is not an http:// or https:// URL"),
        ("[server]\npublic_baseurl = 'https://example.org/?x=1'\n", r"URL without query, fragment or user info"),
        ("[server]\npublic_baseurl = 'https://example.org/#x'\n", r"URL without query, fragment or user info"),
        ("[server]\npublic_baseurl = 'https://u:p@example.org'\n", r"URL without query, fragment or user info"),
        ("[registration]\nenabled = 1\n", r"\[registration\] enabled must be true or false, got 1"),
        ("[registration]\nrequire_token = 'yes'\n", r"\[registration\] require_token must be true or false"),
        ("[registration]\nshared_secret = 42\n", r"\[registration\] shared_secret must be a string \(\"\" to disable\), got int"),
        ("[registration]\nshared_secret = ' x '\n", r"shared_secret must not start or end with whitespace$"),
        ("[ratelimit]\nenabled = 'false'\n", r"\[ratelimit\] enabled must be true or false"),
        ("[ratelimit]\nmessage_per_second = 0\n", r"message_per_second must be a finite number greater than 0, got 0"),
        ("[ratelimit]\nlogin_per_second = -1.5\n", r"login_per_second must be a finite number greater than 0"),
        ("[ratelimit]\nregister_per_second = inf\n", r"register_per_second must be a finite number greater than 0"),
        ("[ratelimit]\nrequest_per_second = nan\n", r"request_per_second must be a finite number greater than 0"),
        ("[ratelimit]\nroom_create_per_second = true\n", r"room_create_per_second must be a number of requests per second"),
        ("[ratelimit]\nmessage_burst = 0\n", r"\[ratelimit\] message_burst must be at least 1"),
        ("[ratelimit]\nrequest_burst = 2.5\n", r"\[ratelimit\] request_burst must be an integer"),
        ("[ratelimit]\nmessages_burst = 5\n", r"unknown key \[ratelimit\] messages_burst"),
        ("[auth]\naccess_token_lifetime_s = -1\n", r"\[auth\] access_token_lifetime_s must be at least 0"),
        ("[auth]\nrefresh_access_token_lifetime_s = 0\n", r"refresh_access_token_lifetime_s must be greater than 0"),
        ("[sync]\nmax_timeout_ms = -1\n", r"\[sync\] max_timeout_ms must be at least 0"),
        ("[sync]\nmax_timeout_ms = 1.5\n", r"\[sync\] max_timeout_ms must be an integer"),
        ("[sync]\ndefault_timeline_limit = 0\n", r"\[sync\] default_timeline_limit must be at least 1"),
    ],
)
def test_invalid_values_name_file_section_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=r"settings\.toml: .*" + message):
        load_settings(write(tmp_path, text))


def test_actor_settings_are_the_registry_settings(tmp_path: Path) -> None:
    from roomactors.registry import RegistrySettings

    path = write(
        tmp_path,
        """
        [actors]
        restart_backoff_initial_s = 0.25
        restart_backoff_max_s = 4
        quarantine_crashes = 3
        quarantine_window_s = 60
        max_loaded_rooms = 500
        request_timeout_s = 10
        """,
    )
    actors = load_settings(path).actors
    assert isinstance(actors, RegistrySettings)
    assert actors == RegistrySettings(
        restart_backoff_initial_s=0.25,
        restart_backoff_max_s=4.0,
        quarantine_crashes=3,
        quarantine_window_s=60.0,
        max_loaded_rooms=500,
        request_timeout_s=10.0,
    )
