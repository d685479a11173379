"""Writing files that must not exist yet (keys, certificates, settings): exclusive
create with the given mode, fsync, and no partial file left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_new_file"]


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``mode``, write and fsync ``data``; on
    any failure the partial file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
