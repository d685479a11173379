"""``MediaSettings``: the ``[media]`` section, defined next to the repository that uses
it (``roomactors`` must not import ``api``; ``api.settings`` parses into it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MediaSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSettings:
    #: Content-addressed files live under here (``ab/cd/<sha256>``).
    directory: Path
    #: Largest upload accepted, in bytes (413 ``M_TOO_LARGE`` above it).
    max_upload_size: int = 50 * 1024 * 1024
    #: Serve ``/_matrix/media/{v3,r0,v1}/download|thumbnail`` without authentication
    #: (local media and remote media already cached; never a new remote fetch).
    enable_legacy_unauthenticated_media: bool = True
    #: Images with more pixels than this are never decoded (decompression bombs).
    max_image_pixels: int = 32_000_000
    #: Largest remote file fetched over federation, in bytes (502 ``M_TOO_LARGE``).
    remote_max_size: int = 50 * 1024 * 1024
    #: Timeout of one remote media fetch, in seconds.
    remote_timeout_s: float = 60.0
    #: Lifetime of an unused ``/create`` reservation, in seconds (spec: 24 h recommended).
    unused_expiry_s: float = 86400.0
    #: Pending ``/create`` reservations one user may hold (429 above it).
    max_pending_uploads: int = 5
    #: Upper bound of a request's ``timeout_ms`` (waiting for a pending upload).
    max_timeout_ms: int = 60_000
