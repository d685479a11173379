"""Matrix errors for the HTTP edge: ``MatrixError`` and the HTTP-status mapping.

Theory of operation
-------------------
A view that must refuse a request raises ``MatrixError(errcode, status, error)``;
the handlers that ``api.app`` registers turn it into the spec's standard error
response, ``{"errcode": ..., "error": ...}`` with that HTTP status
(client-server-api, "Standard error response"), plus any ``extra`` fields the
errcode carries (``soft_logout`` for ``M_UNKNOWN_TOKEN``, ``retry_after_ms`` for
``M_LIMIT_EXCEEDED``, the UIA ``flows``/``session``/``completed`` of a 401 from an
interactive-auth endpoint). A 429 with ``retry_after_ms`` also gets the
``Retry-After`` header (whole seconds, rounded up) that spec v1.10+ asks for. Failures raised below the views (routing, body size,
bugs) arrive as werkzeug ``HTTPException``s and go through ``for_http_status`` so
that no HTML error page ever leaves the server:

* 404 unknown endpoint and 405 known endpoint with a wrong method are
  ``M_UNRECOGNIZED`` ("Common error codes");
* 413 is ``M_TOO_LARGE``;
* anything else, including 500 for a bug, is ``M_UNKNOWN`` with the status kept.

This module does not import quart, so it can be used by code that only builds
error values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MatrixError", "for_http_status", "not_found", "forbidden", "bad_json", "invalid_param"]


class MatrixError(Exception):
    """A request refused with a Matrix ``errcode`` and an HTTP ``status``."""

    def __init__(
        self,
        errcode: str,
        status: int,
        error: str,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.errcode = errcode
        self.status = status
        self.error = error
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        retry_ms = self.extra.get("retry_after_ms")
        if status == 429 and isinstance(retry_ms, int) and "Retry-After" not in self.headers:
            # Spec v1.10+: a 429 SHOULD carry Retry-After (seconds); retry_after_ms is deprecated.
            self.headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "errcode": self.errcode, "error": self.error}


def not_found(error: str, errcode: str = "M_NOT_FOUND") -> MatrixError:
    return MatrixError(errcode, 404, error)


def forbidden(error: str) -> MatrixError:
    return MatrixError("M_FORBIDDEN", 403, error)


def bad_json(error: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", 400, error)


def invalid_param(error: str) -> MatrixError:
    return MatrixError("M_INVALID_PARAM", 400, error)


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
