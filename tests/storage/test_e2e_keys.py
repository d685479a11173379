"""storage/e2e_keys.py on a migrated in-memory database: device keys (idempotent,
conflicts), one-time keys claimed in upload order then the fallback key, counts,
cross-signing keys and signatures merged by visibility, device-list change records,
and deletion with the device."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from roomactors.protocol import e2e_keys as proto
from storage import accounts, device_lists
from storage import e2e_keys as store
from storage.schema import device_list_changes
from tests.helpers.e2e_keys import CrossSigning, Device
from tests.storage.users import add_devices

ALICE = "@alice:hs"
BOB = "@bob:hs"


def _upload(conn, dev: Device, *, device_keys=True, otks=None, fallback=None):
    vk = proto.device_ed25519_key(dev.device_keys())
    return store.upload_keys(
        conn, dev.user_id, dev.device_id,
        device_keys=dev.device_keys() if device_keys else None,
        checked_with=None if device_keys else dev.public,
        one_time_keys=proto.check_one_time_keys(otks or {}, dev.user_id, vk),
        fallback_keys=proto.check_one_time_keys(fallback or {}, dev.user_id, vk, fallback=True),
        ts=1,
    )


def _changes(conn, user_id: str) -> list[str | None]:
    return list(conn.execute(
        sa.select(device_list_changes.c.device_id).where(device_list_changes.c.user_id == user_id)
        .order_by(device_list_changes.c.stream_id)
    ).scalars())


def test_device_keys_idempotent_and_replaced(conn: sa.Connection) -> None:
    dev = Device(ALICE, "A1")
    with conn.begin():
        add_devices(conn, ALICE, "A1")
        before = _changes(conn, ALICE)  # (the device's creation may be one)
        assert _upload(conn, dev) == {"signed_curve25519": 0}
        assert store.get_stored_device_keys(conn, ALICE, "A1") == dev.device_keys()
        assert _changes(conn, ALICE) == [*before, "A1"]
        _upload(conn, dev)  # the same keys again: nothing new
        assert _changes(conn, ALICE) == [*before, "A1"]
        assert device_lists.current_device_list_stream_id(conn, ALICE) > 0
    other = Device(ALICE, "A1")
    with conn.begin():  # new identity keys replace the old ones and are a change
        _upload(conn, other)
        assert store.get_stored_device_keys(conn, ALICE, "A1")["keys"] == other.device_keys()["keys"]
        assert _changes(conn, ALICE) == [*before, "A1", "A1"]
        # Unknown device: refused.
    with pytest.raises(store.KeyUploadConflict), conn.begin():
        _upload(conn, Device(ALICE, "GONE"))


def test_claim_in_upload_order_then_fallback(conn: sa.Connection) -> None:
    dev = Device(ALICE, "A1")
    first = dev.otks(3, prefix="first")
    second = dev.otks(2, prefix="second")
    fb = {"signed_curve25519:FB1": dev.otk(fallback=True)}
    with conn.begin():
        add_devices(conn, ALICE, "A1")
        add_devices(conn, BOB, "B1")
        _upload(conn, dev, otks=first, fallback=fb)
        assert _upload(conn, dev, device_keys=False, otks=second) == {"signed_curve25519": 5}
        assert store.unused_fallback_key_types(conn, ALICE, "A1") == ["signed_curve25519"]
    claimed = []
    with conn.begin():
        for _ in range(5):
            got = store.claim_local_keys(conn, {ALICE: {"A1": "signed_curve25519"}})
            (key_id,) = got[ALICE]["A1"]
            claimed.append(key_id)
            assert got[ALICE]["A1"][key_id] == {**first, **second}[key_id]
    # Everything from the first upload before anything of the second.
    assert set(claimed[:3]) == set(first) and set(claimed[3:]) == set(second)
    with conn.begin():
        assert store.one_time_key_counts(conn, ALICE, "A1") == {"signed_curve25519": 0}
        for _ in range(2):  # the fallback key: reused, marked used, not deleted
            got = store.claim_local_keys(conn, {ALICE: {"A1": "signed_curve25519"}})
            assert got == {ALICE: {"A1": fb}}
        assert store.unused_fallback_key_types(conn, ALICE, "A1") == []
        # Unknown device / algorithm: left out.
        assert store.claim_local_keys(conn, {ALICE: {"A1": "curve25519", "ZZ": "signed_curve25519"}, BOB: {"B1": "x"}}) == {}
        # The same fallback key again keeps ``used``; a new one is unused.
        _upload(conn, dev, device_keys=False, fallback=fb)
        assert store.unused_fallback_key_types(conn, ALICE, "A1") == []
        _upload(conn, dev, device_keys=False, fallback={"signed_curve25519:FB2": dev.otk(fallback=True)})
        assert store.unused_fallback_key_types(conn, ALICE, "A1") == ["signed_curve25519"]


def test_one_time_key_id_reuse(conn: sa.Connection) -> None:
    dev = Device(ALICE, "A1")
    otks = dev.otks(2)
    with conn.begin():
        add_devices(conn, ALICE, "A1")
        _upload(conn, dev, otks=otks)
        assert _upload(conn, dev, device_keys=False, otks=otks) == {"signed_curve25519": 2}  # same: ignored
    key_id = next(iter(otks))
    with pytest.raises(store.KeyUploadConflict), conn.begin():
        _upload(conn, dev, device_keys=False, otks={key_id: dev.otk(), "signed_curve25519:new": dev.otk()})
    with conn.begin():
        assert store.one_time_key_counts(conn, ALICE, "A1") == {"signed_curve25519": 2}  # rolled back whole
        # A changed device key since the check: refused.
    with pytest.raises(store.KeyUploadConflict), conn.begin():
        store.upload_keys(conn, ALICE, "A1", device_keys=None, checked_with="other", one_time_keys={},
                          fallback_keys={}, ts=1)


def test_query_cross_signing_and_signature_visibility(conn: sa.Connection) -> None:
    a1, b1 = Device(ALICE, "A1"), Device(BOB, "B1")
    axs, bxs = CrossSigning(ALICE), CrossSigning(BOB)
    with conn.begin():
        add_devices(conn, ALICE, "A1", "A2")
        add_devices(conn, BOB, "B1")
        a_before, b_before = _changes(conn, ALICE), _changes(conn, BOB)
        _upload(conn, a1)
        _upload(conn, b1)
        assert store.upload_cross_signing_keys(
            conn, ALICE, {"master": axs.master_key, "self_signing": axs.self_signing_key,
                          "user_signing": axs.user_signing_key}, 1)
        assert not store.upload_cross_signing_keys(conn, ALICE, {"master": axs.master_key}, 2)
        store.upload_cross_signing_keys(conn, BOB, {"master": bxs.master_key, "self_signing": bxs.self_signing_key}, 1)
        assert _changes(conn, ALICE) == [*a_before, "A1", None]
        items, failures = proto.check_signature_upload(
            ALICE,
            {ALICE: {"A1": axs.sign_device(a1.device_keys())}, BOB: {bxs.master.version: axs.sign_master_of(bxs.master_key)}},
            own_devices={"A1": a1.device_keys()},
            own_keys=store.get_cross_signing_keys(conn, ALICE, include_user_signing=True),
            master_keys={BOB: store.get_cross_signing_keys(conn, BOB)["master"]},
        )
        assert failures == {}
        store.store_signatures(conn, items)
        store.store_signatures(conn, items)  # again: nothing new
        assert _changes(conn, ALICE) == [*a_before, "A1", None, "A1"]
        assert _changes(conn, BOB) == [*b_before, "B1", None]  # a user-signing signature is private to its signer

        ssk_id = f"ed25519:{axs.self_signing.version}"
        usk_id = f"ed25519:{axs.user_signing.version}"
        as_alice = store.query_local_keys(conn, ALICE, {ALICE: [], BOB: [], "@nobody:hs": []})
        as_bob = store.query_local_keys(conn, BOB, {ALICE: ["A1", "A2"], BOB: []})
        remote = store.query_local_keys(conn, None, {ALICE: [], BOB: []}, include_display_names=False)

    assert set(as_alice["device_keys"]) == {ALICE, BOB}  # unknown user left out
    assert set(as_alice["device_keys"][ALICE]) == {"A1"}  # A2 has no keys
    a1_seen = as_alice["device_keys"][ALICE]["A1"]
    assert a1_seen["unsigned"] == {"device_display_name": "A1 name"}
    assert ssk_id in a1_seen["signatures"][ALICE]  # merged, visible to everyone
    assert ssk_id in as_bob["device_keys"][ALICE]["A1"]["signatures"][ALICE]
    assert remote["device_keys"][ALICE]["A1"]["unsigned"] == {}
    # user_signing only for the requester's own user.
    assert as_alice["user_signing_keys"] == {ALICE: axs.user_signing_key}
    assert as_bob["user_signing_keys"] == {}
    assert "user_signing_keys" not in remote
    assert as_alice["self_signing_keys"][BOB] == bxs.self_signing_key
    # Alice's signature of Bob's master key: only Alice sees it.
    (usk_item,) = [i for i in items if i.target_user_id == BOB]
    assert as_alice["master_keys"][BOB]["signatures"][ALICE] == {usk_id: usk_item.signature}
    assert ALICE not in as_bob["master_keys"][BOB].get("signatures", {})
    assert ALICE not in remote["master_keys"][BOB].get("signatures", {})

    with conn.begin():
        devices = store.get_user_devices(conn, ALICE)
        assert [d["device_id"] for d in devices] == ["A1"] and devices[0]["device_display_name"] == "A1 name"
        assert ssk_id in devices[0]["keys"]["signatures"][ALICE]
        assert "device_display_name" not in store.get_user_devices(conn, ALICE, include_display_names=False)[0]
        assert set(store.get_cross_signing_keys(conn, ALICE)) == {"master", "self_signing"}
        assert store.get_device_keys(conn, ALICE, "A1")["signatures"][ALICE][ssk_id]


def test_device_deletion_deletes_keys(conn: sa.Connection) -> None:
    a1, a2, a3 = Device(ALICE, "A1"), Device(ALICE, "A2"), Device(ALICE, "A3")
    with conn.begin():
        add_devices(conn, ALICE, "A1", "A2", "A3")
        for dev in (a1, a2, a3):
            _upload(conn, dev, otks=dev.otks(2), fallback={"signed_curve25519:F": dev.otk(fallback=True)})
        accounts.delete_devices(conn, ALICE, ["A1"])
        assert store.get_stored_device_keys(conn, ALICE, "A1") is None
        assert store.one_time_key_counts(conn, ALICE, "A1") == {"signed_curve25519": 0}
        assert store.unused_fallback_key_types(conn, ALICE, "A1") == []
        assert store.one_time_key_counts(conn, ALICE, "A2") == {"signed_curve25519": 2}
        accounts.delete_user_tokens(conn, ALICE, except_device="A2")  # logout of the others
        assert store.get_stored_device_keys(conn, ALICE, "A3") is None
        assert store.get_stored_device_keys(conn, ALICE, "A2") is not None
        accounts.deactivate_user(conn, ALICE)
        assert store.get_stored_device_keys(conn, ALICE, "A2") is None
        assert store.unused_fallback_key_types(conn, ALICE, "A2") == []
