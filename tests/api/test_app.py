"""HTTP shape of the app through quart-trio's test client: /versions, errors, CORS."""

from __future__ import annotations

import pytest
from quart import request
from quart_trio import QuartTrio

from api.app import CORS_HEADERS, create_app
from api.client.versions import SUPPORTED_VERSIONS
from api.errors import MatrixError, for_http_status
from api.settings import parse_settings

UNRECOGNIZED = {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


def assert_cors(response) -> None:
    for name, value in CORS_HEADERS:
        assert response.headers[name] == value


async def test_versions(app: QuartTrio) -> None:
    response = await app.test_client().get("/_matrix/client/versions")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = await response.get_json()
    assert body == {"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}}
    # v1.11 requires the authenticated media endpoints (api/media, issue 6).
    assert "v1.11" in body["versions"] and "v1.10" in body["versions"]
    assert_cors(response)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/_matrix/client/v3/no_such_endpoint",
        "/_matrix/media/v3/preview_url",
        "/_matrix/federation/v1/no_such_endpoint",
        "/_matrix/client/versions/",
        "/_matrix//client/versions",
    ],
)
async def test_unknown_path_is_404_unrecognized(app: QuartTrio, method: str, path: str) -> None:
    response = await app.test_client().open(path, method=method)
    assert response.status_code == 404
    assert response.content_type == "application/json"
    assert await response.get_json() == UNRECOGNIZED
    assert_cors(response)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405_unrecognized(app: QuartTrio, method: str) -> None:
    response = await app.test_client().open("/_matrix/client/versions", method=method)
    assert response.status_code == 405
    assert await response.get_json() == UNRECOGNIZED
    assert "GET" in response.headers["Allow"]
    assert_cors(response)


@pytest.mark.parametrize("path", ["/_matrix/client/versions", "/_matrix/client/v3/sync", "/anything"])
async def test_options_preflight_answers_204_with_cors_on_any_path(app: QuartTrio, path: str) -> None:
    response = await app.test_client().options(
        path,
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert await response.get_data() == b""
    assert_cors(response)


async def test_unhandled_exception_is_json_500(app: QuartTrio) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    response = await app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.content_type == "application/json"
    assert await response.get_json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert_cors(response)


async def test_matrix_error_raised_by_a_view(app: QuartTrio) -> None:
    @app.get("/forbidden")
    async def forbidden() -> None:
        raise MatrixError("M_FORBIDDEN", 403, "You are not invited to this room.")

    response = await app.test_client().get("/forbidden")
    assert response.status_code == 403
    assert await response.get_json() == {
        "errcode": "M_FORBIDDEN",
        "error": "You are not invited to this room.",
    }
    assert_cors(response)


async def test_body_over_max_request_size_is_413_too_large(tmp_path) -> None:
    from api.services import open_homeserver

    async with open_homeserver(parse_settings({"http": {"max_request_size": 2048}}, base_dir=tmp_path)) as deps:
        await _check_413(create_app(deps))


async def _check_413(app: QuartTrio) -> None:

    @app.post("/echo")
    async def echo() -> dict[str, int]:
        return {"size": len(await request.get_data())}

    client = app.test_client()
    accepted = await client.post("/echo", data=b"x" * 2048)
    assert await accepted.get_json() == {"size": 2048}
    response = await client.post("/echo", data=b"x" * 2049)
    assert response.status_code == 413
    assert await response.get_json() == {"errcode": "M_TOO_LARGE", "error": "Request body too large"}
    assert_cors(response)


def test_for_http_status_keeps_unknown_statuses_as_m_unknown() -> None:
    error = for_http_status(418, "I'm a teapot")
    assert (error.errcode, error.status, error.error) == ("M_UNKNOWN", 418, "I'm a teapot")
