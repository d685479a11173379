"""Unpadded Base64 (spec appendices, "Unpadded Base64" and "URL-safe unpadded Base64").

Encoders never pad. Decoders accept padded or unpadded input, as the appendix
asks of implementations, and raise ``ValueError`` on anything else.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["encode_base64", "encode_base64_urlsafe", "decode_base64"]


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def encode_base64_urlsafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not; ``ValueError`` if malformed."""
    if not isinstance(text, str):
        raise ValueError("base64 value is not a string")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise ValueError("invalid base64 length")
    padded = stripped + "=" * (-len(stripped) % 4)
    alt = b"-_" if ("-" in padded or "_" in padded) else b"+/"
    try:
        return base64.b64decode(padded.encode("ascii"), altchars=alt, validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"invalid base64: {e}") from None
