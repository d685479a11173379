"""Server keys over HTTP: /_matrix/key/v2/server, the notary (/query), X-Matrix
request authentication (``federation_route``), and KeyService fetching from real
in-process peers (s2s "Retrieving server keys", "Request Authentication")."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from quart import Blueprint
from signedjson.key import decode_signing_key_base64, get_verify_key

from api.app import create_app
from api.services import open_homeserver
from api.federation.x_matrix import federation_route
from roomactors.clock import ManualClock
from roomactors.federation_client import FederationClient
from roomactors.protocol.b64 import encode_base64
from roomactors.protocol.server_keys import (
    OldVerifyKey,
    build_server_keys_response,
    check_notary_response,
    check_server_keys_response,
)
from roomactors.protocol.x_matrix import sign_request
from roomactors.testing_network import open_test_network
from storage.keys import KeyRow, upsert_server_keys
from tests.helpers.client import Api, make_settings

NOW = 1_700_000_000_000
HOUR = 3600 * 1000
OURS = "ours.example"
REMOTE = "remote.example"


def fixed_key(name: str, version: str = "1") -> Any:
    seed = hashlib.sha256(f"{name}/{version}".encode()).digest()
    return decode_signing_key_base64("ed25519", version, encode_base64(seed))


# -- one server, quart test client ------------------------------------------------------

#: a test-only blueprint exercising the decorator
calls: list[tuple[str, dict[str, Any]]] = []
probe = Blueprint("x_matrix_probe", __name__)


@federation_route(probe, "/probe/<thing>", ["GET", "PUT"], versions=("v1", "v2"))
async def probe_view(origin: str, thing: str) -> Any:
    calls.append((origin, {"thing": thing}))
    return {"origin": origin, "thing": thing}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def hs(tmp_path: Path, clock: ManualClock):
    settings = make_settings(tmp_path, server={"server_name": OURS}, federation={"trusted_key_servers": []})
    async with open_homeserver(settings, clock=clock, signing_key=fixed_key(OURS)) as deps:
        deps.keys.client = None  # a lone server: nothing to fetch from, and no real network in tests
        yield deps


@pytest.fixture
async def api(hs) -> Api:
    calls.clear()
    app = create_app(hs)
    app.register_blueprint(probe)
    return Api(app)


async def store_remote_keys(hs, response: dict, server: str = REMOTE) -> None:
    keys = check_server_keys_response(response, expected_server=server, now_ms=NOW, allow_expired=True)
    rows = [KeyRow(k.key_id, k.key_b64, k.valid_until_ts, k.expired_ts) for k in keys.keys.values()]
    text = orjson.dumps(response).decode()
    await hs.db.write(lambda conn: upsert_server_keys(conn, server, rows, fetched_ts=NOW, response_json=text))


async def test_server_keys_self_verify(api: Api):
    reply = await api.get("/_matrix/key/v2/server", token=None)
    assert reply.status == 200
    keys = check_server_keys_response(reply.body, expected_server=OURS, now_ms=NOW)
    assert set(keys.keys) == {"ed25519:1"}
    assert keys.valid_until_ts == NOW + 86_400_000  # [federation] key_validity_s default
    deprecated = await api.get("/_matrix/key/v2/server/ed25519:1", token=None)
    assert deprecated.body == reply.body


async def test_own_response_regenerated_after_half_validity(hs, clock: ManualClock):
    first = hs.keys.own_server_keys()
    clock.advance(12 * HOUR - 1)
    assert hs.keys.own_server_keys() is first
    clock.advance(1)
    second = hs.keys.own_server_keys()
    assert second["valid_until_ts"] == NOW + 36 * HOUR
    check_server_keys_response(second, expected_server=OURS, now_ms=NOW + 12 * HOUR)


async def test_notary_answers_for_our_own_server(api: Api):
    reply = await api.post("/_matrix/key/v2/query", {"server_keys": {OURS: {}}}, token=None)
    assert reply.status == 200
    result = check_notary_response(
        reply.body,
        notary=OURS,
        notary_keys={"ed25519:1": get_verify_key(fixed_key(OURS))},
        requested=[OURS],
        now_ms=NOW,
    )
    assert [k.server_name for k in result.accepted] == [OURS] and not result.rejected
    get = await api.get(f"/_matrix/key/v2/query/{OURS}", token=None)
    assert get.status == 200 and get.body == reply.body


async def test_notary_serves_stored_responses_cosigned(api: Api, hs):
    remote = build_server_keys_response(server_name=REMOTE, signing_key=fixed_key(REMOTE), valid_until_ts=NOW + HOUR)
    await store_remote_keys(hs, remote)
    reply = await api.post(
        "/_matrix/key/v2/query",
        {"server_keys": {REMOTE: {"ed25519:1": {"minimum_valid_until_ts": NOW}}, "unknown.example": {}}},
        token=None,
    )
    assert reply.status == 200
    (entry,) = reply.body["server_keys"]
    assert set(entry["signatures"]) == {REMOTE, OURS}
    result = check_notary_response(
        reply.body, notary=OURS, notary_keys={"ed25519:1": get_verify_key(fixed_key(OURS))},
        requested=[REMOTE], now_ms=NOW,
    )
    assert result.accepted[0].response == entry
    # Asking for more validity than stored (and nothing to fetch it from): still the
    # last response we have ("continue to return the last response they received").
    later = await api.get(f"/_matrix/key/v2/query/{REMOTE}", query={"minimum_valid_until_ts": NOW + 2 * HOUR}, token=None)
    assert len(later.body["server_keys"]) == 1
    assert (await api.post("/_matrix/key/v2/query", {"server_keys": {}}, token=None)).body == {"server_keys": []}


@pytest.mark.parametrize(
    "body, errcode",
    [
        (b"{not json", "M_NOT_JSON"),
        (b"[]", "M_BAD_JSON"),
        (b"{}", "M_MISSING_PARAM"),
        (b'{"server_keys": []}', "M_BAD_JSON"),
        (b'{"server_keys": {"a.example": []}}', "M_BAD_JSON"),
        (b'{"server_keys": {"a.example": {"ed25519:1": {"minimum_valid_until_ts": "x"}}}}', "M_BAD_JSON"),
    ],
)
async def test_query_bad_input(api: Api, body: bytes, errcode: str):
    reply = await api.post("/_matrix/key/v2/query", data=body, token=None)
    assert reply.err() == (400, errcode)


async def test_key_endpoints_absent_without_federation(tmp_path: Path):
    settings = make_settings(tmp_path, federation={"enabled": False})
    async with open_homeserver(settings) as deps:
        assert deps.keys is None
        api = Api(create_app(deps))
        assert (await api.get("/_matrix/key/v2/server", token=None)).err() == (404, "M_UNRECOGNIZED")
        assert (await api.post("/_matrix/key/v2/query", {"server_keys": {}}, token=None)).err() == (404, "M_UNRECOGNIZED")


# -- X-Matrix request authentication ---------------------------------------------------


def signed(method: str, uri: str, content: Any = None, *, origin: str = REMOTE, destination: str = OURS, key=None) -> dict:
    return {
        "Authorization": sign_request(
            method=method, uri=uri, origin=origin, destination=destination, content=content,
            signing_key=key or fixed_key(origin),
        )
    }


async def send(api: Api, method: str, target: str, body: Any = None, *, headers: dict, data: bytes | None = None):
    """A request whose raw target reaches the app byte for byte (as hypercorn hands it over)."""
    from urllib.parse import unquote

    from tests.helpers.client import Reply

    raw_path, _, query = target.partition("?")
    if body is not None:
        data = orjson.dumps(body)
    response = await api.app.test_client().open(
        raw_path, method=method, headers={"Content-Type": "application/json", **headers}, data=data,
        scope_base={"path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": query.encode()},
    )
    raw = await response.get_data()
    return Reply(response.status_code, orjson.loads(raw) if raw else None, response.headers)


@pytest.fixture
async def remote_known(hs):
    old = OldVerifyKey("ed25519:0", get_verify_key(fixed_key(REMOTE, "0")), NOW - HOUR)
    response = build_server_keys_response(
        server_name=REMOTE, signing_key=fixed_key(REMOTE), valid_until_ts=NOW + HOUR, old_verify_keys=[old]
    )
    await store_remote_keys(hs, response)


async def test_signed_request_reaches_view_with_origin(api: Api, remote_known):
    uri = "/_matrix/federation/v1/probe/a%20b?x=1&y=%24z"
    reply = await send(api, "GET", uri, headers=signed("GET", uri))
    assert reply.status == 200, reply.body
    assert reply.body == {"origin": REMOTE, "thing": "a b"}
    body = {"hello": ["world", 1]}
    uri2 = "/_matrix/federation/v2/probe/x"
    reply = await send(api, "PUT", uri2, body, headers=signed("PUT", uri2, body))
    assert reply.status == 200 and reply.body["origin"] == REMOTE


@pytest.mark.parametrize(
    "case",
    ["missing", "bearer", "malformed", "wrong-destination", "tampered-uri", "tampered-body", "unknown-key",
     "unknown-server", "old-key", "bad-signature"],
)
async def test_unauthenticated_requests_get_401(api: Api, remote_known, case: str):
    uri = "/_matrix/federation/v1/probe/x"
    body = {"a": 1}
    headers = {
        "missing": {},
        "bearer": {"Authorization": "Bearer abc"},
        "malformed": {"Authorization": 'X-Matrix origin="remote.example",key='},
        "wrong-destination": signed("PUT", uri, body, destination="elsewhere.example"),
        "tampered-uri": signed("PUT", uri + "?admin=1", body),
        "tampered-body": signed("PUT", uri, {"a": 2}),
        "unknown-key": signed("PUT", uri, body, key=fixed_key(REMOTE, "9")),
        "unknown-server": signed("PUT", uri, body, origin="stranger.example"),
        "old-key": signed("PUT", uri, body, key=fixed_key(REMOTE, "0")),
        "bad-signature": {
            "Authorization": signed("PUT", uri, body)["Authorization"].replace('sig="', 'sig="AAAA')
        },
    }[case]
    reply = await send(api, "PUT", uri, body, headers=headers)
    assert reply.err() == (401, "M_UNAUTHORIZED"), reply.body
    assert calls == []


async def test_body_not_json_is_400(api: Api, remote_known):
    uri = "/_matrix/federation/v1/probe/x"
    reply = await send(api, "PUT", uri, data=b"{nope", headers=signed("PUT", uri, {"a": 1}))
    assert reply.err() == (400, "M_NOT_JSON")
    assert calls == []


async def test_expired_current_key_cannot_sign_requests(api: Api, remote_known, clock: ManualClock):
    uri = "/_matrix/federation/v1/probe/x"
    assert (await send(api, "GET", uri, headers=signed("GET", uri))).status == 200
    clock.advance(2 * HOUR)  # past the stored valid_until_ts, and nothing to refetch from
    reply = await send(api, "GET", uri, headers=signed("GET", uri))
    assert reply.err() == (401, "M_UNAUTHORIZED")


async def test_own_keys_from_memory(hs):
    keys = await hs.keys.get_verify_keys({OURS: {"ed25519:1": NOW, "ed25519:nope": NOW}})
    (vk, valid_until) = keys[OURS]["ed25519:1"]
    assert vk.encode() == get_verify_key(fixed_key(OURS)).encode() and valid_until == NOW + 86_400_000
    assert set(keys[OURS]) == {"ed25519:1"}


# -- fetching from real peers (in-process network) -------------------------------------


def wire(net) -> None:
    """Give each server's KeyService its FederationClient, unless the composition
    root already did."""
    for server in net:
        if server.deps.keys.client is None:
            server.deps.keys.client = FederationClient(
                net.transport_for(server.server_name), server_name=server.server_name,
                signing_key=server.deps.signing_key, request_timeout_s=10,
            )


def key_id(server) -> str:
    key = server.deps.signing_key
    return f"{key.alg}:{key.version}"


def key_requests(net, origin: str, destination: str | None = None) -> list:
    return [r for r in net.requests_between(origin, destination) if r.path.startswith("/_matrix/key/")]


async def test_direct_fetch_is_stored_and_shared():
    async with open_test_network(2) as net:
        wire(net)
        hs1, hs2 = net["hs1"], net["hs2"]
        wanted = {"hs2": {key_id(hs2): 0}}
        results = []

        async def lookup() -> None:
            results.append(await hs1.deps.keys.get_verify_keys(wanted))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(lookup)
        # Five concurrent lookups, one fetch (no thundering herd).
        assert len(key_requests(net, "hs1", "hs2")) == 1
        expected = get_verify_key(hs2.deps.signing_key).encode()
        assert all(r["hs2"][key_id(hs2)][0].encode() == expected for r in results)
        # Stored: a fresh service over the same database finds it without a request.
        hs1.deps.keys._cache.clear()
        again = await hs1.deps.keys.get_verify_keys(wanted)
        assert again["hs2"][key_id(hs2)][0].encode() == expected
        assert len(key_requests(net, "hs1", "hs2")) == 1


async def test_missing_key_is_negatively_cached():
    async with open_test_network(2) as net:
        wire(net)
        hs1 = net["hs1"]
        for _ in range(3):
            assert await hs1.deps.keys.get_verify_keys({"hs2": {"ed25519:nope": 0}}) == {}
        assert len(key_requests(net, "hs1", "hs2")) == 1
        assert await hs1.deps.keys.get_verify_keys({"hs9": {"ed25519:x": 0}}) == {}  # unreachable
        assert hs1.deps.keys.statistics().fetch_failures >= 1


async def test_falls_back_to_trusted_notary():
    async with open_test_network(
        3, server_overrides={"hs1": {"federation": {"trusted_key_servers": ["hs3"]}}}
    ) as net:
        wire(net)
        hs1, hs2, hs3 = net["hs1"], net["hs2"], net["hs3"]
        # hs3 learns hs2's keys while hs2 is reachable ...
        assert await hs3.deps.keys.get_verify_keys({"hs2": {key_id(hs2): 0}})
        # ... then hs1 cannot reach hs2 and asks its notary hs3.
        net.partition({"hs1"}, {"hs2"})
        found = await hs1.deps.keys.get_verify_keys({"hs2": {key_id(hs2): 0}})
        assert found["hs2"][key_id(hs2)][0].encode() == get_verify_key(hs2.deps.signing_key).encode()
        paths = [(r.destination, r.path) for r in key_requests(net, "hs1")]
        assert ("hs2", "/_matrix/key/v2/server") in paths
        assert ("hs3", "/_matrix/key/v2/server") in paths  # the notary's own keys, to check its signature
        assert ("hs3", "/_matrix/key/v2/query") in paths


async def test_notary_refuses_forged_entries():
    async with open_test_network(
        3, server_overrides={"hs1": {"federation": {"trusted_key_servers": ["hs3"]}}}
    ) as net:
        wire(net)
        hs1, hs2 = net["hs1"], net["hs2"]
        net.partition({"hs1"}, {"hs2"})
        forged_key = fixed_key("hs2", "evil")
        forged = build_server_keys_response(server_name="hs2", signing_key=forged_key, valid_until_ts=2**53)

        from roomactors.federation_client import FederationResponse

        def answer(origin, request, response):
            if request.target.startswith("/_matrix/key/v2/query"):
                return FederationResponse(200, {}, orjson.dumps({"server_keys": [forged]}))
            return None

        net.intercept(answer, from_="hs1", to="hs3")
        found = await hs1.deps.keys.get_verify_keys({"hs2": {"ed25519:evil": 0}})
        assert found == {}  # not co-signed by the notary hs3, whose keys hs1 fetched


# -- key rotation -------------------------------------------------------------------------


def test_rotate_signing_key_keeps_old_verify_key(tmp_path: Path):
    from api.signing_key import (
        load_old_verify_keys,
        load_signing_key,
        old_keys_path,
        rotate_signing_key,
        write_signing_key,
    )

    path = tmp_path / "signing.key"
    write_signing_key(path, fixed_key(OURS, "a"))
    assert load_old_verify_keys(path) == []
    new, retired = rotate_signing_key(path, now_ms=NOW)
    assert retired.key_id == "ed25519:a" and retired.expired_ts == NOW
    assert load_signing_key(path).version == new.version != "a"
    newer, retired2 = rotate_signing_key(path, now_ms=NOW + 1)
    assert retired2.key_id == f"ed25519:{new.version}"
    old = load_old_verify_keys(path)
    assert [(k.key_id, k.expired_ts) for k in old] == [("ed25519:a", NOW), (f"ed25519:{new.version}", NOW + 1)]
    assert old[0].verify_key.encode() == get_verify_key(fixed_key(OURS, "a")).encode()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    old_keys_path(path).write_text("not json\n")
    from api.signing_key import SigningKeyError

    with pytest.raises(SigningKeyError, match="line 1"):
        load_old_verify_keys(path)


def test_rotate_key_cli(tmp_path: Path):
    from api.cli import main
    from api.settings import load_settings
    from api.signing_key import load_old_verify_keys, load_signing_key

    config = tmp_path / "settings.toml"
    assert main(["generate-config", "--server-name", OURS, "--data-dir", str(tmp_path / "data"), "-o", str(config)]) == 0
    key_path = load_settings(config).server.signing_key_path
    before = load_signing_key(key_path)
    assert main(["rotate-key", "-c", str(config)]) == 0
    after = load_signing_key(key_path)
    assert after.version != before.version
    assert [k.key_id for k in load_old_verify_keys(key_path)] == [f"ed25519:{before.version}"]
    assert main(["rotate-key", "-c", str(tmp_path / "missing.toml")]) == 2


async def test_old_keys_published_after_rotation(tmp_path: Path, clock: ManualClock):
    from api.signing_key import rotate_signing_key, write_signing_key

    settings = make_settings(tmp_path, server={"server_name": OURS}, federation={"trusted_key_servers": []})
    write_signing_key(settings.server.signing_key_path, fixed_key(OURS, "a"))
    rotate_signing_key(settings.server.signing_key_path, now_ms=NOW - HOUR)
    async with open_homeserver(settings, clock=clock) as deps:
        body = deps.keys.own_server_keys()
        assert body["old_verify_keys"] == {
            "ed25519:a": {"key": encode_base64(get_verify_key(fixed_key(OURS, "a")).encode()), "expired_ts": NOW - HOUR}
        }
        checked = check_server_keys_response(body, expected_server=OURS, now_ms=NOW)
        assert checked.keys["ed25519:a"].expired_ts == NOW - HOUR
        own = await deps.keys.get_verify_keys({OURS: {"ed25519:a": 0}})
        assert own[OURS]["ed25519:a"][1] == NOW - HOUR
