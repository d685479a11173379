"""Client-server API blueprints (registered by ``api.app.create_app`` in this order)."""

from __future__ import annotations

from api.client import account, directory, ephemeral, membership, room_reads, rooms, sync, user_data, versions

BLUEPRINTS = (
    versions.blueprint,
    account.blueprint,
    rooms.blueprint,
    membership.blueprint,
    room_reads.blueprint,
    sync.blueprint,
    ephemeral.blueprint,
    user_data.blueprint,
    directory.blueprint,
)
