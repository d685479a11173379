"""Protocol outcomes that callers must handle: what was wrong, and which spec rule says so.

Theory of operation
-------------------
The pure kernel signals an expected protocol outcome by raising one of these,
each carrying ``rule`` (the spec section/step it implements, e.g. ``"auth 5.3.2"``)
and ``errcode`` (the Matrix error code an API layer should answer with), like
h11's ``error_status_hint``. Callers higher up (the room pipeline) turn them into
the values *Invalid* / *Rejected* / *SoftFailed*. Bugs are never expressed with
these classes: a ``KeyError`` from the kernel is a bug, not a verdict.
"""

from __future__ import annotations

__all__ = [
    "ProtocolError",
    "InvalidEvent",
    "UnsupportedRoomVersion",
    "SignatureError",
    "AuthError",
]


class ProtocolError(Exception):
    """Base of every expected protocol outcome."""

    errcode = "M_UNKNOWN"

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.message} [{self.rule}]" if self.rule else self.message


class InvalidEvent(ProtocolError, ValueError):
    """The JSON is not a well-formed PDU/value for this room version: drop it."""

    errcode = "M_BAD_JSON"


class UnsupportedRoomVersion(InvalidEvent):
    """The room version is not one of 1–12."""

    errcode = "M_UNSUPPORTED_ROOM_VERSION"


class SignatureError(ProtocolError):
    """A required signature or content hash is missing or does not verify."""

    errcode = "M_FORBIDDEN"


class AuthError(ProtocolError):
    """The authorization rules disallow the event (``rule`` names the failing rule)."""

    errcode = "M_FORBIDDEN"
