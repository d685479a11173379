"""The client key endpoints over HTTP (quart test client): /keys/upload, /keys/query,
/keys/claim, /keys/device_signing/upload, /keys/signatures/upload, the /sync key
counts, and keys going away with their device."""

from __future__ import annotations

from typing import Any

from tests.helpers.client import PASSWORD, Api
from tests.helpers.e2e_keys import CrossSigning, Device, curve_key


def _device(api: Api) -> Device:
    return Device(api.user_id, api.device_id)


async def _upload(api: Api, body: dict[str, Any], status: int = 200) -> Any:
    reply = await api.post("/keys/upload", body)
    assert reply.status == status, reply.body
    return reply.body


async def _query(api: Api, query: dict[str, list[str]]) -> dict[str, Any]:
    return await api.ok("POST", "/keys/query", {"device_keys": query})


async def test_upload_device_and_one_time_keys(alice: Api, bob: Api) -> None:
    dev = _device(alice)
    otks = dev.otks(3)
    body = await _upload(alice, {"device_keys": dev.device_keys(), "one_time_keys": otks})
    assert body == {"one_time_key_counts": {"signed_curve25519": 3}}
    # The same again is idempotent (the one-time keys are the stored ones).
    assert (await _upload(alice, {"device_keys": dev.device_keys(), "one_time_keys": otks}))["one_time_key_counts"] == {
        "signed_curve25519": 3}
    assert (await _upload(alice, {}))["one_time_key_counts"] == {"signed_curve25519": 3}
    # An existing one-time key ID with another key: refused, nothing stored.
    key_id = next(iter(otks))
    reply = await _upload(alice, {"one_time_keys": {key_id: dev.otk(), "signed_curve25519:fresh": dev.otk()}}, 400)
    assert reply["errcode"] == "M_INVALID_PARAM"
    assert (await _upload(alice, {}))["one_time_key_counts"]["signed_curve25519"] == 3
    # Unsigned curve25519 strings are allowed.
    got = await _upload(alice, {"one_time_keys": {"curve25519:plain1": curve_key()}})
    assert got["one_time_key_counts"] == {"signed_curve25519": 3, "curve25519": 1}

    answer = await _query(bob, {alice.user_id: [], "@nobody:localhost": []})
    assert answer["failures"] == {}
    assert set(answer["device_keys"]) == {alice.user_id}
    stored = answer["device_keys"][alice.user_id][alice.device_id]
    assert {k: v for k, v in stored.items() if k != "unsigned"} == dev.device_keys()
    assert stored["unsigned"] == {} or "device_display_name" in stored["unsigned"]
    await alice.ok("PUT", f"/devices/{alice.device_id}", {"display_name": "Alice's phone"})
    answer = await _query(bob, {alice.user_id: [alice.device_id, "NOPE"]})
    assert answer["device_keys"][alice.user_id][alice.device_id]["unsigned"] == {"device_display_name": "Alice's phone"}
    assert answer["master_keys"] == {} and answer["self_signing_keys"] == {} and answer["user_signing_keys"] == {}
    # New identity keys for the same device replace the old ones (as Synapse does: a
    # client that lost its store re-uploads); other users' clients see the change.
    other = Device(alice.user_id, alice.device_id)
    await _upload(alice, {"device_keys": other.device_keys()})
    answer = await _query(bob, {alice.user_id: [alice.device_id]})
    stored = answer["device_keys"][alice.user_id][alice.device_id]
    assert {k: v for k, v in stored.items() if k != "unsigned"} == other.device_keys()


async def test_upload_rejections(alice: Api, bob: Api) -> None:
    dev = _device(alice)
    # Keys of another user, or of another device.
    reply = await _upload(alice, {"device_keys": Device(bob.user_id, alice.device_id).device_keys()}, 400)
    assert reply["errcode"] == "M_BAD_JSON"
    reply = await _upload(alice, {"device_keys": Device(alice.user_id, "SOMEOTHER").device_keys()}, 400)
    assert reply["errcode"] == "M_BAD_JSON"
    # A bad self-signature.
    keys = dev.device_keys()
    keys["algorithms"] = ["m.tampered"]
    assert (await _upload(alice, {"device_keys": keys}, 400))["errcode"] == "M_INVALID_SIGNATURE"
    # Malformed.
    for body in ({"device_keys": "x"}, {"one_time_keys": []}, {"one_time_keys": {"nocolon": "k"}},
                 {"device_keys": {**dev.device_keys(), "keys": {}}}):
        assert (await _upload(alice, body, 400))["errcode"] == "M_BAD_JSON", body
    # A signed one-time key before any device keys: nothing to check it with.
    assert (await _upload(alice, {"one_time_keys": dev.otks(1)}, 400))["errcode"] == "M_INVALID_SIGNATURE"
    await _upload(alice, {"device_keys": dev.device_keys()})
    # Signed by another key.
    stranger = Device(alice.user_id, alice.device_id)
    assert (await _upload(alice, {"one_time_keys": stranger.otks(1)}, 400))["errcode"] == "M_INVALID_SIGNATURE"
    two_fallbacks = {"signed_curve25519:F1": dev.otk(fallback=True), "signed_curve25519:F2": dev.otk(fallback=True)}
    assert (await _upload(alice, {"fallback_keys": two_fallbacks}, 400))["errcode"] == "M_BAD_JSON"
    # Unauthenticated.
    assert (await alice.post("/keys/upload", {}, token=None)).status == 401


async def test_claim_order_fallback_and_sync_counts(alice: Api, bob: Api) -> None:
    dev = _device(alice)
    first, second = dev.otks(2, prefix="one"), dev.otks(2, prefix="two")
    fallback = {"signed_curve25519:FB": dev.otk(fallback=True)}
    await _upload(alice, {"device_keys": dev.device_keys(), "one_time_keys": first, "fallback_keys": fallback})
    await _upload(alice, {"one_time_keys": second})
    sync = await alice.sync()
    assert sync["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]

    claimed = []
    for _ in range(4):
        body = await bob.ok("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
        assert body["failures"] == {}
        (key_id, key), = body["one_time_keys"][alice.user_id][alice.device_id].items()
        assert {**first, **second}[key_id] == key
        claimed.append(key_id)
    assert set(claimed[:2]) == set(first) and set(claimed[2:]) == set(second)
    since = sync["next_batch"]
    sync = await alice.sync(since=since)
    assert sync["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]
    for _ in range(2):  # the fallback key, again and again
        body = await bob.ok("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}})
        assert body["one_time_keys"] == {alice.user_id: {alice.device_id: fallback}}
    assert (await alice.sync())["device_unused_fallback_key_types"] == []
    # A new fallback key is unused again.
    await _upload(alice, {"fallback_keys": {"signed_curve25519:FB2": dev.otk(fallback=True)}})
    assert (await alice.sync())["device_unused_fallback_key_types"] == ["signed_curve25519"]
    # Unknown devices are left out; remote users are failures while federation is off.
    body = await bob.ok("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {"NOPE": "signed_curve25519"},
                                                                  "@carol:elsewhere.example": {"C": "signed_curve25519"}},
                                                "timeout": 1000})
    assert body["one_time_keys"] == {}
    assert set(body["failures"]) == {"elsewhere.example"}
    assert (await bob.post("/keys/claim", {"one_time_keys": {"notauser": {}}})).status == 400
    assert (await bob.post("/keys/claim", {})).status == 400


async def test_query_remote_user_failure_and_validation(alice: Api) -> None:
    answer = await _query(alice, {"@carol:elsewhere.example": []})
    assert answer["device_keys"] == {} and set(answer["failures"]) == {"elsewhere.example"}
    assert (await alice.post("/keys/query", {"device_keys": {alice.user_id: "x"}})).status == 400
    assert (await alice.post("/keys/query", {"device_keys": {"x": []}})).status == 400
    assert (await alice.post("/keys/query", {})).status == 400


def _uia_auth(api: Api, session: str) -> dict[str, Any]:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": api.user_id},
            "password": PASSWORD, "session": session}


async def test_cross_signing_upload_and_uia(alice: Api, bob: Api) -> None:
    xs = CrossSigning(alice.user_id)
    # A self-signing key with no master key anywhere: 400 M_MISSING_PARAM.
    reply = await alice.post("/keys/device_signing/upload", {"self_signing_key": xs.self_signing_key})
    assert (reply.status, reply.body["errcode"]) == (400, "M_MISSING_PARAM")
    # Badly signed self-signing key.
    bad = CrossSigning(alice.user_id)
    reply = await alice.post("/keys/device_signing/upload",
                             {"master_key": xs.master_key, "self_signing_key": bad.self_signing_key})
    assert (reply.status, reply.body["errcode"]) == (400, "M_INVALID_SIGNATURE")
    reply = await alice.post("/keys/device_signing/upload", {"master_key": CrossSigning(bob.user_id).master_key})
    assert (reply.status, reply.body["errcode"]) == (400, "M_INVALID_PARAM")
    # First upload: no UIA.
    await alice.ok("POST", "/keys/device_signing/upload", xs.upload_body())
    # The same keys again: no UIA either (v1.11).
    await alice.ok("POST", "/keys/device_signing/upload", xs.upload_body())
    await alice.ok("POST", "/keys/device_signing/upload", {"master_key": xs.master_key})

    mine = await _query(alice, {alice.user_id: []})
    assert mine["master_keys"][alice.user_id] == xs.master_key
    assert mine["self_signing_keys"][alice.user_id] == xs.self_signing_key
    assert mine["user_signing_keys"][alice.user_id] == xs.user_signing_key
    theirs = await _query(bob, {alice.user_id: []})
    assert theirs["master_keys"][alice.user_id] == xs.master_key
    assert theirs["user_signing_keys"] == {}

    # Replacing them needs UIA.
    new = CrossSigning(alice.user_id)
    reply = await alice.post("/keys/device_signing/upload", new.upload_body())
    assert reply.status == 401 and reply.body["flows"] == [{"stages": ["m.login.password"]}]
    session = reply.body["session"]
    wrong = await alice.post("/keys/device_signing/upload",
                             {**new.upload_body(), "auth": {**_uia_auth(alice, session), "password": "nope"}})
    assert wrong.status == 401 and wrong.body["errcode"] == "M_FORBIDDEN"
    await alice.ok("POST", "/keys/device_signing/upload", {**new.upload_body(), "auth": _uia_auth(alice, session)})
    assert (await _query(bob, {alice.user_id: []}))["master_keys"][alice.user_id] == new.master_key
    # A new self-signing key signed by the stored master key (UIA again: it replaces one).
    newer = CrossSigning(alice.user_id)
    newer.master = new.master
    newer.self_signing_key = newer._key(newer.self_signing, "self_signing", signer=new.master)
    reply = await alice.post("/keys/device_signing/upload", {"self_signing_key": newer.self_signing_key})
    assert reply.status == 401
    await alice.ok("POST", "/keys/device_signing/upload",
                   {"self_signing_key": newer.self_signing_key, "auth": _uia_auth(alice, reply.body["session"])})
    assert (await _query(bob, {alice.user_id: []}))["self_signing_keys"][alice.user_id] == newer.self_signing_key


async def test_cross_signing_key_colliding_with_a_device_id(app, alice: Api) -> None:
    xs = CrossSigning(alice.user_id)
    await alice.login(device_id=xs.master.version)
    reply = await alice.post("/keys/device_signing/upload", xs.upload_body())
    assert (reply.status, reply.body["errcode"]) == (403, "M_FORBIDDEN")


async def test_signature_upload_merged_into_query(alice: Api, bob: Api) -> None:
    adev, bdev = _device(alice), _device(bob)
    axs, bxs = CrossSigning(alice.user_id), CrossSigning(bob.user_id)
    await _upload(alice, {"device_keys": adev.device_keys()})
    await _upload(bob, {"device_keys": bdev.device_keys()})
    await alice.ok("POST", "/keys/device_signing/upload", axs.upload_body())
    await bob.ok("POST", "/keys/device_signing/upload", bxs.upload_body())

    from roomactors.protocol.signing import sign_json

    ssk_id = f"ed25519:{axs.self_signing.version}"
    usk_id = f"ed25519:{axs.user_signing.version}"
    master_by_device = sign_json(axs.master_key, alice.user_id, adev.key)
    tampered = axs.sign_device(adev.device_keys())
    tampered["signatures"][alice.user_id][ssk_id] = tampered["signatures"][alice.user_id][f"ed25519:{alice.device_id}"]
    body = await alice.ok("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: axs.sign_device(adev.device_keys()), axs.master.version: master_by_device},
        bob.user_id: {bxs.master.version: axs.sign_master_of(bxs.master_key)},
    })
    assert body == {"failures": {}}
    bad = await alice.ok("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: tampered, "NODEVICE": axs.sign_device(Device(alice.user_id, "NODEVICE").device_keys())},
        bob.user_id: {bxs.master.version: CrossSigning(alice.user_id).sign_master_of(bxs.master_key)},
    })
    assert bad["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    assert bad["failures"][alice.user_id]["NODEVICE"]["errcode"] == "M_NOT_FOUND"
    assert bad["failures"][bob.user_id][bxs.master.version]["errcode"] == "M_INVALID_SIGNATURE"

    as_bob = await _query(bob, {alice.user_id: [], bob.user_id: []})
    device = as_bob["device_keys"][alice.user_id][alice.device_id]
    assert ssk_id in device["signatures"][alice.user_id]
    assert f"ed25519:{alice.device_id}" in as_bob["master_keys"][alice.user_id]["signatures"][alice.user_id]
    # Alice's user-signing signature of Bob's master key is Alice's alone to see.
    assert alice.user_id not in as_bob["master_keys"][bob.user_id].get("signatures", {})
    as_alice = await _query(alice, {bob.user_id: []})
    assert usk_id in as_alice["master_keys"][bob.user_id]["signatures"][alice.user_id]


async def test_keys_go_with_the_device(alice: Api, bob: Api) -> None:
    second = await alice.login()
    dev = _device(second)
    await _upload(second, {"device_keys": dev.device_keys(), "one_time_keys": dev.otks(2)})
    assert second.device_id in (await _query(bob, {alice.user_id: []}))["device_keys"][alice.user_id]
    await second.ok("POST", "/logout", {})
    assert (await _query(bob, {alice.user_id: []}))["device_keys"][alice.user_id] == {}
    body = await bob.ok("POST", "/keys/claim", {"one_time_keys": {alice.user_id: {second.device_id: "signed_curve25519"}}})
    assert body["one_time_keys"] == {}
