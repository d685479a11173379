"""Deps: the services a view may use, built once by the composition root.

Theory of operation
-------------------
``api.services.open_homeserver`` builds one frozen ``Deps`` and ``create_app``
stores it on the app; views call :func:`deps` to reach it. It is explicit
constructor-style dependency passing (docs/ARCHITECTURE.md, "Dependencies"), not
a service locator: the set of services is fixed here and typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart import current_app

from roomactors.clock import Clock
from roomactors.notifier import Notifier
from roomactors.registry import RoomRegistry
from roomactors.typing import TypingService
from storage.db import Database

if TYPE_CHECKING:
    from api.auth import TokenCache
    from api.ratelimit import RateLimiter
    from api.settings import Settings
    from api.client.uia import UiaSessions

__all__ = ["Deps", "deps"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Deps:
    settings: Settings
    server_name: str
    signing_key: Any
    db: Database
    registry: RoomRegistry
    notifier: Notifier
    typing: TypingService
    clock: Clock
    tokens: TokenCache
    ratelimiter: RateLimiter
    uia: UiaSessions
    #: Federation services (None when ``[federation] enabled = false``): the key
    #: service (roomactors/keys), the signed outbound client
    #: (roomactors/federation_client.FederationClient) and the outbound sender
    #: (roomactors/sender.SenderHub).
    keys: Any = None
    federation: Any = None
    sender: Any = None
    #: The media repository (roomactors/media.MediaRepository).
    media: Any = None
    #: The device-list service (roomactors/device_lists.DeviceLists): call
    #: ``after_local_change(user_id)`` after committing a device or key change.
    device_lists: Any = None
    #: Rooms whose inbound staging area has PDUs their actor has not been woken
    #: for (a full mailbox); each actor drains and clears its entry.
    staging_flags: set[Any] = field(default_factory=set)
    #: user ID -> (presence, status_msg, wall-clock ms) last written by this
    #: process: lets /sync skip the presence read when nothing changed.
    #: Invalidation: note_presence updates it with every write it makes.
    presence_seen: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)
    #: Outstanding shared-secret registration nonces -> issue time (s); per server.
    admin_nonces: dict[str, float] = field(default_factory=dict)


def deps() -> Deps:
    return current_app.extensions["roomactors"]
