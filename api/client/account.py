"""Accounts and sessions: register, login, logout, whoami, refresh, password,
deactivate, devices, and Synapse-compatible shared-secret admin registration.

Theory of operation
-------------------
Every endpoint validates its body first (``api.body``), runs UIA where the spec
asks for it (``api.client.uia``), and then makes its change in ONE ``db.write``
(whole-transaction functions from ``storage.accounts``, plus the few token
statements below), so a 200 means the account, device and tokens are durable
together and a failure leaves nothing half written. Token digests that a write
revoked are dropped from the ``TokenCache`` right after the commit.

Registration (client-server-api, "Account registration"):

* ``kind=guest`` is refused (``M_GUEST_ACCESS_FORBIDDEN``): no guest accounts.
* ``[registration] enabled`` opens ``m.login.dummy``; ``require_token`` asks for
  ``m.login.registration_token`` instead (tokens in ``registration_tokens``). The
  stage only checks the token; the use is counted in the transaction that creates
  the account, so a registration that fails (say, the name was taken meanwhile)
  spends nothing. With neither, registration answers 403 ``M_FORBIDDEN``.
* ``/_synapse/admin/v1/register`` (GET nonce, POST with an HMAC-SHA1 ``mac`` over
  ``nonce NUL username NUL password NUL admin|notadmin [NUL user_type]`` keyed by
  ``[registration] shared_secret``, checked by ``api.shared_secret``; each nonce
  is single-use, also when the MAC is wrong) works whatever ``enabled`` says — the
  tool path Synapse's ``register_new_matrix_user`` and test suites use. Its
  ``displayname`` becomes the profile's display name.

Sessions: logging in with an existing ``device_id`` replaces that device's tokens
and keeps the device. ``/refresh`` follows "Refreshing access tokens": the old
refresh token stays valid until the new access or refresh token is used (see
``refresh``). The UIA ``m.login.password`` stage (password change, deactivation,
device deletion) is rate-limited like ``/login``. ``PUT /devices/{id}`` without
``display_name`` leaves the name unchanged.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from quart import Blueprint, request

from api.auth import Requester, check_password, hash_password, hash_token, new_token, requester
from api.body import get_bool, get_str, json_body
from api.deps import Deps, deps
from api.errors import MatrixError, not_found
from api.responses import json_response
from api.routes import client_route
from api.shared_secret import verify_registration_mac
from roomactors.protocol.ids import MAX_ID_BYTES
from storage import accounts
from storage.schema import access_tokens, refresh_tokens, registration_tokens

__all__ = ["blueprint", "create_session", "register_user", "password_uia"]

blueprint = Blueprint("account", __name__)

_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+\Z")
_DEVICE_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NONCE_LIFETIME_S = 60.0


def _route(rule: str, methods: list[str]):
    return client_route(blueprint, rule, methods)


def _new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ID_CHARS) for _ in range(10))


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _validate_localpart(d: Deps, localpart: str) -> str:
    if not localpart or not _LOCALPART.match(localpart):
        raise MatrixError(
            "M_INVALID_USERNAME", 400, "user names may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'"
        )
    user_id = f"@{localpart}:{d.server_name}"
    if len(user_id.encode()) > MAX_ID_BYTES:
        raise MatrixError("M_INVALID_USERNAME", 400, f"user IDs are at most {MAX_ID_BYTES} bytes")
    return user_id


def _check_password_value(password: Any) -> str:
    if not isinstance(password, str) or not password:
        raise MatrixError("M_BAD_JSON", 400, "'password' must be a non-empty string")
    if len(password) > 512:
        raise MatrixError("M_BAD_JSON", 400, "'password' is too long")
    return password


def _revoke_device_tokens(
    conn: sa.Connection, user_id: str, device_id: str, *, keep_refresh: str | None = None
) -> list[str]:
    """Delete a device's access and refresh tokens (but the refresh token with digest
    ``keep_refresh``), keeping the device; returns the access-token digests removed
    (for the token cache)."""
    where = (access_tokens.c.user_id == user_id, access_tokens.c.device_id == device_id)
    revoked = list(conn.execute(sa.select(access_tokens.c.token_hash).where(*where)).scalars())
    conn.execute(sa.delete(access_tokens).where(*where))
    rwhere = [refresh_tokens.c.user_id == user_id, refresh_tokens.c.device_id == device_id]
    if keep_refresh is not None:
        rwhere.append(refresh_tokens.c.token_hash != keep_refresh)
    conn.execute(sa.delete(refresh_tokens).where(*rwhere))
    return revoked


async def create_session(
    d: Deps,
    user_id: str,
    *,
    device_id: str | None,
    display_name: str | None,
    refresh: bool,
    new_user: tuple[str | None, bool, str | None] | None = None,
    on_create: Callable[[sa.Connection], None] | None = None,
) -> dict[str, Any]:
    """Create (or reuse) the device and a fresh token pair in ONE transaction.

    With ``new_user=(password_hash, is_admin, profile_name)`` the account and its
    profile are created in the same transaction (registration), and then
    ``on_create(conn)`` runs in it too.
    """
    now = d.clock.time_ms()
    device_id = device_id or _new_device_id()
    access = new_token()
    refresh_token = new_token("rar_") if refresh else None
    lifetime_ms = int(d.settings.auth.refresh_access_token_lifetime_s * 1000) if refresh else None
    if not refresh and d.settings.auth.access_token_lifetime_s:
        lifetime_ms = int(d.settings.auth.access_token_lifetime_s * 1000)
    expires_ts = now + lifetime_ms if lifetime_ms else None
    ip = _client_ip()

    def write(conn: sa.Connection) -> list[str]:
        if new_user is not None:
            accounts.create_user(conn, user_id, new_user[0], created_ts=now, is_admin=new_user[1])
            accounts.set_profile(conn, user_id, displayname=new_user[2] or user_id[1:].split(":", 1)[0])
            if on_create is not None:
                on_create(conn)
        # Logging in again with an existing device_id replaces its old tokens (the
        # device itself, with its display name, stays).
        revoked = _revoke_device_tokens(conn, user_id, device_id) if not new_user else []
        accounts.upsert_device(conn, user_id, device_id, display_name=display_name, ts=now, ip=ip)
        accounts.add_access_token(conn, hash_token(access), user_id, device_id, created_ts=now, expires_ts=expires_ts)
        if refresh_token is not None:
            accounts.add_refresh_token(conn, hash_token(refresh_token), user_id, device_id, created_ts=now)
        return revoked

    try:
        revoked = await d.db.write(write)
    except accounts.UserExistsError:
        raise MatrixError("M_USER_IN_USE", 400, f"{user_id} is already taken") from None
    d.tokens.forget(revoked)
    d.device_lists.after_local_change(user_id)  # a new device: room-mates' device_lists.changed
    body: dict[str, Any] = {"user_id": user_id, "access_token": access, "device_id": device_id}
    if lifetime_ms:
        body["expires_in_ms"] = lifetime_ms
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


async def register_user(
    d: Deps, localpart: str, password: str | None, *, admin: bool = False, device_id: str | None = None,
    display_name: str | None = None, refresh: bool = False, inhibit_login: bool = False,
    profile_name: str | None = None, on_create: Callable[[sa.Connection], None] | None = None,
) -> dict[str, Any]:
    """Create an account (and, unless ``inhibit_login``, a session). Used by
    /register and the admin API. ``display_name`` names the device;
    ``profile_name`` is the profile's display name (default: the localpart);
    ``on_create(conn)`` runs in the creating transaction (and may refuse by raising)."""
    user_id = _validate_localpart(d, localpart)
    password_hash = await hash_password(password) if password else None
    if inhibit_login:
        now = d.clock.time_ms()

        def write(conn: sa.Connection) -> None:
            accounts.create_user(conn, user_id, password_hash, created_ts=now, is_admin=admin)
            accounts.set_profile(conn, user_id, displayname=profile_name or localpart)
            if on_create is not None:
                on_create(conn)

        try:
            await d.db.write(write)
        except accounts.UserExistsError:
            raise MatrixError("M_USER_IN_USE", 400, f"{user_id} is already taken") from None
        return {"user_id": user_id}
    return await create_session(
        d, user_id, device_id=device_id, display_name=display_name, refresh=refresh,
        new_user=(password_hash, admin, profile_name), on_create=on_create,
    )


# ------------------------------------------------------------------ registration


def _registration_flows(d: Deps) -> list[list[str]]:
    reg = d.settings.registration
    if reg.require_token:
        return [["m.login.registration_token"]]
    if reg.enabled:
        return [["m.login.dummy"]]
    return []


def _token_usable(conn: sa.Connection, token: str, now: int) -> bool:
    row = conn.execute(sa.select(registration_tokens).where(registration_tokens.c.token == token)).first()
    return (
        row is not None
        and (row.expiry_time is None or row.expiry_time > now)
        and (row.uses_allowed is None or row.completed + row.pending < row.uses_allowed)
    )


def _spend_registration_token(conn: sa.Connection, token: str, now: int) -> None:
    """Count one completed use; runs in the account-creation transaction, so a
    registration that fails (name taken meanwhile) never spends a use."""
    if not _token_usable(conn, token, now):
        raise MatrixError("M_FORBIDDEN", 401, "invalid or used-up registration token")
    conn.execute(
        sa.update(registration_tokens)
        .where(registration_tokens.c.token == token)
        .values(completed=registration_tokens.c.completed + 1)
    )


async def _check_registration_token(d: Deps, auth: dict[str, Any]) -> str:
    token = auth.get("token")
    if not isinstance(token, str) or not token:
        raise MatrixError("M_FORBIDDEN", 401, "missing registration token")
    if not await d.db.read(_token_usable, token, d.clock.time_ms()):
        raise MatrixError("M_FORBIDDEN", 401, "invalid or used-up registration token")
    return token


@_route("/register", ["POST"])
async def register():
    d = deps()
    d.ratelimiter.check("register", _client_ip())
    kind = request.args.get("kind", "user")
    if kind == "guest":
        raise MatrixError("M_GUEST_ACCESS_FORBIDDEN", 403, "guest access is not enabled on this server")
    if kind != "user":
        raise MatrixError("M_INVALID_PARAM", 400, "kind must be 'user' or 'guest'")
    body = await json_body()
    flows = _registration_flows(d)
    if not flows:
        raise MatrixError("M_FORBIDDEN", 403, "registration is disabled on this server")
    username = get_str(body, "username", None)
    password = body.get("password")
    if password is not None:
        _check_password_value(password)
    device_id = get_str(body, "device_id", None)
    display_name = get_str(body, "initial_device_display_name", None)
    inhibit_login = get_bool(body, "inhibit_login", False)
    refresh = get_bool(body, "refresh_token", False)
    localpart = username.lower() if username is not None else None
    if localpart is not None:
        user_id = _validate_localpart(d, localpart)
        if await d.db.read(accounts.user_exists, user_id):
            raise MatrixError("M_USER_IN_USE", 400, f"{user_id} is already taken")

    async def dummy(auth: dict[str, Any]) -> None:
        return None

    spent: list[str] = []

    async def token(auth: dict[str, Any]) -> None:
        spent.append(await _check_registration_token(d, auth))

    await d.uia.authenticate(
        body,
        binding=("register", ""),
        flows=flows,
        checkers={"m.login.dummy": dummy, "m.login.registration_token": token},
    )
    on_create: Callable[[sa.Connection], None] | None = None
    if d.settings.registration.require_token:
        # The token stage is the flow's only stage, so it completed in this request.
        if not spent:
            raise MatrixError("M_FORBIDDEN", 401, "missing registration token")
        now = d.clock.time_ms()

        def spend(conn: sa.Connection) -> None:
            _spend_registration_token(conn, spent[-1], now)

        on_create = spend

    if localpart is None:
        localpart = secrets.token_hex(6)
    result = await register_user(
        d, localpart, password, device_id=device_id, display_name=display_name, refresh=refresh,
        inhibit_login=inhibit_login, on_create=on_create,
    )
    return json_response(result)


@_route("/register/available", ["GET"])
async def register_available():
    d = deps()
    d.ratelimiter.check("register", _client_ip())
    username = request.args.get("username")
    if not username:
        raise MatrixError("M_MISSING_PARAM", 400, "missing 'username'")
    user_id = _validate_localpart(d, username)
    if await d.db.read(accounts.user_exists, user_id):
        raise MatrixError("M_USER_IN_USE", 400, f"{user_id} is already taken")
    return json_response({"available": True})


@_route("/register/m.login.registration_token/validity", ["GET"])
async def registration_token_validity():
    d = deps()
    d.ratelimiter.check("register", _client_ip())
    if not d.settings.registration.require_token:
        raise MatrixError("M_FORBIDDEN", 403, "registration tokens are not used on this server")
    token = request.args.get("token")
    if not token:
        raise MatrixError("M_MISSING_PARAM", 400, "missing 'token'")
    now = d.clock.time_ms()

    def valid(conn: sa.Connection) -> bool:
        row = conn.execute(sa.select(registration_tokens).where(registration_tokens.c.token == token)).first()
        return (
            row is not None
            and (row.expiry_time is None or row.expiry_time > now)
            and (row.uses_allowed is None or row.completed + row.pending < row.uses_allowed)
        )

    return json_response({"valid": await d.db.read(valid)})


@blueprint.route("/_synapse/admin/v1/register", methods=["GET"])
async def admin_register_nonce():
    d = deps()
    if not d.settings.registration.shared_secret:
        raise MatrixError("M_FORBIDDEN", 400, "shared-secret registration is not enabled")
    now = d.clock.time_ms() / 1000
    for n in [n for n, t in d.admin_nonces.items() if now - t > _NONCE_LIFETIME_S]:
        del d.admin_nonces[n]
    nonce = secrets.token_hex(32)
    d.admin_nonces[nonce] = now
    return json_response({"nonce": nonce})


@blueprint.route("/_synapse/admin/v1/register", methods=["POST"])
async def admin_register():
    d = deps()
    secret = d.settings.registration.shared_secret
    if not secret:
        raise MatrixError("M_FORBIDDEN", 400, "shared-secret registration is not enabled")
    body = await json_body()
    nonce = get_str(body, "nonce")
    username = get_str(body, "username")
    password = _check_password_value(body.get("password"))
    admin = get_bool(body, "admin", False)
    mac = get_str(body, "mac")
    displayname = get_str(body, "displayname", None)
    user_type = get_str(body, "user_type", None)
    if d.admin_nonces.pop(nonce, None) is None:
        raise MatrixError("M_UNKNOWN", 400, "unrecognised nonce")
    if not verify_registration_mac(secret, nonce, username, password, admin, mac, user_type=user_type):
        raise MatrixError("M_FORBIDDEN", 403, "HMAC incorrect")
    result = await register_user(d, username.lower(), password, admin=admin, profile_name=displayname)
    return json_response(result)


# ------------------------------------------------------------------------- login

_LOGIN_FLOWS = {"flows": [{"type": "m.login.password"}]}


@_route("/login", ["GET"])
async def login_flows():
    return json_response(_LOGIN_FLOWS)


def _user_from_identifier(d: Deps, body: dict[str, Any]) -> str:
    identifier = body.get("identifier")
    if identifier is None:
        user = body.get("user")  # deprecated top-level form
        if not isinstance(user, str):
            raise MatrixError("M_BAD_JSON", 400, "missing 'identifier'")
        identifier = {"type": "m.id.user", "user": user}
    if not isinstance(identifier, dict):
        raise MatrixError("M_BAD_JSON", 400, "'identifier' must be an object")
    if identifier.get("type") != "m.id.user":
        raise MatrixError("M_UNKNOWN", 400, "only m.id.user identifiers are supported")
    user = identifier.get("user")
    if not isinstance(user, str) or not user:
        raise MatrixError("M_BAD_JSON", 400, "'identifier.user' must be a string")
    if user.startswith("@"):
        return user if ":" in user else f"{user}:{d.server_name}"
    return f"@{user.lower()}:{d.server_name}"


@_route("/login", ["POST"])
async def login():
    d = deps()
    d.ratelimiter.check("login", _client_ip())
    body = await json_body()
    kind = body.get("type")
    if kind != "m.login.password":
        raise MatrixError("M_UNKNOWN", 400, f"unsupported login type {kind!r}")
    user_id = _user_from_identifier(d, body)
    password = _check_password_value(body.get("password"))
    user = await d.db.read(accounts.get_user, user_id)
    ok = user is not None and not user.deactivated and await check_password(user.password_hash, password)
    if not ok:
        if user is not None and user.deactivated:
            raise MatrixError("M_USER_DEACTIVATED", 403, "this account has been deactivated")
        raise MatrixError("M_FORBIDDEN", 403, "invalid user name or password")
    result = await create_session(
        d,
        user_id,
        device_id=get_str(body, "device_id", None),
        display_name=get_str(body, "initial_device_display_name", None),
        refresh=get_bool(body, "refresh_token", False),
    )
    result["home_server"] = d.server_name
    return json_response(result)


@_route("/refresh", ["POST"])
async def refresh():
    """client-server "Refreshing access tokens": new access and refresh tokens for
    the refresh token's device. The old access token dies at once; the old refresh
    token "remains valid until the new access token or refresh token is used", so a
    client that lost this answer can repeat the refresh. Repeating it revokes the
    tokens of the lost answer; the first use of the new access token (``api.auth``)
    or refresh token (here) revokes the old refresh token. New tokens are stamped
    strictly later than the refresh token they come from, which is what tells them
    apart."""
    d = deps()
    body = await json_body()
    digest = hash_token(get_str(body, "refresh_token"))
    now = d.clock.time_ms()
    access = new_token()
    refresh_token = new_token("rar_")
    lifetime_ms = int(d.settings.auth.refresh_access_token_lifetime_s * 1000)

    def write(conn: sa.Connection) -> list[str] | None:
        row = conn.execute(sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == digest)).first()
        if row is None:
            return None
        issued = max(now, row.created_ts + 1)
        revoked = _revoke_device_tokens(conn, row.user_id, row.device_id, keep_refresh=digest)
        accounts.add_access_token(conn, hash_token(access), row.user_id, row.device_id, created_ts=issued,
                                  expires_ts=now + lifetime_ms)
        accounts.add_refresh_token(conn, hash_token(refresh_token), row.user_id, row.device_id, created_ts=issued)
        return revoked

    revoked = await d.db.write(write)
    if revoked is None:
        raise MatrixError("M_UNKNOWN_TOKEN", 401, "unknown refresh token", extra={"soft_logout": True})
    d.tokens.forget(revoked)
    return json_response({"access_token": access, "refresh_token": refresh_token, "expires_in_ms": lifetime_ms})


@_route("/logout", ["POST"])
async def logout():
    d = deps()
    who = await requester(allow_deactivated=True)
    revoked = await d.db.write(accounts.delete_devices, who.user_id, [who.device_id])
    d.tokens.forget([*revoked, who.token_hash])
    d.device_lists.after_local_change(who.user_id)
    return json_response({})


@_route("/logout/all", ["POST"])
async def logout_all():
    d = deps()
    who = await requester(allow_deactivated=True)
    revoked = await d.db.write(accounts.delete_user_tokens, who.user_id)
    d.tokens.forget([*revoked, who.token_hash])
    d.device_lists.after_local_change(who.user_id)
    d.tokens.forget_user(who.user_id)
    return json_response({})


@_route("/account/whoami", ["GET"])
async def whoami():
    who = await requester()
    return json_response({"user_id": who.user_id, "device_id": who.device_id, "is_guest": False})


# ----------------------------------------------------- password, deactivate (UIA)


async def password_uia(d: Deps, who: Requester, body: dict[str, Any], purpose: str) -> None:
    """User-interactive authentication with the user's password (``m.login.password``)
    for ``purpose`` (an endpoint, so a session cannot be replayed on another)."""

    async def password_stage(auth: dict[str, Any]) -> None:
        # Guessing passwords here is rate-limited like /login.
        d.ratelimiter.check("login", _client_ip())
        claimed = _user_from_identifier(d, auth) if ("identifier" in auth or "user" in auth) else who.user_id
        password = auth.get("password")
        if claimed != who.user_id or not isinstance(password, str):
            raise MatrixError("M_FORBIDDEN", 401, "invalid password")
        user = await d.db.read(accounts.get_user, who.user_id)
        if user is None or not await check_password(user.password_hash, password):
            raise MatrixError("M_FORBIDDEN", 401, "invalid password")

    await d.uia.authenticate(
        body,
        binding=(purpose, who.user_id),
        flows=[["m.login.password"]],
        checkers={"m.login.password": password_stage},
    )


@_route("/account/password", ["POST"])
async def change_password():
    d = deps()
    who = await requester()
    body = await json_body()
    new_password = _check_password_value(body.get("new_password"))
    logout_devices = get_bool(body, "logout_devices", True)
    await password_uia(d, who, body, "password")
    password_hash = await hash_password(new_password)

    def write(conn: sa.Connection) -> list[str]:
        accounts.set_password_hash(conn, who.user_id, password_hash)
        if logout_devices:
            return accounts.delete_user_tokens(conn, who.user_id, except_device=who.device_id)
        return []

    d.tokens.forget(await d.db.write(write))
    d.device_lists.after_local_change(who.user_id)
    return json_response({})


@_route("/account/deactivate", ["POST"])
async def deactivate():
    from api.client.membership import leave_all_rooms

    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    await password_uia(d, who, body, "deactivate")
    await leave_all_rooms(d, who.user_id)
    await d.db.write(accounts.deactivate_user, who.user_id)
    d.device_lists.after_local_change(who.user_id)
    d.tokens.forget_user(who.user_id)
    return json_response({"id_server_unbind_result": "no-support"})


# ------------------------------------------------------------------------ devices


def _device_json(dev: accounts.DeviceRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"device_id": dev.device_id}
    if dev.display_name is not None:
        out["display_name"] = dev.display_name
    if dev.last_seen_ts is not None:
        out["last_seen_ts"] = dev.last_seen_ts
    if dev.last_seen_ip is not None:
        out["last_seen_ip"] = dev.last_seen_ip
    return out


@_route("/devices", ["GET"])
async def list_devices():
    d = deps()
    who = await requester()
    devs = await d.db.read(accounts.get_devices, who.user_id)
    return json_response({"devices": [_device_json(x) for x in devs]})


@_route("/devices/<device_id>", ["GET"])
async def get_device(device_id: str):
    d = deps()
    who = await requester()
    dev = await d.db.read(accounts.get_device, who.user_id, device_id)
    if dev is None:
        raise not_found("no such device")
    return json_response(_device_json(dev))


@_route("/devices/<device_id>", ["PUT"])
async def update_device(device_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    if "display_name" not in body:
        # "If not given, the display name is unchanged": only check the device exists.
        if await d.db.read(accounts.get_device, who.user_id, device_id) is None:
            raise not_found("no such device")
        return json_response({})
    name = get_str(body, "display_name", None)
    if not await d.db.write(accounts.update_device, who.user_id, device_id, name):
        raise not_found("no such device")
    d.device_lists.after_local_change(who.user_id)
    return json_response({})


@_route("/devices/<device_id>", ["DELETE"])
async def delete_device(device_id: str):
    d = deps()
    who = await requester()
    body = await json_body(allow_empty=True)
    if await d.db.read(accounts.get_device, who.user_id, device_id) is None:
        raise not_found("no such device")
    await password_uia(d, who, body, f"delete_device:{device_id}")
    d.tokens.forget(await d.db.write(_delete_devices_and_pushers, who.user_id, [device_id]))
    d.device_lists.after_local_change(who.user_id)
    return json_response({})


@_route("/delete_devices", ["POST"])
async def delete_devices():
    d = deps()
    who = await requester()
    body = await json_body()
    ids = body.get("devices")
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise MatrixError("M_BAD_JSON", 400, "'devices' must be a list of device IDs")
    await password_uia(d, who, body, "delete_devices")
    d.tokens.forget(await d.db.write(_delete_devices_and_pushers, who.user_id, ids))
    d.device_lists.after_local_change(who.user_id)
    return json_response({})


def _delete_devices_and_pushers(conn: sa.Connection, user_id: str, device_ids: list[str]) -> list[str]:
    """One transaction: the devices, their tokens and the pushers they set (as Synapse)."""
    from storage.pushers import delete_device_pushers

    delete_device_pushers(conn, user_id, device_ids)
    return accounts.delete_devices(conn, user_id, device_ids)
