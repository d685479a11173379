"""The ``roomactors`` console script (``pyproject.toml``: ``roomactors = "api.cli:main"``).

Subcommands:

* ``serve [-c/--config settings.toml]``: load the settings, then ``trio.run`` the
  composition root ``api.server.serve`` until SIGINT/SIGTERM.
* ``generate-config --server-name NAME --data-dir DIR [--client-port P]
  [--federation-port Q] [--output settings.toml] [--open-registration] [--force]``:
  write a complete settings file for a new deployment and its signing key (below).
* ``register-user [-c settings.toml] --user LOCALPART --password PW [--admin]
  [--url BASE]``: create an account through the Synapse-compatible shared-secret
  admin API (below).
* ``rotate-key [-c settings.toml]``: retire the signing key and write a new one
  (``api.signing_key.rotate_signing_key``); the old verify key is kept in
  ``<signing_key_path>.old`` and published under ``old_verify_keys``. Restart the
  server afterwards.
* ``version``: print ``roomactors <version>`` from the installed distribution's
  metadata (``0+unknown`` when running from an uninstalled source tree).

``main(argv)`` returns the exit status instead of exiting, so tests can call it.
Exit statuses: 0 success; 1 the operation failed (a file exists or cannot be
written, the server refused or could not be reached); 2 bad input (usage errors,
an invalid settings file or value, no shared secret configured). Errors print one
line, ``roomactors: error: ...``, to stderr.

generate-config
---------------
Every key of every section is written (``DEFAULTS`` plus the choices below), so
the file shows everything that can be set. The database (``roomactors.db``) and
signing key (``signing.key``) go under ``--data-dir``; their paths are written
relative to the settings file when the data directory is inside the settings
file's directory, and absolute otherwise, so a settings file and its data can move
together. ``[registration] shared_secret`` is a fresh ``secrets.token_urlsafe(32)``,
and the file is created with mode 0600 because of it. The values are validated
with ``parse_settings`` before anything is written.

An existing settings file is replaced only with ``--force`` (atomically, by
rename). An existing signing key is always kept, never replaced, even with
``--force``: a new key would change the server's identity to every remote server.
The federation listener (HTTPS) binds ``0.0.0.0:<--federation-port>`` (default 8448,
the port remote servers fall back to in server discovery), and a self-signed
certificate pair is written to the data directory unless one exists; replace it
with a CA-signed one (or set ``plain_bind`` behind a TLS-terminating proxy) for open
federation.

register-user
-------------
``GET {url}/_synapse/admin/v1/register`` returns a one-time nonce; ``POST`` to the
same URL sends the nonce, username, password, admin flag and the HMAC from
``api.shared_secret.registration_mac``, keyed with ``[registration]
shared_secret`` from the settings file. ``--url`` defaults to
``api.settings.client_base_url``. On success it prints the new ``user_id`` and
``access_token``.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version as distribution_version
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main", "package_version", "render_settings_toml"]

DEFAULT_CONFIG = "settings.toml"
DEFAULT_CLIENT_PORT = 8008
REGISTER_PATH = "/_synapse/admin/v1/register"
HTTP_TIMEOUT_S = 30.0


def package_version() -> str:
    try:
        return distribution_version("roomactors")
    except PackageNotFoundError:
        return "0+unknown"


def _port(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {port}")
    return port


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help=f"settings file to read (default: {DEFAULT_CONFIG})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomactors",
        description="roomactors: a Matrix homeserver with one trio actor per room.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the homeserver until SIGINT/SIGTERM")
    _add_config_option(serve)

    generate = commands.add_parser(
        "generate-config",
        help="write a settings file and signing key for a new server",
        description="Write a complete settings file (with a fresh registration shared secret) "
        "and, unless one exists, a new signing key.",
    )
    generate.add_argument(
        "--server-name",
        required=True,
        metavar="NAME",
        help="the server name in user IDs (@alice:NAME); cannot be changed later",
    )
    generate.add_argument(
        "--data-dir",
        required=True,
        metavar="DIR",
        help="directory for the database and signing key (created if missing)",
    )
    generate.add_argument(
        "--client-port",
        type=_port,
        default=DEFAULT_CLIENT_PORT,
        metavar="P",
        help=f"client API port, bound on 127.0.0.1 (default: {DEFAULT_CLIENT_PORT})",
    )
    generate.add_argument(
        "--federation-port",
        type=_port,
        metavar="Q",
        help="federation HTTPS port, bound on all interfaces (default 8448)",
    )
    generate.add_argument(
        "-o",
        "--output",
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help=f"settings file to write (default: {DEFAULT_CONFIG})",
    )
    generate.add_argument(
        "--open-registration",
        action="store_true",
        help="let anyone register an account ([registration] enabled = true)",
    )
    generate.add_argument(
        "--force",
        action="store_true",
        help="replace an existing settings file (an existing signing key is always kept)",
    )

    register = commands.add_parser(
        "register-user",
        help="create an account with the registration shared secret",
        description="Create an account through the shared-secret admin API "
        f"({REGISTER_PATH}), authenticated with [registration] shared_secret.",
    )
    _add_config_option(register)
    register.add_argument("--user", required=True, metavar="LOCALPART", help="the new user's localpart")
    register.add_argument("--password", required=True, metavar="PW", help="the new user's password")
    register.add_argument("--admin", action="store_true", help="make the user a server admin")
    register.add_argument(
        "--url",
        metavar="BASE",
        help="client API base URL (default: [server] public_baseurl, else the first client_bind)",
    )

    rotate = commands.add_parser(
        "rotate-key",
        help="retire the signing key and write a new one (restart the server afterwards)",
        description="Write a new signing key with a new key ID; the old verify key is kept in "
        "<signing_key_path>.old and published under old_verify_keys.",
    )
    _add_config_option(rotate)

    commands.add_parser("version", help="print the installed version")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = stdout if stdout is not None else sys.stdout

    if args.command == "version":
        print(f"roomactors {package_version()}", file=out)
        return 0
    if args.command == "generate-config":
        return _generate_config(args, out)
    if args.command == "register-user":
        return _register_user(args, out)
    if args.command == "rotate-key":
        return _rotate_key(args, out)

    # args.command == "serve"; heavy imports stay here so `version`/`--help` are quick.
    import trio

    from api.server import serve
    from api.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        return _error(str(e), status=2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(serve, settings)
    return 0


def _error(message: str, *, status: int) -> int:
    print(f"roomactors: error: {message}", file=sys.stderr)
    return status


def _note(message: str) -> None:
    print(f"roomactors: note: {message}", file=sys.stderr)


# generate-config ------------------------------------------------------------------


def _generate_config(args: argparse.Namespace, out: TextIO) -> int:
    from api.settings import DEFAULTS, SettingsError, parse_settings
    from api.signing_key import SigningKeyError, generate_signing_key, load_signing_key, write_signing_key

    output = Path(args.output)
    if output.exists() and not args.force:
        return _error(f"{output}: settings file already exists (use --force to replace it)", status=1)
    config_dir = output.resolve().parent
    data_dir = Path(args.data_dir).resolve()

    def path_value(path: Path) -> str:
        try:
            return path.relative_to(config_dir).as_posix()
        except ValueError:
            return str(path)

    values = {section: dict(keys) for section, keys in DEFAULTS.items()}
    values["server"]["server_name"] = args.server_name
    values["server"]["signing_key_path"] = path_value(data_dir / "signing.key")
    values["http"]["client_bind"] = [f"127.0.0.1:{args.client_port}"]
    values["database"]["path"] = path_value(data_dir / "roomactors.db")
    values["federation"]["bind"] = [f"0.0.0.0:{args.federation_port or 8448}"]
    values["federation"]["tls_certificate_path"] = path_value(data_dir / "federation.crt")
    values["federation"]["tls_private_key_path"] = path_value(data_dir / "federation.key")
    values["registration"]["enabled"] = args.open_registration
    values["registration"]["shared_secret"] = secrets.token_urlsafe(32)
    try:
        settings = parse_settings(values, base_dir=config_dir)
    except SettingsError as e:
        return _error(str(e), status=2)

    comments = dict(_GENERATED_COMMENTS)
    header = (
        f"roomactors settings for {args.server_name}, written by `roomactors generate-config`.",
        "Every key is listed; see settings.toml in the roomactors repository for what each",
        "one means. Keep this file private: it holds the registration shared secret.",
        "Relative paths are resolved against the directory holding this file.",
    )
    text = render_settings_toml(values, header=header, comments=comments)

    key_path = settings.server.signing_key_path
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        config_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _error(f"cannot create directory {e.filename}: {e.strerror}", status=1)
    try:
        if key_path.exists():
            key = load_signing_key(key_path)
            key_message = f"kept the existing signing key ed25519:{key.version} in {key_path}"
        else:
            key = generate_signing_key()
            write_signing_key(key_path, key)
            key_message = f"wrote a new signing key ed25519:{key.version} to {key_path}"
    except SigningKeyError as e:
        return _error(str(e), status=1)
    from api.tls import TlsFilesError, ensure_tls_files

    fed = settings.federation
    try:
        # Self-signed, for a first start; existing files (an operator's CA-signed pair) are kept.
        tls_written = ensure_tls_files(fed.tls_certificate_path, fed.tls_private_key_path, args.server_name)
    except TlsFilesError as e:
        return _error(str(e), status=1)
    try:
        _write_private(output, text, replace=args.force)
    except FileExistsError:
        return _error(f"{output}: settings file already exists (use --force to replace it)", status=1)
    except OSError as e:
        return _error(f"{output}: cannot write settings file: {e.strerror}", status=1)

    print(key_message, file=out)
    if tls_written:
        print(
            f"wrote a self-signed federation TLS certificate to {fed.tls_certificate_path} "
            "(replace it with a CA-signed one for open federation)",
            file=out,
        )
    print(f"wrote {output} (mode 0600: it holds the registration shared secret)", file=out)
    print(f"start the server with: roomactors serve -c {output}", file=out)
    print(f"create an admin with:  roomactors register-user -c {output} --user NAME --password PW --admin", file=out)
    return 0


#: Comments above keys in generated files (the repository's settings.toml documents all).
_GENERATED_COMMENTS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("server", "server_name"): ("The domain part of every user ID; it cannot be changed later.",),
    ("server", "public_baseurl"): (
        "The URL clients use, e.g. \"https://matrix.example.org\" behind a TLS reverse",
        "proxy; \"\" means http:// plus the first client_bind address.",
    ),
    ("http", "client_bind"): ("Plain HTTP: put a TLS-terminating reverse proxy in front.",),
    ("registration", "enabled"): ("Open registration: anyone can create an account.",),
    ("registration", "shared_secret"): (
        "For `roomactors register-user` (admin registration); \"\" disables it.",
    ),
}


def render_settings_toml(
    values: Mapping[str, Mapping[str, Any]],
    *,
    header: Sequence[str] = (),
    comments: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> str:
    """TOML text for ``values`` (sections of str/bool/int/float/list-of-str keys).

    ``header`` lines open the file and ``comments[(section, key)]`` lines go above
    their key, each as a ``#`` comment. ``tomllib.loads`` of the result gives back
    ``values``.
    """
    comments = comments or {}
    lines = [f"# {line}".rstrip() for line in header]
    for section, keys in values.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in keys.items():
            lines.extend(f"# {line}".rstrip() for line in comments.get((section, key), ()))
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # "0.5", "1e-05", "inf", "nan": all valid TOML floats
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _toml_string(value: str) -> str:
    escaped = []
    for char in value:
        if char in ('"', "\\"):
            escaped.append("\\" + char)
        elif char < " " or char == "\x7f":
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _write_private(path: Path, text: str, *, replace: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600: a new file, or atomically replaced."""
    data = text.encode("utf-8")
    if not replace:
        from api.files import write_new_file

        write_new_file(path, data, 0o600)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# rotate-key -----------------------------------------------------------------------


def _rotate_key(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from api.settings import SettingsError, load_settings
    from api.signing_key import SigningKeyError, old_keys_path, rotate_signing_key

    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        return _error(str(e), status=2)
    path = settings.server.signing_key_path
    try:
        new, retired = rotate_signing_key(path, now_ms=int(time.time() * 1000))
    except SigningKeyError as e:
        return _error(str(e), status=1)
    print(f"retired {retired.key_id} (kept in {old_keys_path(path)})", file=out)
    print(f"wrote a new signing key ed25519:{new.version} to {path}", file=out)
    print("restart the server to start signing with it", file=out)
    return 0


# register-user --------------------------------------------------------------------


def _register_user(args: argparse.Namespace, out: TextIO) -> int:
    import httpx

    from api.settings import SettingsError, client_base_url, load_settings
    from api.shared_secret import registration_mac

    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        return _error(str(e), status=2)
    secret = settings.registration.shared_secret
    if not secret:
        return _error(
            f"{args.config}: [registration] shared_secret is empty, so shared-secret registration "
            "is disabled; set it (and restart the server) to use register-user",
            status=2,
        )
    url = (args.url or client_base_url(settings)).rstrip("/") + REGISTER_PATH

    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            response = client.get(url)
            if response.status_code != 200:
                return _registration_failed(response)
            nonce = response.json()["nonce"]
            if not isinstance(nonce, str):
                raise TypeError("nonce is not a string")
            response = client.post(
                url,
                json={
                    "nonce": nonce,
                    "username": args.user,
                    "password": args.password,
                    "admin": args.admin,
                    "mac": registration_mac(secret, nonce, args.user, args.password, args.admin),
                },
            )
            if response.status_code != 200:
                return _registration_failed(response)
            body = response.json()
            user_id, access_token = body["user_id"], body["access_token"]
    except httpx.HTTPError as e:
        return _error(f"{url}: {type(e).__name__}: {e}", status=1)
    except (ValueError, KeyError, TypeError):
        return _error(f"{url}: unexpected response (not a Matrix shared-secret registration API?)", status=1)

    print(f"user_id: {user_id}", file=out)
    print(f"access_token: {access_token}", file=out)
    return 0


def _registration_failed(response: Any) -> int:
    detail = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("errcode" in body or "error" in body):
        detail += f" {body.get('errcode', 'M_UNKNOWN')}"
        if body.get("error"):
            detail += f": {body['error']}"
    elif response.reason_phrase:
        detail += f" {response.reason_phrase}"
    return _error(f"registration failed: {detail}", status=1)


if __name__ == "__main__":
    sys.exit(main())
