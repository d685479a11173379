"""The ``roomactors`` console script: --help, version, serve's settings errors,
generate-config, and register-user against a stub shared-secret registration API."""

from __future__ import annotations

import http.server
import io
import json
import socket
import stat
import subprocess
import sys
import threading
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from api.cli import main, package_version, render_settings_toml
from api.settings import DEFAULTS, load_settings, parse_settings
from api.shared_secret import registration_mac, verify_registration_mac
from api.signing_key import load_signing_key


def test_version_prints_the_distribution_version() -> None:
    out = io.StringIO()
    assert main(["version"], stdout=out) == 0
    assert out.getvalue() == f"roomactors {package_version()}\n"
    assert package_version() == version("roomactors")


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: roomactors")
    assert "serve" in out and "version" in out


def test_serve_help_documents_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--config PATH" in capsys.readouterr().out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_serve_with_a_bad_settings_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[server]\nserver_name = 'no spaces allowed'\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roomactors: error: ") and "server_name" in err
    assert err.count("\n") == 1


def test_console_script_entry_point_runs() -> None:
    script = Path(sys.executable).with_name("roomactors")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: roomactors")


def test_serve_accepts_c_as_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[sync]\nmax_timeout_ms = -5\n", encoding="utf-8")
    assert main(["serve", "-c", str(path)]) == 2
    assert "[sync] max_timeout_ms must be at least 0" in capsys.readouterr().err


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("serve", "generate-config", "register-user", "version"):
        assert command in out


# generate-config ------------------------------------------------------------------


def generate(tmp_path: Path, *extra: str, output: Path | None = None, data: Path | None = None) -> int:
    output = output or tmp_path / "etc" / "settings.toml"
    data = data or tmp_path / "etc" / "data"
    return main(
        ["generate-config", "--server-name", "example.org", "--data-dir", str(data), "--output", str(output), *extra],
        stdout=io.StringIO(),
    )


def test_generate_config_writes_a_complete_valid_file_and_a_key(tmp_path: Path) -> None:
    out = io.StringIO()
    output = tmp_path / "etc" / "settings.toml"
    status = main(
        [
            "generate-config",
            "--server-name", "example.org",
            "--data-dir", str(tmp_path / "etc" / "data"),
            "--client-port", "8118",
            "--output", str(output),
        ],
        stdout=out,
    )
    assert status == 0

    text = output.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert {s: list(keys) for s, keys in raw.items()} == {s: list(keys) for s, keys in DEFAULTS.items()}
    # Data under the settings file's directory is referenced relatively.
    assert raw["server"]["signing_key_path"] == "data/signing.key"
    assert raw["database"]["path"] == "data/roomactors.db"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600

    settings = load_settings(output)
    etc = (tmp_path / "etc").resolve()
    assert settings.server.server_name == "example.org"
    assert settings.server.signing_key_path == etc / "data/signing.key"
    assert settings.database.path == etc / "data/roomactors.db"
    assert settings.http.client_bind == ("127.0.0.1:8118",)
    assert settings.registration.enabled is False
    assert len(settings.registration.shared_secret) >= 43  # token_urlsafe(32)
    # Everything else is the default.
    defaults = parse_settings({}, base_dir=etc)
    assert settings.actors == defaults.actors and settings.ratelimit == defaults.ratelimit
    assert settings.auth == defaults.auth and settings.sync == defaults.sync

    key = load_signing_key(settings.server.signing_key_path)
    assert stat.S_IMODE(settings.server.signing_key_path.stat().st_mode) == 0o600
    printed = out.getvalue()
    assert f"wrote a new signing key ed25519:{key.version} to {settings.server.signing_key_path}" in printed
    assert f"roomactors serve -c {output}" in printed


def test_generate_config_secrets_are_fresh(tmp_path: Path) -> None:
    assert generate(tmp_path, output=tmp_path / "a.toml", data=tmp_path / "a") == 0
    assert generate(tmp_path, output=tmp_path / "b.toml", data=tmp_path / "b") == 0
    a, b = load_settings(tmp_path / "a.toml"), load_settings(tmp_path / "b.toml")
    assert a.registration.shared_secret != b.registration.shared_secret


def test_generate_config_uses_absolute_paths_for_data_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(
        ["generate-config", "--server-name", "example.org", "--data-dir", "var/lib", "-o", "etc/settings.toml"],
        stdout=io.StringIO(),
    ) == 0
    raw = tomllib.loads((tmp_path / "etc/settings.toml").read_text())
    assert raw["database"]["path"] == str(tmp_path.resolve() / "var/lib/roomactors.db")
    assert raw["server"]["signing_key_path"] == str(tmp_path.resolve() / "var/lib/signing.key")
    assert (tmp_path / "var/lib/signing.key").is_file()


def test_generate_config_open_registration(tmp_path: Path) -> None:
    assert generate(tmp_path, "--open-registration") == 0
    assert load_settings(tmp_path / "etc/settings.toml").registration.enabled is True


def test_generate_config_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "etc" / "settings.toml"
    output.parent.mkdir()
    output.write_text("# mine\n")
    assert generate(tmp_path) == 1
    assert output.read_text() == "# mine\n"
    err = capsys.readouterr().err
    assert err == f"roomactors: error: {output}: settings file already exists (use --force to replace it)\n"
    assert not (tmp_path / "etc" / "data").exists()


def test_generate_config_force_replaces_the_file_but_keeps_the_key(tmp_path: Path) -> None:
    assert generate(tmp_path) == 0
    output = tmp_path / "etc" / "settings.toml"
    first = load_settings(output)
    key_before = first.server.signing_key_path.read_bytes()

    out = io.StringIO()
    assert main(
        ["generate-config", "--server-name", "other.example", "--data-dir", str(tmp_path / "etc/data"),
         "-o", str(output), "--force"],
        stdout=out,
    ) == 0
    second = load_settings(output)
    assert second.server.server_name == "other.example"
    assert second.registration.shared_secret != first.registration.shared_secret
    assert second.server.signing_key_path.read_bytes() == key_before
    assert "kept the existing signing key ed25519:" in out.getvalue()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert [p.name for p in output.parent.iterdir() if p.is_file()] == ["settings.toml"]  # no temp file left


def test_generate_config_rejects_a_malformed_existing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "etc" / "data" / "signing.key"
    key.parent.mkdir(parents=True)
    key.write_text("not a key\n")
    assert generate(tmp_path) == 1
    assert "signing.key: malformed signing key file" in capsys.readouterr().err
    assert not (tmp_path / "etc" / "settings.toml").exists()
    assert key.read_text() == "not a key\n"


def test_generate_config_rejects_a_bad_server_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(
        ["generate-config", "--server-name", "bad name", "--data-dir", str(tmp_path / "d"),
         "-o", str(tmp_path / "s.toml")],
        stdout=io.StringIO(),
    ) == 2
    assert "server_name 'bad name' is not a valid server name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_generate_config_rejects_bad_ports(tmp_path: Path, port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        generate(tmp_path, "--client-port", port)
    assert exit_info.value.code == 2
    assert "--client-port" in capsys.readouterr().err


def test_generate_config_federation_port_binds_the_federation_listener(tmp_path: Path) -> None:
    assert generate(tmp_path, "--federation-port", "8449") == 0
    settings = load_settings(tmp_path / "etc/settings.toml")
    assert settings.federation.bind == ("0.0.0.0:8449",)
    assert settings.federation.tls_certificate_path.exists()
    assert generate(tmp_path / "other") == 0
    assert load_settings(tmp_path / "other/etc/settings.toml").federation.bind == ("0.0.0.0:8448",)


@pytest.mark.parametrize(
    "value",
    ["plain", 'quo"te', "back\\slash", "tab\there", "new\nline", "del\x7f", "nul\x00", "ünïcode 🐍", ""],
)
def test_render_settings_toml_round_trips(value: str) -> None:
    values = {"s": {"text": value, "list": [value, "x"], "yes": True, "n": 3, "f": 0.5, "tiny": 1e-5, "big": 1e300}}
    text = render_settings_toml(values, header=["hello"], comments={("s", "n"): ["a number", ""]})
    assert text.startswith("# hello\n\n[s]\n")
    assert "# a number\n#\nn = 3\n" in text
    assert tomllib.loads(text) == values


# register-user --------------------------------------------------------------------

SECRET = "test-shared-secret"


class RegisterStub(http.server.BaseHTTPRequestHandler):
    """A tiny stand-in for Synapse's /_synapse/admin/v1/register (nonce + mac check)."""

    secret = SECRET
    requests: list[tuple[str, str, object]]
    nonces: set[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        if self.path != "/_synapse/admin/v1/register":
            return self._reply(404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
        nonce = f"nonce{len(self.nonces)}"
        self.nonces.add(nonce)
        self._reply(200, {"nonce": nonce})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if body["nonce"] not in self.nonces:
            return self._reply(400, {"errcode": "M_UNKNOWN", "error": "unrecognised nonce"})
        self.nonces.discard(body["nonce"])
        if not verify_registration_mac(
            self.secret, body["nonce"], body["username"], body["password"], body["admin"], body["mac"]
        ):
            return self._reply(403, {"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"})
        self._reply(
            200,
            {"user_id": f"@{body['username']}:example.org", "access_token": "syt_token", "device_id": "DEV"},
        )


@pytest.fixture
def register_stub():
    handler = type("Handler", (RegisterStub,), {"requests": [], "nonces": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def write_settings(tmp_path: Path, *, secret: str = SECRET, baseurl: str = "") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'[server]\npublic_baseurl = "{baseurl}"\n[registration]\nshared_secret = "{secret}"\n',
        encoding="utf-8",
    )
    return path


def stub_url(server: http.server.ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@pytest.mark.parametrize("admin", [False, True])
def test_register_user_registers_via_the_shared_secret_api(
    tmp_path: Path, register_stub, admin: bool
) -> None:
    server, handler = register_stub
    config = write_settings(tmp_path, baseurl=stub_url(server) + "/")
    out = io.StringIO()
    argv = ["register-user", "-c", str(config), "--user", "alice", "--password", "pässword"]
    assert main([*argv, "--admin"] if admin else argv, stdout=out) == 0
    assert out.getvalue() == "user_id: @alice:example.org\naccess_token: syt_token\n"

    (get_method, get_path, _), (post_method, post_path, body) = handler.requests
    assert (get_method, get_path) == ("GET", "/_synapse/admin/v1/register")
    assert (post_method, post_path) == ("POST", "/_synapse/admin/v1/register")
    assert body == {
        "nonce": "nonce0",
        "username": "alice",
        "password": "pässword",
        "admin": admin,
        "mac": registration_mac(SECRET, "nonce0", "alice", "pässword", admin),
    }


def test_register_user_url_overrides_the_settings(tmp_path: Path, register_stub) -> None:
    server, handler = register_stub
    config = write_settings(tmp_path, baseurl="http://127.0.0.1:9")  # nothing listens there
    assert main(
        ["register-user", "--config", str(config), "--user", "bob", "--password", "pw", "--url", stub_url(server)],
        stdout=io.StringIO(),
    ) == 0
    assert len(handler.requests) == 2


def test_register_user_reports_the_matrix_error(
    tmp_path: Path, register_stub, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = register_stub
    config = write_settings(tmp_path, secret="the-wrong-secret", baseurl=stub_url(server))
    out = io.StringIO()
    assert main(["register-user", "-c", str(config), "--user", "alice", "--password", "pw"], stdout=out) == 1
    assert out.getvalue() == ""
    assert capsys.readouterr().err == "roomactors: error: registration failed: HTTP 403 M_FORBIDDEN: HMAC incorrect\n"


def test_register_user_reports_a_non_matrix_server(
    tmp_path: Path, register_stub, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = register_stub
    config = write_settings(tmp_path, baseurl=stub_url(server) + "/not-here")
    assert main(["register-user", "-c", str(config), "--user", "a", "--password", "pw"], stdout=io.StringIO()) == 1
    assert "registration failed: HTTP 404 M_UNRECOGNIZED" in capsys.readouterr().err


def test_register_user_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_settings(tmp_path, baseurl=f"http://127.0.0.1:{port}")
    assert main(["register-user", "-c", str(config), "--user", "a", "--password", "pw"], stdout=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"roomactors: error: http://127.0.0.1:{port}/_synapse/admin/v1/register: ConnectError")
    assert err.count("\n") == 1


def test_register_user_without_a_shared_secret_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_settings(tmp_path, secret="")
    assert main(["register-user", "-c", str(config), "--user", "a", "--password", "pw"]) == 2
    assert "[registration] shared_secret is empty" in capsys.readouterr().err


def test_register_user_with_a_bad_settings_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register-user", "-c", str(tmp_path / "missing.toml"), "--user", "a", "--password", "pw"]) == 2
    assert "missing.toml: settings file not found" in capsys.readouterr().err


def test_register_user_against_a_generated_config(tmp_path: Path, register_stub) -> None:
    """generate-config's secret is what register-user signs with."""
    server, handler = register_stub
    assert generate(tmp_path) == 0
    config = tmp_path / "etc/settings.toml"
    handler.secret = load_settings(config).registration.shared_secret
    out = io.StringIO()
    assert main(
        ["register-user", "-c", str(config), "--user", "root", "--password", "pw", "--admin",
         "--url", stub_url(server)],
        stdout=out,
    ) == 0
    assert out.getvalue().startswith("user_id: @root:example.org\n")
