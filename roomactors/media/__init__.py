"""The media repository (client-server API "Content repository"; server-server API
"Content Repository"): uploads, downloads, thumbnails and remote media.

* ``repository.MediaRepository``: the service (``Deps.media``);
* ``store.MediaStore``: content-addressed files under the media directory;
* ``thumbnails``: Pillow, size choice and rendering (run in worker threads);
* ``serving``: media IDs, content types and the headers media are served with;
* ``multipart``: the federation ``multipart/mixed`` answers;
* ``config.MediaSettings``: the ``[media]`` settings; ``errors.MediaError``.
"""

from roomactors.media.config import MediaSettings
from roomactors.media.errors import MediaError
from roomactors.media.repository import MediaRepository, Served

__all__ = ["MediaError", "MediaRepository", "MediaSettings", "Served"]
