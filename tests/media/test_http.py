"""Media over the client-server API (quart test client, real files in a temp data
directory): uploads, /create + PUT, authenticated downloads and thumbnails, the
legacy endpoints, headers, limits and errors."""

from __future__ import annotations

import hashlib
import io
import urllib.parse

import pytest
import trio
from PIL import Image

from storage import media as media_rows
from tests.helpers.client import Api
from tests.media.conftest import image_bytes, png_bomb

AUTHED = "/_matrix/client/v1/media"


async def upload(api: Api, data: bytes, content_type: str = "image/png", filename: str | None = None,
                 path: str = "/_matrix/media/v3/upload") -> str:
    query = {"filename": filename} if filename is not None else None
    reply = await api.request("POST", path, data=data, headers={"Content-Type": content_type}, query=query)
    assert reply.status == 200, reply.body
    uri = reply.body["content_uri"]
    assert uri.startswith("mxc://localhost/")
    return uri.removeprefix("mxc://localhost/")


async def raw(api: Api, path: str, token: object = "own", **query: object):
    client = api.app.test_client()
    headers = {"Authorization": f"Bearer {api.token}"} if token == "own" else {}
    response = await client.get(path, headers=headers, query_string={k: str(v) for k, v in query.items()})
    return response.status_code, await response.get_data(), response.headers


async def get(api: Api, path: str):
    """``api.get`` with the query written in the path."""
    base, _, query = path.partition("?")
    return await api.get(base, query=dict(urllib.parse.parse_qsl(query)))


def media_files(homeserver) -> list:
    root = homeserver.settings.media.directory
    return [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp"]


async def test_upload_download_roundtrip(app, alice, bob, homeserver):
    data = image_bytes(64, 48)
    media_id = await upload(alice, data, filename="cat.png")
    status, body, headers = await raw(bob, f"{AUTHED}/download/localhost/{media_id}")
    assert status == 200
    assert body == data
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == 'inline; filename="cat.png"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"].startswith("sandbox;")
    assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert headers["Content-Length"] == str(len(data))
    # Stored content-addressed under the media directory.
    sha = hashlib.sha256(data).hexdigest()
    path = homeserver.media.store.path_for(sha)
    assert path.read_bytes() == data
    assert path.relative_to(homeserver.settings.media.directory).parts[:2] == (sha[:2], sha[2:4])
    record = await homeserver.db.read(media_rows.get_media, "localhost", media_id)
    assert record.user_id == alice.user_id and record.size == len(data) and record.upload_name == "cat.png"


async def test_file_name_override_and_r0_upload(app, alice):
    media_id = await upload(alice, b"hello", "text/plain", path="/_matrix/media/r0/upload")
    status, body, headers = await raw(alice, f"{AUTHED}/download/localhost/{media_id}/r\u00e9sum\u00e9 1.txt")
    assert status == 200 and body == b"hello"
    assert headers["Content-Disposition"] == "inline; filename*=utf-8''r%C3%A9sum%C3%A9%201.txt"
    # No filename at upload and none in the path: no filename parameter.
    status, _, headers = await raw(alice, f"{AUTHED}/download/localhost/{media_id}")
    assert headers["Content-Disposition"] == "inline"


async def test_identical_content_is_stored_once(app, alice, homeserver):
    data = image_bytes(20, 20)
    a = await upload(alice, data)
    b = await upload(alice, data)
    assert a != b
    assert len(media_files(homeserver)) == 1


@pytest.mark.parametrize(
    ("declared", "data", "served", "disposition"),
    [
        ("text/html", b"<script>alert(1)</script>", "text/html", "attachment"),
        ("image/svg+xml", b"<svg/>", "image/svg+xml", "attachment"),
        ("application/pdf", b"%PDF-1.4", "application/pdf", "attachment"),
        # An "image" that is no image (an encrypted file, say) is not served as one.
        ("image/png", b"\x00ciphertext", "application/octet-stream", "attachment"),
        ("not a type", b"x", "application/octet-stream", "attachment"),
        ("text/plain; charset=utf-8", b"hi", "text/plain; charset=utf-8", "inline"),
        ("video/mp4", b"....ftypmp4", "video/mp4", "inline"),
    ],
)
async def test_content_type_and_disposition(app, alice, declared, data, served, disposition):
    media_id = await upload(alice, data, declared, filename="f")
    status, body, headers = await raw(alice, f"{AUTHED}/download/localhost/{media_id}")
    assert status == 200 and body == data
    assert headers["Content-Type"] == served
    assert headers["Content-Disposition"] == f'{disposition}; filename="f"'
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_missing_content_type_defaults_to_octet_stream(app, alice):
    client = alice.app.test_client()
    response = await client.post(
        "/_matrix/media/v3/upload", data=b"abc", headers={"Authorization": f"Bearer {alice.token}", "Content-Type": ""}
    )
    assert response.status_code == 200
    media_id = (await response.get_json())["content_uri"].rsplit("/", 1)[1]
    _, _, headers = await raw(alice, f"{AUTHED}/download/localhost/{media_id}")
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"


async def test_oversized_upload_is_refused_and_nothing_is_kept(app, alice, homeserver):
    limit = homeserver.settings.media.max_upload_size
    reply = await alice.request("POST", "/_matrix/media/v3/upload", data=b"x" * (limit + 1),
                                headers={"Content-Type": "application/octet-stream"})
    assert reply.err() == (413, "M_TOO_LARGE")
    assert media_files(homeserver) == []
    count = await homeserver.db.read(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM media").scalar())
    assert count == 0
    # Exactly the limit is fine.
    await upload(alice, b"y" * limit, "application/octet-stream")


async def test_oversized_streamed_upload_without_length_is_cut_off(app, alice, homeserver):
    """No Content-Length: the limit is enforced while the body streams."""
    limit = homeserver.settings.media.max_upload_size
    repo = homeserver.media

    async def chunks():
        for _ in range(limit // 1000 + 10):
            yield b"z" * 1000

    from roomactors.media import MediaError

    with pytest.raises(MediaError) as info:
        await repo.upload(alice.user_id, chunks(), content_type="text/plain", upload_name=None)
    assert (info.value.status, info.value.errcode) == (413, "M_TOO_LARGE")
    assert media_files(homeserver) == []


async def test_unauthenticated_requests_get_401(app, alice):
    media_id = await upload(alice, image_bytes(10, 10))
    anon = Api(app)
    for path in (
        f"{AUTHED}/download/localhost/{media_id}",
        f"{AUTHED}/download/localhost/{media_id}/x.png",
        f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32",
        f"{AUTHED}/config",
        f"{AUTHED}/preview_url?url=https://example.org",
    ):
        reply = await get(anon, path)
        assert reply.err() == (401, "M_MISSING_TOKEN"), path
    for path in ("/_matrix/media/v3/upload", "/_matrix/media/v1/create"):
        reply = await anon.post(path, data=b"x")
        assert reply.err() == (401, "M_MISSING_TOKEN"), path
    reply = await anon.request("PUT", f"/_matrix/media/v3/upload/localhost/{media_id}", data=b"x")
    assert reply.err() == (401, "M_MISSING_TOKEN")


async def test_config_and_preview_url(app, alice, homeserver):
    assert (await alice.ok("GET", f"{AUTHED}/config")) == {"m.upload.size": homeserver.settings.media.max_upload_size}
    assert (await alice.ok("GET", "/_matrix/media/v3/config"))["m.upload.size"] == homeserver.settings.media.max_upload_size
    reply = await get(alice, f"{AUTHED}/preview_url?url=https://example.org")
    assert reply.err() == (404, "M_UNRECOGNIZED")


async def test_not_found_and_bad_ids(app, alice):
    for path, expected in (
        (f"{AUTHED}/download/localhost/doesNotExist", (404, "M_NOT_FOUND")),
        (f"{AUTHED}/download/localhost/bad.id", (404, "M_NOT_FOUND")),
        (f"{AUTHED}/download/bad..name!/abc", (400, "M_INVALID_PARAM")),
        (f"{AUTHED}/thumbnail/localhost/doesNotExist?width=1&height=1", (404, "M_NOT_FOUND")),
    ):
        assert (await get(alice, path)).err() == expected, path


async def test_create_then_upload(app, alice, bob, homeserver):
    created = await alice.ok("POST", "/_matrix/media/v1/create")
    uri, expires = created["content_uri"], created["unused_expires_at"]
    media_id = uri.removeprefix("mxc://localhost/")
    assert expires > homeserver.clock.time_ms()
    put = f"/_matrix/media/v3/upload/localhost/{media_id}"
    # Only the creator may upload.
    reply = await bob.request("PUT", put, data=b"bob's", headers={"Content-Type": "text/plain"})
    assert reply.err() == (403, "M_FORBIDDEN")
    reply = await alice.request("PUT", put, data=b"first", headers={"Content-Type": "text/plain"},
                                query={"filename": "a.txt"})
    assert reply.status == 200 and reply.body == {}
    # Only once.
    reply = await alice.request("PUT", put, data=b"second", headers={"Content-Type": "text/plain"})
    assert reply.err() == (409, "M_CANNOT_OVERWRITE_MEDIA")
    status, body, headers = await raw(bob, f"{AUTHED}/download/localhost/{media_id}")
    assert (status, body) == (200, b"first")
    assert headers["Content-Disposition"] == 'inline; filename="a.txt"'
    # An ID that was never created, and one of another server.
    reply = await alice.request("PUT", "/_matrix/media/v3/upload/localhost/neverCreated", data=b"x")
    assert reply.err() == (404, "M_NOT_FOUND")
    reply = await alice.request("PUT", f"/_matrix/media/v3/upload/other.example/{media_id}", data=b"x")
    assert reply.err() == (404, "M_NOT_FOUND")


async def test_pending_media_waits_then_not_yet_uploaded(app, alice, bob, homeserver):
    # Real time (short): the upload's database work runs on threads, which an
    # autojump clock would not wait for.
    media_id = (await alice.ok("POST", "/_matrix/media/v1/create"))["content_uri"].rsplit("/", 1)[1]
    reply = await get(bob, f"{AUTHED}/download/localhost/{media_id}?timeout_ms=200")
    assert reply.err() == (504, "M_NOT_YET_UPLOADED")
    reply = await get(bob, f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32&timeout_ms=10")
    assert reply.err() == (504, "M_NOT_YET_UPLOADED")

    # A waiting download is answered as soon as the upload lands.
    results: list = []

    async def waiter() -> None:
        results.append(await raw(bob, f"{AUTHED}/download/localhost/{media_id}", timeout_ms=30_000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.3)
        reply = await alice.request("PUT", f"/_matrix/media/v3/upload/localhost/{media_id}", data=b"late",
                                    headers={"Content-Type": "text/plain"})
        assert reply.status == 200
    assert results[0][0] == 200 and results[0][1] == b"late"


async def test_expired_reservation_is_refused(app, alice, homeserver):
    from roomactors.clock import ManualClock  # noqa: F401  (documentation: the repository reads deps.clock)

    media_id = (await alice.ok("POST", "/_matrix/media/v1/create"))["content_uri"].rsplit("/", 1)[1]
    # Age the reservation in the database past unused_expires_at.
    await homeserver.db.write(
        lambda conn: conn.exec_driver_sql("UPDATE media SET unused_expires_at = 1 WHERE media_id = ?", (media_id,))
    )
    reply = await alice.request("PUT", f"/_matrix/media/v3/upload/localhost/{media_id}", data=b"x")
    assert reply.err() == (404, "M_NOT_FOUND")
    assert (await get(alice, f"{AUTHED}/download/localhost/{media_id}")).err() == (404, "M_NOT_FOUND")


async def test_pending_upload_limit(app, alice, homeserver):
    for _ in range(homeserver.settings.media.max_pending_uploads):
        await alice.ok("POST", "/_matrix/media/v1/create")
    reply = await alice.post("/_matrix/media/v1/create")
    assert reply.err() == (429, "M_LIMIT_EXCEEDED")


async def test_legacy_endpoints_serve_local_media(app, alice):
    data = image_bytes(400, 300, "JPEG")
    media_id = await upload(alice, data, "image/jpeg", filename="p.jpg")
    anon = Api(app)
    for prefix in ("/_matrix/media/v3", "/_matrix/media/r0", "/_matrix/media/v1"):
        status, body, headers = await raw(anon, f"{prefix}/download/localhost/{media_id}", token=None)
        assert (status, body) == (200, data)
        assert headers["Content-Disposition"] == 'inline; filename="p.jpg"'
        status, body, headers = await raw(anon, f"{prefix}/thumbnail/localhost/{media_id}", token=None,
                                          width=32, height=32, method="crop")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(body)).size == (32, 32)
    # Frozen for remote media: an uncached remote ID is never fetched.
    reply = await get(anon, "/_matrix/media/v3/download/remote.example/abcdef")
    assert reply.err() == (404, "M_NOT_FOUND")
    reply = await get(anon, "/_matrix/media/v3/download/remote.example/abcdef?allow_remote=false")
    assert reply.err() == (404, "M_NOT_FOUND")


@pytest.mark.parametrize("media_overrides", [{"enable_legacy_unauthenticated_media": False}])
async def test_legacy_endpoints_off(app, alice):
    media_id = await upload(alice, image_bytes(40, 40))
    anon = Api(app)
    for path in (
        f"/_matrix/media/v3/download/localhost/{media_id}",
        f"/_matrix/media/r0/download/localhost/{media_id}/x.png",
        f"/_matrix/media/v3/thumbnail/localhost/{media_id}?width=32&height=32",
    ):
        assert (await get(anon, path)).err() == (404, "M_NOT_FOUND"), path
        # ... even with a token: the deprecated endpoints are off.
        assert (await get(alice, path)).err() == (404, "M_NOT_FOUND"), path
    status, _, _ = await raw(alice, f"{AUTHED}/download/localhost/{media_id}")
    assert status == 200
