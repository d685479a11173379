"""Pure helpers: media IDs, content types, Content-Disposition (RFC 6266), the
multipart framing, and the content-addressed store."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from roomactors.media.multipart import MultipartError, multipart_frame, parse_media_multipart
from roomactors.media.serving import (
    content_disposition,
    filename_from_disposition,
    is_valid_media_id,
    new_media_id,
    normalise_content_type,
    serving_headers,
    stored_content_type,
)
from roomactors.media.store import MediaStore, TooLarge


def test_media_ids():
    assert is_valid_media_id(new_media_id()) and len(new_media_id()) == 24
    for bad in ("", "../etc", "a/b", "a.b", "%2e%2e", "é", "a b", "x" * 256):
        assert not is_valid_media_id(bad), bad
    assert is_valid_media_id("abc_DEF-123")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("IMAGE/PNG", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ('text/plain; charset="utf-8"', 'text/plain; charset="utf-8"'),
        ("text/plain\r\nX-Evil: 1", "application/octet-stream"),
        ("nonsense", "application/octet-stream"),
    ],
)
def test_normalise_content_type(value, expected):
    assert normalise_content_type(value) == expected


def test_stored_content_type_only_sniffs_away_from_images():
    assert stored_content_type("image/png", b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert stored_content_type("image/png", b"encrypted") == "application/octet-stream"
    assert stored_content_type("image/gif", b"GIF89a") == "image/gif"
    assert stored_content_type("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    # Never towards a renderable type.
    assert stored_content_type("application/octet-stream", b"\x89PNG\r\n\x1a\n") == "application/octet-stream"


@pytest.mark.parametrize(
    ("name", "header"),
    [
        (None, "inline"),
        ("cat.png", 'inline; filename="cat.png"'),
        ('a"b.txt', "inline; filename*=utf-8''a%22b.txt"),
        ("naïve.txt", "inline; filename*=utf-8''na%C3%AFve.txt"),
        ("line\nbreak", "inline; filename*=utf-8''line%0Abreak"),
    ],
)
def test_content_disposition_round_trip(name, header):
    assert content_disposition("inline", name) == header
    assert filename_from_disposition(header) == name


def test_filename_from_peer_headers():
    assert filename_from_disposition("attachment; filename=plain.txt") == "plain.txt"
    assert filename_from_disposition('inline; filename="q\\"x"') == 'q"x'
    assert filename_from_disposition("inline; filename=\"a\"; filename*=UTF-8''%E2%82%AC") == "€"
    assert filename_from_disposition("inline") is None


def test_serving_headers():
    headers = dict(serving_headers("text/html", "x.html"))
    assert headers["Content-Disposition"] == 'attachment; filename="x.html"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"].startswith("sandbox; default-src 'none';")
    assert dict(serving_headers("image/png", None))["Content-Disposition"] == "inline"
    assert dict(serving_headers("application/pdf", None, force_inline=True))["Content-Disposition"] == "inline"


def test_multipart_round_trip_and_malformed():
    head, tail = multipart_frame("b0und", {}, [("Content-Type", "text/plain")])
    part = parse_media_multipart("multipart/mixed; boundary=b0und", head + b"hello\r\n--b0un" + tail)
    assert part.body == b"hello\r\n--b0un" and part.headers == {"content-type": "text/plain"}
    with pytest.raises(MultipartError):
        parse_media_multipart("multipart/mixed; boundary=b0und", head + b"truncated")
    with pytest.raises(MultipartError):
        parse_media_multipart("application/json", b"{}")
    three = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n"
    with pytest.raises(MultipartError):
        parse_media_multipart("multipart/mixed; boundary=b", three)
    redirect = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: https://cdn/x\r\n\r\n\r\n--b--\r\n"
    assert parse_media_multipart('multipart/mixed; boundary="b"', redirect).location == "https://cdn/x"


async def test_store_writes_durably_and_dedupes(tmp_path: Path):
    store = MediaStore(tmp_path / "media")
    store.ensure_directories()

    async def chunks(*parts: bytes):
        for p in parts:
            yield p

    sha, size, head = await store.write_stream(chunks(b"ab", b"cd"), max_size=10)
    assert (size, head) == (4, b"abcd")
    assert store.path_for(sha).read_bytes() == b"abcd"
    again, _, _ = await store.write_stream(chunks(b"abcd"), max_size=10)
    assert again == sha
    with pytest.raises(TooLarge):
        await store.write_stream(chunks(b"x" * 6, b"y" * 6), max_size=10)
    files = sorted(p.relative_to(tmp_path / "media") for p in (tmp_path / "media").rglob("*") if p.is_file())
    assert files == [Path(sha[:2]) / sha[2:4] / sha]
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
    assert b"".join([c async for c in store.read_chunks(sha)]) == b"abcd"
    await trio.sleep(0)
