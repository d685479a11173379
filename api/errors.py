"""Matrix errors for the HTTP edge: ``MatrixError`` and the HTTP-status mapping.

Theory of operation
-------------------
A view that must refuse a request raises ``MatrixError(errcode, status, error)``;
the handlers that ``api.app`` registers turn it into the spec's standard error
response, ``{"errcode": ..., "error": ...}`` with that HTTP status
(client-server-api, "Standard error response"). Failures raised below the views
(routing, body size, bugs) arrive as werkzeug ``HTTPException``s and go through
``for_http_status`` so that no HTML error page ever leaves the server:

* 404 unknown endpoint and 405 known endpoint with a wrong method are
  ``M_UNRECOGNIZED`` ("Common error codes");
* 413 is ``M_TOO_LARGE``;
* anything else, including 500 for a bug, is ``M_UNKNOWN`` with the status kept.

This module does not import quart, so it can be used by code that only builds
error values.
"""

from __future__ import annotations

__all__ = ["MatrixError", "for_http_status"]


class MatrixError(Exception):
    """A request refused with a Matrix ``errcode`` and an HTTP ``status``."""

    def __init__(self, errcode: str, status: int, error: str) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.errcode = errcode
        self.status = status
        self.error = error

    def to_json(self) -> dict[str, str]:
        return {"errcode": self.errcode, "error": self.error}


_BY_STATUS: dict[int, tuple[str, str]] = {
    404: ("M_UNRECOGNIZED", "Unrecognized request"),
    405: ("M_UNRECOGNIZED", "Unrecognized request"),
    413: ("M_TOO_LARGE", "Request body too large"),
    500: ("M_UNKNOWN", "Internal server error"),
}


def for_http_status(status: int, description: str | None = None) -> MatrixError:
    """The Matrix error that stands for a bare HTTP error ``status``."""
    errcode, error = _BY_STATUS.get(status, ("M_UNKNOWN", description or f"HTTP {status}"))
    return MatrixError(errcode, status, error)
