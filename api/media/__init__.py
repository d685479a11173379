"""Media repository blueprints (registered by ``api.app.create_app``).

* ``client``: uploads (``/_matrix/media/{v3,r0,v1}/upload``, ``/_matrix/media/v1/create``,
  ``PUT /_matrix/media/v3/upload/{serverName}/{mediaId}``), the authenticated
  ``/_matrix/client/v1/media/*`` endpoints, and the deprecated unauthenticated
  ``/_matrix/media/{v3,r0,v1}/download|thumbnail|config``;
* ``federation``: ``/_matrix/federation/v1/media/download|thumbnail/{mediaId}``.

The work is done by ``roomactors.media.MediaRepository`` (``Deps.media``).
"""

from __future__ import annotations

from api.media.client import blueprint as client_blueprint
from api.media.federation import blueprint as federation_blueprint

BLUEPRINTS = (client_blueprint, federation_blueprint)

__all__ = ["BLUEPRINTS"]
