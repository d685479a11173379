"""User-interactive authentication (client-server-api, "User-Interactive Authentication API").

Theory of operation
-------------------
An endpoint protected by UIA calls :meth:`UiaSessions.authenticate` with its flows
(lists of stage types) and a *checker* per stage. Without an ``auth`` dict, or
while no flow is complete, it raises the spec's 401: ``{flows, params, session,
completed}`` (plus ``errcode``/``error`` when a stage just failed). Each session
is bound to the operation the endpoint names (``binding``: e.g. ``("password",
user_id)`` or ``("delete_device:ID", user_id)``, ``("register", "")``), so a
session cannot be replayed for another operation or by another user (403
``M_FORBIDDEN``). A session ends when its flow completes. Sessions live
in memory for ``lifetime_s`` (a restart asks the client to start again, which the
spec allows: the server may forget a session at any time).

A stage checker is ``async def check(auth: dict) -> None`` raising ``MatrixError``
(e.g. ``M_FORBIDDEN`` for a wrong password); success marks the stage completed.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from api.errors import MatrixError

__all__ = ["UiaSessions", "StageChecker"]

StageChecker = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class _Session:
    binding: tuple[str, str]
    created: float
    completed: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


class UiaSessions:
    def __init__(self, *, lifetime_s: float = 900.0, max_sessions: int = 10_000) -> None:
        self._sessions: dict[str, _Session] = {}
        self._lifetime_s = lifetime_s
        self._max = max_sessions

    async def authenticate(
        self,
        body: Mapping[str, Any],
        *,
        binding: tuple[str, str],
        flows: Sequence[Sequence[str]],
        checkers: Mapping[str, StageChecker],
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Return the completed session's data once a flow is done, else raise 401."""
        self._expire()
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError("M_BAD_JSON", 400, "'auth' must be an object")
        session_id = auth.get("session") if auth else None
        session: _Session | None = None
        if session_id is not None:
            if not isinstance(session_id, str) or session_id not in self._sessions:
                raise MatrixError("M_UNKNOWN", 400, "unknown or expired UIA session")
            session = self._sessions[session_id]
            if session.binding != binding:
                raise MatrixError("M_FORBIDDEN", 403, "this UIA session belongs to another request")
        if session is None:
            if len(self._sessions) >= self._max:
                raise MatrixError("M_LIMIT_EXCEEDED", 429, "too many authentication sessions", extra={"retry_after_ms": 1000})
            session_id = secrets.token_urlsafe(16)
            session = _Session(binding=binding, created=trio.current_time())
            self._sessions[session_id] = session
        error: MatrixError | None = None
        if auth and "type" in auth:
            stage = auth["type"]
            if not isinstance(stage, str) or stage not in checkers or not any(stage in f for f in flows):
                error = MatrixError("M_UNRECOGNIZED", 400, f"unsupported authentication type {stage!r}")
            else:
                try:
                    await checkers[stage](auth)
                except MatrixError as e:
                    error = e
                else:
                    if stage not in session.completed:
                        session.completed.append(stage)
        for flow in flows:
            if all(stage in session.completed for stage in flow):
                del self._sessions[session_id]
                return session.data
        body_out: dict[str, Any] = {
            "flows": [{"stages": list(f)} for f in flows],
            "params": dict(params or {}),
            "session": session_id,
            "completed": list(session.completed),
        }
        if error is not None:
            if error.status not in (401, 403):
                raise error
            raise MatrixError(error.errcode, 401, error.error, extra=body_out)
        raise _Uia401(body_out)

    def _expire(self) -> None:
        now = trio.current_time()
        for sid in [s for s, v in self._sessions.items() if now - v.created > self._lifetime_s]:
            del self._sessions[sid]


class _Uia401(MatrixError):
    """The bare UIA challenge: the spec's 401 body has no errcode on the first step."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("M_UNAUTHORIZED", 401, "additional authentication is required", extra=body)

    def to_json(self) -> dict[str, Any]:
        return dict(self.extra)
