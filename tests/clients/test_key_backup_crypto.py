"""A key backup round trip with real cryptography (vodozemac) through a served
roomactors homeserver over HTTP.

matrix-nio 0.26 has no server-side key backup support, so the client side is
written here with vodozemac, the library nio's e2e extra uses, following the spec
("Server-side key backups", "Backup algorithm:
m.megolm_backup.v1.curve25519-aes-sha2"):

1. Device A (alice's first login) has a device identity (``Account``) and a Megolm
   outbound ``GroupSession``; it sends two ``m.room.encrypted`` events to an
   encrypted room on the server.
2. A creates a backup whose ``auth_data`` carries the Curve25519 public key of a
   backup key pair (``PkDecryption``), signed by A's Ed25519 key; it encrypts the
   session's export (BackedUpSessionData: ``algorithm``, ``sender_key``,
   ``session_key``, ``sender_claimed_keys``, ``forwarding_curve25519_key_chain``)
   with ``PkEncryption`` into ``session_data`` ``{ephemeral, ciphertext, mac}`` and
   uploads it; a later upload of a worse copy (exported from message index 1) is
   kept out by the replacement rules.
3. Device B (a fresh login with only the backup's secret key, as when the user
   enters it) finds the backup, checks that the public key in ``auth_data`` is its
   key's and the signature is A's, downloads the keys, decrypts ``session_data``,
   imports the Megolm session and decrypts both messages from ``/messages``.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import httpx
import vodozemac

from roomactors.testing import TestHomeserver

BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"
TIMEOUT_S = 30


def b64(data: bytes) -> str:
    """Unpadded base64 (appendices, "Unpadded Base64")."""
    return base64.b64encode(data).decode().rstrip("=")


def canonical_json(value: Any) -> bytes:
    """Appendices, "Canonical JSON" (enough for the ASCII objects signed here)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Device:
    """One logged-in device speaking the client-server API over HTTP."""

    def __init__(self, http: httpx.AsyncClient, token: str, user_id: str, device_id: str) -> None:
        self.http, self.token, self.user_id, self.device_id = http, token, user_id, device_id

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        response = await self.http.request(
            method, "/_matrix/client/v3" + path, json=body, params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, (method, path, response.status_code, response.text)
        return response.json()


async def login(http: httpx.AsyncClient, user_id: str, password: str) -> Device:
    response = await http.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password,
    })
    assert response.status_code == 200, response.text
    body = response.json()
    return Device(http, body["access_token"], body["user_id"], body["device_id"])


def encrypt_session_data(public_key: str, plaintext: dict[str, Any]) -> dict[str, str]:
    """session_data for m.megolm_backup.v1.curve25519-aes-sha2 (the spec's steps 1-5)."""
    message = vodozemac.PkEncryption.from_key(vodozemac.Curve25519PublicKey.from_base64(public_key)).encrypt(
        json.dumps(plaintext).encode()
    )
    return {"ephemeral": b64(message.ephemeral_key), "ciphertext": b64(message.ciphertext), "mac": b64(message.mac)}


def decrypt_session_data(secret: vodozemac.PkDecryption, session_data: dict[str, str]) -> dict[str, Any]:
    message = vodozemac.Message.from_base64(session_data["ciphertext"], session_data["mac"], session_data["ephemeral"])
    return json.loads(secret.decrypt(message))


async def test_key_backup_round_trip_with_real_crypto(roomactors_homeserver: TestHomeserver) -> None:
    hs = roomactors_homeserver
    registered = await hs.register_user("alice", "alice-password")
    async with httpx.AsyncClient(base_url=hs.base_url, timeout=TIMEOUT_S) as http:
        device_a = Device(http, registered.access_token, registered.user_id, registered.device_id)

        # --- device A: an encrypted room and two Megolm messages --------------------
        identity = vodozemac.Account()
        room_id = (await device_a.call("POST", "/createRoom", {
            "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}],
        }))["room_id"]
        outbound = vodozemac.GroupSession()
        own_inbound = vodozemac.InboundGroupSession(outbound.session_key)  # A keeps its own session too
        secrets = ["the eagle lands at midnight", "bring snacks"]
        for n, text in enumerate(secrets):
            payload = {"type": "m.room.message", "content": {"msgtype": "m.text", "body": text}, "room_id": room_id}
            ciphertext = outbound.encrypt(json.dumps(payload).encode()).to_base64()
            await device_a.call("PUT", f"/rooms/{quote(room_id)}/send/m.room.encrypted/t{n}", {
                "algorithm": MEGOLM, "sender_key": identity.curve25519_key.to_base64(), "ciphertext": ciphertext,
                "session_id": outbound.session_id, "device_id": device_a.device_id,
            })

        # --- device A: create the backup, signed, and upload the session -------------
        backup_key = vodozemac.PkDecryption()
        auth_data: dict[str, Any] = {"public_key": backup_key.public_key.to_base64()}
        signature = identity.sign(canonical_json(auth_data)).to_base64()
        auth_data["signatures"] = {device_a.user_id: {f"ed25519:{device_a.device_id}": signature}}
        version = (await device_a.call("POST", "/room_keys/version",
                                       {"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data}))["version"]

        # A encrypts to the current backup's public key, as the server reports it.
        current = await device_a.call("GET", "/room_keys/version")
        assert current["version"] == version
        public_key = current["auth_data"]["public_key"]

        def backed_up(first_index: int) -> dict[str, Any]:
            plaintext = {  # definitions/key_backup_session_data.yaml (BackedUpSessionData)
                "algorithm": MEGOLM,
                "sender_key": identity.curve25519_key.to_base64(),
                "session_key": own_inbound.export_at(first_index).to_base64(),
                "sender_claimed_keys": {"ed25519": identity.ed25519_key.to_base64()},
                "forwarding_curve25519_key_chain": [],
            }
            return {
                "first_message_index": first_index, "forwarded_count": 0, "is_verified": True,
                "session_data": encrypt_session_data(public_key, plaintext),
            }

        key_path = f"/room_keys/keys/{quote(room_id)}/{quote(outbound.session_id, safe='')}"
        first = await device_a.call("PUT", key_path, backed_up(0), version=version)
        assert first["count"] == 1
        # A worse copy (it cannot decrypt message 0) does not replace the stored one.
        second = await device_a.call("PUT", key_path, backed_up(1), version=version)
        assert second == first

        # --- device B: a fresh login that only knows the backup's secret key ---------
        recovery_secret = backup_key.key.to_base64()  # what the user types in
        device_b = await login(http, registered.user_id, registered.password)
        assert device_b.device_id != device_a.device_id
        secret = vodozemac.PkDecryption.from_key(vodozemac.Curve25519SecretKey.from_base64(recovery_secret))

        info = await device_b.call("GET", "/room_keys/version")
        assert (info["version"], info["algorithm"], info["count"]) == (version, BACKUP_ALGORITHM, 1)
        assert info["auth_data"]["public_key"] == secret.public_key.to_base64()  # the key is this backup's
        signed = {k: val for k, val in info["auth_data"].items() if k != "signatures"}
        device_signature = info["auth_data"]["signatures"][device_a.user_id][f"ed25519:{device_a.device_id}"]
        identity.ed25519_key.verify_signature(canonical_json(signed),
                                              vodozemac.Ed25519Signature.from_base64(device_signature))

        backup = await device_b.call("GET", "/room_keys/keys", version=version)
        sessions = backup["rooms"][room_id]["sessions"]
        assert list(sessions) == [outbound.session_id]
        stored = sessions[outbound.session_id]
        assert stored["first_message_index"] == 0
        exported = decrypt_session_data(secret, stored["session_data"])
        assert exported["algorithm"] == MEGOLM
        assert exported["sender_key"] == identity.curve25519_key.to_base64()
        assert exported["sender_claimed_keys"] == {"ed25519": identity.ed25519_key.to_base64()}
        imported = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(exported["session_key"]))
        assert imported.session_id == outbound.session_id
        assert imported.first_known_index == 0

        # The same key at the session level.
        assert await device_b.call("GET", key_path, version=version) == stored

        messages = await device_b.call("GET", f"/rooms/{quote(room_id)}/messages", dir="f", limit="50")
        encrypted = [e for e in messages["chunk"] if e["type"] == "m.room.encrypted"]
        assert [e["content"]["session_id"] for e in encrypted] == [outbound.session_id] * 2
        decrypted = []
        for event in encrypted:
            result = imported.decrypt(vodozemac.MegolmMessage.from_base64(event["content"]["ciphertext"]))
            payload = json.loads(result.plaintext)
            assert payload["room_id"] == room_id
            decrypted.append((result.message_index, payload["content"]["body"]))
        assert decrypted == list(enumerate(secrets))


async def test_session_ids_with_slashes_over_real_http(roomactors_homeserver: TestHomeserver) -> None:
    """Megolm session IDs are standard base64 and may hold ``/`` and ``+``; clients
    percent-encode them in the path, and hypercorn decodes them before routing."""
    registered = await roomactors_homeserver.register_user("bob")
    async with httpx.AsyncClient(base_url=roomactors_homeserver.base_url, timeout=TIMEOUT_S) as http:
        device = Device(http, registered.access_token, registered.user_id, registered.device_id)
        version = (await device.call("POST", "/room_keys/version", {
            "algorithm": BACKUP_ALGORITHM, "auth_data": {"public_key": vodozemac.PkDecryption().public_key.to_base64()},
        }))["version"]
        key = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False,
               "session_data": {"ephemeral": "e", "ciphertext": "c", "mac": "m"}}
        session_id = "ab/c+d/e"
        path = f"/room_keys/keys/{quote('!r:localhost', safe='')}/{quote(session_id, safe='')}"
        assert (await device.call("PUT", path, key, version=version))["count"] == 1
        assert await device.call("GET", path, version=version) == key
        everything = await device.call("GET", "/room_keys/keys", version=version)
        assert list(everything["rooms"]["!r:localhost"]["sessions"]) == [session_id]
        assert (await device.call("DELETE", path, version=version))["count"] == 0
