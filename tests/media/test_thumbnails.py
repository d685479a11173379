"""Thumbnails: size choice (pure), rendering with Pillow, and the HTTP endpoint
(crop and scale, cached, never upscaled, bombs and non-images refused)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from roomactors.media import thumbnails
from roomactors.media.thumbnails import ImageInfo, choose
from tests.media.conftest import image_bytes, png_bomb
from tests.media.test_http import AUTHED, get, raw, upload


def info(w: int, h: int, animated: bool = False) -> ImageInfo:
    return ImageInfo("image/png", w, h, animated, 1)


@pytest.mark.parametrize(
    ("size", "request_", "method", "expected"),
    [
        ((1000, 800), (32, 32), "crop", (32, 32)),
        ((1000, 800), (64, 64), "crop", (96, 96)),
        ((1000, 800), (96, 96), "crop", (96, 96)),
        ((1000, 800), (120, 60), "crop", (120, 60)),  # no recommended size is large enough: exact
        ((1000, 800), (100, 100), "scale", (300, 240)),  # 320x240 fitted to 5:4
        ((1000, 800), (320, 240), "scale", (300, 240)),
        ((1000, 800), (500, 500), "scale", (600, 480)),  # not smaller than the 500x400 fit
        ((1000, 800), (900, 900), "scale", (900, 720)),  # larger than every default: exact
        ((1000, 800), (1000, 800), "scale", None),  # whole image fits: the original
        ((3000, 1500), (1000, 1000), "scale", (1000, 500)),  # larger than every default: exact
        ((50, 40), (32, 32), "crop", (32, 32)),
        ((50, 40), (96, 96), "crop", None),  # smaller than asked: the original
        ((60, 40), (40, 96), "crop", (40, 40)),  # 96x96 clamped to the image (no upscaling)
        ((60, 40), (200, 200), "crop", None),
    ],
)
def test_choose(size, request_, method, expected):
    assert choose(info(*size), *request_, method) == expected


def test_choose_never_upscales():
    for w, h in ((10, 10), (33, 20), (500, 30), (30, 900)):
        for req in ((1, 1), (32, 32), (96, 96), (320, 240), (800, 600), (2000, 2000)):
            for method in ("crop", "scale"):
                size = choose(info(w, h), *req, method)
                if size is not None:
                    assert size[0] <= w and size[1] <= h


def test_render_and_probe(tmp_path: Path):
    path = tmp_path / "a.jpg"
    path.write_bytes(image_bytes(640, 480, "JPEG"))
    probed = thumbnails.probe(path, max_pixels=10**7)
    assert (probed.content_type, probed.width, probed.height, probed.animated) == ("image/jpeg", 640, 480, False)
    thumb = thumbnails.render(path, 96, 96, "crop", animated=False, max_pixels=10**7)
    assert thumb.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.data)).size == (96, 96)
    thumb = thumbnails.render(path, 320, 240, "scale", animated=False, max_pixels=10**7)
    assert Image.open(io.BytesIO(thumb.data)).size == (320, 240)


def test_bomb_is_refused_before_decoding(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb())
    with pytest.raises(thumbnails.TooManyPixels):
        thumbnails.probe(path, max_pixels=32_000_000)
    with pytest.raises(thumbnails.TooManyPixels):
        thumbnails.render(path, 32, 32, "crop", animated=False, max_pixels=32_000_000)


def test_not_an_image(tmp_path: Path):
    path = tmp_path / "x"
    path.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    with pytest.raises(thumbnails.NotAnImage):
        thumbnails.probe(path, max_pixels=10**7)


def test_animated_gif(tmp_path: Path):
    frames = [Image.new("RGB", (200, 200), (i * 40, 0, 0)) for i in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    path = tmp_path / "a.gif"
    path.write_bytes(buffer.getvalue())
    assert thumbnails.probe(path, max_pixels=10**7).animated
    animated = thumbnails.render(path, 96, 96, "crop", animated=True, max_pixels=10**7)
    assert animated.content_type == "image/webp"
    assert getattr(Image.open(io.BytesIO(animated.data)), "n_frames", 1) == 4
    still = thumbnails.render(path, 96, 96, "crop", animated=False, max_pixels=10**7)
    assert still.content_type == "image/png"
    assert getattr(Image.open(io.BytesIO(still.data)), "n_frames", 1) == 1


# ------------------------------------------------------------------ HTTP


async def thumb(api, media_id: str, **query):
    return await raw(api, f"{AUTHED}/thumbnail/localhost/{media_id}", **query)


async def test_thumbnail_crop_and_scale(app, alice, bob, homeserver):
    media_id = await upload(alice, image_bytes(1000, 800, "PNG"), "image/png", filename="big.png")
    status, body, headers = await thumb(bob, media_id, width=32, height=32, method="crop")
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == 'inline; filename="thumbnail.png"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(body)).size == (32, 32)
    status, body, _ = await thumb(bob, media_id, width=100, height=100, method="scale")
    assert Image.open(io.BytesIO(body)).size == (300, 240)
    # Default method is scale; the same size again is served from the cache.
    made = homeserver.media.thumbnails_made
    status, body2, _ = await thumb(bob, media_id, width=100, height=100)
    assert body2 == body and homeserver.media.thumbnails_made == made


async def test_thumbnail_of_small_image_is_the_original(app, alice):
    data = image_bytes(20, 10, "PNG")
    media_id = await upload(alice, data, "image/png")
    status, body, headers = await thumb(alice, media_id, width=96, height=96, method="crop")
    assert (status, body) == (200, data)
    assert headers["Content-Type"] == "image/png"


async def test_thumbnail_trusts_pillow_not_the_declared_type(app, alice):
    # Declared JPEG, really a PNG: thumbnailed as what it is.
    media_id = await upload(alice, image_bytes(400, 400, "PNG"), "image/jpeg")
    status, body, headers = await thumb(alice, media_id, width=32, height=32, method="crop")
    assert status == 200 and headers["Content-Type"] == "image/png"
    # A non-image type is never handed to Pillow.
    media_id = await upload(alice, b"GIF89a but really text", "text/plain")
    assert (await get(alice, f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32")).err() == (400, "M_UNKNOWN")
    # Declared PNG with a PNG signature but garbage after it: Pillow refuses.
    media_id = await upload(alice, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "image/png")
    assert (await get(alice, f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32")).err() == (400, "M_UNKNOWN")


async def test_decompression_bomb_is_refused(app, alice, homeserver):
    media_id = await upload(alice, png_bomb(), "image/png")
    reply = await get(alice, f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32&method=crop")
    assert reply.err() == (413, "M_TOO_LARGE")
    # Over the configured limit (4 Mpx in these tests), even when small on disk.
    media_id = await upload(alice, image_bytes(2100, 2000, "PNG"), "image/png")
    reply = await get(alice, f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32&method=crop")
    assert reply.err() == (413, "M_TOO_LARGE")
    assert homeserver.media.thumbnails_made == 0


async def test_thumbnail_parameters(app, alice):
    media_id = await upload(alice, image_bytes(100, 100, "PNG"), "image/png")
    base = f"{AUTHED}/thumbnail/localhost/{media_id}"
    assert (await get(alice, f"{base}?height=32")).err() == (400, "M_MISSING_PARAM")
    assert (await get(alice, f"{base}?width=x&height=32")).err() == (400, "M_INVALID_PARAM")
    assert (await get(alice, f"{base}?width=0&height=32")).err() == (400, "M_INVALID_PARAM")
    assert (await get(alice, f"{base}?width=32&height=32&method=stretch")).err() == (400, "M_INVALID_PARAM")
    assert (await get(alice, f"{base}?width=32&height=32&animated=maybe")).err() == (400, "M_INVALID_PARAM")


async def test_concurrent_identical_thumbnail_requests_make_one(app, alice, homeserver):
    import trio

    media_id = await upload(alice, image_bytes(900, 700, "JPEG"), "image/jpeg")
    results = []

    async def one() -> None:
        results.append(await thumb(alice, media_id, width=640, height=480, method="scale"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert [r[0] for r in results] == [200] * 5
    assert len({r[1] for r in results}) == 1
    assert homeserver.media.thumbnails_made == 1


def test_exif_orientation_is_applied(tmp_path: Path):
    # Stored 400x200 (wide), EXIF orientation 6 ("rotate 90° clockwise to display"): shown 200x400.
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 200, 200))  # left half blue (stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    probed = thumbnails.probe(path, max_pixels=10**7)
    assert (probed.width, probed.height) == (200, 400)
    size = choose(probed, 100, 100, "scale")
    assert size == (120, 240)
    thumb = thumbnails.render(path, *size, "scale", animated=False, max_pixels=10**7)
    out = Image.open(io.BytesIO(thumb.data))
    assert out.size == (120, 240)
    # The stored left half (blue) is the displayed top half.
    r, g, b = out.getpixel((60, 30))
    assert b > 200 and r < 60
