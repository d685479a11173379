"""storage.keys: server_keys rows, round trips and the "newer wins" upsert."""

from __future__ import annotations

import sqlalchemy as sa

from storage.keys import KeyRow, get_server_keys, upsert_server_keys


def store(conn, server, *rows, fetched_ts=1, response='{"r":1}'):
    with conn.begin():
        upsert_server_keys(conn, server, list(rows), fetched_ts=fetched_ts, response_json=response)


def read(conn, servers, key_ids=None):
    with conn.begin():
        return get_server_keys(conn, servers, key_ids)


def test_round_trip(conn: sa.Connection):
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 100), KeyRow("ed25519:0", "BBBB", 50, 50))
    store(conn, "b.example", KeyRow("ed25519:x", "CCCC", 200), fetched_ts=7, response='{"r":2}')
    rows = read(conn, ["a.example", "b.example"])
    assert [(r.server_name, r.key_id, r.verify_key, r.valid_until_ts, r.expired_ts) for r in rows] == [
        ("a.example", "ed25519:0", "BBBB", 50, 50),
        ("a.example", "ed25519:1", "AAAA", 100, None),
        ("b.example", "ed25519:x", "CCCC", 200, None),
    ]
    assert rows[2].fetched_ts == 7 and rows[2].response_json == '{"r":2}'
    assert [r.key_id for r in read(conn, ["a.example"], ["ed25519:1", "ed25519:9"])] == ["ed25519:1"]
    assert read(conn, ["a.example"], []) == []
    assert read(conn, []) == []
    assert read(conn, ["nobody.example"]) == []


def test_newer_wins(conn: sa.Connection):
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 100), response="first")
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 200), fetched_ts=2, response="fresher")
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 150), fetched_ts=3, response="stale notary copy")
    (row,) = read(conn, ["a.example"])
    assert (row.valid_until_ts, row.fetched_ts, row.response_json) == (200, 2, "fresher")
    # Retiring a key is news even though its validity ends earlier.
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 120, 120), fetched_ts=4, response="rotated")
    (row,) = read(conn, ["a.example"])
    assert (row.valid_until_ts, row.expired_ts, row.response_json) == (120, 120, "rotated")
    # ...but a stale copy that still lists it as current does not un-retire it.
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 110), fetched_ts=5, response="stale")
    store(conn, "a.example", KeyRow("ed25519:1", "AAAA", 999), fetched_ts=6, response="stale but long")
    (row,) = read(conn, ["a.example"])
    assert (row.expired_ts, row.response_json) == (120, "rotated")
