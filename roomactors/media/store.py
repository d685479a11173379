"""Content-addressed media files on disk: ``<directory>/ab/cd/<sha256>``.

Theory of operation
-------------------
:meth:`MediaStore.write_stream` consumes an async iterator of byte chunks into a
temporary file in the ``tmp/`` subdirectory of the media directory (same file
system, so the final rename is atomic), hashing as it goes and refusing the
content as soon as it passes ``max_size`` (``TooLarge``; the temporary file is
deleted, nothing stays). Chunks are buffered up to 1 MiB and written in a worker
thread; at the end the file is ``fsync``ed, renamed to its SHA-256 name, and the
directory ``fsync``ed, so the caller may record the row in SQLite knowing the bytes
are durable. If that name already exists, the content is already stored (dedupe)
and the temporary file is dropped.

:meth:`write_bytes` does the same for bytes already in memory (thumbnails, remote
media). :meth:`read_chunks` streams a file back for a response. A file is never
modified after its rename, and its name is its hash, so readers need no locking.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import trio

__all__ = ["MediaStore", "TooLarge"]

_WRITE_BATCH = 1024 * 1024
_READ_CHUNK = 256 * 1024


class TooLarge(Exception):
    """The content passed the size limit; nothing was kept."""


class MediaStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._tmp = self.directory / "tmp"

    def ensure_directories(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Leftovers of a crash mid-upload: never referenced by a row.
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.directory / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    async def write_stream(
        self, chunks: AsyncIterable[bytes], *, max_size: int, first: bytes = b""
    ) -> tuple[str, int, bytes]:
        """Store the stream; return ``(sha256, size, first bytes)`` (up to 64 bytes,
        for type sniffing). Raises :class:`TooLarge` past ``max_size``."""
        fd, tmp_name = await trio.to_thread.run_sync(self._open_temp)
        tmp = Path(tmp_name)
        handle = _Handle(fd)
        done = False
        try:
            digest = hashlib.sha256()
            size = 0
            head = b""
            pending: list[bytes] = []
            pending_size = 0

            async def gen() -> AsyncIterator[bytes]:
                if first:
                    yield first
                async for chunk in chunks:
                    yield chunk

            async for chunk in gen():
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_size:
                    raise TooLarge(f"content larger than {max_size} bytes")
                if len(head) < 64:
                    head += chunk[: 64 - len(head)]
                digest.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _WRITE_BATCH:
                    data, pending, pending_size = b"".join(pending), [], 0
                    await trio.to_thread.run_sync(_write_all, handle.fd, data)
            sha256 = digest.hexdigest()
            await trio.to_thread.run_sync(self._finish, handle, b"".join(pending), tmp, sha256)
            done = True
            return sha256, size, head
        finally:
            if not done:
                await trio.to_thread.run_sync(_discard, handle, tmp)

    async def write_bytes(self, data: bytes) -> str:
        """Store ``data``; return its SHA-256."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        sha256, _, _ = await self.write_stream(one(), max_size=len(data))
        return sha256

    async def read_chunks(self, sha256: str) -> AsyncIterator[bytes]:
        async with await trio.open_file(self.path_for(sha256), "rb") as f:
            while True:
                chunk = await f.read(_READ_CHUNK)
                if not chunk:
                    return
                yield chunk

    async def read_bytes(self, sha256: str) -> bytes:
        return await trio.to_thread.run_sync(self.path_for(sha256).read_bytes)

    # -------------------------------------------------------------- worker-thread parts

    def _open_temp(self) -> tuple[int, str]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=self._tmp, prefix="upload-")

    def _finish(self, handle: _Handle, rest: bytes, tmp: Path, sha256: str) -> None:
        _write_all(handle.fd, rest)
        os.fsync(handle.fd)
        handle.close()
        final = self.path_for(sha256)
        if final.exists():
            tmp.unlink(missing_ok=True)  # identical content is already stored
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        _fsync_dir(final.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Handle:
    """A file descriptor closed exactly once (a number closed twice could be another file's)."""

    __slots__ = ("fd", "closed")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def _discard(handle: _Handle, tmp: Path) -> None:
    handle.close()
    tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
