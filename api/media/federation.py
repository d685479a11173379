"""Federation media endpoints (server-server API, "Content Repository", v1.11):
``GET /_matrix/federation/v1/media/download/{mediaId}`` and
``GET /_matrix/federation/v1/media/thumbnail/{mediaId}``.

Both are X-Matrix authenticated (``federation_route``) and serve only media of
this server (a peer asks the origin server, never a cache). The answer is
``multipart/mixed`` exactly as the spec describes: a boundary, a first part
``Content-Type: application/json`` holding ``{}`` (the metadata object), and a
second part with the bytes and their ``Content-Type`` and ``Content-Disposition``
(``roomactors.media.multipart``). The body streams from the store, with its
``Content-Length`` computed up front.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Blueprint, Response

from api.deps import Deps, deps
from api.federation.x_matrix import federation_route
from api.media.common import matrix_error, thumbnail_params, timeout_ms
from api.responses import json_response
from roomactors.media import MediaError, Served
from roomactors.media.multipart import multipart_frame, new_boundary
from roomactors.media.serving import content_disposition, INLINE_CONTENT_TYPES, base_type

__all__ = ["blueprint"]

blueprint = Blueprint("media_federation", __name__)


@blueprint.errorhandler(MediaError)
async def _media_error(error: MediaError) -> Response:
    e = matrix_error(error)
    return json_response(e.to_json(), e.status)


def _multipart(d: Deps, served: Served, *, thumbnail: bool) -> Response:
    boundary = new_boundary()
    inline = thumbnail or base_type(served.content_type) in INLINE_CONTENT_TYPES
    head, tail = multipart_frame(
        boundary,
        {},
        [
            ("Content-Type", served.content_type),
            ("Content-Disposition", content_disposition("inline" if inline else "attachment", served.filename)),
        ],
    )

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in d.media.store.read_chunks(served.sha256):
            yield chunk
        yield tail

    response = Response(body(), status=200)
    response.headers["Content-Type"] = f"multipart/mixed; boundary={boundary}"
    response.headers["Content-Length"] = str(len(head) + served.size + len(tail))
    return response


@federation_route(blueprint, "/media/download/<media_id>", ["GET"])
async def federation_download(origin: str, media_id: str) -> Response:
    d = deps()
    record = await d.media.get(d.server_name, media_id, timeout_ms=timeout_ms(), allow_remote_fetch=False)
    return _multipart(d, d.media.served(record), thumbnail=False)


@federation_route(blueprint, "/media/thumbnail/<media_id>", ["GET"])
async def federation_thumbnail(origin: str, media_id: str) -> Response:
    width, height, method, animated = thumbnail_params()
    d = deps()
    served = await d.media.thumbnail(
        d.server_name, media_id, width=width, height=height, method=method, animated=animated,
        timeout_ms=timeout_ms(), allow_remote_fetch=False,
    )
    return _multipart(d, served, thumbnail=True)
