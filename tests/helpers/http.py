"""Raw-socket HTTP helpers for tests that talk to a real server (``live_server``)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import trio


@dataclass(frozen=True, slots=True)
class LiveServer:
    host: str
    port: int


async def raw_exchange(server: LiveServer, request: bytes, *, timeout: float = 5) -> bytes:
    """Send ``request`` bytes on a fresh connection and read until the server closes it."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(request)
            chunks = []
            while chunk := await stream.receive_some():
                chunks.append(chunk)
    return b"".join(chunks)


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(status line, lower-cased headers, body) of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, body


async def get_versions(server: LiveServer) -> dict:
    status_line, _, body = split_response(await raw_exchange(server, get_request("/_matrix/client/versions")))
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    return orjson.loads(body)
