"""``client_route``: register a view under ``/_matrix/client/v3`` and the ``r0`` alias.

Older clients (Hydrogen, some bots) still call ``/_matrix/client/r0/...``; the
request and response shapes we serve are the v3 ones, which r0 clients accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Blueprint

__all__ = ["client_route", "CLIENT_PREFIXES"]

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


def client_route(blueprint: Blueprint, rule: str, methods: list[str], *, prefixes: tuple[str, ...] = CLIENT_PREFIXES) -> Callable[[Any], Any]:
    def decorator(fn: Any) -> Any:
        for prefix in prefixes:
            endpoint = f"{fn.__name__}:{prefix}".replace(".", "_")
            blueprint.add_url_rule(f"{prefix}{rule}", endpoint, fn, methods=methods)
        return fn

    return decorator
