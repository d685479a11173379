"""The real server: hypercorn on a loopback socket, started by ``api.server.serve``.

Includes the guards of ``api.hypercorn_guard``. Hypercorn 0.18.0's trio worker
dies with ``trio.BusyResourceError`` when HTTP/2 cleartext clients reset streams and
disconnect under load; the hammer below is the workload that crashes an unguarded
hypercorn within its first hundred or so connections, and with the guard the server
refuses HTTP/2 and keeps answering. And without the guard a ``Connection: close``
response under quart-trio never gets its EOF; ``raw_exchange`` reads until EOF, so
every socket test here depends on that guard too.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from functools import partial

from api.client.versions import SUPPORTED_VERSIONS
from pathlib import Path

import h2.config
import h2.connection
import h2.settings
import hypercorn.trio
import hypercorn.trio.tcp_server
import orjson
import pytest
import trio

from api import hypercorn_guard
from api.server import hypercorn_config, serve
from api.settings import HttpSettings, Settings
from tests.helpers.http import LiveServer, get_request, get_versions, raw_exchange, split_response

VERSIONS_PATH = "/_matrix/client/versions"


async def test_serves_versions_over_a_socket(live_server: LiveServer) -> None:
    assert await get_versions(live_server) == {"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}}


async def test_unknown_path_over_a_socket_is_json(live_server: LiveServer) -> None:
    status_line, headers, body = split_response(await raw_exchange(live_server, get_request("/nope")))
    assert status_line.startswith(b"HTTP/1.1 404")
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"access-control-allow-origin"] == b"*"
    assert orjson.loads(body) == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /_matrix/client/versions HTTP/1.0\r\n\r\n",
    ],
)
async def test_server_closes_connections_it_will_not_reuse(
    live_server: LiveServer, request_bytes: bytes
) -> None:
    with trio.fail_after(2):
        stream = await trio.open_tcp_stream(live_server.host, live_server.port)
        async with stream:
            await stream.send_all(request_bytes)
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
    assert received.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    assert received.endswith(b'"unstable_features":{}}')


async def test_options_204_has_no_content_headers(live_server: LiveServer) -> None:
    request = b"OPTIONS /_matrix/client/v3/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status_line, headers, body = split_response(await raw_exchange(live_server, request))
    assert status_line.startswith(b"HTTP/1.1 204")
    assert b"content-length" not in headers and b"content-type" not in headers
    assert headers[b"access-control-allow-methods"] == b"GET, POST, PUT, DELETE, OPTIONS"
    assert body == b""


async def test_shutdown_trigger_stops_gracefully_and_creates_the_data_dir(settings: Settings) -> None:
    assert not settings.database.path.parent.exists()
    stop = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, settings, shutdown_trigger=stop.wait))
            assert settings.database.path.parent.is_dir()
            host, _, port = binds[0].removeprefix("http://").rpartition(":")
            assert (await get_versions(LiveServer(host, int(port))))["versions"] == list(SUPPORTED_VERSIONS)
            stop.set()
    # The nursery closed: hypercorn returned and the shutdown watcher ended.


async def test_sigterm_stops_serve_gracefully(settings: Settings) -> None:
    # serve() reports ready only after its signal receiver is installed, so this
    # SIGTERM reaches the receiver rather than the default handler.
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, settings)
            host, _, port = binds[0].removeprefix("http://").rpartition(":")
            assert (await get_versions(LiveServer(host, int(port))))["versions"] == list(SUPPORTED_VERSIONS)
            os.kill(os.getpid(), signal.SIGTERM)


def test_console_script_serves_until_sigint(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('[http]\nclient_bind = ["127.0.0.1:0"]\n', encoding="utf-8")
    script = Path(sys.executable).with_name("roomactors")
    process = subprocess.Popen(
        [script, "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        url = _wait_for_running_line(process)
        host, _, port = url.removeprefix("http://").rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(get_request(VERSIONS_PATH))
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "data").is_dir()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_running_line(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if "Running on http://" in line:
            return line.split("Running on ", 1)[1].split()[0]
    raise AssertionError(f"server did not report its address (exit status {process.poll()})")


def test_hypercorn_config_never_offers_h2() -> None:
    config = hypercorn_config(
        HttpSettings(client_bind=("127.0.0.1:0",), max_request_size=1024, graceful_timeout_s=1.0)
    )
    assert config.alpn_protocols == ["http/1.1"]
    assert config.bind == ["127.0.0.1:0"]
    assert config.graceful_timeout == 1.0


def test_install_is_idempotent_and_refuses_a_foreign_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    hypercorn_guard.install()
    hypercorn_guard.install()
    assert hypercorn.trio.tcp_server.ProtocolWrapper is hypercorn_guard.GuardedProtocolWrapper
    monkeypatch.setattr(hypercorn.trio.tcp_server, "ProtocolWrapper", object)
    with pytest.raises(RuntimeError, match="already replaced"):
        hypercorn_guard.install()


async def test_h2c_upgrade_is_answered_in_http11(live_server: LiveServer) -> None:
    request = (
        f"GET {VERSIONS_PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    ).encode()
    status_line, _, body = split_response(await raw_exchange(live_server, request))
    assert status_line.startswith(b"HTTP/1.1 200"), status_line  # not 101 Switching Protocols
    assert orjson.loads(body)["versions"] == list(SUPPORTED_VERSIONS)


async def test_http2_prior_knowledge_gets_505_and_close(live_server: LiveServer) -> None:
    raw = await raw_exchange(live_server, b"".join(_h2_client_bytes(streams=3, reset=False)))
    status_line, headers, _ = split_response(raw)
    assert status_line.startswith(b"HTTP/1.1 505")
    assert headers[b"connection"] == b"close"


async def test_abrupt_http2_cleartext_disconnects_under_load_do_not_kill_the_server(
    live_server: LiveServer,
) -> None:
    await _hammer_with_h2c_clients(live_server, probe=get_versions)


async def test_guard_protects_streaming_responses_too(nursery: trio.Nursery, settings: Settings) -> None:
    """The crash needs the server's HTTP/2 send task to be busy, as with large bodies.

    The guarded hypercorn setup of ``serve`` (``install()`` + ``hypercorn_config``)
    runs an app that streams 128 KiB per request; unguarded, this workload kills
    hypercorn 0.18.0 within its first two waves.
    """
    hypercorn_guard.install()
    binds = await nursery.start(
        partial(hypercorn.trio.serve, _streaming_app, hypercorn_config(settings.http), mode="asgi")
    )
    host, _, port = binds[0].removeprefix("http://").rpartition(":")

    async def probe(server: LiveServer) -> None:
        status_line, _, body = split_response(await raw_exchange(server, get_request("/")))
        assert status_line.startswith(b"HTTP/1.1 200")
        assert len(body) == _STREAMED_BYTES

    await _hammer_with_h2c_clients(LiveServer(host, int(port)), probe=probe)


_STREAMED_BYTES = 8 * 16384


async def _streaming_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = [(b"content-length", b"%d" % _STREAMED_BYTES)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(8):
        await send({"type": "http.response.body", "body": b"x" * 16384, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _hammer_with_h2c_clients(server: LiveServer, *, probe, waves: int = 4, clients: int = 100) -> None:
    rng = random.Random(1234)
    with trio.fail_after(20):
        for _ in range(waves):
            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(_abusive_h2c_client, server, random.Random(rng.random()))
            await probe(server)  # still serving between waves, and after the last one


def _h2_client_bytes(*, streams: int, reset: bool, rng: random.Random | None = None) -> list[bytes]:
    """An HTTP/2 client's bytes: preface, SETTINGS and GETs, then per-stream window
    updates and resets and a final GOAWAY (if ``reset``), as chunks to send apart."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if rng is not None and rng.random() < 0.5:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: rng.choice([100, 2**31 - 1])})
    for stream_id in range(1, 2 * streams, 2):
        headers = [(":method", "GET"), (":path", VERSIONS_PATH), (":scheme", "http"), (":authority", "x")]
        conn.send_headers(stream_id, headers, end_stream=True)
    chunks = [conn.data_to_send()]
    if reset:
        rng = rng or random.Random(0)
        for stream_id in range(1, 2 * streams, 2):
            roll = rng.random()
            if roll < 0.3:
                conn.increment_flow_control_window(2**16, stream_id=stream_id)
            elif roll < 0.5:
                conn.reset_stream(stream_id)
            if rng.random() < 0.3:
                conn.increment_flow_control_window(2**16)
            chunks.append(conn.data_to_send())
        if rng.random() < 0.7:
            conn.close_connection()
        chunks.append(conn.data_to_send())
    return chunks


def _upgrade_request() -> bytes:
    return (
        f"GET {VERSIONS_PATH} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    ).encode()


async def _abusive_h2c_client(server: LiveServer, rng: random.Random) -> None:
    """Speak HTTP/2 cleartext (prior knowledge, or after ``Upgrade: h2c``), reading a
    little between chunks, then vanish, mostly with a RST."""
    chunks = _h2_client_bytes(streams=rng.choice([1, 5, 40]), reset=True, rng=rng)
    if rng.random() < 0.3:
        chunks.insert(0, _upgrade_request())
    sock = trio.socket.socket()
    try:
        with trio.move_on_after(2):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rng.choice([2048, 65536]))
            await sock.connect((server.host, server.port))
            for chunk in chunks:
                if chunk:
                    await sock.send(chunk)
                if rng.random() < 0.5:
                    await sock.recv(rng.choice([10, 4096, 65536]))
                if rng.random() < 0.3:
                    await trio.sleep(0)
            await trio.sleep(rng.random() * 0.003)
    except OSError:
        pass  # the server may close first (505); the point is what happens to it afterwards
    finally:
        if rng.random() < 0.7:
            # SO_LINGER 0: close() sends RST instead of FIN, an abrupt disconnect.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
