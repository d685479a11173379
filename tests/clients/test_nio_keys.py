"""matrix-nio with encryption (vodozemac) against our served homeserver: alice's
``keys_upload()`` publishes her device and one-time keys; bob's ``keys_query()``
finds her device with the identity keys her Olm account holds, and his
``keys_claim()`` gets one of her one-time keys, whose signature nio checks before it
opens an Olm session with it. Then alice's /sync counts one fewer one-time key.

The server runs in a background thread (``roomactors_homeserver_thread``); the test
is a sync function running its scenario with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, KeysClaimResponse, KeysQueryResponse, KeysUploadResponse, SyncResponse

from roomactors.testing import ThreadedHomeserver

SCENARIO_TIMEOUT_S = 60


def _client(hs: ThreadedHomeserver, localpart: str, store: Path) -> AsyncClient:
    user = hs.register_user(localpart)
    store.mkdir()
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False, max_timeouts=2)
    client = AsyncClient(hs.base_url, user.user_id, device_id=user.device_id, store_path=str(store), config=config)
    client.restore_login(user.user_id, user.device_id, user.access_token)
    return client


def test_nio_upload_query_and_claim(roomactors_homeserver_thread: ThreadedHomeserver, tmp_path: Path) -> None:
    hs = roomactors_homeserver_thread
    alice = _client(hs, "alice", tmp_path / "alice")
    bob = _client(hs, "bob", tmp_path / "bob")

    async def scenario() -> None:
        try:
            assert alice.should_upload_keys
            uploaded = await alice.keys_upload()
            assert isinstance(uploaded, KeysUploadResponse), uploaded
            published = uploaded.signed_curve25519_count
            assert published > 0
            assert not alice.should_upload_keys  # nio saw its keys counted
            assert isinstance(await bob.keys_upload(), KeysUploadResponse)

            sync = await alice.sync(timeout=0)
            assert isinstance(sync, SyncResponse), sync
            assert sync.device_key_count.signed_curve25519 == published

            bob.olm.add_changed_users({alice.user_id})
            queried = await bob.keys_query()
            assert isinstance(queried, KeysQueryResponse), queried
            device = bob.device_store[alice.user_id][alice.device_id]
            identity = alice.olm.account.identity_keys
            assert device.ed25519 == identity["ed25519"] and device.curve25519 == identity["curve25519"]

            claimed = await bob.keys_claim({alice.user_id: [alice.device_id]})
            assert isinstance(claimed, KeysClaimResponse), claimed
            assert alice.device_id in claimed.one_time_keys[alice.user_id]
            # nio verified the key's signature by alice's device key and opened a session.
            assert bob.olm.session_store.get(device.curve25519) is not None

            sync = await alice.sync(timeout=0)
            assert sync.device_key_count.signed_curve25519 == published - 1
        finally:
            await alice.close()
            await bob.close()

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT_S)

    asyncio.run(bounded())
