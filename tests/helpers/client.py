"""HTTP client helpers for the ``tests/api`` HTTP-shape tests: a session object
(``Api``) over quart's test client, two-step UIA registration, and test settings
(open registration, a shared secret, rate limiting off unless asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from quart_trio import QuartTrio

from api.settings import Settings, parse_settings

__all__ = ["V3", "PASSWORD", "Reply", "Api", "make_settings", "register", "room_events"]

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse battery staple"
_OWN = object()



def make_settings(tmp_path: Path, **sections: Mapping[str, Any]) -> Settings:
    """Test settings under ``tmp_path``: open registration, a shared secret, and
    rate limiting off unless a test's ``ratelimit`` section turns it on."""
    data: dict[str, dict[str, Any]] = {
        "http": {"client_bind": ["127.0.0.1:0"], "graceful_timeout_s": 0.5},
        "database": {"path": "data/roomactors.db"},
        "registration": {"enabled": True, "shared_secret": "test-shared-secret"},
        "ratelimit": {"enabled": False},
        # No federation listener, and never a notary on the internet.
        "federation": {"bind": [], "trusted_key_servers": []},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_settings(data, base_dir=tmp_path)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    def err(self) -> tuple[int, str | None]:
        return self.status, (self.body or {}).get("errcode") if isinstance(self.body, dict) else None


@dataclass
class Api:
    """One client session against the app: ``await api.get("/sync")`` → ``Reply``."""

    app: QuartTrio
    token: str | None = None
    user_id: str = ""
    device_id: str = ""
    refresh_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        token: Any = _OWN,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        url = path if path.startswith("/_") else V3 + path
        token = self.token if token is _OWN else token
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = orjson.dumps(body)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        response = await self.app.test_client().open(
            url, method=method, data=data, headers=hdrs, query_string=dict(query or {})
        )
        raw = await response.get_data()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:  # pragma: no cover - would fail the test below
            parsed = raw
        return Reply(response.status_code, parsed, response.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, body, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("DELETE", path, body, **kw)

    # conveniences used across the test modules

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        reply = await self.request(method, path, body, **kw)
        assert reply.status == 200, (method, path, reply.status, reply.body)
        return reply.body

    async def create_room(self, **body: Any) -> str:
        return (await self.ok("POST", "/createRoom", body))["room_id"]

    async def send(self, room_id: str, body: str = "hello", *, txn: str | None = None, type: str = "m.room.message",
                   content: dict[str, Any] | None = None) -> str:
        self.extra["txn"] = self.extra.get("txn", 0) + 1
        txn = txn or f"t{self.extra['txn']}"
        content = content if content is not None else {"msgtype": "m.text", "body": body}
        return (await self.ok("PUT", f"/rooms/{room_id}/send/{type}/{txn}", content))["event_id"]

    async def join(self, room_id: str) -> None:
        await self.ok("POST", f"/join/{room_id}", {})

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.ok("POST", f"/rooms/{room_id}/invite", {"user_id": user_id})

    async def sync(self, since: str | None = None, **query: Any) -> dict[str, Any]:
        if since is not None:
            query["since"] = since
        return await self.ok("GET", "/sync", query=query)

    async def login(self, password: str = PASSWORD, **body: Any) -> Api:
        reply = await Api(self.app).post(
            "/login",
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": self.user_id},
             "password": password, **body},
        )
        assert reply.status == 200, reply.body
        return Api(self.app, reply.body["access_token"], reply.body["user_id"], reply.body["device_id"],
                   reply.body.get("refresh_token"))


async def register(app: QuartTrio, localpart: str, password: str = PASSWORD, **body: Any) -> Api:
    """Register through the real two-step UIA flow and return the session."""
    api = Api(app)
    first = await api.post("/register", {"username": localpart, "password": password, **body})
    assert first.status == 401, first.body
    second = await api.post(
        "/register",
        {"username": localpart, "password": password, **body,
         "auth": {"type": "m.login.dummy", "session": first.body["session"]}},
    )
    assert second.status == 200, second.body
    b = second.body
    return Api(app, b.get("access_token"), b["user_id"], b.get("device_id", ""), b.get("refresh_token"))


def room_events(sync: dict[str, Any], room_id: str, section: str = "join") -> list[dict[str, Any]]:
    return sync["rooms"][section][room_id]["timeline"]["events"]


