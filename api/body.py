"""Request bodies and parameters: JSON objects only, with the spec's errcodes.

``json_body()`` reads the (size-limited, see ``MAX_CONTENT_LENGTH``) body and
returns a JSON object, refusing invalid JSON with 400 ``M_NOT_JSON`` and valid JSON
that is not an object with 400 ``M_BAD_JSON`` (client-server-api, "Common error
codes"). An empty body counts as ``{}`` where the endpoint allows it. The typed
getters raise ``M_BAD_JSON``/``M_INVALID_PARAM`` naming the field, so no view ever
turns a wrong type into a 500; ``get_str``/``get_bool`` read a JSON ``null`` as
"not given" (the default) when the field has one.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart import request

from api.errors import MatrixError

__all__ = ["json_body", "get_str", "get_bool", "get_int", "get_obj", "query_int", "query_bool"]

_MISSING = object()


async def json_body(*, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError("M_NOT_JSON", 400, "the request body must be a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MatrixError("M_NOT_JSON", 400, "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise MatrixError("M_BAD_JSON", 400, "the request body must be a JSON object")
    return value


def _bad(field: str, what: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", 400, f"{field!r} must be {what}")


def _typed(
    body: dict[str, Any], field: str, default: Any, accepts: Any, what: str, *, null_is_absent: bool = False
) -> Any:
    """The one shape behind the getters: missing -> ``default`` (or 400
    ``M_MISSING_PARAM`` without one), wrong type -> 400 ``M_BAD_JSON``."""
    value = body.get(field, _MISSING)
    if value is _MISSING or (null_is_absent and value is None):
        if default is _MISSING:
            raise MatrixError("M_MISSING_PARAM", 400, f"missing {field!r}")
        return default
    if not accepts(value):
        raise _bad(field, what)
    return value


def get_str(body: dict[str, Any], field: str, default: Any = _MISSING) -> Any:
    # JSON null counts as absent only where the caller has a default.
    return _typed(body, field, default, lambda v: isinstance(v, str), "a string",
                  null_is_absent=default is not _MISSING)


def get_bool(body: dict[str, Any], field: str, default: bool) -> bool:
    # Absent or JSON null: the default.
    return _typed(body, field, default, lambda v: isinstance(v, bool), "a boolean", null_is_absent=True)


def get_int(body: dict[str, Any], field: str, default: Any = _MISSING) -> Any:
    return _typed(body, field, default, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")


def get_obj(body: dict[str, Any], field: str, default: Any = _MISSING) -> Any:
    return _typed(body, field, default, lambda v: isinstance(v, dict), "an object")


def query_int(name: str, default: int | None, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError("M_INVALID_PARAM", 400, f"query parameter {name!r} must be an integer") from None
    if value < minimum:
        raise MatrixError("M_INVALID_PARAM", 400, f"query parameter {name!r} must be at least {minimum}")
    if maximum is not None:
        value = min(value, maximum)
    return value


def query_bool(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise MatrixError("M_INVALID_PARAM", 400, f"query parameter {name!r} must be true or false")
