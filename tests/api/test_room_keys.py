"""Server-side key backups over HTTP (quart's test client): every endpoint of
key_backup.yaml, its errors, the replacement rules, etags and counts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.client import Api

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
AUTH = {"public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo", "signatures": {"@alice:localhost": {}}}
ROOM = "!room:localhost"
ROOM2 = "!other:example.org"
V12_ROOM = "!" + "A" * 43  # a room version 12 room ID


def q(value: str) -> str:
    return quote(value, safe="")


def key(index: int = 0, forwarded: int = 0, verified: bool = False, data: str = "c") -> dict[str, Any]:
    return {
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": data, "mac": "m"},
    }


async def create(api: Api, auth_data: dict[str, Any] | None = None) -> str:
    body = await api.ok("POST", "/room_keys/version", {"algorithm": ALGORITHM, "auth_data": auth_data or AUTH})
    return body["version"]


def v(version: str) -> dict[str, str]:
    return {"version": version}


# ---------------------------------------------------------------------- versions


async def test_no_backup_is_404(alice: Api) -> None:
    reply = await alice.get("/room_keys/version")
    assert reply.err() == (404, "M_NOT_FOUND")
    assert (await alice.get("/room_keys/version/1")).err() == (404, "M_NOT_FOUND")


async def test_create_and_get_versions(alice: Api) -> None:
    first = await create(alice, {"public_key": "one"})
    second = await create(alice, {"public_key": "two"})
    assert int(second) > int(first)
    current = await alice.ok("GET", "/room_keys/version")
    assert current == {"algorithm": ALGORITHM, "auth_data": {"public_key": "two"}, "count": 0,
                       "etag": current["etag"], "version": second}
    assert isinstance(current["etag"], str)
    older = await alice.ok("GET", f"/room_keys/version/{first}")
    assert older["version"] == first and older["auth_data"] == {"public_key": "one"}
    # The older version is not current: writes to it are refused with the current one.
    reply = await alice.put(f"/room_keys/keys/{q(ROOM)}/s", key(), query=v(first))
    assert reply.err() == (403, "M_WRONG_ROOM_KEYS_VERSION")
    assert reply.body["current_version"] == second


async def test_deleting_the_current_version_makes_the_latest_remaining_current(alice: Api) -> None:
    """As Synapse: the current backup is the largest version not deleted."""
    first = await create(alice)
    second = await create(alice)
    await alice.ok("PUT", f"/room_keys/keys/{q(ROOM)}/s", key(), query=v(second))
    assert await alice.ok("DELETE", f"/room_keys/version/{second}") == {}
    assert (await alice.ok("GET", "/room_keys/version"))["version"] == first
    assert (await alice.get(f"/room_keys/version/{second}")).err() == (404, "M_NOT_FOUND")
    assert (await alice.get("/room_keys/keys", query=v(second))).err() == (404, "M_NOT_FOUND")
    # Deleting it again succeeds (key_backup.yaml); an unknown one is 404.
    assert await alice.ok("DELETE", f"/room_keys/version/{second}") == {}
    assert (await alice.delete("/room_keys/version/99")).err() == (404, "M_NOT_FOUND")
    assert (await alice.delete("/room_keys/version/nope")).err() == (404, "M_NOT_FOUND")
    # A new version never reuses a number.
    third = await create(alice)
    assert int(third) > int(second)
    await alice.ok("DELETE", f"/room_keys/version/{third}")
    await alice.ok("DELETE", f"/room_keys/version/{first}")
    assert (await alice.get("/room_keys/version")).err() == (404, "M_NOT_FOUND")


async def test_deleting_a_version_deletes_its_keys(alice: Api) -> None:
    version = await create(alice)
    await alice.ok("PUT", "/room_keys/keys", {"rooms": {ROOM: {"sessions": {"a": key(), "b": key()}}}},
                   query=v(version))
    await alice.ok("DELETE", f"/room_keys/version/{version}")
    new = await create(alice)
    assert await alice.ok("GET", "/room_keys/keys", query=v(new)) == {"rooms": {}}
    assert (await alice.ok("GET", "/room_keys/version"))["count"] == 0


async def test_update_version(alice: Api) -> None:
    version = await create(alice)
    new_auth = {"public_key": "changed", "signatures": {}}
    assert await alice.ok("PUT", f"/room_keys/version/{version}", {"algorithm": ALGORITHM, "auth_data": new_auth}) == {}
    assert (await alice.ok("GET", f"/room_keys/version/{version}"))["auth_data"] == new_auth
    # The body's version may be given if it is the path's.
    await alice.ok("PUT", f"/room_keys/version/{version}",
                   {"algorithm": ALGORITHM, "auth_data": AUTH, "version": version})
    reply = await alice.put(f"/room_keys/version/{version}",
                            {"algorithm": ALGORITHM, "auth_data": AUTH, "version": "999"})
    assert reply.err() == (400, "M_INVALID_PARAM")
    reply = await alice.put(f"/room_keys/version/{version}", {"algorithm": "m.other.algorithm", "auth_data": AUTH})
    assert reply.err() == (400, "M_INVALID_PARAM")
    reply = await alice.put("/room_keys/version/999", {"algorithm": ALGORITHM, "auth_data": AUTH})
    assert reply.err() == (404, "M_NOT_FOUND")
    assert (await alice.ok("GET", f"/room_keys/version/{version}"))["auth_data"] == AUTH


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"auth_data": AUTH}, (400, "M_MISSING_PARAM")),
        ({"algorithm": ALGORITHM}, (400, "M_MISSING_PARAM")),
        ({"algorithm": 1, "auth_data": AUTH}, (400, "M_BAD_JSON")),
        ({"algorithm": "", "auth_data": AUTH}, (400, "M_BAD_JSON")),
        ({"algorithm": ALGORITHM, "auth_data": "x"}, (400, "M_BAD_JSON")),
        ({"algorithm": ALGORITHM, "auth_data": {}}, (400, "M_BAD_JSON")),  # public_key is required
        ({"algorithm": ALGORITHM, "auth_data": {"public_key": 5}}, (400, "M_BAD_JSON")),
    ],
)
async def test_create_version_validation(alice: Api, body: dict[str, Any], expected: tuple[int, str]) -> None:
    assert (await alice.post("/room_keys/version", body)).err() == expected
    assert (await alice.post("/room_keys/version", data=b"{nope")).err() == (400, "M_NOT_JSON")
    assert (await alice.get("/room_keys/version")).err() == (404, "M_NOT_FOUND")


async def test_other_algorithms_are_stored_opaquely(alice: Api) -> None:
    version = (await alice.ok("POST", "/room_keys/version", {"algorithm": "org.example.v2", "auth_data": {"x": 1}}))[
        "version"]
    info = await alice.ok("GET", f"/room_keys/version/{version}")
    assert (info["algorithm"], info["auth_data"]) == ("org.example.v2", {"x": 1})


async def test_backups_are_per_user(alice: Api, bob: Api) -> None:
    version = await create(alice)
    await alice.ok("PUT", f"/room_keys/keys/{q(ROOM)}/s", key(), query=v(version))
    assert (await bob.get("/room_keys/version")).err() == (404, "M_NOT_FOUND")
    assert (await bob.get(f"/room_keys/version/{version}")).err() == (404, "M_NOT_FOUND")
    assert (await bob.get("/room_keys/keys", query=v(version))).err() == (404, "M_NOT_FOUND")
    assert (await bob.delete(f"/room_keys/version/{version}")).err() == (404, "M_NOT_FOUND")
    assert (await bob.put(f"/room_keys/keys/{q(ROOM)}/s", key(), query=v(version))).err() == (404, "M_NOT_FOUND")
    bobs = await create(bob)
    assert bobs == "1" and await bob.ok("GET", "/room_keys/keys", query=v(bobs)) == {"rooms": {}}
    assert (await alice.ok("GET", "/room_keys/version"))["count"] == 1


async def test_authentication_is_required(alice: Api) -> None:
    for method, path in [("GET", "/room_keys/version"), ("POST", "/room_keys/version"),
                         ("GET", "/room_keys/version/1"), ("PUT", "/room_keys/keys"),
                         ("GET", f"/room_keys/keys/{q(ROOM)}"), ("DELETE", f"/room_keys/keys/{q(ROOM)}/s")]:
        reply = await alice.request(method, path, {}, token=None, query=v("1"))
        assert reply.err() == (401, "M_MISSING_TOKEN"), (method, path)


async def test_unknown_methods_are_unrecognized(alice: Api) -> None:
    assert (await alice.delete("/room_keys/version")).err() == (405, "M_UNRECOGNIZED")
    assert (await alice.post("/room_keys/keys", {}, query=v("1"))).err() == (405, "M_UNRECOGNIZED")


# -------------------------------------------------------------------------- keys


async def test_put_get_delete_at_three_levels(alice: Api) -> None:
    version = await create(alice)
    # Top level.
    reply = await alice.ok("PUT", "/room_keys/keys",
                           {"rooms": {ROOM: {"sessions": {"a": key(1)}}, ROOM2: {"sessions": {"b": key(2)}}}},
                           query=v(version))
    assert set(reply) == {"etag", "count"} and reply["count"] == 2
    # Room level.
    reply = await alice.ok("PUT", f"/room_keys/keys/{q(ROOM)}", {"sessions": {"c": key(3)}}, query=v(version))
    assert reply["count"] == 3
    # Session level, with a session ID containing "/" and "+" (standard base64).
    odd = "ab/cd+ef"
    reply = await alice.ok("PUT", f"/room_keys/keys/{q(V12_ROOM)}/{q(odd)}", key(4), query=v(version))
    assert reply["count"] == 4

    everything = await alice.ok("GET", "/room_keys/keys", query=v(version))
    assert everything == {"rooms": {
        ROOM: {"sessions": {"a": key(1), "c": key(3)}},
        ROOM2: {"sessions": {"b": key(2)}},
        V12_ROOM: {"sessions": {odd: key(4)}},
    }}
    assert await alice.ok("GET", f"/room_keys/keys/{q(ROOM)}", query=v(version)) == {
        "sessions": {"a": key(1), "c": key(3)}}
    assert await alice.ok("GET", f"/room_keys/keys/{q(V12_ROOM)}/{q(odd)}", query=v(version)) == key(4)
    # A room with no keys answers an empty sessions object; a missing session is 404.
    assert await alice.ok("GET", "/room_keys/keys/!empty:localhost", query=v(version)) == {"sessions": {}}
    reply = await alice.get(f"/room_keys/keys/{q(ROOM)}/nope", query=v(version))
    assert reply.err() == (404, "M_NOT_FOUND")

    reply = await alice.ok("DELETE", f"/room_keys/keys/{q(V12_ROOM)}/{q(odd)}", query=v(version))
    assert reply["count"] == 3
    reply = await alice.ok("DELETE", f"/room_keys/keys/{q(ROOM)}", query=v(version))
    assert reply["count"] == 1
    assert (await alice.get(f"/room_keys/keys/{q(ROOM)}/a", query=v(version))).err() == (404, "M_NOT_FOUND")
    reply = await alice.ok("DELETE", "/room_keys/keys", query=v(version))
    assert reply["count"] == 0
    assert await alice.ok("GET", "/room_keys/keys", query=v(version)) == {"rooms": {}}
    assert (await alice.ok("GET", "/room_keys/version"))["count"] == 0


async def test_the_r0_prefix_serves_the_same(alice: Api) -> None:
    version = await create(alice)
    reply = await alice.put(f"/_matrix/client/r0/room_keys/keys/{q(ROOM)}/s", key(), query=v(version))
    assert reply.status == 200 and reply.body["count"] == 1


async def test_version_is_required_and_must_exist(alice: Api) -> None:
    for method, path, body in [("PUT", "/room_keys/keys", {"rooms": {}}),
                               ("PUT", f"/room_keys/keys/{q(ROOM)}", {"sessions": {}}),
                               ("PUT", f"/room_keys/keys/{q(ROOM)}/s", key()),
                               ("GET", "/room_keys/keys", None), ("GET", f"/room_keys/keys/{q(ROOM)}", None),
                               ("GET", f"/room_keys/keys/{q(ROOM)}/s", None), ("DELETE", "/room_keys/keys", None),
                               ("DELETE", f"/room_keys/keys/{q(ROOM)}", None),
                               ("DELETE", f"/room_keys/keys/{q(ROOM)}/s", None)]:
        reply = await alice.request(method, path, body)
        assert reply.err() == (400, "M_MISSING_PARAM"), (method, path)
        # No backup at all: 404 for every level and method.
        reply = await alice.request(method, path, body, query=v("1"))
        assert reply.err() == (404, "M_NOT_FOUND"), (method, path)


async def test_writes_to_an_old_version_are_403_with_the_current_version(alice: Api) -> None:
    old = await create(alice)
    await alice.ok("PUT", f"/room_keys/keys/{q(ROOM)}/s", key(), query=v(old))
    current = await create(alice)
    for path, body in [("/room_keys/keys", {"rooms": {ROOM: {"sessions": {"t": key()}}}}),
                       (f"/room_keys/keys/{q(ROOM)}", {"sessions": {"t": key()}}),
                       (f"/room_keys/keys/{q(ROOM)}/t", key())]:
        reply = await alice.put(path, body, query=v(old))
        assert reply.err() == (403, "M_WRONG_ROOM_KEYS_VERSION"), path
        assert reply.body["current_version"] == current
        # A version that does not exist is 404, not 403 (as Synapse).
        assert (await alice.put(path, body, query=v("77"))).err() == (404, "M_NOT_FOUND")
    # Reads and deletes of the older version still work (key_backup.yaml: no 403 there).
    assert await alice.ok("GET", f"/room_keys/keys/{q(ROOM)}/s", query=v(old)) == key()
    assert (await alice.ok("DELETE", f"/room_keys/keys/{q(ROOM)}/s", query=v(old)))["count"] == 0


# (stored, uploaded, replaced?): "Server-side key backups", in the spec's order.
REPLACEMENT_CASES = [
    pytest.param(key(5, 5, False), key(9, 9, True), True, id="verified-beats-unverified-even-with-worse-index"),
    pytest.param(key(9, 9, True), key(0, 0, False), False, id="unverified-never-replaces-verified"),
    pytest.param(key(5, 0, False), key(4, 9, False), True, id="lower-index-wins-over-forwarded-count"),
    pytest.param(key(4, 0, True), key(5, 0, True), False, id="higher-index-loses"),
    pytest.param(key(3, 2, False), key(3, 1, False), True, id="same-index-lower-forwarded-count-wins"),
    pytest.param(key(3, 1, True), key(3, 2, True), False, id="same-index-higher-forwarded-count-loses"),
    pytest.param(key(3, 1, False), key(3, 1, False), False, id="tie-keeps-existing"),
]


@pytest.mark.parametrize(("stored", "uploaded", "replaced"), REPLACEMENT_CASES)
async def test_replacement_rules(
    alice: Api, stored: dict[str, Any], uploaded: dict[str, Any], replaced: bool
) -> None:
    version = await create(alice)
    stored = {**stored, "session_data": {"which": "stored"}}
    uploaded = {**uploaded, "session_data": {"which": "uploaded"}}
    path = f"/room_keys/keys/{q(ROOM)}/s"
    before = await alice.ok("PUT", path, stored, query=v(version))
    after = await alice.ok("PUT", path, uploaded, query=v(version))
    assert await alice.ok("GET", path, query=v(version)) == (uploaded if replaced else stored)
    assert after["count"] == before["count"] == 1
    assert (after["etag"] != before["etag"]) is replaced
    assert (await alice.ok("GET", "/room_keys/version"))["etag"] == after["etag"]


async def test_etag_changes_whenever_keys_change(alice: Api) -> None:
    version = await create(alice)
    seen = [(await alice.ok("GET", f"/room_keys/version/{version}"))["etag"]]
    path = f"/room_keys/keys/{q(ROOM)}"
    seen.append((await alice.ok("PUT", path, {"sessions": {"a": key(3)}}, query=v(version)))["etag"])
    unchanged = await alice.ok("PUT", path, {"sessions": {"a": key(4)}}, query=v(version))
    assert unchanged["etag"] == seen[-1]
    seen.append((await alice.ok("PUT", path, {"sessions": {"a": key(2)}}, query=v(version)))["etag"])
    seen.append((await alice.ok("PUT", path, {"sessions": {"b": key()}}, query=v(version)))["etag"])
    seen.append((await alice.ok("DELETE", f"{path}/a", query=v(version)))["etag"])
    seen.append((await alice.ok("DELETE", path, query=v(version)))["etag"])
    assert len(set(seen)) == len(seen)
    assert (await alice.ok("GET", "/room_keys/version"))["etag"] == seen[-1]


BAD_KEYS = [
    pytest.param({k: val for k, val in key().items() if k != "first_message_index"}, id="missing-index"),
    pytest.param({k: val for k, val in key().items() if k != "session_data"}, id="missing-session-data"),
    pytest.param({**key(), "first_message_index": -1}, id="negative-index"),
    pytest.param({**key(), "first_message_index": 1.5}, id="float-index"),
    pytest.param({**key(), "first_message_index": "1"}, id="string-index"),
    pytest.param({**key(), "first_message_index": True}, id="bool-index"),
    pytest.param({**key(), "first_message_index": 2**53}, id="index-beyond-json-range"),
    pytest.param({**key(), "forwarded_count": -3}, id="negative-forwarded-count"),
    pytest.param({**key(), "forwarded_count": None}, id="null-forwarded-count"),
    pytest.param({**key(), "is_verified": "true"}, id="string-is-verified"),
    pytest.param({**key(), "is_verified": 1}, id="int-is-verified"),
    pytest.param({**key(), "session_data": "opaque"}, id="string-session-data"),
    pytest.param([], id="not-an-object"),
]


@pytest.mark.parametrize("bad", BAD_KEYS)
async def test_malformed_keys_are_bad_json_at_every_level(alice: Api, bad: Any) -> None:
    version = await create(alice)
    for path, body in [("/room_keys/keys", {"rooms": {ROOM: {"sessions": {"ok": key(), "s": bad}}}}),
                       (f"/room_keys/keys/{q(ROOM)}", {"sessions": {"ok": key(), "s": bad}}),
                       (f"/room_keys/keys/{q(ROOM)}/s", bad)]:
        reply = await alice.put(path, body, query=v(version))
        expected = (400, "M_BAD_JSON")
        assert reply.err() == expected, (path, reply.body)
    # Nothing was stored, not even the good key next to the bad one.
    assert await alice.ok("GET", "/room_keys/keys", query=v(version)) == {"rooms": {}}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/room_keys/keys", {}, (400, "M_MISSING_PARAM")),
        ("/room_keys/keys", {"rooms": []}, (400, "M_BAD_JSON")),
        ("/room_keys/keys", {"rooms": {ROOM: []}}, (400, "M_BAD_JSON")),
        ("/room_keys/keys", {"rooms": {ROOM: {}}}, (400, "M_BAD_JSON")),
        ("/room_keys/keys", {"rooms": {ROOM: {"sessions": []}}}, (400, "M_BAD_JSON")),
        ("/room_keys/keys", {"rooms": {"not-a-room": {"sessions": {}}}}, (400, "M_INVALID_PARAM")),
        ("/room_keys/keys", {"rooms": {ROOM: {"sessions": {"": key()}}}}, (400, "M_INVALID_PARAM")),
        ("/room_keys/keys", {"rooms": {ROOM: {"sessions": {"s" * 256: key()}}}}, (400, "M_INVALID_PARAM")),
        (f"/room_keys/keys/{q(ROOM)}", {}, (400, "M_BAD_JSON")),
        (f"/room_keys/keys/{q(ROOM)}", {"sessions": "x"}, (400, "M_BAD_JSON")),
        ("/room_keys/keys/not-a-room", {"sessions": {}}, (400, "M_INVALID_PARAM")),
        ("/room_keys/keys/not-a-room/s", key(), (400, "M_INVALID_PARAM")),
        (f"/room_keys/keys/{q(ROOM)}/{'s' * 256}", key(), (400, "M_INVALID_PARAM")),
    ],
)
async def test_malformed_bodies_and_ids(alice: Api, path: str, body: Any, expected: tuple[int, str]) -> None:
    version = await create(alice)
    assert (await alice.put(path, body, query=v(version))).err() == expected
    if path in ("/room_keys/keys", f"/room_keys/keys/{q(ROOM)}"):  # (path IDs are checked first)
        assert (await alice.put(path, data=b"[1, 2", query=v(version))).err() == (400, "M_NOT_JSON")
    assert (await alice.get("/room_keys/keys/not-a-room", query=v(version))).err() == (400, "M_INVALID_PARAM")
    assert (await alice.delete("/room_keys/keys/not-a-room/s", query=v(version))).err() == (400, "M_INVALID_PARAM")


async def test_empty_uploads_are_fine_and_change_nothing(alice: Api) -> None:
    version = await create(alice)
    etag = (await alice.ok("GET", "/room_keys/version"))["etag"]
    assert await alice.ok("PUT", "/room_keys/keys", {"rooms": {}}, query=v(version)) == {"etag": etag, "count": 0}
    assert await alice.ok("PUT", f"/room_keys/keys/{q(ROOM)}", {"sessions": {}}, query=v(version)) == {
        "etag": etag, "count": 0}


async def test_oversized_bodies_are_too_large(alice: Api, app: Any) -> None:
    version = await create(alice)
    limit = app.config["MAX_CONTENT_LENGTH"]
    sessions = {f"s{i}": key(data="x" * 1000) for i in range(limit // 1000 + 1)}
    reply = await alice.put(f"/room_keys/keys/{q(ROOM)}", {"sessions": sessions}, query=v(version))
    assert reply.err() == (413, "M_TOO_LARGE")
