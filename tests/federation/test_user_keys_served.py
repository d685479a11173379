"""The served federation key endpoints (user_keys.yaml, user_devices.yaml) through
the in-process network: hs2 asks hs1 with X-Matrix signed requests from its own
FederationClient, and hs2's clients reach hs1's users through /keys/query and
/keys/claim."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from roomactors.federation_client import FederationError
from roomactors.testing import open_test_network
from tests.helpers.e2e_keys import CrossSigning, Device

C = "/_matrix/client/v3"
F = "/_matrix/federation/v1"


async def _ok(hs: Any, method: str, path: str, token: str | None = None, json: Any = None) -> Any:
    status, body = await hs.api(method, path, token=token, json=json)
    assert status == 200, (method, path, status, body)
    return body


async def _alice_with_keys(hs1: Any) -> tuple[Any, Device, CrossSigning, dict[str, Any], dict[str, Any]]:
    alice = await hs1.register("alice")
    dev = Device(alice.user_id, alice.device_id)
    xs = CrossSigning(alice.user_id)
    otks = dev.otks(2)
    fallback = {"signed_curve25519:FB": dev.otk(fallback=True)}
    await _ok(hs1, "POST", f"{C}/keys/upload", alice.access_token,
              {"device_keys": dev.device_keys(), "one_time_keys": otks, "fallback_keys": fallback})
    await _ok(hs1, "PUT", f"{C}/devices/{alice.device_id}", alice.access_token, {"display_name": "Alice's laptop"})
    await _ok(hs1, "POST", f"{C}/keys/device_signing/upload", alice.access_token, xs.upload_body())
    await _ok(hs1, "POST", f"{C}/keys/signatures/upload", alice.access_token,
              {alice.user_id: {alice.device_id: xs.sign_device(dev.device_keys())}})
    return alice, dev, xs, otks, fallback


async def test_served_user_keys_query_devices_and_claim() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice, dev, xs, otks, fallback = await _alice_with_keys(hs1)
        ssk_id = f"ed25519:{xs.self_signing.version}"

        answer = await hs2.deps.federation.post_json(
            "hs1", f"{F}/user/keys/query", {"device_keys": {alice.user_id: [], "@nobody:hs1": []}})
        assert set(answer) == {"device_keys", "master_keys", "self_signing_keys"}  # never user_signing_keys
        keys = answer["device_keys"][alice.user_id][alice.device_id]
        assert {k: v for k, v in keys.items() if k not in ("signatures", "unsigned")} == {
            k: v for k, v in dev.device_keys().items() if k != "signatures"}
        assert ssk_id in keys["signatures"][alice.user_id]  # the self-signing signature, merged
        assert keys["unsigned"] == {}  # device names stay home (Synapse's default)
        assert "@nobody:hs1" not in answer["device_keys"]
        assert answer["master_keys"] == {alice.user_id: xs.master_key}
        assert answer["self_signing_keys"] == {alice.user_id: xs.self_signing_key}

        devices = await hs2.deps.federation.get_json("hs1", f"{F}/user/devices/{quote(alice.user_id, safe='')}")
        assert devices["user_id"] == alice.user_id
        assert isinstance(devices["stream_id"], int) and devices["stream_id"] > 0
        (entry,) = devices["devices"]
        assert entry["device_id"] == alice.device_id and "device_display_name" not in entry
        assert entry["keys"]["keys"] == dev.device_keys()["keys"]
        assert devices["master_key"] == xs.master_key and devices["self_signing_key"] == xs.self_signing_key
        assert "user_signing_key" not in devices

        claimed = []
        for _ in range(2):
            got = await hs2.deps.federation.post_json(
                "hs1", f"{F}/user/keys/claim", {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
            ((key_id, key),) = got["one_time_keys"][alice.user_id][alice.device_id].items()
            assert otks[key_id] == key
            claimed.append(key_id)
        assert sorted(claimed) == sorted(otks)
        got = await hs2.deps.federation.post_json(
            "hs1", f"{F}/user/keys/claim", {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
        assert got == {"one_time_keys": {alice.user_id: {alice.device_id: fallback}}}
        sync = await _ok(hs1, "GET", f"{C}/sync?timeout=0", alice.access_token)
        assert sync["device_one_time_keys_count"] == {"signed_curve25519": 0}
        assert sync["device_unused_fallback_key_types"] == []

        # Only hs1's users; and only signed requests.
        for method, path, body in (
            ("POST", f"{F}/user/keys/query", {"device_keys": {"@bob:hs2": []}}),
            ("POST", f"{F}/user/keys/claim", {"one_time_keys": {"@bob:hs2": {"X": "signed_curve25519"}}}),
            ("GET", f"{F}/user/devices/{quote('@bob:hs2', safe='')}", None),
        ):
            with pytest.raises(FederationError) as info:
                await hs2.deps.federation.request("hs1", method, path, json_body=body)
            assert (info.value.status, info.value.errcode) == (400, "M_INVALID_PARAM")
        status, body = await hs1.api("POST", f"{F}/user/keys/query", json={"device_keys": {alice.user_id: []}})
        assert status == 401
        unknown = await hs2.deps.federation.get_json("hs1", f"{F}/user/devices/{quote('@ghost:hs1', safe='')}")
        assert unknown["devices"] == [] and unknown["user_id"] == "@ghost:hs1"


async def test_client_query_and_claim_of_a_remote_user() -> None:
    """bob@hs2's /keys/query and /keys/claim for alice@hs1 go out over federation
    (roomactors.remote_keys) and merge with a local user's answer."""
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice, dev, xs, otks, _ = await _alice_with_keys(hs1)
        bob = await hs2.register("bob")
        bdev = Device(bob.user_id, bob.device_id)
        await _ok(hs2, "POST", f"{C}/keys/upload", bob.access_token, {"device_keys": bdev.device_keys()})

        answer = await _ok(hs2, "POST", f"{C}/keys/query", bob.access_token,
                           {"device_keys": {alice.user_id: [], bob.user_id: []}, "timeout": 5000})
        assert answer["failures"] == {}
        assert answer["device_keys"][alice.user_id][alice.device_id]["keys"] == dev.device_keys()["keys"]
        assert answer["device_keys"][bob.user_id][bob.device_id]["keys"] == bdev.device_keys()["keys"]
        assert answer["master_keys"][alice.user_id]["keys"] == xs.master_key["keys"]
        assert answer["self_signing_keys"][alice.user_id] == xs.self_signing_key

        got = await _ok(hs2, "POST", f"{C}/keys/claim", bob.access_token,
                        {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}, "timeout": 5000})
        assert got["failures"] == {}
        ((key_id, key),) = got["one_time_keys"][alice.user_id][alice.device_id].items()
        assert otks[key_id] == key

        # bob signs alice's master key with his user-signing key: stored on hs2, merged
        # into what hs2 answers bob (alice's server never sees it).
        bxs = CrossSigning(bob.user_id)
        await _ok(hs2, "POST", f"{C}/keys/device_signing/upload", bob.access_token, bxs.upload_body())
        master = answer["master_keys"][alice.user_id]
        body = await _ok(hs2, "POST", f"{C}/keys/signatures/upload", bob.access_token,
                         {alice.user_id: {xs.master.version: bxs.sign_master_of(master)}})
        assert body == {"failures": {}}
        again = await _ok(hs2, "POST", f"{C}/keys/query", bob.access_token, {"device_keys": {alice.user_id: []}})
        assert f"ed25519:{bxs.user_signing.version}" in again["master_keys"][alice.user_id]["signatures"][bob.user_id]
