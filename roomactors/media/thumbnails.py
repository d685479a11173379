"""Thumbnails with Pillow: which size to make, and making it. No I/O but reading
the source file; the repository runs :func:`render` in a worker thread.

Theory of operation
-------------------
**Choosing a size** (client-server API, "Thumbnails"). We prefer the sizes the
spec (and Synapse by default) recommends: 32x32 crop, 96x96 crop, 320x240 scale,
640x480 scale, 800x600 scale. :func:`choose` takes, among the candidates of the
requested method, the smallest one that is not smaller than the request (for
"scale", than the image fitted into the requested box; for "crop", the closest
aspect ratio first), so most requests share a handful of cached sizes. A "scale"
candidate is its box fitted to the image's aspect ratio; every candidate is clamped
to the image, because servers "MUST NOT upscale". When no recommended size is
large enough, the requested size itself is made (clamped to the image), because
servers "MUST NOT return a smaller thumbnail than requested". When the whole image
already fits inside the request, the original is served instead of a thumbnail
("servers should return the original content rather than thumbnail it"), except an
animated original when animation was not asked for. (Synapse instead picks the
closest of its pre-generated sizes, possibly a smaller one, unless its
``dynamic_thumbnails`` is on.)

**Safety.** Only PNG, JPEG, GIF and WebP decoders are allowed
(``Image.open(formats=...)``), whatever type the uploader declared: the bytes are
what Pillow recognises them as. The pixel count is read from the header and
checked against ``max_pixels`` *before* anything is decoded (decompression
bombs); Pillow's own ``DecompressionBombError`` is caught too. Animated output is
limited to ``max_pixels`` decoded pixels over all frames.

**Rendering.** EXIF orientation is applied; palette and greyscale images are
converted (RGBA when transparent) so resampling is not nearest-neighbour;
``scale`` resizes to the candidate, ``crop`` resizes to cover it and cuts the
centre. JPEG sources give JPEG thumbnails (quality 80), the others PNG (they may
be transparent); ``animated=true`` on an animated source gives an animated WebP,
as the spec prefers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageSequence

__all__ = [
    "DEFAULT_SIZES",
    "ImageInfo",
    "NotAnImage",
    "Thumbnail",
    "TooManyPixels",
    "choose",
    "probe",
    "render",
]

#: (width, height, method): the spec's recommended sizes (Synapse's defaults).
DEFAULT_SIZES: tuple[tuple[int, int, str], ...] = (
    (32, 32, "crop"),
    (96, 96, "crop"),
    (320, 240, "scale"),
    (640, 480, "scale"),
    (800, 600, "scale"),
)

#: Decoders Pillow may use: the fewer, the smaller the attack surface.
PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}

# Our own pixel check runs first; Pillow's global guard (warning, then error at 2x)
# stays as a second line of defence for any other caller in the process.


class NotAnImage(Exception):
    """The content is not an image we thumbnail."""


class TooManyPixels(Exception):
    """The image has more pixels than the limit (a possible decompression bomb)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    content_type: str
    #: after EXIF orientation
    width: int
    height: int
    animated: bool
    frames: int


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int


def _open(path: Path, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(path, formats=PILLOW_FORMATS)
    except Image.DecompressionBombError as e:
        raise TooManyPixels(str(e)) from None
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise NotAnImage(str(e)) from None
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise NotAnImage("empty image")
    if width * height > max_pixels:
        image.close()
        raise TooManyPixels(f"{width}x{height} is more than {max_pixels} pixels")
    return image


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112)
    except Exception:  # EXIF parsing of hostile input fails in many ways
        return 1
    return value if isinstance(value, int) else 1


def probe(path: Path, *, max_pixels: int) -> ImageInfo:
    """What Pillow says the file is (header only: nothing is decoded)."""
    with _open(path, max_pixels) as image:
        width, height = image.size
        if _orientation(image) in (5, 6, 7, 8):
            width, height = height, width
        frames = getattr(image, "n_frames", 1) or 1
        return ImageInfo(
            _MIME[image.format or ""], width, height, bool(getattr(image, "is_animated", False)), frames
        )


def _fit(width: int, height: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The largest size with the image's aspect ratio inside ``box_w`` x ``box_h``."""
    if box_w * height < box_h * width:
        return box_w, max(box_w * height // width, 1)
    return max(box_h * width // height, 1), box_h


def _crop_box(info: ImageInfo, w: int, h: int) -> tuple[int, int]:
    """``w`` x ``h``, shrunk (same aspect ratio) to fit inside the image: no upscaling."""
    if w > info.width or h > info.height:
        factor = min(info.width / w, info.height / h)
        w, h = max(int(w * factor), 1), max(int(h * factor), 1)
    return w, h


def _scale_box(info: ImageInfo, w: int, h: int) -> tuple[int, int]:
    """The image's aspect ratio fitted into ``w`` x ``h``, never above the image's size."""
    f_w, f_h = _fit(info.width, info.height, w, h)
    return min(f_w, info.width), min(f_h, info.height)


def _candidates(info: ImageInfo, method: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for box_w, box_h, m in DEFAULT_SIZES:
        if m != method:
            continue
        size = _scale_box(info, box_w, box_h) if method == "scale" else _crop_box(info, box_w, box_h)
        if size not in out:
            out.append(size)
    return out


def choose(info: ImageInfo, width: int, height: int, method: str) -> tuple[int, int] | None:
    """The thumbnail size to serve for a request, or None to serve the original.

    The smallest recommended size that is not smaller than what was asked for
    (for "scale": than the image fitted into the requested box; for "crop", the
    closest aspect ratio first). When none is large enough, the exact requested
    size (clamped to the image) is made: servers "MUST NOT return a smaller
    thumbnail than requested, unless the original content makes that impossible".
    """
    if info.width <= width and info.height <= height:
        return None
    if method == "scale":
        need = _scale_box(info, width, height)
    else:
        need = _crop_box(info, width, height)
    covering = [(w, h) for w, h in _candidates(info, method) if w >= need[0] and h >= need[1]]
    if not covering:
        return need
    if method == "crop":
        # Closest aspect ratio (normalised, so sizes compare fairly), then the smallest.
        return min(covering, key=lambda s: (abs(width * s[1] - height * s[0]) / (height * s[1]), s[0] * s[1]))
    return min(covering, key=lambda s: s[0] * s[1])


def _prepare(image: Image.Image) -> Image.Image:
    if image.mode in ("1", "L", "P", "LA", "PA", "I", "I;16", "F", "CMYK", "YCbCr", "LAB", "HSV"):
        transparent = "transparency" in image.info or image.mode in ("LA", "PA")
        return image.convert("RGBA" if transparent else "RGB")
    return image


def _resize(image: Image.Image, width: int, height: int, method: str) -> Image.Image:
    image = _prepare(image)
    if method == "scale":
        return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    scaled = _resize_target(image.size, width, height, method)
    resized = image.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    left = (scaled[0] - width) // 2
    top = (scaled[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))


#: EXIF orientation -> the transpose that undoes it (EXIF 2.3, tag 0x0112).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def render(path: Path, width: int, height: int, method: str, *, animated: bool, max_pixels: int) -> Thumbnail:
    """Make one thumbnail of exactly ``width`` x ``height`` (a size from :func:`choose`,
    in displayed orientation)."""
    with _open(path, max_pixels) as image:
        fmt = image.format or ""
        if (
            animated
            and getattr(image, "is_animated", False)
            and image.size[0] * image.size[1] * getattr(image, "n_frames", 1) <= max_pixels
        ):
            return _render_animated(image, width, height, method)
        # Work in the stored orientation and turn the (small) result: cheaper than
        # turning the full image first.
        orientation = _orientation(image)
        r_w, r_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if fmt == "JPEG":
            # libjpeg's DCT scaling: decode at 1/2, 1/4 or 1/8 when the result stays
            # at least as large as what the resize needs.
            image.draft("RGB", _resize_target(image.size, r_w, r_h, method))
        try:
            out = _resize(image, r_w, r_h, method)
        except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
            raise NotAnImage(str(e)) from None
        if orientation in _TRANSPOSE:
            out = out.transpose(_TRANSPOSE[orientation])
        buffer = io.BytesIO()
        if fmt == "JPEG":
            out.convert("RGB").save(buffer, "JPEG", quality=80)
            content_type = "image/jpeg"
        else:
            out.save(buffer, "PNG", compress_level=3)  # most of level 6's size at 2/3 of its time
            content_type = "image/png"
        return Thumbnail(buffer.getvalue(), content_type, out.size[0], out.size[1])


def _resize_target(size: tuple[int, int], width: int, height: int, method: str) -> tuple[int, int]:
    """The size ``_resize`` scales the source to (before a crop cuts it)."""
    if method == "scale":
        return width, height
    src_w, src_h = size
    if width * src_h > height * src_w:
        return width, max(width * src_h // src_w, height)
    return max(height * src_w // src_h, width), height


def _render_animated(image: Image.Image, width: int, height: int, method: str) -> Thumbnail:
    frames: list[Image.Image] = []
    durations: list[int] = []
    try:
        for frame in ImageSequence.Iterator(image):
            rgba = frame.convert("RGBA")
            frames.append(_resize(rgba, width, height, method))
            durations.append(int(frame.info.get("duration", image.info.get("duration", 100)) or 0))
    except (OSError, ValueError, SyntaxError) as e:
        raise NotAnImage(str(e)) from None
    buffer = io.BytesIO()
    frames[0].save(
        buffer, "WEBP", save_all=True, append_images=frames[1:], loop=image.info.get("loop", 0),
        duration=durations, quality=80,
    )
    return Thumbnail(buffer.getvalue(), "image/webp", width, height)
