"""Server ACLs: may this server take part in this room? (s2s "Server Access Control
Lists (ACLs)"; the ``m.room.server_acl`` event schema).

Theory of operation
-------------------
:func:`server_acl_allows` takes the content of the room's current
``m.room.server_acl`` state event (``None`` when there is none) and a requesting
server's name, and applies the schema's ordered rules:

1. no ``m.room.server_acl`` event: allow;
2. an IP literal (v4 or ``[v6]``) when ``allow_ip_literals`` is ``false``: deny
   (a missing or non-boolean ``allow_ip_literals`` means ``true``);
3. a match in ``deny``: deny;
4. a match in ``allow``: allow;
5. otherwise deny (so a missing ``allow`` denies every server).

Matching is case-insensitive glob matching (appendices "Glob-style matching":
``*`` is zero or more characters, ``?`` exactly one) against the server name
without its port ("the suspect server's port number must not be considered").
A ``deny``/``allow`` that is not a list counts as empty, and entries that are not
strings are skipped, so a malformed ACL never raises. Compiled patterns are cached
(:func:`functools.lru_cache`; patterns are immutable strings, so nothing to invalidate).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["server_acl_allows", "glob_matches", "strip_port", "is_ip_literal"]


def strip_port(server_name: str) -> str:
    """``server_name`` without ``:port`` (``[::1]:8448`` -> ``[::1]``)."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[: end + 1] if end != -1 else server_name
    return server_name.rsplit(":", 1)[0] if ":" in server_name else server_name


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 literal or a bracketed IPv6 literal (no port)."""
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str) -> bool:
    """Appendices "Glob-style matching", case-insensitively, over the whole value."""
    return _compile(pattern).fullmatch(value) is not None


def _patterns(content: Mapping[str, Any], field: str) -> list[str]:
    value = content.get(field)
    if not isinstance(value, list):
        return []  # "defaults to an empty list when not provided"
    return [p for p in value if isinstance(p, str)]


def server_acl_allows(acl_content: Mapping[str, Any] | None, server_name: str) -> bool:
    """May ``server_name`` take part in a room with this ACL content? (the rules above)"""
    # Rule 1: no m.room.server_acl event in the room state: allow.
    if acl_content is None:
        return True
    if not isinstance(acl_content, Mapping):
        acl_content = {}
    host = strip_port(server_name)
    # Rule 2: IP literals, when allow_ip_literals is present and false.
    # ("Defaults to true if missing or otherwise not a boolean.")
    if acl_content.get("allow_ip_literals") is False and is_ip_literal(host):
        return False
    # Rule 3: deny list first.
    if any(glob_matches(p, host) for p in _patterns(acl_content, "deny")):
        return False
    # Rules 4 and 5: the allow list, which defaults to empty (deny all).
    return any(glob_matches(p, host) for p in _patterns(acl_content, "allow"))
