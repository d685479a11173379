"""JSON responses for views and error handlers: orjson bytes, ``application/json``.

Matrix bodies are JSON objects; ``json_response`` is the one place that serialises
them, so every endpoint shares the encoder and the content type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from quart import Response

__all__ = ["json_response"]


def json_response(
    body: Mapping[str, Any], status: int = 200, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    response = Response(orjson.dumps(body), status=status, content_type="application/json")
    for name, value in headers:
        response.headers[name] = value
    return response
