"""Media over federation between in-process servers (``open_test_network``): the
``multipart/mixed`` shape of ``/_matrix/federation/v1/media/*``, remote fetch and
cache, one fetch for concurrent requesters, size limits, the legacy fallback, and
the legacy endpoints frozen for new remote media."""

from __future__ import annotations

import io

import orjson
import trio
from PIL import Image

from roomactors.clock import ManualClock
from roomactors.federation_client import FederationResponse
from roomactors.media.multipart import parse_media_multipart
from roomactors.testing import open_test_network
from tests.media.conftest import image_bytes

AUTHED = "/_matrix/client/v1/media"


async def upload(hs, user, data: bytes, content_type: str, filename: str | None = None) -> str:
    path = "/_matrix/media/v3/upload" + (f"?filename={filename}" if filename else "")
    response = await hs.client.post(
        path, data=data, headers={"Authorization": f"Bearer {user.access_token}", "Content-Type": content_type}
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    return body["content_uri"].rsplit("/", 1)[1]


async def fetch(hs, user, path: str, **query):
    headers = {"Authorization": f"Bearer {user.access_token}"} if user is not None else {}
    response = await hs.client.get(path, headers=headers, query_string={k: str(v) for k, v in query.items()})
    return response.status_code, await response.get_data(), response.headers


def media_requests(net, origin: str = "hs2") -> list:
    return [r for r in net.requests_between(origin, "hs1") if "/media/" in r.path]


async def test_federation_download_is_multipart_as_the_spec_says():
    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        data = image_bytes(50, 40)
        media_id = await upload(net["hs1"], alice, data, "image/png", "a.png")

        response = await net["hs2"].deps.federation.get_raw(
            "hs1", f"/_matrix/federation/v1/media/download/{media_id}", max_bytes=10**6
        )
        assert response.status == 200
        content_type = response.headers["content-type"]
        assert content_type.startswith("multipart/mixed; boundary=")
        boundary = content_type.split("boundary=", 1)[1].encode()
        expected = (
            b"--" + boundary + b"\r\nContent-Type: application/json\r\n\r\n{}\r\n"
            + b"--" + boundary + b"\r\nContent-Type: image/png\r\n"
            + b'Content-Disposition: inline; filename="a.png"\r\n\r\n'
            + data + b"\r\n--" + boundary + b"--\r\n"
        )
        assert response.body == expected
        assert int(response.headers["content-length"]) == len(expected)
        part = parse_media_multipart(content_type, response.body)
        assert part.metadata == {} and part.body == data

        # Thumbnails: the same shape, an image second part.
        response = await net["hs2"].deps.federation.get_raw(
            "hs1", f"/_matrix/federation/v1/media/thumbnail/{media_id}",
            query={"width": "32", "height": "32", "method": "crop"}, max_bytes=10**6,
        )
        part = parse_media_multipart(response.headers["content-type"], response.body)
        assert part.headers["content-type"] == "image/png"
        assert part.headers["content-disposition"] == 'inline; filename="thumbnail.png"'
        assert Image.open(io.BytesIO(part.body)).size == (32, 32)

        # Unknown media, and unsigned requests.
        response = await net["hs2"].deps.federation.get_raw(
            "hs1", "/_matrix/federation/v1/media/download/nope", max_bytes=10**6
        )
        assert response.status == 404 and orjson.loads(response.body)["errcode"] == "M_NOT_FOUND"
        status, body, _ = await fetch(net["hs1"], None, f"/_matrix/federation/v1/media/download/{media_id}")
        assert status == 401 and orjson.loads(body)["errcode"] == "M_UNAUTHORIZED"


async def test_remote_media_is_fetched_once_and_cached():
    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        bob = await net["hs2"].register("bob")
        data = image_bytes(640, 480, "JPEG")
        media_id = await upload(net["hs1"], alice, data, "image/jpeg", "photo.jpg")

        # The legacy endpoints are frozen for remote media not cached yet.
        status, _, _ = await fetch(net["hs2"], None, f"/_matrix/media/v3/download/hs1/{media_id}")
        assert status == 404
        assert media_requests(net) == []

        status, body, headers = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{media_id}")
        assert status == 200 and body == data
        assert headers["Content-Type"] == "image/jpeg"
        assert headers["Content-Disposition"] == 'inline; filename="photo.jpg"'
        assert [r.path for r in media_requests(net)] == [f"/_matrix/federation/v1/media/download/{media_id}"]

        # Cached: no further request, also for thumbnails (made here from the original)
        # and for the legacy endpoint, which serves remote media already cached.
        status, body2, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{media_id}/other.jpg")
        assert status == 200 and body2 == data
        status, thumb, headers = await fetch(
            net["hs2"], bob, f"{AUTHED}/thumbnail/hs1/{media_id}", width=96, height=96, method="crop"
        )
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb)).size == (96, 96)
        status, body3, _ = await fetch(net["hs2"], None, f"/_matrix/media/r0/download/hs1/{media_id}")
        assert status == 200 and body3 == data
        assert len(media_requests(net)) == 1
        assert net["hs2"].deps.media.remote_fetches == 1


async def test_remote_thumbnail_before_download_fetches_the_original():
    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        bob = await net["hs2"].register("bob")
        media_id = await upload(net["hs1"], alice, image_bytes(500, 500, "PNG"), "image/png")
        status, thumb, _ = await fetch(
            net["hs2"], bob, f"{AUTHED}/thumbnail/hs1/{media_id}", width=320, height=240, method="scale"
        )
        assert status == 200
        assert Image.open(io.BytesIO(thumb)).size == (240, 240)
        assert [r.path for r in media_requests(net)] == [f"/_matrix/federation/v1/media/download/{media_id}"]


async def test_concurrent_requesters_share_one_fetch():
    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        bob = await net["hs2"].register("bob")
        data = image_bytes(300, 200, "PNG")
        media_id = await upload(net["hs1"], alice, data, "image/png")
        delay = net.delay(0.2, from_="hs2", to="hs1")  # real time: keep all requests in flight together
        results: list = []

        async def one() -> None:
            results.append(await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{media_id}"))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)
        delay.cancel()
        assert [(status, body == data) for status, body, _ in results] == [(200, True)] * 6
        assert len(media_requests(net)) == 1
        assert net["hs2"].deps.media.remote_fetches == 1


async def test_too_large_remote_media_is_refused():
    async with open_test_network(2, server_overrides={"hs2": {"media": {"remote_max_size": 2000}}}) as net:
        alice = await net["hs1"].register("alice")
        bob = await net["hs2"].register("bob")
        media_id = await upload(net["hs1"], alice, b"x" * 5000, "application/octet-stream")
        status, body, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{media_id}")
        assert status == 502 and orjson.loads(body)["errcode"] == "M_TOO_LARGE"
        root = net["hs2"].settings.media.directory
        assert [p for p in root.rglob("*") if p.is_file()] == []
        # A small one still works.
        small = await upload(net["hs1"], alice, b"y" * 1000, "application/octet-stream")
        status, body, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{small}")
        assert (status, body) == (200, b"y" * 1000)


async def test_fallback_to_legacy_endpoint_on_unrecognized():
    async with open_test_network(2) as net:
        alice = await net["hs1"].register("alice")
        bob = await net["hs2"].register("bob")
        media_id = await upload(net["hs1"], alice, b"old server", "text/plain", "n.txt")

        def old_server(origin, request, response):
            if request.target.startswith("/_matrix/federation/v1/media/"):
                body = orjson.dumps({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
                return FederationResponse(404, {"content-type": "application/json"}, body)
            return None

        net.intercept(old_server, from_="hs2", to="hs1")
        status, body, headers = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{media_id}")
        assert (status, body) == (200, b"old server")
        assert headers["Content-Disposition"] == 'inline; filename="n.txt"'
        legacy = [r for r in media_requests(net) if r.path.startswith("/_matrix/media/")]
        assert len(legacy) == 1
        assert legacy[0].path == f"/_matrix/media/v3/download/hs1/{media_id}"
        assert "allow_remote=false" in legacy[0].target


async def test_remote_not_found_and_unreachable():
    async with open_test_network(2) as net:
        bob = await net["hs2"].register("bob")
        status, body, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/doesNotExist")
        assert status == 404 and orjson.loads(body)["errcode"] == "M_NOT_FOUND"
        net.partition({"hs1"}, {"hs2"})
        status, body, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/other")
        assert status == 502
        status, body, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/nowhere.example/abc")
        assert status == 502


async def test_a_failed_remote_fetch_is_remembered_for_a_minute():
    clock = ManualClock()
    async with open_test_network(2, clock=clock) as net:
        bob = await net["hs2"].register("bob")
        alice = await net["hs1"].register("alice")
        media = net["hs2"].deps.media
        status, _, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/notYetThere")
        assert status == 404 and media.remote_fetches == 1
        # Asked again within the minute: the same answer, no request to hs1.
        status, body, _ = await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/notYetThere")
        assert status == 404 and orjson.loads(body)["errcode"] == "M_NOT_FOUND" and media.remote_fetches == 1
        # Unreachable is remembered too, per media ID.
        net.partition({"hs1"}, {"hs2"})
        assert (await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/other"))[0] == 502
        assert (await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/other"))[0] == 502
        assert media.remote_fetches == 2
        net.heal()
        media_id = await upload(net["hs1"], alice, b"late bytes", "text/plain")
        assert (await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/{media_id}"))[0] == 200
        # After the minute the server is asked again.
        clock.advance(61_000)
        assert (await fetch(net["hs2"], bob, f"{AUTHED}/download/hs1/other"))[0] == 404
        assert media.remote_fetches == 4
