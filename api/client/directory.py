"""(being written)"""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("directory", __name__)
