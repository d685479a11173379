"""The server-server API (``/_matrix/federation/*``, ``/_matrix/key/*``): one
blueprint per module, every request authenticated by ``x_matrix.py`` except the
key endpoints, which are public."""

from __future__ import annotations

from quart import Blueprint

#: Registered by ``api.app.create_app``; each module appends its blueprint here.
BLUEPRINTS: list[Blueprint] = []
