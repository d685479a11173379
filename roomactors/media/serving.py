"""Pure helpers for naming and serving media: media IDs, content types, headers.

Theory of operation
-------------------
* **Media IDs** (client-server API, "Matrix Content (mxc://) URIs" and "Security
  considerations"): only ``A-Za-z0-9``, ``_`` and ``-``; we mint 24 random
  alphanumerics. Anything else is refused before it reaches storage, so a media ID
  can never name a path.
* **Content types.** The uploader's ``Content-Type`` is stored as given when it is
  a syntactically valid media type (RFC 9110 §8.3.1), else
  ``application/octet-stream`` (the spec's default, v1.12). One sniff only, and
  only ever *away* from a renderable type: a declared image type whose first bytes
  are no image (an encrypted file claimed as ``image/png``, the spec's example of
  "obviously wrong") is stored as ``application/octet-stream`` ("downloadContentType",
  the reasonable bounds).
* **Serving headers** ("Serving inline content", ``Content-Disposition`` of the
  download endpoints, v1.12): ``inline`` only for the spec's list of safe types,
  ``attachment`` otherwise; the file name per RFC 6266 (``filename="…"`` for plain
  ASCII, ``filename*=utf-8''…`` per RFC 8187 otherwise). Every response also carries
  the spec's recommended ``Content-Security-Policy``, ``Cross-Origin-Resource-Policy:
  cross-origin`` (v1.4) and ``X-Content-Type-Options: nosniff`` so a browser never
  second-guesses the type.
"""

from __future__ import annotations

import re
import secrets
import string
import urllib.parse

__all__ = [
    "INLINE_CONTENT_TYPES",
    "THUMBNAILABLE_TYPES",
    "base_type",
    "content_disposition",
    "filename_from_disposition",
    "is_valid_media_id",
    "new_media_id",
    "normalise_content_type",
    "serving_headers",
    "sniff_image_type",
    "stored_content_type",
]

_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_ALPHABET = string.ascii_letters + string.digits

#: Client-server API, "Serving inline content": the only types served ``inline``.
INLINE_CONTENT_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
    "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})

#: The image types we thumbnail (after Pillow confirms the bytes really are one).
THUMBNAILABLE_TYPES = frozenset({"image/png", "image/apng", "image/jpeg", "image/jpg", "image/gif", "image/webp"})

#: client-server API, "Content repository": the recommended policy.
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

# RFC 9110 §5.6.2 token, §8.3.1 media-type = type "/" subtype parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x09\x20-\x7e])*"'
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})((?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*)[ \t]*")


def new_media_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


def is_valid_media_id(media_id: str) -> bool:
    return _MEDIA_ID.fullmatch(media_id) is not None


def normalise_content_type(value: str | None) -> str:
    """A valid media type (type/subtype lower-cased), or ``application/octet-stream``."""
    if not value or len(value) > 255:
        return "application/octet-stream"
    match = _MEDIA_TYPE.fullmatch(value.strip())
    if match is None:
        return "application/octet-stream"
    return f"{match.group(1).lower()}/{match.group(2).lower()}{match.group(3)}"


def base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def sniff_image_type(head: bytes) -> str | None:
    """The image type the first bytes announce (PNG, JPEG, GIF, WebP), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def stored_content_type(declared: str | None, head: bytes) -> str:
    """The content type to store for an upload (see the module docstring)."""
    content_type = normalise_content_type(declared)
    if base_type(content_type) in THUMBNAILABLE_TYPES and sniff_image_type(head) is None:
        return "application/octet-stream"
    return content_type


def content_disposition(disposition: str, filename: str | None) -> str:
    """``inline`` / ``attachment`` with an RFC 6266 file name parameter."""
    if not filename:
        return disposition
    if all(0x20 <= ord(c) <= 0x7E for c in filename) and '"' not in filename and "\\" not in filename:
        return f'{disposition}; filename="{filename}"'
    # RFC 8187 ext-value: attr-chars kept, everything else percent-encoded UTF-8.
    encoded = urllib.parse.quote(filename, safe="!#$&+-.^_`|~")
    return f"{disposition}; filename*=utf-8''{encoded}"


_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([A-Za-z0-9_-]+)'[^']*'([^;\s]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)


def filename_from_disposition(value: str | None) -> str | None:
    """The file name of a ``Content-Disposition`` header (``filename*`` preferred)."""
    if not value:
        return None
    star = _FILENAME_STAR.search(value)
    if star is not None:
        charset, encoded = star.group(1).lower(), star.group(2)
        try:
            name = urllib.parse.unquote(encoded, encoding=charset, errors="strict")
        except (LookupError, UnicodeDecodeError):
            name = None
        if name:
            return name
    plain = _FILENAME.search(value)
    if plain is not None:
        if plain.group(1) is not None:
            return re.sub(r"\\(.)", r"\1", plain.group(1)) or None
        return plain.group(2) or None
    return None


def serving_headers(content_type: str, filename: str | None, *, force_inline: bool = False) -> list[tuple[str, str]]:
    """Headers for serving media of ``content_type`` (see the module docstring).
    ``force_inline``: thumbnails, which the spec says MUST be ``inline`` (v1.12)."""
    inline = force_inline or base_type(content_type) in INLINE_CONTENT_TYPES
    return [
        ("Content-Type", content_type),
        ("Content-Disposition", content_disposition("inline" if inline else "attachment", filename)),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("Cross-Origin-Resource-Policy", "cross-origin"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "public, max-age=86400, s-maxage=86400"),
    ]
