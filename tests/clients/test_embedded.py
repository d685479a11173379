"""``roomactors.testing``: the embedded test mode itself (trio side and thread side)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest
import trio

from api.settings import SettingsError
from roomactors.testing import (
    HomeserverError,
    TestHomeserver,
    ThreadedHomeserver,
    homeserver_in_thread,
    open_test_homeserver,
    start_homeserver,
)


async def whoami(base_url: str, access_token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.get(
            "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {access_token}"}
        )


async def login(base_url: str, user: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.post(
            "/_matrix/client/v3/login",
            json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password},
        )


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile.mkdtemp`` puts the servers' directories during this test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


async def test_fixture_serves_on_loopback_and_registers_users(roomactors_homeserver: TestHomeserver) -> None:
    hs = roomactors_homeserver
    assert hs.base_url.startswith("http://127.0.0.1:") and not hs.base_url.endswith(":0")
    assert hs.server_name == "localhost" and hs.running
    alice = await hs.register_user("alice")
    assert alice.user_id == "@alice:localhost" and alice.localpart == "alice"
    response = await whoami(hs.base_url, alice.access_token)
    assert response.status_code == 200
    assert response.json() == {"user_id": "@alice:localhost", "device_id": alice.device_id, "is_guest": False}
    with pytest.raises(HomeserverError, match="M_USER_IN_USE"):
        await hs.register_user("alice")


async def test_stop_is_graceful_idempotent_and_removes_the_temporary_directory(private_tempdir: Path) -> None:
    async with trio.open_nursery() as nursery:
        hs = await start_homeserver(nursery)
        assert hs.data_dir.parent == private_tempdir and (hs.data_dir / "roomactors.db").is_file()
        await hs.register_user("alice")
        await hs.stop()
        await hs.stop()
        assert not hs.running
    assert list(private_tempdir.iterdir()) == []


async def test_cancelling_the_nursery_also_cleans_up(private_tempdir: Path) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            hs = await start_homeserver(nursery)
            scope.cancel()
    assert not hs.running
    assert list(private_tempdir.iterdir()) == []


async def test_a_given_data_dir_is_kept_and_survives_a_restart(tmp_path: Path) -> None:
    async with open_test_homeserver(data_dir=tmp_path / "hs") as hs:
        alice = await hs.register_user("alice", "s3cret")
    assert (tmp_path / "hs" / "roomactors.db").is_file()
    async with open_test_homeserver(data_dir=tmp_path / "hs") as again:
        assert again.base_url != "" and not hs.running
        response = await login(again.base_url, "alice", "s3cret")
        assert response.status_code == 200 and response.json()["user_id"] == alice.user_id
        assert (await whoami(again.base_url, alice.access_token)).status_code == 200


async def test_two_servers_side_by_side_with_overrides() -> None:
    async with open_test_homeserver(server_name="a.test") as a, open_test_homeserver(
        server_name="b.test", settings_overrides={"registration": {"shared_secret": ""}}
    ) as b:
        assert a.base_url != b.base_url
        root = await a.register_user("root", "pw", admin=True)
        assert root.user_id == "@root:a.test"
        assert (await login(a.base_url, "root", "pw")).json()["user_id"] == "@root:a.test"
        # No shared secret: register_user falls back to open registration (m.login.dummy)...
        assert (await b.register_user("root")).user_id == "@root:b.test"
        with pytest.raises(HomeserverError, match="shared_secret"):
            await b.register_user("root", admin=True)


async def test_registration_refused_is_reported() -> None:
    overrides = {"registration": {"shared_secret": "", "enabled": False}}
    async with open_test_homeserver(settings_overrides=overrides) as hs:
        with pytest.raises(HomeserverError, match="HTTP 403.*M_FORBIDDEN"):
            await hs.register_user("alice")


async def test_invalid_overrides_raise_and_leave_nothing_behind(private_tempdir: Path) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(SettingsError, match=r"unknown key \[http\] colour"):
            await start_homeserver(nursery, settings_overrides={"http": {"colour": "blue"}})
    assert list(private_tempdir.iterdir()) == []


async def test_a_server_that_cannot_start_raises_into_the_caller(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    async with trio.open_nursery() as nursery:
        with pytest.raises(FileExistsError):
            await start_homeserver(nursery, data_dir=not_a_dir)
    assert not_a_dir.read_text() == "x"  # a given data_dir is never removed


def test_threaded_fixture_for_sync_and_asyncio_callers(roomactors_homeserver_thread: ThreadedHomeserver) -> None:
    hs = roomactors_homeserver_thread
    bob = hs.register_user("bob")
    response = httpx.get(
        f"{hs.base_url}/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {bob.access_token}"}
    )
    assert response.json()["user_id"] == "@bob:localhost"


def test_threaded_server_that_cannot_start_raises_from_start(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(HomeserverError, match="failed to start") as info:
        with homeserver_in_thread(data_dir=not_a_dir):
            pass
    assert isinstance(info.value.__cause__, BaseException)


def test_threaded_stop_removes_the_temporary_directory(private_tempdir: Path) -> None:
    with homeserver_in_thread(server_name="thread.test") as hs:
        assert hs.register_user("carol").user_id == "@carol:thread.test"
        assert hs.data_dir.is_dir()
    assert list(private_tempdir.iterdir()) == []
    with pytest.raises(HomeserverError, match="not running"):
        hs.register_user("dave")
