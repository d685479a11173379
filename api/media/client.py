"""Client-facing media endpoints (client-server API, "Content repository").

Theory of operation
-------------------
Every view is thin: it authenticates (``api.auth.requester``: no token → 401
``M_MISSING_TOKEN``), parses the path and query, and calls
``roomactors.media.MediaRepository`` (``Deps.media``), whose ``MediaError`` becomes
the spec's error here.

* **Uploads** (``POST /_matrix/media/{v3,r0,v1}/upload``; ``POST
  /_matrix/media/v1/create``; ``PUT /_matrix/media/v3/upload/{serverName}/{mediaId}``)
  stream ``request.body`` into the repository; ``Content-Type`` (default
  ``application/octet-stream``, v1.12) and ``?filename=`` are recorded. A
  ``Content-Length`` over the limit is refused before anything is read.
* **Authenticated downloads** (``/_matrix/client/v1/media/download|thumbnail|config``,
  v1.11) may fetch remote media over federation.
* ``/_matrix/client/v1/media/preview_url`` answers 404 ``M_UNRECOGNIZED`` after
  authentication: URL previews make the server fetch arbitrary URLs for clients
  and are not built (safely) yet.
* **Legacy unauthenticated downloads** (``/_matrix/media/{v3,r0,v1}/download|thumbnail``,
  deprecated in v1.11) serve only what is already here: local media and remote
  media already cached. They never start a remote fetch: frozen, as the spec's
  v1.11 warning asks and as Synapse does with ``enable_authenticated_media``
  (an uncached remote ID answers 404 ``M_NOT_FOUND``). With ``[media]
  enable_legacy_unauthenticated_media = false`` they answer 404 ``M_NOT_FOUND`` for
  everything, as Synapse does for media it marked as authenticated. The legacy
  ``/config`` needs an access token, as it does in Synapse.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from api.auth import requester
from api.deps import deps
from api.errors import MatrixError
from api.media.common import (
    allow_remote,
    check_server_name,
    matrix_error,
    media_response,
    thumbnail_params,
    timeout_ms,
)
from api.responses import json_response
from roomactors.media import MediaError

__all__ = ["blueprint"]

blueprint = Blueprint("media_client", __name__)

_LEGACY_PREFIXES = ("/_matrix/media/v3", "/_matrix/media/r0", "/_matrix/media/v1")
_AUTHED = "/_matrix/client/v1/media"


@blueprint.errorhandler(MediaError)
async def _media_error(error: MediaError) -> Response:
    e = matrix_error(error)
    return json_response(e.to_json(), e.status)


def _route(rules: list[str], methods: list[str]):  # type: ignore[no-untyped-def]
    def decorator(fn):  # type: ignore[no-untyped-def]
        for i, rule in enumerate(rules):
            blueprint.add_url_rule(rule, f"{fn.__name__}:{i}", fn, methods=methods)
        return fn

    return decorator


def _upload_name() -> str | None:
    name = request.args.get("filename")
    return name or None


def _content_length() -> int | None:
    return request.content_length


# ------------------------------------------------------------------ uploads


@_route([f"{p}/upload" for p in _LEGACY_PREFIXES], ["POST"])
async def upload() -> Response:
    user = await requester()
    d = deps()
    media_id = await d.media.upload(
        user.user_id, request.body, content_type=request.headers.get("Content-Type"),
        upload_name=_upload_name(), content_length=_content_length(),
    )
    return json_response({"content_uri": f"mxc://{d.server_name}/{media_id}"})


@_route(["/_matrix/media/v1/create"], ["POST"])
async def create() -> Response:
    user = await requester()
    d = deps()
    media_id, expires = await d.media.create(user.user_id)
    return json_response({"content_uri": f"mxc://{d.server_name}/{media_id}", "unused_expires_at": expires})


@_route(["/_matrix/media/v3/upload/<server_name>/<media_id>"], ["PUT"])
async def upload_to_mxc(server_name: str, media_id: str) -> Response:
    user = await requester()
    d = deps()
    await d.media.upload_reserved(
        user.user_id, server_name, media_id, request.body, content_type=request.headers.get("Content-Type"),
        upload_name=_upload_name(), content_length=_content_length(),
    )
    return json_response({})


# ------------------------------------------------------------------ authenticated (v1.11)


async def _serve_download(server_name: str, media_id: str, file_name: str | None, *,
                          allow_remote_fetch: bool) -> Response:
    """The media (``file_name`` overriding its upload name), once the endpoint's own
    checks have passed; fetched from its server first only if ``allow_remote_fetch``."""
    d = deps()
    record = await d.media.get(server_name, media_id, timeout_ms=timeout_ms(), allow_remote_fetch=allow_remote_fetch)
    return media_response(d, d.media.served(record, file_name))


async def _serve_thumbnail(server_name: str, media_id: str, *, allow_remote_fetch: bool) -> Response:
    """A thumbnail at the request's ``width``/``height``/``method``/``animated``, once
    the endpoint's own checks have passed (see :func:`_serve_download`)."""
    width, height, method, animated = thumbnail_params()
    d = deps()
    served = await d.media.thumbnail(
        server_name, media_id, width=width, height=height, method=method, animated=animated,
        timeout_ms=timeout_ms(), allow_remote_fetch=allow_remote_fetch,
    )
    return media_response(d, served, thumbnail=True)


@_route([f"{_AUTHED}/download/<server_name>/<media_id>", f"{_AUTHED}/download/<server_name>/<media_id>/<file_name>"], ["GET"])
async def download(server_name: str, media_id: str, file_name: str | None = None) -> Response:
    await requester()
    check_server_name(server_name)
    return await _serve_download(server_name, media_id, file_name, allow_remote_fetch=True)


@_route([f"{_AUTHED}/thumbnail/<server_name>/<media_id>"], ["GET"])
async def thumbnail(server_name: str, media_id: str) -> Response:
    await requester()
    check_server_name(server_name)
    return await _serve_thumbnail(server_name, media_id, allow_remote_fetch=True)


@_route([f"{_AUTHED}/config", *(f"{p}/config" for p in _LEGACY_PREFIXES)], ["GET"])
async def config() -> Response:
    await requester()
    return json_response({"m.upload.size": deps().media.max_upload_size})


@_route([f"{_AUTHED}/preview_url"], ["GET"])
async def preview_url() -> Response:
    await requester()
    # Not built: fetching arbitrary URLs for clients needs its own SSRF defences.
    raise MatrixError("M_UNRECOGNIZED", 404, "URL previews are not supported by this server")


# ------------------------------------------------------------------ legacy, unauthenticated (deprecated)


def _legacy_enabled(server_name: str) -> None:
    check_server_name(server_name)
    if not deps().settings.media.enable_legacy_unauthenticated_media:
        # Synapse answers 404 M_NOT_FOUND for media only reachable with authentication.
        raise MatrixError("M_NOT_FOUND", 404, "Not found")


def _legacy_remote_allowed(server_name: str) -> None:
    # allow_remote=false: "should not attempt to fetch the media if it is deemed remote".
    if server_name != deps().server_name and not allow_remote():
        raise MatrixError("M_NOT_FOUND", 404, "Not found")


@_route(
    [f"{p}/download/<server_name>/<media_id>" for p in _LEGACY_PREFIXES]
    + [f"{p}/download/<server_name>/<media_id>/<file_name>" for p in _LEGACY_PREFIXES],
    ["GET"],
)
async def legacy_download(server_name: str, media_id: str, file_name: str | None = None) -> Response:
    _legacy_enabled(server_name)
    _legacy_remote_allowed(server_name)
    return await _serve_download(server_name, media_id, file_name, allow_remote_fetch=False)


@_route([f"{p}/thumbnail/<server_name>/<media_id>" for p in _LEGACY_PREFIXES], ["GET"])
async def legacy_thumbnail(server_name: str, media_id: str) -> Response:
    _legacy_enabled(server_name)
    _legacy_remote_allowed(server_name)
    return await _serve_thumbnail(server_name, media_id, allow_remote_fetch=False)
