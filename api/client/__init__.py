"""Client-server API blueprints (registered by ``api.app.create_app`` in this order)."""

from __future__ import annotations

from api.client import account, ephemeral, membership, rooms, sync, versions

BLUEPRINTS = (
    versions.blueprint,
    account.blueprint,
    rooms.blueprint,
    membership.blueprint,
    sync.blueprint,
    ephemeral.blueprint,
)
