"""Client requests answered by another server: ``/publicRooms?server=`` (s2s
"Public Room Directory"), remote profiles (s2s "Querying for information"), and
presence over federation (s2s "Presence")."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from roomactors.federation_client import FederationResponse
from roomactors.testing import open_test_network
from tests.helpers.federation import send_pdus

C = "/_matrix/client/v3"


async def _ok(hs: Any, method: str, path: str, token: str | None = None, json: Any = None) -> Any:
    status, body = await hs.api(method, path, token=token, json=json)
    assert status == 200, (method, path, status, body)
    return body


async def _shared_room(net: Any, hs1: Any, alice: Any, hs2: Any, bob: Any, **create: Any) -> str:
    body = await _ok(hs1, "POST", f"{C}/createRoom", alice.access_token, {"preset": "public_chat", **create})
    room_id = body["room_id"]
    await _ok(hs2, "POST", f"{C}/join/{room_id}?via=hs1", bob.access_token, {})
    await net.settle()
    return room_id


async def test_public_rooms_of_another_server() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        rooms = []
        for name in ("Apples", "Bananas", "Cherries"):
            body = await _ok(hs1, "POST", f"{C}/createRoom", alice.access_token,
                             {"preset": "public_chat", "visibility": "public", "name": name, "topic": f"all {name}"})
            rooms.append(body["room_id"])
        await _ok(hs1, "POST", f"{C}/createRoom", alice.access_token, {"preset": "public_chat", "name": "Hidden"})

        # GET ?server=hs1 from hs2's client: hs1's directory, not hs2's (empty).
        listing = await _ok(hs2, "GET", f"{C}/publicRooms?server=hs1", bob.access_token)
        assert sorted(e["room_id"] for e in listing["chunk"]) == sorted(rooms)
        assert {e["name"] for e in listing["chunk"]} == {"Apples", "Bananas", "Cherries"}
        assert listing["total_room_count_estimate"] == 3
        assert (await _ok(hs2, "GET", f"{C}/publicRooms", bob.access_token))["chunk"] == []
        fed = [r for r in net.requests_between("hs2", "hs1") if r.path == "/_matrix/federation/v1/publicRooms"]
        assert fed and fed[-1].method == "GET"

        # Pagination passes through: hs1's tokens page hs1's list.
        page1 = await _ok(hs2, "GET", f"{C}/publicRooms?server=hs1&limit=2", bob.access_token)
        assert len(page1["chunk"]) == 2 and "next_batch" in page1
        page2 = await _ok(hs2, "GET", f"{C}/publicRooms?server=hs1&limit=2&since={page1['next_batch']}",
                          bob.access_token)
        assert {e["room_id"] for e in page1["chunk"] + page2["chunk"]} == set(rooms)

        # POST with a filter goes out as a federation POST, filtered by hs1.
        found = await _ok(hs2, "POST", f"{C}/publicRooms?server=hs1", bob.access_token,
                          {"filter": {"generic_search_term": "banana"}})
        assert [e["name"] for e in found["chunk"]] == ["Bananas"]
        fed = [r for r in net.requests_between("hs2", "hs1") if r.path == "/_matrix/federation/v1/publicRooms"]
        assert fed[-1].method == "POST"
        # POST without a filter: a plain federation GET.
        everything = await _ok(hs2, "POST", f"{C}/publicRooms?server=hs1", bob.access_token, {"limit": 10})
        assert len(everything["chunk"]) == 3

        # Our own name stays local; GET needs no token (list_public_rooms.yaml), POST
        # does; an unreachable server is 502.
        assert (await _ok(hs2, "GET", f"{C}/publicRooms?server=hs2"))["chunk"] == []
        assert len((await _ok(hs2, "GET", f"{C}/publicRooms?server=hs1"))["chunk"]) == 3
        status, body = await hs2.api("POST", f"{C}/publicRooms?server=hs1", json={})
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
        status, body = await hs2.api("GET", f"{C}/publicRooms?server=hs9", token=bob.access_token)
        assert (status, body["errcode"]) == (502, "M_UNKNOWN")
        status, body = await hs2.api("POST", f"{C}/publicRooms?server=hs9", token=bob.access_token,
                                     json={"filter": {"generic_search_term": "x"}})
        assert (status, body["errcode"]) == (502, "M_UNKNOWN")


async def test_public_rooms_remote_refusals() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        await _ok(hs1, "POST", f"{C}/createRoom", alice.access_token,
                  {"preset": "public_chat", "visibility": "public", "name": "Dates"})
        await _ok(hs1, "POST", f"{C}/createRoom", alice.access_token,
                  {"preset": "public_chat", "visibility": "public", "name": "Figs"})
        # A refusal (here hs1's 400 for a foreign pagination token) is a 502, as in Synapse.
        status, body = await hs2.api("GET", f"{C}/publicRooms?server=hs1&since=garbage", token=bob.access_token)
        assert (status, body["errcode"]) == (502, "M_UNKNOWN")

        answers: dict[str, FederationResponse] = {}

        def rewrite(origin: str, request: Any, response: Any) -> Any:
            return answers.get(request.method) if request.target.startswith(_FED_PUBLIC_ROOMS) else None

        net.intercept(rewrite, "hs2", "hs1")
        # A server that keeps its directory to itself (403): 403 M_FORBIDDEN.
        answers["GET"] = _answer(403, {"errcode": "M_FORBIDDEN", "error": "not over federation"})
        status, body = await hs2.api("GET", f"{C}/publicRooms?server=hs1", token=bob.access_token)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        # Not a listing: 502.
        answers["GET"] = _answer(200, {"chunk": "rooms"})
        status, body = await hs2.api("GET", f"{C}/publicRooms?server=hs1", token=bob.access_token)
        assert (status, body["errcode"]) == (502, "M_UNKNOWN")
        # Malformed entries are dropped, the rest passes.
        answers["GET"] = _answer(200, {"chunk": [1, {"room_id": "!a:hs1", "num_joined_members": 1}],
                                       "total_room_count_estimate": "many"})
        listing = await _ok(hs2, "GET", f"{C}/publicRooms?server=hs1", bob.access_token)
        assert listing == {"chunk": [{"room_id": "!a:hs1", "num_joined_members": 1}]}
        # A server without filtered search (POST unrecognized): its whole list, filtered here.
        del answers["GET"]
        answers["POST"] = _answer(404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
        found = await _ok(hs2, "POST", f"{C}/publicRooms?server=hs1", bob.access_token,
                          {"filter": {"generic_search_term": "FIG"}})
        assert [e["name"] for e in found["chunk"]] == ["Figs"]
        methods = [r.method for r in net.requests_between("hs2", "hs1") if r.path == _FED_PUBLIC_ROOMS]
        assert methods[-2:] == ["POST", "GET"]
        # Any other refusal of the POST is a 502, with no fallback.
        answers["POST"] = _answer(500, {"errcode": "M_UNKNOWN", "error": "boom"})
        status, body = await hs2.api("POST", f"{C}/publicRooms?server=hs1", token=bob.access_token,
                                     json={"filter": {"generic_search_term": "FIG"}})
        assert (status, body["errcode"]) == (502, "M_UNKNOWN")


_FED_PUBLIC_ROOMS = "/_matrix/federation/v1/publicRooms"


def _answer(status: int, body: Any) -> FederationResponse:
    return FederationResponse(status=status, headers={"content-type": "application/json"}, body=orjson.dumps(body))


async def test_remote_profiles() -> None:
    async with open_test_network(2) as net:
        hs1, hs2 = net["hs1"], net["hs2"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        mxc = "mxc://hs1/alicepic"
        await _ok(hs1, "PUT", f"{C}/profile/{quote(alice.user_id)}/displayname", alice.access_token,
                  {"displayname": "Alice Liddell"})
        await _ok(hs1, "PUT", f"{C}/profile/{quote(alice.user_id)}/avatar_url", alice.access_token, {"avatar_url": mxc})
        await net.settle()

        a = quote(alice.user_id)
        assert await _ok(hs2, "GET", f"{C}/profile/{a}", bob.access_token) == {
            "displayname": "Alice Liddell", "avatar_url": mxc,
        }
        assert await _ok(hs2, "GET", f"{C}/profile/{a}/displayname") == {"displayname": "Alice Liddell"}
        assert await _ok(hs2, "GET", f"{C}/profile/{a}/avatar_url") == {"avatar_url": mxc}
        queries = [r for r in net.requests_between("hs2", "hs1") if r.path == "/_matrix/federation/v1/query/profile"]
        assert len(queries) == 3 and "field=displayname" in queries[1].target

        # An unknown user of hs1, and an unset field, are 404 M_NOT_FOUND (hs1's answer).
        for path in (f"{C}/profile/{quote('@nobody:hs1')}", f"{C}/profile/{quote('@nobody:hs1')}/displayname"):
            status, body = await hs2.api("GET", path, token=bob.access_token)
            assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), path
        await _ok(hs1, "DELETE", f"{C}/profile/{a}/avatar_url", alice.access_token)
        status, body = await hs2.api("GET", f"{C}/profile/{a}/avatar_url")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        # A bad key is refused before anything is asked.
        asked = len(net.requests_between("hs2", "hs1"))
        status, body = await hs2.api("GET", f"{C}/profile/{a}/Not-A-Key")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        assert len(net.requests_between("hs2", "hs1")) == asked
        # An unreachable server, or any other refusal, is 404 (profile.yaml has no 5xx).
        status, body = await hs2.api("GET", f"{C}/profile/{quote('@carol:hs9')}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        net.drop("hs2", "hs1", count=1)
        status, body = await hs2.api("GET", f"{C}/profile/{a}/displayname")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        # A refusal with 403 passes through.
        net.intercept(
            lambda origin, request, response: _answer(403, {"errcode": "M_FORBIDDEN", "error": "private"}),
            "hs2", "hs1", deliver=False,
        )
        status, body = await hs2.api("GET", f"{C}/profile/{a}")
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def _presence(hs: Any, token: str, since: str | None = None) -> tuple[list[dict[str, Any]], str]:
    path = f"{C}/sync?timeout=0" + (f"&since={since}" if since else "")
    body = await _ok(hs, "GET", path, token)
    return body.get("presence", {}).get("events", []), body["next_batch"]


async def test_presence_reaches_servers_sharing_a_room() -> None:
    async with open_test_network(3) as net:
        hs1, hs2, hs3 = net["hs1"], net["hs2"], net["hs3"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        carol = await hs3.register("carol")
        await _shared_room(net, hs1, alice, hs2, bob)
        _, since = await _presence(hs2, bob.access_token)

        await _ok(hs1, "PUT", f"{C}/presence/{quote(alice.user_id)}/status", alice.access_token,
                  {"presence": "unavailable", "status_msg": "down the rabbit hole"})
        await net.settle()
        events, since = await _presence(hs2, bob.access_token, since)
        mine = [e for e in events if e["sender"] == alice.user_id]
        assert mine, events
        content = mine[-1]["content"]
        assert content["presence"] == "unavailable" and content["status_msg"] == "down the rabbit hole"
        assert content["currently_active"] is False and isinstance(content["last_active_ago"], int)
        got = await _ok(hs2, "GET", f"{C}/presence/{quote(alice.user_id)}/status", bob.access_token)
        assert got["presence"] == "unavailable"
        # hs3 shares no room with alice: nothing was sent there.
        assert not [r for r in net.requests_between("hs1", "hs3") if r.path.startswith("/_matrix/federation/v1/send/")]

        # A change goes out again; bob's own presence goes the other way.
        await _ok(hs1, "PUT", f"{C}/presence/{quote(alice.user_id)}/status", alice.access_token, {"presence": "online"})
        await _ok(hs2, "PUT", f"{C}/presence/{quote(bob.user_id)}/status", bob.access_token,
                  {"presence": "online", "status_msg": "here"})
        await net.settle()
        events, since = await _presence(hs2, bob.access_token, since)
        alice_now = [e["content"] for e in events if e["sender"] == alice.user_id]
        assert alice_now and alice_now[-1]["presence"] == "online" and alice_now[-1]["currently_active"] is True
        assert "status_msg" not in alice_now[-1]
        events, _ = await _presence(hs1, alice.access_token)
        assert any(e["sender"] == bob.user_id and e["content"].get("status_msg") == "here" for e in events)
        # carol on hs3 never hears of alice.
        status, body = await hs3.api("GET", f"{C}/presence/{quote(alice.user_id)}/status", token=carol.access_token)
        assert status == 404


async def test_inbound_presence_is_checked() -> None:
    """Only the origin's own users, well-formed, and sharing a room with a local user."""
    async with open_test_network(3) as net:
        hs1, hs2, hs3 = net["hs1"], net["hs2"], net["hs3"]
        alice = await hs1.register("alice")
        bob = await hs2.register("bob")
        await hs3.register("carol")
        await _shared_room(net, hs1, alice, hs2, bob)

        def presence(user_id: str, state: Any, **extra: Any) -> dict[str, Any]:
            return {"edu_type": "m.presence",
                    "content": {"push": [{"user_id": user_id, "presence": state, "last_active_ago": 5, **extra}]}}

        async def status_on_hs2(user_id: str) -> tuple[int, Any]:
            return await hs2.api("GET", f"{C}/presence/{quote(user_id)}/status", token=bob.access_token)

        # hs3 speaking for alice: dropped. hs3's own carol shares no room with hs2: dropped.
        await send_pdus(hs3, "hs2", [], edus=[presence(alice.user_id, "online"), presence("@carol:hs3", "online")])
        assert (await status_on_hs2(alice.user_id))[0] == 404
        assert (await status_on_hs2("@carol:hs3"))[0] == 404
        # Malformed pushes from hs1: dropped.
        await send_pdus(hs1, "hs2", [], edus=[presence(alice.user_id, "busy"),
                                               presence(alice.user_id, "online", last_active_ago=-1),
                                               presence(alice.user_id, "online", status_msg=7)])
        assert (await status_on_hs2(alice.user_id))[0] == 404
        # A good one: stored, and the last push for a user wins.
        await send_pdus(hs1, "hs2", [], edus=[presence(alice.user_id, "online"),
                                               presence(alice.user_id, "unavailable", status_msg="tea")])
        status, body = await status_on_hs2(alice.user_id)
        assert status == 200 and body["presence"] == "unavailable" and body["status_msg"] == "tea"
        assert body["last_active_ago"] >= 5
