"""Client-server API blueprints (registered by ``api.app.create_app`` in this order)."""

from __future__ import annotations

from api.client import account, directory, ephemeral, membership, room_reads, rooms, sync, user_data, versions
from api.client import keys
from api.client import room_keys
from api.client import to_device
from api.client import device_lists

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
    keys.blueprint,
    room_keys.blueprint,
    to_device.blueprint,
    device_lists.blueprint,
)
