"""(being written)"""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("user_data", __name__)
