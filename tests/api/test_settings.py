"""settings.toml loading: documented defaults, path resolution, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import (
    DEFAULTS,
    ActorSettings,
    DatabaseSettings,
    HttpSettings,
    ServerSettings,
    Settings,
    SettingsError,
    load_settings,
    parse_settings,
)

REPO_SETTINGS = Path(__file__).resolve().parents[2] / "settings.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path: Path) -> None:
    assert parse_settings({}, base_dir=tmp_path) == Settings(
        server=ServerSettings(server_name="localhost", signing_key_path=tmp_path / "data/signing.key"),
        http=HttpSettings(client_bind=("127.0.0.1:8008",), max_request_size=52428800, graceful_timeout_s=5.0),
        database=DatabaseSettings(path=tmp_path / "data/roomactors.db"),
        actors=ActorSettings(mailbox_size=64, idle_timeout_s=300.0),
    )


def test_repository_settings_file_documents_exactly_the_defaults() -> None:
    loaded = load_settings(REPO_SETTINGS)
    assert loaded == parse_settings({}, base_dir=REPO_SETTINGS.parent)
    # Every known key is spelled out (with its comment) in the shipped file.
    text = REPO_SETTINGS.read_text(encoding="utf-8")
    for section, keys in DEFAULTS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} = " in text, key


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
