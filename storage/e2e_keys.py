"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing
keys and uploaded signatures (client-server "End-to-End Encryption"; keys.yaml,
cross_signing.yaml; server-server user_keys.yaml, user_devices.yaml).

Theory of operation
-------------------
Tables (``storage/schema.py``, migration 4): ``e2e_device_keys`` (one DeviceKeys
object per device, canonical JSON, as uploaded), ``e2e_one_time_keys`` (unclaimed
keys; ``otk_id`` grows with each upload, so the smallest is the oldest),
``e2e_fallback_keys`` (one per device and algorithm, with ``used``),
``e2e_cross_signing_keys`` (master / self_signing / user_signing per user) and
``e2e_cross_signing_signatures`` (signatures uploaded later, by signer and target).

The API layer checks what a client sends (``roomactors.protocol.e2e_keys``); the
writes here are whole transactions handed to ``db.write``:

* :func:`upload_keys` — ``/keys/upload``: device keys (identical again: nothing;
  new identity keys for a device that has some: :class:`KeyUploadConflict`), one-time
  keys (an ID already stored with another key: conflict; the same key: ignored),
  fallback keys (replace the algorithm's key and clear ``used``, unless identical);
* :func:`claim_local_keys` — ``/keys/claim``: the oldest one-time key, deleted as it
  is returned; else the fallback key, marked used and kept (keys.yaml);
* :func:`upload_cross_signing_keys`, :func:`store_signatures`;
* :func:`delete_device_keys` — the device-deletion paths of ``storage.accounts``.

Every change other users must learn of (device keys first uploaded or changed,
cross-signing keys, signatures of the user's own keys) is recorded in the same
transaction through ``storage.device_lists`` (``record_device_change`` /
``record_signing_key_change``); the caller runs ``after_local_change`` after commit.
A signature of another user's master key is news for its signer only
(``record_user_signature_change``; the caller notifies the signer).

Reads merge stored signatures into the keys they sign, filtered by who may see them
("Key and signature security"): a signature by the key owner themselves (their
self-signing key on a device, their devices on their master key) is visible to all;
one by another user (their user-signing key on this user's master key) only to that
signer. ``user_signing`` keys are only ever shown to their owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from .compiled import compiled, raw
from .schema import (
    devices,
    e2e_cross_signing_keys as xkeys,
    e2e_cross_signing_signatures as xsigs,
    e2e_device_keys as dkeys,
    e2e_fallback_keys as fkeys,
    e2e_one_time_keys as otks,
    users,
)

__all__ = [
    "KeyUploadConflict",
    "one_time_key_counts",
    "unused_fallback_key_types",
    "get_device_keys",
    "get_stored_device_keys",
    "get_cross_signing_keys",
    "get_stored_cross_signing_keys",
    "get_user_devices",
    "query_local_keys",
    "claim_local_keys",
    "upload_keys",
    "upload_cross_signing_keys",
    "store_signatures",
    "signatures_by",
    "delete_device_keys",
]

#: Synapse always reports this algorithm in ``one_time_key_counts`` and
#: ``device_one_time_keys_count``, at 0 when none is left; clients (nio, the Rust
#: SDK) read its absence as "unknown" rather than "zero", so we match.
ALWAYS_COUNTED = "signed_curve25519"

#: Cross-signing key types (cross_signing_key.yaml ``usage``).
KEY_TYPES = ("master", "self_signing", "user_signing")


class KeyUploadConflict(Exception):
    """The upload contradicts what is stored (new identity keys for a device, or a
    one-time key ID reused with another key); the transaction is rolled back."""


def _dump(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


def _load(text: str) -> Any:
    return orjson.loads(text)


# ---------------------------------------------------------------- counts (sync)


# Both run on every /sync: compiled once (storage.compiled).
_COUNT_OTKS = compiled(
    sa.select(otks.c.algorithm, sa.func.count())
    .where(otks.c.user_id == sa.bindparam("user_id"), otks.c.device_id == sa.bindparam("device_id"))
    .group_by(otks.c.algorithm),
    "user_id", "device_id",
)
_UNUSED_FALLBACK = compiled(
    sa.select(fkeys.c.algorithm)
    .where(
        fkeys.c.user_id == sa.bindparam("user_id"),
        fkeys.c.device_id == sa.bindparam("device_id"),
        fkeys.c.used.is_(sa.false()),
    )
    .order_by(fkeys.c.algorithm),
    "user_id", "device_id",
)


def one_time_key_counts(conn: sa.Connection, user_id: str, device_id: str) -> dict[str, int]:
    """``device_one_time_keys_count`` / ``one_time_key_counts``: unclaimed one-time
    keys per algorithm (``signed_curve25519`` always present, as Synapse reports it)."""
    rows = raw(conn).execute(_COUNT_OTKS, {"user_id": user_id, "device_id": device_id})
    counts = {ALWAYS_COUNTED: 0}
    counts.update({alg: int(n) for alg, n in rows})
    return counts


def unused_fallback_key_types(conn: sa.Connection, user_id: str, device_id: str) -> list[str]:
    """``device_unused_fallback_key_types``: algorithms with an unused fallback key."""
    return [alg for (alg,) in raw(conn).execute(_UNUSED_FALLBACK, {"user_id": user_id, "device_id": device_id})]


# ---------------------------------------------------------------- signatures


def _visible(signer_user_id: str, target_user_id: str, viewer: str | None) -> bool:
    """"Key and signature security": the owner's own signatures are public; another
    user's signature (made with their user-signing key) only to that user."""
    return signer_user_id == target_user_id or (viewer is not None and signer_user_id == viewer)


def _raw(conn: sa.Connection) -> Any:
    """The sqlite3 connection under ``conn`` (same transaction): the /keys/query reads
    skip SQLAlchemy's per-row result processing, as ``storage.federation_reads`` does."""
    return conn.connection.driver_connection


def _json_list(values: Iterable[str]) -> str:
    """One bound parameter for ``IN (SELECT value FROM json_each(?))``: a whole list
    costs one parameter and no statement compilation per length."""
    return orjson.dumps(list(values)).decode("utf-8")


_SIGNATURES_SQL = (
    "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
    " FROM e2e_cross_signing_signatures WHERE target_user_id IN (SELECT value FROM json_each(?))"
)


def _signatures_for(
    conn: sa.Connection, target_user_ids: Iterable[str], viewer: str | None
) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
    """(target user, target key ID) -> signer user -> signer key ID -> signature,
    for the signatures ``viewer`` may see (None: a remote server, the owner's only)."""
    targets = list(set(target_user_ids))
    out: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    if not targets:
        return out
    for target, key_id, signer, signer_key, signature in _raw(conn).execute(_SIGNATURES_SQL, (_json_list(targets),)).fetchall():
        if _visible(signer, target, viewer):
            out.setdefault((target, key_id), {}).setdefault(signer, {})[signer_key] = signature
    return out


def _merge_signatures(obj: dict[str, Any], extra: Mapping[str, Mapping[str, str]] | None) -> dict[str, Any]:
    if extra:
        sigs = obj.setdefault("signatures", {})
        for signer, by_key in extra.items():
            sigs.setdefault(signer, {}).update(by_key)
    return obj


def signatures_by(conn: sa.Connection, signer_user_id: str, target_user_ids: Iterable[str]) -> dict[tuple[str, str], dict[str, str]]:
    """(target user, target key ID) -> signer key ID -> signature, for the signatures
    ``signer_user_id`` made of other users' keys (merged into the master keys of
    remote users answered by their servers)."""
    targets = list(set(target_user_ids))
    out: dict[tuple[str, str], dict[str, str]] = {}
    if not targets:
        return out
    rows = conn.execute(
        sa.select(xsigs).where(xsigs.c.signer_user_id == signer_user_id, xsigs.c.target_user_id.in_(targets))
    )
    for r in rows:
        out.setdefault((r.target_user_id, r.target_key_id), {})[r.signer_key_id] = r.signature
    return out


# ---------------------------------------------------------------- device keys


def get_stored_device_keys(conn: sa.Connection, user_id: str, device_id: str) -> dict[str, Any] | None:
    """The device keys exactly as uploaded (no merged signatures), or None."""
    text = conn.execute(
        sa.select(dkeys.c.key_json).where(dkeys.c.user_id == user_id, dkeys.c.device_id == device_id)
    ).scalar()
    return None if text is None else _load(text)


def get_device_keys(conn: sa.Connection, user_id: str, device_id: str) -> dict[str, Any] | None:
    """The device's keys as anyone may see them (the owner's signatures merged, no
    ``unsigned``): what ``m.device_list_update`` carries. None if it has none."""
    keys = get_stored_device_keys(conn, user_id, device_id)
    if keys is None:
        return None
    sigs = _signatures_for(conn, [user_id], None)
    return _merge_signatures(keys, sigs.get((user_id, device_id)))


_DEVICE_ROWS_SQL = (
    "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys AS k"
    " JOIN devices AS d ON d.user_id = k.user_id AND d.device_id = k.device_id"
    " WHERE k.user_id IN (SELECT value FROM json_each(?)) ORDER BY k.user_id, k.device_id"
)


def _device_rows(
    conn: sa.Connection, user_ids: Sequence[str]
) -> dict[str, list[tuple[str, dict[str, Any], str | None]]]:
    """user -> [(device ID, stored keys, display name)] for devices that exist and have keys."""
    out: dict[str, list[tuple[str, dict[str, Any], str | None]]] = {}
    if not user_ids:
        return out
    for user_id, device_id, key_json, name in _raw(conn).execute(_DEVICE_ROWS_SQL, (_json_list(user_ids),)).fetchall():
        out.setdefault(user_id, []).append((device_id, _load(key_json), name))
    return out


def get_user_devices(conn: sa.Connection, user_id: str, *, include_display_names: bool = True) -> list[dict[str, Any]]:
    """``/user/devices`` ``devices``: ``{device_id, keys, device_display_name?}`` for every
    device of the user that has uploaded keys (user_devices.yaml: ``keys`` is required)."""
    sigs = _signatures_for(conn, [user_id], None)
    out = []
    for device_id, keys, name in _device_rows(conn, [user_id]).get(user_id, []):
        entry: dict[str, Any] = {"device_id": device_id, "keys": _merge_signatures(keys, sigs.get((user_id, device_id)))}
        if include_display_names and name is not None:
            entry["device_display_name"] = name
        out.append(entry)
    return out


# ---------------------------------------------------------------- cross-signing keys


def get_stored_cross_signing_keys(conn: sa.Connection, user_id: str) -> dict[str, dict[str, Any]]:
    """key type (master, self_signing, user_signing) -> the key exactly as uploaded."""
    rows = conn.execute(sa.select(xkeys.c.key_type, xkeys.c.key_json).where(xkeys.c.user_id == user_id))
    return {t: _load(j) for t, j in rows}


_CROSS_SIGNING_SQL = (
    "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys"
    " WHERE user_id IN (SELECT value FROM json_each(?))"
)


def _cross_signing_for(
    conn: sa.Connection,
    user_ids: Sequence[str],
    viewer: str | None,
    signatures: dict[tuple[str, str], dict[str, dict[str, str]]] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """user -> key type -> key with the signatures ``viewer`` may see (``signatures``:
    already read by the caller); the user-signing key only for ``viewer`` themselves."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if not user_ids:
        return out
    wanted = []
    for user_id, key_type, public_key, key_json in _raw(conn).execute(_CROSS_SIGNING_SQL, (_json_list(user_ids),)).fetchall():
        if key_type == "user_signing" and user_id != viewer:
            continue  # "a user-signing key (USK) -- only visible to the user that it belongs to"
        wanted.append((user_id, key_type, public_key, key_json))
    if signatures is None:
        signatures = _signatures_for(conn, {w[0] for w in wanted}, viewer) if wanted else {}
    for user_id, key_type, public_key, key_json in wanted:
        key = _merge_signatures(_load(key_json), signatures.get((user_id, public_key)))
        out.setdefault(user_id, {})[key_type] = key
    return out


def get_cross_signing_keys(
    conn: sa.Connection, user_id: str, *, include_user_signing: bool = False
) -> dict[str, dict[str, Any]]:
    """key type -> the user's cross-signing key as anyone may see it (their own
    signatures merged): master and self_signing, plus user_signing only when asked
    (never send that one to anyone but its owner)."""
    return _cross_signing_for(conn, [user_id], user_id if include_user_signing else None).get(user_id, {})


# ---------------------------------------------------------------- /keys/query


def query_local_keys(
    conn: sa.Connection,
    requester_user_id: str | None,
    query: Mapping[str, Sequence[str]],
    *,
    include_display_names: bool = True,
) -> dict[str, Any]:
    """The ``/keys/query`` body parts for local users: ``device_keys``, ``master_keys``,
    ``self_signing_keys`` and (only for the requester's own user) ``user_signing_keys``.

    ``query`` maps user IDs to device IDs (empty: all devices). A user we do not know
    is left out (keys.yaml: "the corresponding user or device is missing"); a known
    user with no keys answers ``{}``. ``requester_user_id`` None is a remote server
    (user_keys.yaml): no user-signing keys, and only the owners' own signatures.
    """
    user_ids = list(query)
    known = {
        u for (u,) in _raw(conn).execute(
            "SELECT user_id FROM users WHERE user_id IN (SELECT value FROM json_each(?))", (_json_list(user_ids),)
        )
    } if user_ids else set()
    wanted = [u for u in user_ids if u in known]
    rows = _device_rows(conn, wanted)
    sigs = _signatures_for(conn, wanted, requester_user_id)
    device_keys: dict[str, dict[str, Any]] = {}
    for user_id in wanted:
        only = set(query[user_id])
        answer: dict[str, Any] = {}
        for device_id, keys, name in rows.get(user_id, []):
            if only and device_id not in only:
                continue
            keys = _merge_signatures(keys, sigs.get((user_id, device_id)))
            if include_display_names and name is not None:
                keys["unsigned"] = {"device_display_name": name}
            else:
                keys["unsigned"] = {}
            answer[device_id] = keys
        device_keys[user_id] = answer
    body: dict[str, Any] = {"device_keys": device_keys, "master_keys": {}, "self_signing_keys": {}}
    if requester_user_id is not None:
        body["user_signing_keys"] = {}
    for user_id, keys in _cross_signing_for(conn, wanted, requester_user_id, sigs).items():
        if "master" in keys:
            body["master_keys"][user_id] = keys["master"]
        if "self_signing" in keys:
            body["self_signing_keys"][user_id] = keys["self_signing"]
        if "user_signing" in keys and user_id == requester_user_id:
            body["user_signing_keys"][user_id] = keys["user_signing"]
    return body


# ---------------------------------------------------------------- /keys/claim


def claim_local_keys(conn: sa.Connection, query: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """``/keys/claim`` for local devices (a write): ``{user: {device: algorithm}}`` ->
    ``{user: {device: {"<algorithm>:<key_id>": key}}}``.

    keys.yaml: one-time keys "are given out in the order that they were uploaded",
    each "returned at most once" (deleted here, in the claiming transaction); a device
    without one gets its fallback key, which is kept and marked used ("Fallback
    keys ... are not consumed once used"). Devices with neither are left out.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for user_id, by_device in query.items():
        for device_id, algorithm in by_device.items():
            row = conn.execute(
                sa.select(otks.c.otk_id, otks.c.key_id, otks.c.key_json)
                .where(otks.c.user_id == user_id, otks.c.device_id == device_id, otks.c.algorithm == algorithm)
                .order_by(otks.c.otk_id)
                .limit(1)
            ).first()
            if row is not None:
                conn.execute(sa.delete(otks).where(otks.c.otk_id == row.otk_id))
                out.setdefault(user_id, {})[device_id] = {f"{algorithm}:{row.key_id}": _load(row.key_json)}
                continue
            where = (fkeys.c.user_id == user_id, fkeys.c.device_id == device_id, fkeys.c.algorithm == algorithm)
            fb = conn.execute(sa.select(fkeys.c.key_id, fkeys.c.key_json, fkeys.c.used).where(*where)).first()
            if fb is not None:
                if not fb.used:
                    conn.execute(sa.update(fkeys).where(*where).values(used=True))
                out.setdefault(user_id, {})[device_id] = {f"{algorithm}:{fb.key_id}": _load(fb.key_json)}
    return out


# ---------------------------------------------------------------- /keys/upload


def _device_exists(conn: sa.Connection, user_id: str, device_id: str) -> bool:
    return conn.execute(
        sa.select(devices.c.device_id).where(devices.c.user_id == user_id, devices.c.device_id == device_id)
    ).first() is not None


def upload_keys(
    conn: sa.Connection,
    user_id: str,
    device_id: str,
    *,
    device_keys: dict[str, Any] | None,
    checked_with: str | None,
    one_time_keys: Mapping[tuple[str, str], Any],
    fallback_keys: Mapping[tuple[str, str], Any],
    ts: int,
) -> dict[str, int]:
    """One ``/keys/upload`` (checked by ``roomactors.protocol.e2e_keys``); returns
    ``one_time_key_counts``. ``checked_with`` is the ed25519 public key the signed
    one-time/fallback keys were verified with when it came from storage: it must still
    be the device's key. Raises :class:`KeyUploadConflict` (nothing is written)."""
    if not _device_exists(conn, user_id, device_id):
        raise KeyUploadConflict("the device has been deleted")
    stored = get_stored_device_keys(conn, user_id, device_id)
    changed = False
    if device_keys is not None:
        if stored is None:
            conn.execute(
                sa.insert(dkeys).values(user_id=user_id, device_id=device_id, key_json=_dump(device_keys), ts_added_ms=ts)
            )
            changed = True
        elif stored != device_keys:
            # New identity keys for an existing device replace the old ones, as Synapse
            # and continuwuity do (a client that lost its store re-uploads); the change
            # goes out as a device-list update and other users' clients, which pin
            # identity keys, warn about it themselves.
            conn.execute(
                sa.update(dkeys)
                .where(dkeys.c.user_id == user_id, dkeys.c.device_id == device_id)
                .values(key_json=_dump(device_keys), ts_added_ms=ts)
            )
            changed = True
    elif checked_with is not None:
        current = (stored or {}).get("keys", {}).get(f"ed25519:{device_id}")
        if current != checked_with:
            raise KeyUploadConflict("the device keys changed during the upload")

    if one_time_keys:
        from roomactors.protocol.e2e_keys import one_time_keys_match

        existing: dict[tuple[str, str], Any] = {}
        ids = [kid for _, kid in one_time_keys]
        for chunk_start in range(0, len(ids), 500):
            rows = conn.execute(
                sa.select(otks.c.algorithm, otks.c.key_id, otks.c.key_json).where(
                    otks.c.user_id == user_id, otks.c.device_id == device_id,
                    otks.c.key_id.in_(ids[chunk_start:chunk_start + 500]),
                )
            )
            existing.update({(r.algorithm, r.key_id): _load(r.key_json) for r in rows})
        new_rows = []
        for (alg, kid), key in sorted(one_time_keys.items()):
            if (alg, kid) in existing:
                # keys.yaml gives no rule; Synapse: the same key again is ignored, another is 400.
                if not one_time_keys_match(existing[(alg, kid)], key):
                    raise KeyUploadConflict(f"one-time key {alg}:{kid} already exists with another key")
                continue
            new_rows.append(
                {"user_id": user_id, "device_id": device_id, "algorithm": alg, "key_id": kid,
                 "key_json": _dump(key), "ts_added_ms": ts}
            )
        if new_rows:
            conn.execute(sa.insert(otks), new_rows)

    for (alg, kid), key in fallback_keys.items():
        where = (fkeys.c.user_id == user_id, fkeys.c.device_id == device_id, fkeys.c.algorithm == alg)
        old = conn.execute(sa.select(fkeys.c.key_id, fkeys.c.key_json).where(*where)).first()
        text = _dump(key)
        if old is not None and old.key_id == kid and _load(old.key_json) == key:
            continue  # the same key again: keep its ``used`` flag (as Synapse)
        if old is None:
            conn.execute(
                sa.insert(fkeys).values(user_id=user_id, device_id=device_id, algorithm=alg, key_id=kid,
                                        key_json=text, used=False)
            )
        else:
            # "There can only be at most one key per algorithm ... the server will only persist one".
            conn.execute(sa.update(fkeys).where(*where).values(key_id=kid, key_json=text, used=False))

    if changed:
        from . import device_lists

        device_lists.record_device_change(conn, user_id, device_id)
    return one_time_key_counts(conn, user_id, device_id)


# ---------------------------------------------------------------- cross-signing upload


def upload_cross_signing_keys(conn: sa.Connection, user_id: str, keys: Mapping[str, dict[str, Any]], ts: int) -> bool:
    """Store checked cross-signing keys (key type -> key); returns whether any changed.
    A change is recorded for the user's device-list stream (``m.signing_key_update``)."""
    from roomactors.protocol.e2e_keys import cross_signing_public_key

    stored = get_stored_cross_signing_keys(conn, user_id)
    changed = False
    for key_type, key in keys.items():
        assert key_type in KEY_TYPES, key_type
        if stored.get(key_type) == key:
            continue
        values = {"public_key": cross_signing_public_key(key), "key_json": _dump(key), "ts_added_ms": ts}
        if key_type in stored:
            conn.execute(
                sa.update(xkeys).where(xkeys.c.user_id == user_id, xkeys.c.key_type == key_type).values(**values)
            )
        else:
            conn.execute(sa.insert(xkeys).values(user_id=user_id, key_type=key_type, **values))
        changed = True
    if changed:
        from . import device_lists

        device_lists.record_signing_key_change(conn, user_id)
    return changed


def store_signatures(conn: sa.Connection, items: Iterable[Any]) -> dict[str, list[str]]:
    """Store checked ``SignatureItem``s (``roomactors.protocol.e2e_keys``), replacing an
    older signature by the same signer key of the same target key. Signatures of a
    user's own keys are recorded as device-list changes: of the device signed, or of
    the cross-signing keys when the master key was signed. A new signature of another
    user's master key (by the signer's user-signing key) is recorded for the signer
    only (``device_lists.record_user_signature_change``). Returns signer -> the other
    users so signed (the caller notifies each signer after the commit)."""
    from . import device_lists

    devices_changed: set[tuple[str, str]] = set()
    masters_changed: set[str] = set()
    others_signed: dict[str, set[str]] = {}
    for item in items:
        key = dict(
            target_user_id=item.target_user_id, target_key_id=item.target_key_id,
            signer_user_id=item.signer_user_id, signer_key_id=item.signer_key_id,
        )
        existing = conn.execute(
            sa.select(xsigs.c.signature).where(*(getattr(xsigs.c, k) == v for k, v in key.items()))
        ).scalar()
        if existing == item.signature:
            continue
        if existing is None:
            conn.execute(sa.insert(xsigs).values(**key, signature=item.signature))
        else:
            conn.execute(
                sa.update(xsigs).where(*(getattr(xsigs.c, k) == v for k, v in key.items())).values(signature=item.signature)
            )
        if item.signer_user_id != item.target_user_id:
            # A user-signing signature: visible to its signer only ("Key and
            # signature security"), so only the signer's other devices must learn.
            others_signed.setdefault(item.signer_user_id, set()).add(item.target_user_id)
            continue
        is_device = conn.execute(
            sa.select(dkeys.c.device_id).where(
                dkeys.c.user_id == item.target_user_id, dkeys.c.device_id == item.target_key_id
            )
        ).first() is not None
        if is_device:
            devices_changed.add((item.target_user_id, item.target_key_id))
        else:
            masters_changed.add(item.target_user_id)
    for user_id, device_id in sorted(devices_changed):
        device_lists.record_device_change(conn, user_id, device_id)
    for user_id in sorted(masters_changed):
        device_lists.record_signing_key_change(conn, user_id)
    for signer, targets in sorted(others_signed.items()):
        device_lists.record_user_signature_change(conn, signer, sorted(targets))
    return {signer: sorted(targets) for signer, targets in sorted(others_signed.items())}


# ---------------------------------------------------------------- device deletion


def delete_device_keys(
    conn: sa.Connection, user_id: str, device_ids: Iterable[str] | None, *, except_device: str | None = None
) -> None:
    """Delete the devices' keys: device keys, one-time and fallback keys, and the
    signatures of those devices. ``device_ids`` None: every device of the user
    (but ``except_device``). Called in the transaction that deletes the devices."""
    if device_ids is None:
        found: set[str] = set()
        for table in (dkeys, otks, fkeys):
            found.update(conn.execute(sa.select(table.c.device_id).where(table.c.user_id == user_id).distinct()).scalars())
        found.discard(except_device)  # type: ignore[arg-type]
        ids = sorted(found)
    else:
        ids = [d for d in device_ids if d != except_device]
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for table in (dkeys, otks, fkeys):
            conn.execute(sa.delete(table).where(table.c.user_id == user_id, table.c.device_id.in_(chunk)))
        conn.execute(sa.delete(xsigs).where(xsigs.c.target_user_id == user_id, xsigs.c.target_key_id.in_(chunk)))
