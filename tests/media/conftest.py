"""Fixtures for the media tests: a homeserver on a temp data directory (real files),
its app, registered users, and image makers."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from quart_trio import QuartTrio

from api.app import create_app
from api.services import open_homeserver
from tests.helpers.client import make_settings, register

MEDIA = {"max_upload_size": 64 * 1024, "max_image_pixels": 4_000_000}


@pytest.fixture
def media_overrides() -> dict:
    return {}


@pytest.fixture
def settings(tmp_path: Path, media_overrides: dict):
    return make_settings(
        tmp_path,
        federation={"enabled": False},
        media={**MEDIA, **media_overrides},
    )


@pytest.fixture
async def homeserver(settings):
    async with open_homeserver(settings) as deps:
        yield deps


@pytest.fixture
async def app(homeserver) -> QuartTrio:
    return create_app(homeserver)


@pytest.fixture
async def alice(app):
    return await register(app, "alice")


@pytest.fixture
async def bob(app):
    return await register(app, "bob")


def image_bytes(width: int, height: int, fmt: str = "PNG", color: tuple[int, int, int] = (200, 30, 30), **save) -> bytes:
    """A real image with a gradient (so identical sizes differ by content)."""
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, max(width // 8, 1)):
        for y in range(height):
            image.putpixel((x, y), (x % 256, y % 256, 90))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
