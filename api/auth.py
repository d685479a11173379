"""Authentication at the HTTP edge: access tokens, passwords, the requester.

Theory of operation
-------------------
* **Tokens** are 32 random bytes (``secrets``), URL-safe, prefixed ``ra_`` so a
  leaked one is recognisable. The database stores only their SHA-256 digest
  (``storage.accounts``). A request's token is hashed, looked up by digest, and the
  stored digest is compared again with ``hmac.compare_digest``.
* **TokenCache** keeps recently used sessions in memory (bounded LRU), so an
  authenticated request costs no database read. Every path that revokes tokens
  (logout, logout/all, device deletion, password change, deactivation, refresh)
  calls :meth:`TokenCache.forget` with the digests it deleted, in the same request,
  after the commit — the cache's only invalidation event.
* **Refresh.** The first (uncached) use of an expiring access token revokes the
  refresh token it was refreshed from ("the old refresh token remains valid until
  the new access token or refresh token is used"; ``api.client.account.refresh``).
* **Errors** (client-server-api, "Using access tokens"): no token → 401
  ``M_MISSING_TOKEN``; unknown or revoked → 401 ``M_UNKNOWN_TOKEN``; expired (a
  refreshable session) → 401 ``M_UNKNOWN_TOKEN`` with ``soft_logout: true``.
  Tokens are read from ``Authorization: Bearer`` or the deprecated
  ``access_token`` query parameter.
* **Passwords** are hashed with argon2id in a worker thread, since hashing is
  deliberately slow. Parameters: OWASP's argon2id recommendation (19 MiB, t=2,
  p=1), about 30–60 ms here — argon2-cffi's defaults (64 MiB, t=3, p=4) took
  ~0.9 s per login on a loaded 2-core box, which a Raspberry Pi cannot afford. The
  parameters are stored in each hash, so changing them later still verifies old
  hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import sqlalchemy as sa
import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from quart import request

from api.errors import MatrixError
from storage import accounts
from storage.accounts import Session
from storage.schema import access_tokens, refresh_tokens

__all__ = [
    "Requester",
    "TokenCache",
    "hash_token",
    "new_token",
    "hash_password",
    "check_password",
    "requester",
    "access_token_from_request",
]

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str
    is_admin: bool
    token_hash: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: str = "ra_") -> str:
    return prefix + secrets.token_urlsafe(32)


async def hash_password(password: str) -> str:
    return await trio.to_thread.run_sync(_hasher.hash, password)


async def check_password(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        return False

    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await trio.to_thread.run_sync(verify)


class TokenCache:
    """Recently used sessions by token digest (see the module docstring)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, digest: str) -> Session | None:
        session = self._sessions.get(digest)
        if session is not None:
            self._sessions.move_to_end(digest)
        return session

    def put(self, session: Session) -> None:
        self._sessions[session.token_hash] = session
        self._sessions.move_to_end(session.token_hash)
        while len(self._sessions) > self._capacity:
            self._sessions.popitem(last=False)

    def forget(self, digests: list[str] | tuple[str, ...]) -> None:
        for digest in digests:
            self._sessions.pop(digest, None)

    def forget_user(self, user_id: str) -> None:
        for digest in [d for d, s in self._sessions.items() if s.user_id == user_id]:
            del self._sessions[digest]


def _retire_replaced_refresh_tokens(conn: sa.Connection, digest: str) -> None:
    """Delete the device's refresh tokens issued before this access token (see
    ``api.client.account.refresh``: new tokens are stamped later than the old one)."""
    row = conn.execute(
        sa.select(access_tokens.c.user_id, access_tokens.c.device_id, access_tokens.c.created_ts).where(
            access_tokens.c.token_hash == digest
        )
    ).first()
    if row is not None:
        conn.execute(
            sa.delete(refresh_tokens).where(
                refresh_tokens.c.user_id == row.user_id,
                refresh_tokens.c.device_id == row.device_id,
                refresh_tokens.c.created_ts < row.created_ts,
            )
        )


def access_token_from_request() -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    token = request.args.get("access_token")
    return token or None


async def requester(*, allow_deactivated: bool = False) -> Requester:
    """The authenticated user of this request, or raise the spec's 401."""
    from api.deps import deps

    d = deps()
    token = access_token_from_request()
    if token is None:
        raise MatrixError("M_MISSING_TOKEN", 401, "missing access token")
    digest = hash_token(token)
    session = d.tokens.get(digest)
    if session is None:
        session = await d.db.read(accounts.get_session, digest)
        if session is None or not hmac.compare_digest(session.token_hash, digest):
            raise MatrixError("M_UNKNOWN_TOKEN", 401, "unknown or revoked access token", extra={"soft_logout": False})
        if session.expires_ts is not None:
            # First use of a refreshed access token: the refresh token it replaced dies now.
            await d.db.write(_retire_replaced_refresh_tokens, digest)
        d.tokens.put(session)
    if session.expires_ts is not None and d.clock.time_ms() >= session.expires_ts:
        raise MatrixError("M_UNKNOWN_TOKEN", 401, "access token expired; refresh it", extra={"soft_logout": True})
    if session.deactivated and not allow_deactivated:
        raise MatrixError("M_USER_DEACTIVATED", 403, "this account has been deactivated")
    return Requester(session.user_id, session.device_id, session.is_admin, session.token_hash)
