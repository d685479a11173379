"""storage/device_lists.py (the change stream) and storage/remote_devices.py (the
remote device-list cache) on a fresh database."""

from __future__ import annotations

import sqlalchemy as sa

from storage import accounts, device_lists, remote_devices
from storage.accounts import current_stream_id

ALICE = "@alice:a.example"
BOB = "@bob:b.example"


def _user(conn: sa.Connection, user_id: str = ALICE) -> None:
    accounts.create_user(conn, user_id, None, created_ts=1)


def test_changes_take_misc_positions_and_device_chain_skips_signing_changes(conn: sa.Connection) -> None:
    with conn.begin():
        _user(conn)
        start = current_stream_id(conn)
        assert device_lists.current_device_list_stream_id(conn, ALICE) == 0
        accounts.upsert_device(conn, ALICE, "DEV1", display_name=None, ts=1, ip=None)  # records a change
        first = device_lists.current_device_list_stream_id(conn, ALICE)
        assert first == current_stream_id(conn) > start
        signing = device_lists.record_signing_key_change(conn, ALICE)
        # A cross-signing change is in the stream but not in the device chain
        # (m.signing_key_update carries no stream ID).
        assert signing > first and device_lists.current_device_list_stream_id(conn, ALICE) == first
        second = device_lists.record_device_change(conn, ALICE, "DEV1")
        assert device_lists.current_device_list_stream_id(conn, ALICE) == second > signing
    with conn.begin():
        assert device_lists.users_changed_between(conn, start, second) == {ALICE}
        assert device_lists.users_changed_between(conn, second, second) == set()
        assert device_lists.users_changed_between(conn, signing, second) == {ALICE}


def test_device_paths_record_changes(conn: sa.Connection) -> None:
    with conn.begin():
        _user(conn)
        for dev in ("A", "B", "C"):
            accounts.upsert_device(conn, ALICE, dev, display_name=None, ts=1, ip=None)
        pos = current_stream_id(conn)
        # Refreshing an existing device is not a change.
        accounts.upsert_device(conn, ALICE, "A", display_name=None, ts=2, ip=None)
        assert current_stream_id(conn) == pos
        assert accounts.update_device(conn, ALICE, "A", "phone")
        assert current_stream_id(conn) == pos + 1
        accounts.delete_devices(conn, ALICE, ["B", "nope"])
        assert current_stream_id(conn) == pos + 2  # only the device that existed
        accounts.delete_user_tokens(conn, ALICE, except_device="A")
        assert current_stream_id(conn) == pos + 3  # C
        rows = conn.execute(sa.text("SELECT device_id FROM device_list_changes ORDER BY stream_id")).scalars().all()
        assert rows[-3:] == ["A", "B", "C"]


def test_no_outbox_rows_without_remote_room_mates(conn: sa.Connection) -> None:
    from storage import outbox

    with conn.begin():
        _user(conn)
        accounts.upsert_device(conn, ALICE, "A", display_name=None, ts=1, ip=None)
        device_lists.record_signing_key_change(conn, ALICE)
        assert outbox.count_edus(conn) == 0
        # A remote user's change is recorded for room-mates, never sent.
        device_lists.record_remote_change(conn, BOB)
        assert device_lists.users_changed_between(conn, 0, current_stream_id(conn)) == {ALICE, BOB}


def test_initial_sync_reports_nothing(conn: sa.Connection) -> None:
    with conn.begin():
        _user(conn)
        accounts.upsert_device(conn, ALICE, "A", display_name=None, ts=1, ip=None)
        assert device_lists.sync_device_lists(
            conn, ALICE, initial=True, since_events=0, upto_events=0, since_misc=0, upto_misc=10
        ) == ([], [])
        # The requester's own changes are reported (their other devices must learn).
        assert device_lists.sync_device_lists(
            conn, ALICE, initial=False, since_events=0, upto_events=0, since_misc=0, upto_misc=10
        ) == ([ALICE], [])
        # A stranger's change is not.
        device_lists.record_remote_change(conn, BOB)
        assert device_lists.sync_device_lists(
            conn, ALICE, initial=False, since_events=0, upto_events=0, since_misc=0, upto_misc=10
        ) == ([ALICE], [])


KEYS = {"user_id": BOB, "device_id": "X", "algorithms": [], "keys": {"ed25519:X": "k"}}
MASTER = {"user_id": BOB, "usage": ["master"], "keys": {"ed25519:m": "m"}}


def test_remote_cache_replace_update_stale_delete(conn: sa.Connection) -> None:
    with conn.begin():
        assert remote_devices.get_cache_states(conn, [BOB]) == {}
        remote_devices.replace_user_cache(
            conn, BOB, devices=[("X", "laptop", KEYS), ("Y", None, None)], master_key=MASTER,
            self_signing_key=None, stream_id=5, now_ms=1,
        )
    with conn.begin():
        assert remote_devices.get_cache_states(conn, [BOB])[BOB] == remote_devices.CacheState(5, False)
        cached = remote_devices.get_cached_users(conn, [BOB, "@x:y"])[BOB]
        assert cached.devices == {"X": ("laptop", KEYS), "Y": (None, None)}
        assert cached.master_key == MASTER and cached.self_signing_key is None
        remote_devices.apply_device_update(conn, BOB, "Y", display_name=None, keys=None, deleted=True,
                                           stream_id=7, now_ms=2)
        remote_devices.apply_device_update(conn, BOB, "Z", display_name="new", keys=None, deleted=False,
                                           stream_id=6, now_ms=2)
        cached = remote_devices.get_cached_users(conn, [BOB])[BOB]
        assert set(cached.devices) == {"X", "Z"} and cached.stream_id == 7  # never goes back
        assert remote_devices.set_signing_keys(conn, BOB, master_key=None, self_signing_key=MASTER, now_ms=3)
        assert not remote_devices.set_signing_keys(conn, "@x:y", master_key=MASTER, self_signing_key=None, now_ms=3)
        remote_devices.mark_stale(conn, BOB, now_ms=4)
        remote_devices.mark_stale(conn, "@c:c.example", now_ms=4)
        assert remote_devices.get_stale_users(conn) == [BOB, "@c:c.example"]
        assert remote_devices.get_cache_states(conn, ["@c:c.example"])["@c:c.example"] == remote_devices.CacheState(None, True)
        assert remote_devices.delete_user_cache(conn, BOB)
        assert not remote_devices.delete_user_cache(conn, BOB)
        assert remote_devices.get_cached_users(conn, [BOB]) == {}
        assert conn.execute(sa.text("SELECT count(*) FROM remote_devices")).scalar() == 0


def test_user_signature_changes_reach_the_signer_only(conn: sa.Connection) -> None:
    from roomactors.protocol.e2e_keys import SignatureItem
    from storage import e2e_keys, outbox

    carol = "@carol:a.example"
    with conn.begin():
        for user in (ALICE, "@dave:a.example", carol):
            _user(conn, user)
        start = current_stream_id(conn)
        # Nothing signed: an empty window, and no target is no position.
        assert device_lists.users_signed_between(conn, ALICE, 0, start) == set()
        assert device_lists.record_user_signature_change(conn, ALICE, [ALICE]) == 0
        assert current_stream_id(conn) == start
        pos = device_lists.record_user_signature_change(conn, ALICE, [carol, BOB, carol, ALICE])
        assert pos == current_stream_id(conn) == start + 1  # one misc position for the batch
        # Through the signature-upload write: a new user-signing signature of another
        # user's master key is recorded for its signer; the same one again is not.
        item = SignatureItem(ALICE, "ed25519:usk", "@dave:a.example", "daveMaster", "sig")
        assert e2e_keys.store_signatures(conn, [item]) == {ALICE: ["@dave:a.example"]}
        assert e2e_keys.store_signatures(conn, [item]) == {}
        upto = current_stream_id(conn)
        assert upto == pos + 1
    with conn.begin():
        assert device_lists.users_signed_between(conn, ALICE, start, pos) == {BOB, carol}
        assert device_lists.users_signed_between(conn, ALICE, pos, upto) == {"@dave:a.example"}
        assert device_lists.users_signed_between(conn, ALICE, upto, upto) == set()
        assert device_lists.users_signed_between(conn, carol, start, upto) == set()
        # Not a device-list change of anyone (so no EDU, no room-mate sees it).
        assert device_lists.users_changed_between(conn, start, upto) == set()
        assert outbox.count_edus(conn) == 0
        window = dict(initial=False, since_events=0, upto_events=0, since_misc=start, upto_misc=upto)
        # The signer's sync reports the targets, whether or not they share a room.
        assert device_lists.sync_device_lists(conn, ALICE, **window) == (sorted([BOB, carol, "@dave:a.example"]), [])
        assert device_lists.sync_device_lists(conn, carol, **window) == ([], [])
        assert device_lists.sync_device_lists(conn, ALICE, **{**window, "since_misc": upto}) == ([], [])
        # The probe is one read of the (signer, stream_id) index.
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT DISTINCT target_user_id FROM user_signature_changes"
            " WHERE signer_user_id = ? AND stream_id > ? AND stream_id <= ?", (ALICE, start, upto)
        ).fetchall()
        assert any("user_signature_changes_signer" in str(row) for row in plan), plan


def test_start_up_sweep_drops_caches_of_users_we_share_no_room_with(conn: sa.Connection) -> None:
    # A cache left behind by a crash between a leave's commit and its invalidation.
    from roomactors.device_lists import _sweep_unshared

    with conn.begin():
        remote_devices.replace_user_cache(
            conn, BOB, devices=[("BDEV", None, None)], master_key=None, self_signing_key=None, stream_id=7, now_ms=1
        )
        assert remote_devices.get_all_cached_user_ids(conn) == [BOB]
        assert _sweep_unshared(conn, "a.example") == {BOB}
        assert remote_devices.get_all_cached_user_ids(conn) == []
        assert _sweep_unshared(conn, "a.example") == set()
