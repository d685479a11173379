"""Shared-secret registration MAC, compatible with Synapse's admin register API.

Theory of operation
-------------------
``POST /_synapse/admin/v1/register`` creates an account without interactive auth.
The client first fetches a one-time ``nonce`` (``GET`` on the same URL), then posts
the nonce, username, password, admin flag and ``mac``: the hex HMAC-SHA1, keyed with
the UTF-8 ``[registration] shared_secret``, of::

    nonce \\x00 username \\x00 password \\x00 ("admin" | "notadmin") [\\x00 user_type]

(``docs/admin_api/register_api.md`` and ``synapse/rest/admin/users.py`` in Synapse).
Both ends use this module: the client in ``roomactors register-user`` computes the
MAC with ``registration_mac``; the server recomputes it and compares in constant
time with ``verify_registration_mac``. The secret never travels; each nonce is
single-use on the server, so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["registration_mac", "verify_registration_mac"]


def registration_mac(
    secret: str,
    nonce: str,
    username: str,
    password: str,
    admin: bool,
    *,
    user_type: str | None = None,
) -> str:
    """The hex HMAC-SHA1 that Synapse's shared-secret registration expects."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


def verify_registration_mac(
    secret: str,
    nonce: str,
    username: str,
    password: str,
    admin: bool,
    mac: str,
    *,
    user_type: str | None = None,
) -> bool:
    """Whether ``mac`` is right for these fields, compared in constant time.

    A ``mac`` that is not ASCII is simply wrong (never an exception).
    """
    want = registration_mac(secret, nonce, username, password, admin, user_type=user_type)
    try:
        got = mac.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(want.encode("ascii"), got)
