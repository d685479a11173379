"""(being written)"""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("room_reads", __name__)
