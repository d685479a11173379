"""Discovery: ``/_matrix/client/versions``, ``/.well-known/matrix/client`` and
``/capabilities`` (client-server-api, "Server Discovery", "API Standards",
"Capabilities negotiation").

Which versions we advertise: only those whose *required* features we serve.
Spec v1.11 made the authenticated media endpoints (``/_matrix/client/v1/media/*``,
``/_matrix/federation/v1/media/*``, api/media) the way clients load media, so the
list reaches v1.11 now that they are served. v1.12 is not listed yet: it also
needs, among others, account locking (MSC3939) and the v1.12 media header rules
are met but were not audited against every v1.12 change. Each version's
changelog was read for what it requires; r0.x is listed for older clients
(Hydrogen) that still call ``/r0`` paths, which we alias.
"""

from __future__ import annotations

from quart import Blueprint, Response

from api.auth import requester
from api.deps import deps
from api.responses import json_response
from api.settings import client_base_url
from roomactors.protocol.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS

__all__ = ["SUPPORTED_VERSIONS", "blueprint"]

SUPPORTED_VERSIONS: tuple[str, ...] = (
    "r0.5.0",
    "r0.6.0",
    "r0.6.1",
    "v1.1",
    "v1.2",
    "v1.3",
    "v1.4",
    "v1.5",
    "v1.6",
    "v1.7",
    "v1.8",
    "v1.9",
    "v1.10",
    "v1.11",
)

blueprint = Blueprint("client_versions", __name__)


@blueprint.get("/_matrix/client/versions")
async def versions() -> Response:
    return json_response({"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}})


@blueprint.get("/.well-known/matrix/client")
async def well_known_client() -> Response:
    return json_response({"m.homeserver": {"base_url": client_base_url(deps().settings)}})


@blueprint.get("/_matrix/client/v3/capabilities")
@blueprint.get("/_matrix/client/r0/capabilities")
async def capabilities() -> Response:
    await requester()
    return json_response(
        {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.room_versions": {
                    "default": DEFAULT_ROOM_VERSION,
                    "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
                },
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
                "m.get_login_token": {"enabled": False},
                "m.profile_fields": {"enabled": True, "allowed": ["displayname", "avatar_url"]},
            }
        }
    )
