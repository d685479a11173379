"""storage.room_keys on a migrated in-memory database: versions, the replacement
rules, etags and counts, and that a refused write leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from storage import room_keys as rk
from storage.room_keys import KeyBackupData, UnknownBackupVersion, WrongBackupVersion
from storage.schema import room_key_versions, room_keys

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
ROOM = "!room:example.org"
ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
AUTH = {"public_key": "pk"}


def run(conn: sa.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """One transaction, as db.write runs it (rolled back if fn raises)."""
    with conn.begin():
        return fn(conn, *args)


def key(index: int = 0, forwarded: int = 0, verified: bool = False, data: str = "d") -> KeyBackupData:
    return KeyBackupData(index, forwarded, verified, {"ciphertext": data})


def stored(conn: sa.Connection, user: str, version: str) -> dict[str, dict[str, KeyBackupData]]:
    return run(conn, rk.get_keys, user, version)


# --------------------------------------------------------------------- versions


def test_versions_are_allocated_per_user_increasing_and_never_reused(conn: sa.Connection) -> None:
    assert run(conn, rk.create_version, ALICE, ALGORITHM, AUTH) == "1"
    assert run(conn, rk.create_version, ALICE, ALGORITHM, AUTH) == "2"
    assert run(conn, rk.create_version, BOB, ALGORITHM, AUTH) == "1"
    run(conn, rk.delete_version, ALICE, "2")
    assert run(conn, rk.create_version, ALICE, ALGORITHM, AUTH) == "3"


def test_the_current_version_is_the_largest_non_deleted(conn: sa.Connection) -> None:
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.get_version, ALICE, None)
    run(conn, rk.create_version, ALICE, ALGORITHM, {"public_key": "one"})
    run(conn, rk.create_version, ALICE, ALGORITHM, {"public_key": "two"})
    current = run(conn, rk.get_version, ALICE, None)
    assert current.to_json() == {
        "algorithm": ALGORITHM, "auth_data": {"public_key": "two"}, "count": 0, "etag": "0", "version": "2",
    }
    # Synapse: current = MAX(version) WHERE deleted = 0, so the older one is current again.
    run(conn, rk.delete_version, ALICE, "2")
    assert run(conn, rk.get_version, ALICE, None).version == "1"
    run(conn, rk.delete_version, ALICE, "1")
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.get_version, ALICE, None)


@pytest.mark.parametrize("version", ["0", "01", "+1", " 1", "1.0", "x", "", "٣", "9" * 30])
def test_version_strings_that_cannot_be_ours_name_no_backup(conn: sa.Connection, version: str) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    assert rk.parse_version(version) is None
    for fn in (rk.get_version, rk.delete_version, rk.get_keys, rk.delete_keys):
        with pytest.raises(UnknownBackupVersion):
            run(conn, fn, ALICE, version)


def test_update_changes_auth_data_only_and_checks_the_algorithm(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": key()}})
    run(conn, rk.update_version, ALICE, "1", ALGORITHM, {"public_key": "new"})
    info = run(conn, rk.get_version, ALICE, "1")
    assert (info.auth_data, info.count, info.etag) == ({"public_key": "new"}, 1, "1")
    with pytest.raises(rk.AlgorithmMismatch):
        run(conn, rk.update_version, ALICE, "1", "m.other", AUTH)
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.update_version, ALICE, "2", ALGORITHM, AUTH)


def test_deleting_a_version_deletes_its_keys_and_again_is_fine(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s1": key(), "s2": key()}})
    run(conn, rk.delete_version, ALICE, "1")
    with conn.begin():
        assert conn.execute(sa.select(sa.func.count()).select_from(room_keys)).scalar() == 0
    run(conn, rk.delete_version, ALICE, "1")  # already deleted: no error
    for fn in (rk.get_version, rk.get_keys, rk.delete_keys):
        with pytest.raises(UnknownBackupVersion):
            run(conn, fn, ALICE, "1")
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.delete_version, ALICE, "7")


def test_a_users_backups_are_their_own(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": key()}})
    for fn in (rk.get_version, rk.get_keys, rk.delete_keys, rk.delete_version):
        with pytest.raises(UnknownBackupVersion):
            run(conn, fn, BOB, "1")
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.put_keys, BOB, "1", {ROOM: {"s": key()}})
    assert run(conn, rk.get_version, ALICE, "1").count == 1


def test_delete_all_for_user(conn: sa.Connection) -> None:
    for user in (ALICE, BOB):
        run(conn, rk.create_version, user, ALGORITHM, AUTH)
        run(conn, rk.put_keys, user, "1", {ROOM: {"s": key()}})
    run(conn, rk.delete_all_for_user, ALICE)
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.get_version, ALICE, None)
    assert run(conn, rk.get_version, BOB, None).count == 1


# -------------------------------------------------------------------------- keys


def test_writes_go_to_the_current_version_only(conn: sa.Connection) -> None:
    with pytest.raises(UnknownBackupVersion):  # no backup at all
        run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": key()}})
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    with pytest.raises(WrongBackupVersion) as refused:
        run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": key()}})
    assert refused.value.current_version == "2"
    with pytest.raises(UnknownBackupVersion):  # does not exist: 404 before 403
        run(conn, rk.put_keys, ALICE, "3", {ROOM: {"s": key()}})
    with pytest.raises(UnknownBackupVersion):
        run(conn, rk.put_keys, ALICE, "x", {ROOM: {"s": key()}})
    assert run(conn, rk.put_keys, ALICE, "2", {ROOM: {"s": key()}}) == ("1", 1)
    # Deleting the current version makes version 1 current (and writable) again.
    run(conn, rk.delete_version, ALICE, "2")
    assert run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": key()}}) == ("1", 1)


# (existing, uploaded, replaced?): the spec's rules in order ("Server-side key backups").
REPLACEMENT_CASES = [
    # 1. different is_verified: the verified one is kept, whatever the other fields say
    (key(5, 5, False), key(9, 9, True), True),
    (key(9, 9, True), key(0, 0, False), False),
    (key(0, 0, False), key(0, 0, True), True),
    (key(0, 0, True), key(0, 0, False), False),
    # 2. same is_verified: the lower first_message_index is kept, whatever forwarded_count says
    (key(5, 0, False), key(4, 9, False), True),
    (key(4, 9, True), key(5, 0, True), False),
    (key(5, 0, True), key(1, 3, True), True),
    # 3. same is_verified and first_message_index: the lower forwarded_count is kept
    (key(3, 2, False), key(3, 1, False), True),
    (key(3, 1, True), key(3, 2, True), False),
    # a full tie keeps the existing key
    (key(3, 1, False), key(3, 1, False), False),
    (key(3, 1, True), key(3, 1, True), False),
]


@pytest.mark.parametrize(("existing", "new", "replaced"), REPLACEMENT_CASES)
def test_replacement_rules(conn: sa.Connection, existing: KeyBackupData, new: KeyBackupData, replaced: bool) -> None:
    assert rk.should_replace(existing, new) is replaced
    existing = KeyBackupData(existing.first_message_index, existing.forwarded_count, existing.is_verified, {"v": "old"})
    new = KeyBackupData(new.first_message_index, new.forwarded_count, new.is_verified, {"v": "new"})
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    etag, count = run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": existing}})
    etag2, count2 = run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": new}})
    assert stored(conn, ALICE, "1") == {ROOM: {"s": new if replaced else existing}}
    assert count2 == count == 1
    assert (etag2 != etag) is replaced


def test_etag_changes_exactly_when_keys_change_and_count_follows(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    assert run(conn, rk.get_version, ALICE, "1").etag == "0"
    etags = []
    etag, count = run(conn, rk.put_keys, ALICE, "1", {ROOM: {"a": key(), "b": key()}, "!r2:x": {"c": key()}})
    etags.append(etag)
    assert count == 3
    assert run(conn, rk.put_keys, ALICE, "1", {ROOM: {"a": key(1)}}) == (etag, 3)  # not better: nothing changes
    etag, count = run(conn, rk.put_keys, ALICE, "1", {ROOM: {"a": key(0, 0, True)}})  # replaced
    etags.append(etag)
    assert count == 3
    assert run(conn, rk.delete_keys, ALICE, "1", ROOM, "nope") == (etag, 3)  # nothing deleted
    etag, count = run(conn, rk.delete_keys, ALICE, "1", ROOM, "a")
    etags.append(etag)
    assert count == 2
    etag, count = run(conn, rk.delete_keys, ALICE, "1", ROOM)
    etags.append(etag)
    assert count == 1
    etag, count = run(conn, rk.delete_keys, ALICE, "1")
    etags.append(etag)
    assert count == 0
    etag, count = run(conn, rk.put_keys, ALICE, "1", {ROOM: {"a": key()}})  # the same key as at first
    etags.append(etag)
    assert len(set(etags)) == len(etags)  # never repeats, so a client sees every change
    info = run(conn, rk.get_version, ALICE, "1")
    assert (info.etag, info.count) == (etag, 1)


def test_count_matches_the_rows(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.put_keys, ALICE, "1", {f"!r{r}:x": {f"s{s}": key(s) for s in range(5)} for r in range(4)})
    run(conn, rk.put_keys, ALICE, "1", {"!r0:x": {"s0": key(0, 0, True), "new": key()}})
    run(conn, rk.delete_keys, ALICE, "1", "!r1:x")
    run(conn, rk.delete_keys, ALICE, "1", "!r2:x", "s3")
    with conn.begin():
        rows = conn.execute(sa.select(sa.func.count()).select_from(room_keys)).scalar()
        key_count = conn.execute(sa.select(room_key_versions.c.key_count)).scalar()
    assert rows == key_count == 4 * 5 + 1 - 5 - 1


def test_get_keys_at_three_levels_from_any_live_version(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.put_keys, ALICE, "1", {ROOM: {"a": key(1), "b": key(2)}, "!r2:x": {"c": key(3)}})
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)  # version 1 is old but still readable
    assert stored(conn, ALICE, "1") == {ROOM: {"a": key(1), "b": key(2)}, "!r2:x": {"c": key(3)}}
    assert run(conn, rk.get_keys, ALICE, "1", ROOM) == {ROOM: {"a": key(1), "b": key(2)}}
    assert run(conn, rk.get_keys, ALICE, "1", ROOM, "b") == {ROOM: {"b": key(2)}}
    assert run(conn, rk.get_keys, ALICE, "1", ROOM, "zz") == {}
    assert run(conn, rk.get_keys, ALICE, "1", "!none:x") == {}
    assert stored(conn, ALICE, "2") == {}
    # Deleting from the older version is allowed (key_backup.yaml gives DELETE no 403).
    assert run(conn, rk.delete_keys, ALICE, "1", "!r2:x")[1] == 2


def test_a_refused_upload_writes_nothing(conn: sa.Connection) -> None:
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    run(conn, rk.create_version, ALICE, ALGORITHM, AUTH)
    with pytest.raises(WrongBackupVersion):
        run(conn, rk.put_keys, ALICE, "1", {ROOM: {"s": key()}})
    with conn.begin():
        assert conn.execute(sa.select(sa.func.count()).select_from(room_keys)).scalar() == 0
