"""Media repository rows (owner: roomactors/media): which ``mxc://`` URIs exist,
what content (by SHA-256) each holds, and which thumbnails were made.

Theory of operation
-------------------
Every function is one whole transaction, handed to ``Database.write``/``read``.
The bytes themselves are files named by their SHA-256 (``roomactors.media.store``);
a row is written only after its file is durable, so a row never points at a
missing file. Rows:

* ``media``: one per ``(server_name, media_id)``. Local uploads have ``remote``
  false; remote media we cached have it true. A ``/create`` reservation has
  ``sha256`` NULL and ``unused_expires_at`` set until its content arrives
  (client-server API, ``POST /_matrix/media/v1/create``).
* ``media_thumbnails``: keyed by the source content's SHA-256 and the
  ``(width, height, method, animated)`` actually produced.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from storage.schema import media, media_thumbnails

__all__ = [
    "MediaRecord",
    "ThumbnailRecord",
    "complete_reservation",
    "count_pending",
    "get_media",
    "get_thumbnail",
    "insert_local_media",
    "insert_remote_media",
    "insert_thumbnail",
    "reserve_media",
]


@dataclass(frozen=True, slots=True)
class MediaRecord:
    server_name: str
    media_id: str
    #: None while a /create reservation waits for its content.
    sha256: str | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    user_id: str | None
    created_ts: int
    unused_expires_at: int | None
    remote: bool

    @property
    def pending(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True, slots=True)
class ThumbnailRecord:
    sha256: str
    content_type: str
    size: int
    width: int
    height: int


def _record(row: sa.Row) -> MediaRecord:
    return MediaRecord(
        server_name=row.server_name,
        media_id=row.media_id,
        sha256=row.sha256,
        content_type=row.content_type,
        upload_name=row.upload_name,
        size=row.size,
        user_id=row.user_id,
        created_ts=row.created_ts,
        unused_expires_at=row.unused_expires_at,
        remote=bool(row.remote),
    )


def get_media(conn: sa.Connection, server_name: str, media_id: str) -> MediaRecord | None:
    row = conn.execute(
        sa.select(media).where(media.c.server_name == server_name, media.c.media_id == media_id)
    ).first()
    return None if row is None else _record(row)


def insert_local_media(
    conn: sa.Connection,
    *,
    server_name: str,
    media_id: str,
    sha256: str,
    content_type: str,
    upload_name: str | None,
    size: int,
    user_id: str,
    created_ts: int,
) -> None:
    conn.execute(
        sa.insert(media).values(
            server_name=server_name, media_id=media_id, sha256=sha256, content_type=content_type,
            upload_name=upload_name, size=size, user_id=user_id, created_ts=created_ts,
            unused_expires_at=None, remote=False,
        )
    )


def count_pending(conn: sa.Connection, user_id: str, now_ms: int) -> int:
    """Pending media uploads of ``user_id``: created, not uploaded, not expired
    (``POST /_matrix/media/v1/create``)."""
    return conn.execute(
        sa.select(sa.func.count()).select_from(media).where(
            media.c.user_id == user_id, media.c.sha256.is_(None), media.c.unused_expires_at > now_ms
        )
    ).scalar_one()


def reserve_media(
    conn: sa.Connection,
    *,
    server_name: str,
    media_id: str,
    user_id: str,
    created_ts: int,
    unused_expires_at: int,
    max_pending: int,
) -> bool:
    """Reserve ``mxc://server_name/media_id`` for ``user_id``; False when the user
    already has ``max_pending`` pending uploads (the check and the insert are one
    transaction)."""
    if count_pending(conn, user_id, created_ts) >= max_pending:
        return False
    conn.execute(
        sa.insert(media).values(
            server_name=server_name, media_id=media_id, sha256=None, content_type=None, upload_name=None,
            size=None, user_id=user_id, created_ts=created_ts, unused_expires_at=unused_expires_at, remote=False,
        )
    )
    return True


def complete_reservation(
    conn: sa.Connection,
    *,
    server_name: str,
    media_id: str,
    user_id: str,
    now_ms: int,
    sha256: str,
    content_type: str,
    upload_name: str | None,
    size: int,
) -> str:
    """Fill in a reservation's content. Returns ``"ok"``, or why not:
    ``"not_found"`` (never created, or expired), ``"forbidden"`` (another user
    created it), ``"exists"`` (already uploaded: ``M_CANNOT_OVERWRITE_MEDIA``)."""
    record = get_media(conn, server_name, media_id)
    verdict = reservation_verdict(record, user_id, now_ms)
    if verdict != "ok":
        return verdict
    conn.execute(
        sa.update(media)
        .where(media.c.server_name == server_name, media.c.media_id == media_id, media.c.sha256.is_(None))
        .values(sha256=sha256, content_type=content_type, upload_name=upload_name, size=size,
                unused_expires_at=None, created_ts=now_ms)
    )
    return "ok"


def reservation_verdict(record: MediaRecord | None, user_id: str, now_ms: int) -> str:
    """Whether ``user_id`` may upload into ``record`` now (see :func:`complete_reservation`)."""
    if record is None or record.remote:
        return "not_found"
    if not record.pending:
        return "exists"
    if record.user_id != user_id:
        return "forbidden"
    if record.unused_expires_at is not None and record.unused_expires_at <= now_ms:
        return "not_found"
    return "ok"


def insert_remote_media(
    conn: sa.Connection,
    *,
    server_name: str,
    media_id: str,
    sha256: str,
    content_type: str,
    upload_name: str | None,
    size: int,
    created_ts: int,
) -> None:
    """Record remote media we cached (replacing an older record of the same URI)."""
    statement = sqlite.insert(media).values(
        server_name=server_name, media_id=media_id, sha256=sha256, content_type=content_type,
        upload_name=upload_name, size=size, user_id=None, created_ts=created_ts,
        unused_expires_at=None, remote=True,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[media.c.server_name, media.c.media_id],
            set_={
                "sha256": statement.excluded.sha256,
                "content_type": statement.excluded.content_type,
                "upload_name": statement.excluded.upload_name,
                "size": statement.excluded.size,
                "created_ts": statement.excluded.created_ts,
            },
        )
    )


def get_thumbnail(
    conn: sa.Connection, source_sha256: str, width: int, height: int, method: str, animated: bool
) -> ThumbnailRecord | None:
    row = conn.execute(
        sa.select(media_thumbnails).where(
            media_thumbnails.c.source_sha256 == source_sha256,
            media_thumbnails.c.width == width,
            media_thumbnails.c.height == height,
            media_thumbnails.c.method == method,
            media_thumbnails.c.animated == animated,
        )
    ).first()
    if row is None:
        return None
    return ThumbnailRecord(row.sha256, row.content_type, row.size, row.width, row.height)


def insert_thumbnail(
    conn: sa.Connection,
    *,
    source_sha256: str,
    width: int,
    height: int,
    method: str,
    animated: bool,
    sha256: str,
    content_type: str,
    size: int,
    created_ts: int,
) -> None:
    statement = sqlite.insert(media_thumbnails).values(
        source_sha256=source_sha256, width=width, height=height, method=method, animated=animated,
        sha256=sha256, content_type=content_type, size=size, created_ts=created_ts,
    )
    conn.execute(statement.on_conflict_do_nothing())
