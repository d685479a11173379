"""The QuartTrio application: blueprints, CORS, and JSON-only error handling.

Theory of operation
-------------------
``create_app(settings)`` builds a fresh ``QuartTrio`` app per call (tests make
their own) and wires three cross-cutting rules around the blueprints:

1. **CORS on every response.** Browser clients need the spec's recommended headers
   on all requests (client-server-api, "Web Browser Clients"), errors included, so
   an ``after_request`` hook adds them.
2. **OPTIONS never runs endpoint logic.** The spec says every endpoint accepts
   ``OPTIONS`` and the server MUST NOT perform the endpoint's logic for it; a
   ``before_request`` hook answers any ``OPTIONS`` (known path or not) with an
   empty 204 before routing errors are raised, so preflights always succeed.
3. **No HTML ever escapes.** ``MatrixError`` becomes the standard
   ``{"errcode", "error"}`` body; every werkzeug ``HTTPException`` (unknown path
   404, wrong method 405, oversized body 413, and the 500 Quart substitutes for an
   unhandled exception, which it logs first) goes through ``api.errors`` to the
   same JSON shape. Slash merging is off so routing never answers with an HTML
   redirect, and there is no static-file route.

The app starts no tasks of its own; long-lived services belong to ``api.server``.
"""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from api.client import BLUEPRINTS
from api.federation import BLUEPRINTS as FEDERATION_BLUEPRINTS
from api.media import BLUEPRINTS as MEDIA_BLUEPRINTS
from api.deps import Deps
from api.errors import MatrixError, for_http_status
from api.responses import json_response

__all__ = ["CORS_HEADERS", "create_app"]

CORS_HEADERS: tuple[tuple[str, str], ...] = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization"),
)


def create_app(deps: Deps) -> QuartTrio:
    settings = deps.settings
    app = QuartTrio("roomactors", static_folder=None)  # no /static route
    app.config["MAX_CONTENT_LENGTH"] = settings.http.max_request_size
    app.url_map.merge_slashes = False
    app.extensions["roomactors"] = deps

    for blueprint in (*BLUEPRINTS, *FEDERATION_BLUEPRINTS, *MEDIA_BLUEPRINTS):
        app.register_blueprint(blueprint)

    @app.before_request
    async def _limit_per_ip() -> None:
        # Every request counts against its IP's [ratelimit] request bucket.
        deps.ratelimiter.check("request", request.remote_addr or "unknown")

    @app.before_request
    async def _answer_options() -> Response | None:
        if request.method == "OPTIONS":
            # RFC 9110 §8.6: a 204 carries no content, so no Content-Length and no type.
            response = Response(b"", status=204)
            del response.headers["Content-Type"]
            del response.headers["Content-Length"]
            return response
        return None

    @app.after_request
    async def _add_cors_headers(response: Response) -> Response:
        for name, value in CORS_HEADERS:
            response.headers[name] = value
        return response

    @app.errorhandler(MatrixError)
    async def _matrix_error(error: MatrixError) -> Response:
        return json_response(error.to_json(), error.status, error.headers.items())

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        matrix_error = for_http_status(error.code or 500, error.description)
        headers: list[tuple[str, str]] = []
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers.append(("Allow", ", ".join(sorted(error.valid_methods))))
        return json_response(matrix_error.to_json(), matrix_error.status, headers)

    return app
