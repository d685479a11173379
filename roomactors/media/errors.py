"""``MediaError``: a refusal with the spec's errcode and HTTP status, raised by the
media repository and turned into ``api.errors.MatrixError`` at the HTTP edge."""

from __future__ import annotations

__all__ = ["MediaError"]


class MediaError(Exception):
    def __init__(self, errcode: str, status: int, message: str) -> None:
        super().__init__(f"{status} {errcode}: {message}")
        self.errcode = errcode
        self.status = status
        self.message = message

    @classmethod
    def not_found(cls, message: str = "Media not found") -> MediaError:
        return cls("M_NOT_FOUND", 404, message)
