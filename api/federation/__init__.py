"""The server-server API (``/_matrix/federation/*``, ``/_matrix/key/*``): one
blueprint per module, every request authenticated by ``x_matrix.py`` except the
key endpoints, which are public."""

from __future__ import annotations

from quart import Blueprint

#: Registered by ``api.app.create_app``; each module appends its blueprint here.
BLUEPRINTS: list[Blueprint] = []

from .keys import bp as keys_bp  # noqa: E402  (public: /_matrix/key/v2/*)

BLUEPRINTS.append(keys_bp)

from .events import blueprint as events_bp  # noqa: E402  (/event, /state, /backfill ...)
from .queries import blueprint as queries_bp, client_blueprint as openid_client_bp  # noqa: E402

BLUEPRINTS.extend((events_bp, queries_bp, openid_client_bp))

from .membership import blueprint as membership_bp  # noqa: E402  (make_*/send_*, invite)
from .transactions import blueprint as transactions_bp  # noqa: E402  (/send)

BLUEPRINTS.extend((membership_bp, transactions_bp))

from .user_keys import blueprint as user_keys_bp  # noqa: E402  (/user/keys/query|claim, /user/devices)

BLUEPRINTS.append(user_keys_bp)
