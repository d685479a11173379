"""Shared pieces of the media views: error mapping, query parsing, streamed responses."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Response, request

from api.body import query_int
from api.deps import Deps
from api.errors import MatrixError
from roomactors.media import MediaError, Served
from roomactors.media.serving import serving_headers
from roomactors.protocol.ids import is_valid_server_name

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "check_server_name",
    "matrix_error",
    "media_response",
    "thumbnail_params",
    "timeout_ms",
]

#: The ``timeout_ms`` default of the download endpoints (20 s).
DEFAULT_TIMEOUT_MS = 20_000


def matrix_error(error: MediaError) -> MatrixError:
    return MatrixError(error.errcode, error.status, error.message)


def check_server_name(server_name: str) -> None:
    # client-server API, "Security considerations": restrict the server name to valid server names.
    if not is_valid_server_name(server_name):
        raise MatrixError("M_INVALID_PARAM", 400, "Invalid server name")


def _int_param(name: str, *, required: bool, default: int = 0, minimum: int = 0) -> int:
    """``api.body.query_int``, plus ``M_MISSING_PARAM`` for a required parameter."""
    if required and name not in request.args:
        raise MatrixError("M_MISSING_PARAM", 400, f"Missing query parameter {name!r}")
    value = query_int(name, default, minimum=minimum)
    assert value is not None
    return value


def timeout_ms() -> int:
    return _int_param("timeout_ms", required=False, default=DEFAULT_TIMEOUT_MS)


def _bool_param(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise MatrixError("M_INVALID_PARAM", 400, f"Query parameter {name!r} must be true or false")


def allow_remote() -> bool:
    return _bool_param("allow_remote", True)


def thumbnail_params() -> tuple[int, int, str, bool]:
    """``width``, ``height`` (required, ≥ 1), ``method`` (crop|scale, default scale)
    and ``animated`` (default false) of the thumbnail endpoints."""
    width = _int_param("width", required=True, minimum=1)
    height = _int_param("height", required=True, minimum=1)
    method = request.args.get("method", "scale")
    if method not in ("crop", "scale"):
        raise MatrixError("M_INVALID_PARAM", 400, "Query parameter 'method' must be 'crop' or 'scale'")
    return width, height, method, _bool_param("animated", False)


def media_response(d: Deps, served: Served, *, thumbnail: bool = False) -> Response:
    """Stream ``served`` from the store with the serving headers (roomactors.media.serving)."""

    async def body() -> AsyncIterator[bytes]:
        async for chunk in d.media.store.read_chunks(served.sha256):
            yield chunk

    response = Response(body(), status=200)
    for name, value in serving_headers(served.content_type, served.filename, force_inline=thumbnail):
        response.headers[name] = value
    response.headers["Content-Length"] = str(served.size)
    return response
