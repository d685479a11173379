"""``MediaRepository``: uploads, reservations, local and remote media, thumbnails.

Theory of operation
-------------------
One object per homeserver (``Deps.media``), started by ``open_homeserver`` with
``nursery.start(media.run)``; it owns a nursery for work that must outlive the
request that asked for it (a remote fetch or a thumbnail that other requests are
waiting on: a client hanging up never cancels another's answer).

* **Upload** (``POST /_matrix/media/v3/upload``): the body streams into the store
  (``roomactors.media.store``), hashed on the way and cut off past the size limit
  (413 ``M_TOO_LARGE``, nothing kept); only once the file is durable is the row
  written, in one transaction. Then the answer.
* **Create, then upload** (``POST /_matrix/media/v1/create``, ``PUT
  /_matrix/media/v3/upload/{serverName}/{mediaId}``): a pending row with
  ``unused_expires_at``; the PUT is checked before the body is read and again in
  the transaction that fills the row in (only the creator: 403 ``M_FORBIDDEN``;
  only once: 409 ``M_CANNOT_OVERWRITE_MEDIA``; unknown or expired: 404). A
  download of a pending ID waits up to ``timeout_ms`` for the upload (an in-memory
  event per ID, set after the commit), then answers 504 ``M_NOT_YET_UPLOADED``.
* **Remote media** (server-server API, "Content Repository"): a local user asking
  for ``mxc://other/id`` that we have not cached makes us fetch it with a signed
  ``GET /_matrix/federation/v1/media/download/{mediaId}`` (multipart: JSON
  metadata, then the bytes); a peer answering ``404 M_UNRECOGNIZED`` is asked
  again at the deprecated ``/_matrix/media/v3/download/{serverName}/{mediaId}``
  with ``allow_remote=false``, as the spec requires. The answer is size-limited
  while it is read (502 ``M_TOO_LARGE``), stored content-addressed and recorded,
  so the next request is local. One fetch per ID at a time: concurrent requesters
  wait on the same fetch ("single flight"). A ``Location`` part (a redirect to a
  CDN) is not followed yet: it answers 502. A failed fetch (404 or 502) is answered
  from memory for ``REMOTE_FAILURE_TTL_MS`` (60 s) before the server is asked again,
  so retries and every viewer of a room do not each cost a request. The legacy
  unauthenticated endpoints never fetch (``allow_remote_fetch=False``): they are "frozen" for new remote
  media, as Synapse does with ``enable_authenticated_media``.
* **Thumbnails** (client-server API, "Thumbnails"; ``roomactors.media.thumbnails``):
  only for content declared as PNG, JPEG, GIF or WebP *and* that Pillow opens as
  one. The size is chosen among the spec's recommended ones, made on first request
  in a worker thread (``trio.to_thread.run_sync`` under a ``CapacityLimiter`` sized
  to the cores), stored content-addressed and recorded against the *source
  content's* hash, so identical uploads share thumbnails. Remote media are
  thumbnailed here from the cached original (we fetch the original, never the
  peer's thumbnail): one code path, our own size choices and safety checks.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
import trio

from roomactors.clock import Clock
from roomactors.media import thumbnails
from roomactors.media.config import MediaSettings
from roomactors.media.errors import MediaError
from roomactors.media.multipart import MultipartError, parse_media_multipart
from roomactors.media.serving import (
    THUMBNAILABLE_TYPES,
    base_type,
    filename_from_disposition,
    is_valid_media_id,
    new_media_id,
    stored_content_type,
)
from roomactors.media.store import MediaStore, TooLarge
from storage import media as media_rows
from storage.media import MediaRecord

__all__ = ["MediaRepository", "Served"]

log = logging.getLogger(__name__)

#: Room for the multipart framing and metadata around remote media bytes.
_MULTIPART_SLACK = 64 * 1024
#: How long a failed remote fetch (404, or 502: unreachable, too large, malformed) is
#: answered from memory before the server is asked again; at most ``_MAX_FAILED`` kept.
REMOTE_FAILURE_TTL_MS = 60_000
_MAX_FAILED = 10_000


@dataclass(frozen=True, slots=True)
class Served:
    """What to send for a download or thumbnail: stored bytes and how to label them."""

    sha256: str
    content_type: str
    size: int
    #: the file name for ``Content-Disposition`` (None: none)
    filename: str | None


class _Flight:
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class MediaRepository:
    def __init__(
        self,
        *,
        db: Any,
        server_name: str,
        settings: MediaSettings,
        clock: Clock,
        federation: Any = None,
        max_request_size: int | None = None,
    ) -> None:
        self._db = db
        self.server_name = server_name
        self.settings = settings
        self._clock = clock
        self._federation = federation
        self.store = MediaStore(settings.directory)
        #: The effective upload limit (the HTTP layer refuses bodies above its own).
        self.max_upload_size = min(settings.max_upload_size, max_request_size or settings.max_upload_size)
        self.thumbnail_limiter = trio.CapacityLimiter(os.cpu_count() or 1)
        self._uploaded: dict[tuple[str, str], trio.Event] = {}
        self._flights: dict[tuple[Any, ...], _Flight] = {}
        #: Remote fetches that failed (404 or 502): (server, media ID) -> (the clock's
        #: ms until which the failure is answered without asking again, the error).
        self._failed: OrderedDict[tuple[str, str], tuple[float, MediaError]] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        #: Counters for tests and benches.
        self.remote_fetches = 0
        self.thumbnails_made = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self.store.ensure_directories)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -------------------------------------------------------------- uploads

    def _check_declared_length(self, content_length: int | None) -> None:
        if content_length is not None and content_length > self.max_upload_size:
            raise _too_large(self.max_upload_size)

    async def upload(
        self,
        user_id: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None,
        upload_name: str | None,
        content_length: int | None = None,
    ) -> str:
        """Store a new upload; return its media ID (the ``mxc://`` is ours)."""
        self._check_declared_length(content_length)
        sha256, size, head = await self._write(chunks)
        stored_type = stored_content_type(content_type, head)
        while True:
            media_id = new_media_id()
            try:
                await self._db.write(
                    _insert_local, self.server_name, media_id, sha256, stored_type, upload_name, size, user_id,
                    self._clock.time_ms(),
                )
                return media_id
            except sa.exc.IntegrityError:  # pragma: no cover - a 24-character random ID collided
                continue

    async def _write(self, chunks: AsyncIterable[bytes]) -> tuple[str, int, bytes]:
        try:
            return await self.store.write_stream(chunks, max_size=self.max_upload_size)
        except TooLarge:
            raise _too_large(self.max_upload_size) from None

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media ID (``POST /_matrix/media/v1/create``): ``(media_id,
        unused_expires_at)``; 429 when the user has too many pending uploads."""
        now = self._clock.time_ms()
        expires = now + int(self.settings.unused_expiry_s * 1000)
        media_id = new_media_id()
        ok = await self._db.write(
            _reserve, self.server_name, media_id, user_id, now, expires, self.settings.max_pending_uploads
        )
        if not ok:
            # POST /_matrix/media/v1/create: "limit the number of concurrent pending media uploads" -> 429.
            raise MediaError("M_LIMIT_EXCEEDED", 429, "Too many pending media uploads")
        return media_id, expires

    async def upload_reserved(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None,
        upload_name: str | None,
        content_length: int | None = None,
    ) -> None:
        """``PUT /_matrix/media/v3/upload/{serverName}/{mediaId}``."""
        if server_name != self.server_name or not is_valid_media_id(media_id):
            raise MediaError.not_found("Unknown media ID")
        # Checked before reading the body (a refused upload costs no disk) and
        # again in the transaction that fills the row in.
        record = await self._db.read(media_rows.get_media, server_name, media_id)
        _raise_for_verdict(media_rows.reservation_verdict(record, user_id, self._clock.time_ms()))
        self._check_declared_length(content_length)
        sha256, size, head = await self._write(chunks)
        stored_type = stored_content_type(content_type, head)
        verdict = await self._db.write(
            _complete, server_name, media_id, user_id, self._clock.time_ms(), sha256, stored_type, upload_name, size
        )
        _raise_for_verdict(verdict)
        event = self._uploaded.pop((server_name, media_id), None)
        if event is not None:
            event.set()

    # -------------------------------------------------------------- downloads

    async def get(
        self, server_name: str, media_id: str, *, timeout_ms: int, allow_remote_fetch: bool
    ) -> MediaRecord:
        """The record of media with content, local or remote (fetched if allowed)."""
        if not is_valid_media_id(media_id):
            # client-server API, "Security considerations": only A-Za-z0-9 _ - in a media ID.
            raise MediaError.not_found()
        if server_name == self.server_name:
            return await self._get_local(media_id, timeout_ms)
        record = await self._db.read(media_rows.get_media, server_name, media_id)
        if record is not None and record.sha256 is not None and self.store.exists(record.sha256):
            return record
        if not allow_remote_fetch:
            raise MediaError.not_found()
        key = (server_name, media_id)
        failed = self._failed.get(key)
        if failed is not None:
            until, error = failed
            if self._clock.time_ms() < until:
                raise MediaError(error.errcode, error.status, error.message)
            del self._failed[key]
        timeout_ms = self._clamp_timeout(timeout_ms)
        try:
            return await self._single_flight(
                ("fetch", server_name, media_id), lambda: self._fetch_remote(server_name, media_id, timeout_ms)
            )
        except MediaError as e:
            if e.status in (404, 502):
                # Not there, or the server failed: answer the same for a while rather
                # than have every client's retry (and every viewer of a room) ask again.
                self._failed[key] = (self._clock.time_ms() + REMOTE_FAILURE_TTL_MS, e)
                self._failed.move_to_end(key)
                while len(self._failed) > _MAX_FAILED:
                    self._failed.popitem(last=False)
            raise

    def _clamp_timeout(self, timeout_ms: int) -> int:
        return max(0, min(timeout_ms, self.settings.max_timeout_ms))

    async def _get_local(self, media_id: str, timeout_ms: int) -> MediaRecord:
        key = (self.server_name, media_id)
        with trio.move_on_after(self._clamp_timeout(timeout_ms) / 1000):
            while True:
                record = await self._db.read(media_rows.get_media, self.server_name, media_id)
                if record is None or record.remote:
                    raise MediaError.not_found()
                if not record.pending:
                    return record
                if record.unused_expires_at is not None and record.unused_expires_at <= self._clock.time_ms():
                    raise MediaError.not_found()
                event = self._uploaded.setdefault(key, trio.Event())
                await event.wait()
        # The download endpoints' timeout_ms: "in the case that the content has not yet been uploaded".
        raise MediaError("M_NOT_YET_UPLOADED", 504, "Content has not yet been uploaded")

    def served(self, record: MediaRecord, filename: str | None = None) -> Served:
        assert record.sha256 is not None and record.size is not None
        return Served(
            record.sha256,
            record.content_type or "application/octet-stream",
            record.size,
            filename if filename is not None else record.upload_name,
        )

    async def _single_flight(self, key: tuple[Any, ...], work: Callable[[], Awaitable[Any]]) -> Any:
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            new = flight

            async def runner() -> None:
                try:
                    new.result = await work()
                except Exception as e:
                    new.error = e
                finally:
                    del self._flights[key]
                    new.done.set()

            if self._nursery is not None:
                self._nursery.start_soon(runner)
            else:  # not started (a bare repository in a unit test): run in this task
                await runner()
        await flight.done.wait()
        if flight.error is not None:
            error = flight.error
            if isinstance(error, MediaError):
                raise MediaError(error.errcode, error.status, error.message)
            raise MediaError("M_UNKNOWN", 500, f"media operation failed: {type(error).__name__}") from error
        return flight.result

    async def _fetch_remote(self, server_name: str, media_id: str, timeout_ms: int) -> MediaRecord:
        from roomactors.federation_client import FederationUnreachable, ResponseTooLarge

        if self._federation is None:
            raise MediaError.not_found("Remote media is unavailable: federation is disabled")
        limit = self.settings.remote_max_size
        timeout_s = self.settings.remote_timeout_s
        self.remote_fetches += 1

        async def get(path: str, query: dict[str, str]) -> Any:
            try:
                return await self._federation.get_raw(
                    server_name, path, query=query, max_bytes=limit + _MULTIPART_SLACK, timeout_s=timeout_s
                )
            except ResponseTooLarge:
                raise _remote_too_large() from None
            except FederationUnreachable as e:
                log.info("fetching mxc://%s/%s failed: %s", server_name, media_id, e)
                raise MediaError("M_UNKNOWN", 502, "Failed to fetch remote media") from None

        quoted = urllib.parse.quote(media_id, safe="")
        response = await get(f"/_matrix/federation/v1/media/download/{quoted}", {"timeout_ms": str(timeout_ms)})
        if response.status in (404, 405) and _errcode(response.body) == "M_UNRECOGNIZED":
            # server-server API, "Content Repository": fall back to the deprecated
            # endpoint on 404 M_UNRECOGNIZED, with allow_remote=false.
            response = await get(
                f"/_matrix/media/v3/download/{urllib.parse.quote(server_name, safe='')}/{quoted}",
                {"allow_remote": "false", "timeout_ms": str(timeout_ms), "allow_redirect": "false"},
            )
            if response.status != 200:
                _raise_remote_status(response)
            content_type = response.headers.get("content-type")
            filename = filename_from_disposition(response.headers.get("content-disposition"))
            body = response.body
        else:
            if response.status != 200:
                _raise_remote_status(response)
            try:
                part = parse_media_multipart(response.headers.get("content-type", ""), response.body)
            except MultipartError as e:
                log.info("mxc://%s/%s: bad multipart answer: %s", server_name, media_id, e)
                raise MediaError("M_UNKNOWN", 502, "Failed to fetch remote media") from None
            if part.location is not None:
                raise MediaError("M_UNKNOWN", 502, "Remote media redirects (Location) are not followed")
            content_type = part.headers.get("content-type")
            filename = filename_from_disposition(part.headers.get("content-disposition"))
            body = part.body
        if len(body) > limit:
            raise _remote_too_large()
        sha256 = await self.store.write_bytes(body)
        stored_type = stored_content_type(content_type, body[:64])
        now = self._clock.time_ms()
        await self._db.write(_insert_remote, server_name, media_id, sha256, stored_type, filename, len(body), now)
        return MediaRecord(
            server_name=server_name, media_id=media_id, sha256=sha256, content_type=stored_type,
            upload_name=filename, size=len(body), user_id=None, created_ts=now, unused_expires_at=None, remote=True,
        )

    # -------------------------------------------------------------- thumbnails

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        *,
        width: int,
        height: int,
        method: str,
        animated: bool,
        timeout_ms: int,
        allow_remote_fetch: bool,
    ) -> Served:
        record = await self.get(server_name, media_id, timeout_ms=timeout_ms, allow_remote_fetch=allow_remote_fetch)
        return await self.thumbnail_of(record, width=width, height=height, method=method, animated=animated)

    async def thumbnail_of(self, record: MediaRecord, *, width: int, height: int, method: str, animated: bool) -> Served:
        assert record.sha256 is not None
        if base_type(record.content_type or "") not in THUMBNAILABLE_TYPES:
            raise _cannot_thumbnail()
        path = self.store.path_for(record.sha256)
        max_pixels = self.settings.max_image_pixels
        try:
            info = await trio.to_thread.run_sync(
                lambda: thumbnails.probe(path, max_pixels=max_pixels), limiter=self.thumbnail_limiter
            )
        except thumbnails.TooManyPixels:
            # "Content is too large to thumbnail": 413 for local content, 502 for remote.
            raise MediaError("M_TOO_LARGE", 502 if record.remote else 413, "Content is too large to thumbnail") from None
        except thumbnails.NotAnImage:
            raise _cannot_thumbnail() from None
        want_animated = animated and info.animated
        size = thumbnails.choose(info, width, height, method)
        if size is None:
            if not (info.animated and not animated):
                # "When the content is smaller than the requested dimensions, servers
                # should return the original content rather than thumbnail it."
                return Served(record.sha256, info.content_type, record.size or 0, "thumbnail" + _extension(info.content_type))
            size, method = (info.width, info.height), "scale"  # a still of the first frame
        t_w, t_h = size
        key = (record.sha256, t_w, t_h, method, want_animated)
        existing = await self._db.read(media_rows.get_thumbnail, *key)
        if existing is None or not self.store.exists(existing.sha256):
            existing = await self._single_flight(
                ("thumb", *key), lambda: self._make_thumbnail(record.sha256, t_w, t_h, method, want_animated)
            )
        return Served(existing.sha256, existing.content_type, existing.size, "thumbnail" + _extension(existing.content_type))

    async def _make_thumbnail(self, source: str, width: int, height: int, method: str, animated: bool) -> Any:
        path = self.store.path_for(source)
        max_pixels = self.settings.max_image_pixels
        try:
            thumb = await trio.to_thread.run_sync(
                lambda: thumbnails.render(path, width, height, method, animated=animated, max_pixels=max_pixels),
                limiter=self.thumbnail_limiter,
            )
        except thumbnails.TooManyPixels:
            raise MediaError("M_TOO_LARGE", 413, "Content is too large to thumbnail") from None
        except thumbnails.NotAnImage:
            raise _cannot_thumbnail() from None
        sha256 = await self.store.write_bytes(thumb.data)
        await self._db.write(
            _insert_thumbnail, source, width, height, method, animated, sha256, thumb.content_type, len(thumb.data),
            self._clock.time_ms(),
        )
        self.thumbnails_made += 1
        return media_rows.ThumbnailRecord(sha256, thumb.content_type, len(thumb.data), width, height)


# ------------------------------------------------------------------ helpers


def _too_large(limit: int) -> MediaError:
    return MediaError("M_TOO_LARGE", 413, f"Cannot upload files larger than {limit} bytes")


def _remote_too_large() -> MediaError:
    # client-server API, "Security considerations": remote content too large -> 502 M_TOO_LARGE.
    return MediaError("M_TOO_LARGE", 502, "Remote content is too large")


def _cannot_thumbnail() -> MediaError:
    return MediaError("M_UNKNOWN", 400, "Cannot generate thumbnails for the requested content")


def _extension(content_type: str) -> str:
    return {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}.get(content_type, "")


def _errcode(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = parsed.get("errcode") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


def _raise_remote_status(response: Any) -> None:
    errcode = _errcode(response.body)
    if response.status == 404:
        raise MediaError.not_found()
    if response.status == 504 and errcode == "M_NOT_YET_UPLOADED":
        raise MediaError("M_NOT_YET_UPLOADED", 504, "Content has not yet been uploaded")
    if errcode == "M_TOO_LARGE":
        raise _remote_too_large()
    raise MediaError("M_UNKNOWN", 502, f"Failed to fetch remote media (HTTP {response.status})")


def _raise_for_verdict(verdict: str) -> None:
    if verdict == "ok":
        return
    if verdict == "forbidden":
        # PUT /upload/{serverName}/{mediaId}: "a different user than the one that called /create".
        raise MediaError("M_FORBIDDEN", 403, "This media ID was created by another user")
    if verdict == "exists":
        raise MediaError("M_CANNOT_OVERWRITE_MEDIA", 409, "Media already uploaded")
    raise MediaError.not_found("Unknown or expired media ID")


def _insert_local(conn: Any, server_name: str, media_id: str, sha256: str, content_type: str,
                  upload_name: str | None, size: int, user_id: str, now: int) -> None:
    media_rows.insert_local_media(
        conn, server_name=server_name, media_id=media_id, sha256=sha256, content_type=content_type,
        upload_name=upload_name, size=size, user_id=user_id, created_ts=now,
    )


def _reserve(conn: Any, server_name: str, media_id: str, user_id: str, now: int, expires: int, max_pending: int) -> bool:
    return media_rows.reserve_media(
        conn, server_name=server_name, media_id=media_id, user_id=user_id, created_ts=now,
        unused_expires_at=expires, max_pending=max_pending,
    )


def _complete(conn: Any, server_name: str, media_id: str, user_id: str, now: int, sha256: str,
              content_type: str, upload_name: str | None, size: int) -> str:
    return media_rows.complete_reservation(
        conn, server_name=server_name, media_id=media_id, user_id=user_id, now_ms=now, sha256=sha256,
        content_type=content_type, upload_name=upload_name, size=size,
    )


def _insert_remote(conn: Any, server_name: str, media_id: str, sha256: str, content_type: str,
                   upload_name: str | None, size: int, now: int) -> None:
    media_rows.insert_remote_media(
        conn, server_name=server_name, media_id=media_id, sha256=sha256, content_type=content_type,
        upload_name=upload_name, size=size, created_ts=now,
    )


def _insert_thumbnail(conn: Any, source: str, width: int, height: int, method: str, animated: bool,
                      sha256: str, content_type: str, size: int, now: int) -> None:
    media_rows.insert_thumbnail(
        conn, source_sha256=source, width=width, height=height, method=method, animated=animated,
        sha256=sha256, content_type=content_type, size=size, created_ts=now,
    )
