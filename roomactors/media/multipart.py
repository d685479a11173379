"""``multipart/mixed`` for federation media (server-server API, "Content Repository",
``GET /_matrix/federation/v1/media/download/{mediaId}``): building our answers and
reading a peer's.

The spec's shape (RFC 2046 §5.1): a ``boundary`` delimiting exactly two parts; the
first is ``Content-Type: application/json`` with the metadata object (today always
``{}``), the second either the media bytes with their ``Content-Type`` and
``Content-Disposition``, or a ``Location`` header naming where to fetch them::

    --BOUNDARY CRLF
    Content-Type: application/json CRLF CRLF
    {} CRLF
    --BOUNDARY CRLF
    Content-Type: image/png CRLF
    Content-Disposition: inline; filename="cat.png" CRLF CRLF
    <bytes> CRLF
    --BOUNDARY-- CRLF
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

__all__ = ["MultipartError", "MediaPart", "multipart_frame", "new_boundary", "parse_media_multipart"]


class MultipartError(ValueError):
    """A peer's multipart answer is not the two-part shape the spec requires."""


def new_boundary() -> str:
    return secrets.token_hex(16)


def multipart_frame(boundary: str, metadata: Mapping[str, object], headers: Sequence[tuple[str, str]]) -> tuple[bytes, bytes]:
    """The bytes before and after the media bytes of our answer."""
    head = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode("ascii")
        + orjson.dumps(dict(metadata))
        + f"\r\n--{boundary}\r\n".encode("ascii")
        + b"".join(f"{name}: {value}\r\n".encode("utf-8") for name, value in headers)
        + b"\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    return head, tail


@dataclass(frozen=True, slots=True)
class MediaPart:
    metadata: dict[str, object]
    #: lower-case header names of the second part
    headers: dict[str, str]
    body: bytes

    @property
    def location(self) -> str | None:
        return self.headers.get("location")


_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


def parse_media_multipart(content_type: str, body: bytes) -> MediaPart:
    """Split a peer's ``multipart/mixed`` answer into its metadata and media parts."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise MultipartError(f"not multipart/mixed: {content_type!r}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("multipart/mixed without a boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    # RFC 2046: each delimiter begins a line; the first may start the body.
    if body.startswith(delimiter):
        body = b"\r\n" + body
    pieces = body.split(b"\r\n" + delimiter)
    # pieces[0] is the preamble; each later piece starts right after a delimiter.
    parts: list[bytes] = []
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            closed = True
            break
        # Transport padding, then CRLF, then the part.
        line_end = piece.find(b"\r\n")
        if line_end == -1 or piece[:line_end].strip(b" \t"):
            raise MultipartError("malformed boundary line")
        parts.append(piece[line_end + 2 :])
    if not closed or len(parts) != 2:
        raise MultipartError(f"expected exactly two parts and a closing delimiter, got {len(parts)}")
    meta_headers, meta_body = _split_part(parts[0])
    if not meta_headers.get("content-type", "").lower().startswith("application/json"):
        raise MultipartError("the first part is not application/json")
    try:
        metadata = orjson.loads(meta_body)
    except orjson.JSONDecodeError:
        raise MultipartError("the metadata part is not JSON") from None
    if not isinstance(metadata, dict):
        raise MultipartError("the metadata part is not a JSON object")
    headers, media = _split_part(parts[1])
    return MediaPart(metadata, headers, media)


def _split_part(part: bytes) -> tuple[dict[str, str], bytes]:
    if part.startswith(b"\r\n"):
        return {}, part[2:]
    end = part.find(b"\r\n\r\n")
    if end == -1:
        raise MultipartError("a part has no end of headers")
    headers: dict[str, str] = {}
    for line in part[:end].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError("malformed part header")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers, part[end + 4 :]
