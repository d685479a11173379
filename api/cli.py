"""The ``roomactors`` console script (``pyproject.toml``: ``roomactors = "api.cli:main"``).

Subcommands:

* ``serve [--config settings.toml]``: load the settings, then ``trio.run`` the
  composition root ``api.server.serve`` until SIGINT/SIGTERM.
* ``version``: print ``roomactors <version>`` from the installed distribution's
  metadata (``0+unknown`` when running from an uninstalled source tree).

``main(argv)`` returns the exit status instead of exiting, so tests can call it;
settings errors print one line to stderr and return 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version as distribution_version
from typing import TextIO

__all__ = ["main", "package_version"]

DEFAULT_CONFIG = "settings.toml"


def package_version() -> str:
    try:
        return distribution_version("roomactors")
    except PackageNotFoundError:
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomactors",
        description="roomactors: a Matrix homeserver with one trio actor per room.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the homeserver until SIGINT/SIGTERM")
    serve.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="PATH",
        help=f"settings file to read (default: {DEFAULT_CONFIG})",
    )

    commands.add_parser("version", help="print the installed version")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    out = stdout if stdout is not None else sys.stdout

    if args.command == "version":
        print(f"roomactors {package_version()}", file=out)
        return 0

    # args.command == "serve"; heavy imports stay here so `version`/`--help` are quick.
    import trio

    from api.server import serve
    from api.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        print(f"roomactors: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(serve, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
