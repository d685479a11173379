"""Media over federation with a real Synapse (the pinned release, ``synapse_peer``).

Our server runs for real (``homeserver_in_thread``: hypercorn, the federation TLS
listener, SQLite, media files in its data directory) as ``localhost:<port>``,
wired to Synapse as in ``test_synapse_federation.py`` (self-signed certificates
accepted, loopback allowed on both sides).

* A Synapse user uploads on Synapse; our user downloads it through our
  authenticated endpoint (``/_matrix/client/v1/media/download``), which makes our
  server fetch it from Synapse over ``/_matrix/federation/v1/media/download``
  (multipart) and cache it; a thumbnail of it is made by us from the cached original.
* The other way: our user uploads on our server and the Synapse user downloads it
  through Synapse's authenticated endpoint, so Synapse parses our multipart answer.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image

from roomactors.testing import ThreadedHomeserver


def _image(width: int, height: int, fmt: str) -> bytes:
    image = Image.new("RGB", (width, height), (20, 120, 200))
    for x in range(0, width, 7):
        image.putpixel((x, x % height), (255, 255, 0))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


class Ours:
    def __init__(self, base_url: str, server_name: str, hs: Any) -> None:
        self.base_url = base_url
        self.server_name = server_name
        self.hs = hs
        self.http = httpx.Client(base_url=base_url, timeout=60, trust_env=False)


@pytest.fixture(scope="module")
def ours(ours_federating: ThreadedHomeserver) -> Ours:
    """Our server federating with Synapse (``ours_federating``, conftest.py)."""
    return Ours(ours_federating.base_url, ours_federating.server_name, ours_federating)


def test_synapse_users_media_through_our_server(ours: Ours, synapse_peer: Any) -> None:
    _, s_token = synapse_peer.register_user("media_uploader")
    o_user = ours.hs.register_user("media_reader")
    auth = {"Authorization": f"Bearer {o_user.access_token}"}

    data = _image(800, 600, "JPEG")
    mxc = synapse_peer.upload_media(s_token, data, "image/jpeg", filename="holiday.jpg")
    server_name, media_id = mxc.removeprefix("mxc://").split("/")
    assert server_name == synapse_peer.server_name

    r = ours.http.get(f"/_matrix/client/v1/media/download/{server_name}/{media_id}", headers=auth)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-disposition"] == 'inline; filename="holiday.jpg"'
    assert r.headers["x-content-type-options"] == "nosniff"

    # Cached now: served again, and thumbnailed here from the original.
    r = ours.http.get(f"/_matrix/client/v1/media/download/{server_name}/{media_id}/renamed.jpg", headers=auth)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-disposition"] == 'inline; filename="renamed.jpg"'
    r = ours.http.get(
        f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
        params={"width": "96", "height": "96", "method": "crop"}, headers=auth,
    )
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (96, 96)

    # Without a token: 401 on the authenticated endpoint.
    r = ours.http.get(f"/_matrix/client/v1/media/download/{server_name}/{media_id}")
    assert r.status_code == 401

    # A media ID Synapse does not have: 404 relayed.
    r = ours.http.get(f"/_matrix/client/v1/media/download/{server_name}/doesNotExist123", headers=auth)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


def test_synapse_fetches_our_media(ours: Ours, synapse_peer: Any) -> None:
    _, s_token = synapse_peer.register_user("media_fetcher")
    o_user = ours.hs.register_user("media_sharer")
    data = _image(300, 200, "PNG")
    r = ours.http.post(
        "/_matrix/media/v3/upload", content=data, params={"filename": "ours.png"},
        headers={"Authorization": f"Bearer {o_user.access_token}", "Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    server_name, media_id = r.json()["content_uri"].removeprefix("mxc://").split("/")
    assert server_name == ours.server_name

    r = synapse_peer.get_media(s_token, f"/_matrix/client/v1/media/download/{server_name}/{media_id}")
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"] == "image/png"
    assert "ours.png" in r.headers.get("content-disposition", "")
