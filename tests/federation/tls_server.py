"""A real hypercorn TLS server on 127.0.0.1:0 for transport tests.

``start_tls_server(nursery, tmp_path, app)`` writes a self-signed pair from
``api.tls`` (SANs: ``CERT_NAMES``), serves ``app`` over TLS with the hypercorn
guards, records the SNI of every handshake, and returns a :class:`TlsServer`
(port, the certificate path for a client ``ssl_context`` that trusts it, the SNI
list). ``EchoApp`` answers every request with what it saw, so tests can check the
request line, ``Host`` header, ``Authorization`` and body end to end.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import hypercorn.trio
import orjson
import trio
from hypercorn.config import Config

from api import hypercorn_guard
from api.tls import self_signed_pair

CERT_NAMES = ["localhost", "127.0.0.1", "hs.test", "example.test", "delegated.test", "wk.test"]


class _SniConfig(Config):
    def __init__(self, seen: list[str | None]) -> None:
        super().__init__()
        self._seen = seen

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        assert context is not None
        context.sni_callback = lambda _sock, name, _ctx: self._seen.append(name)  # type: ignore[assignment]
        return context


@dataclass
class TlsServer:
    port: int
    cert_path: Path
    sni: list[str | None]
    stop: trio.Event
    requests: list[dict[str, Any]] = field(default_factory=list)

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this server's certificate."""
        context = ssl.create_default_context(cafile=str(self.cert_path))
        return context


def write_pair(directory: Path, names: list[str] = CERT_NAMES) -> tuple[Path, Path]:
    cert, key = self_signed_pair(names)
    cert_path, key_path = directory / "test.crt", directory / "test.key"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


Handler = Callable[[dict[str, Any], bytes], Any]


def echo_app(requests: list[dict[str, Any]], handler: Handler | None = None) -> Any:
    """ASGI app: records each request; answers 200 with it as JSON, or ``handler``'s
    ``(status, headers, body)`` (return ``None`` to fall back to the echo)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = {
            "method": scope["method"],
            "target": scope["raw_path"].decode() + ("?" + scope["query_string"].decode() if scope["query_string"] else ""),
            "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            "body": body.decode(),
            "http_version": scope["http_version"],
        }
        requests.append(seen)
        answer = handler(seen, body) if handler is not None else None
        if answer is None:
            answer = (200, [(b"content-type", b"application/json")], orjson.dumps(seen))
        status, headers, payload = answer
        if status is None:  # hang: never answer
            await trio.sleep_forever()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


async def start_tls_server(nursery: trio.Nursery, directory: Path, handler: Handler | None = None) -> TlsServer:
    hypercorn_guard.install()
    cert_path, key_path = write_pair(directory)
    sni: list[str | None] = []
    config = _SniConfig(sni)
    config.bind = ["127.0.0.1:0"]
    config.certfile, config.keyfile = str(cert_path), str(key_path)
    config.alpn_protocols = hypercorn_guard.hypercorn_alpn()
    config.graceful_timeout = 0.1
    stop = trio.Event()
    requests: list[dict[str, Any]] = []
    binds = await nursery.start(
        partial(hypercorn.trio.serve, echo_app(requests, handler), config, shutdown_trigger=stop.wait, mode="asgi")
    )
    port = int(binds[0].rpartition(":")[2])
    return TlsServer(port=port, cert_path=cert_path, sni=sni, stop=stop, requests=requests)
