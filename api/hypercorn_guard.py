"""Two guards around hypercorn 0.18.0's trio worker, installed by ``api.server.serve``.

1. HTTP/1.1 only (no h2c upgrade, no HTTP/2 prior knowledge)
------------------------------------------------------------
Hypercorn's trio worker can crash the *whole server* when HTTP/2 clients reset
streams and disconnect under load. ``TCPServer._close()`` calls
``SocketStream.send_eof()``, which holds trio's send conflict detector across a
checkpoint; if the connection's ``H2Protocol.send_task`` flushes a frame during
that checkpoint, ``send_all`` raises ``trio.BusyResourceError``. ``send_task`` runs
unguarded in the connection's task group and ``TCPServer.run`` only catches
``OSError``, so the error climbs through ``trio.serve_listeners`` and takes every
connection down. (Over HTTP/1.1 all sends happen in the request's app task, where
hypercorn catches and logs exceptions.) A prior-knowledge client that resets its
streams, sends GOAWAY and closes with RST does it within about a hundred
connections.

So HTTP/2 is never spoken and there is no ``send_task``:

* ``Upgrade: h2c`` is ignored and the request is answered in HTTP/1.1, which a
  server may always do (RFC 9110 §7.8; RFC 9113 §3.1 deprecates h2c upgrade);
* the prior-knowledge preface ``PRI * HTTP/2.0`` gets ``505 HTTP Version Not
  Supported`` and the connection is closed;
* ``hypercorn_alpn()`` offers only ``http/1.1`` if TLS is ever configured.

2. ``Connection: close`` really closes
--------------------------------------
When a response completes, hypercorn's app task closes the socket if the
connection cannot be reused (``Connection: close``, HTTP/1.0). quart-trio cancels
that same task as soon as it sees the request's ``http.disconnect``, which
hypercorn delivers a moment earlier, so ``TCPServer._close()`` is cancelled at its
first checkpoint: the client never sees EOF and, the keep-alive timer having been
stopped for the request, the connection stays open until the client gives up.
``_maybe_recycle`` therefore runs shielded from that cancellation, bounded by
``_RECYCLE_TIMEOUT_S`` so a stuck peer cannot pin the task.

Mechanism
---------
Hypercorn builds each connection's ``ProtocolWrapper`` by module-global name in
``hypercorn.trio.tcp_server`` and has no setting for either behaviour, so
``install()`` points that name at ``GuardedProtocolWrapper``, which always speaks
``_GuardedH11Protocol``. ``install()`` is idempotent and process-wide (every trio
hypercorn server in this process is guarded) and refuses to run if something else
already replaced the name. Revisit both guards when upgrading hypercorn past 0.18
(pinned ``<0.19`` in pyproject.toml).
"""

from __future__ import annotations

from typing import Any

import h11
import hypercorn.trio.tcp_server as _tcp_server
import trio
from hypercorn.events import Closed, Event
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol

__all__ = ["GuardedProtocolWrapper", "hypercorn_alpn", "install"]

_ORIGINAL_WRAPPER = _tcp_server.ProtocolWrapper
_RECYCLE_TIMEOUT_S = 5.0


class _PriorKnowledgeRefused(Exception):
    """The client opened with the HTTP/2 connection preface; a 505 has been sent."""


class _GuardedH11Protocol(H11Protocol):
    async def _check_protocol(self, event: h11.Request) -> None:
        # Replaces hypercorn's switch to H2Protocol. `Upgrade: h2c` falls through and
        # the request is served over HTTP/1.1 like any other.
        if event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":
            await self._send_error_response(505)
            raise _PriorKnowledgeRefused

    async def _maybe_recycle(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _RECYCLE_TIMEOUT_S):
            await super()._maybe_recycle()


class GuardedProtocolWrapper(ProtocolWrapper):
    """Hypercorn's per-connection protocol switch, pinned to the guarded HTTP/1.1 protocol."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocol = _GuardedH11Protocol(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.state,
            self.ssl,
            self.client,
            self.server,
            self.send,
        )

    async def handle(self, event: Event) -> None:
        try:
            await self.protocol.handle(event)
        except _PriorKnowledgeRefused:
            await self.send(Closed())


def hypercorn_alpn() -> list[str]:
    """ALPN protocols to offer on TLS listeners: never ``h2``."""
    return ["http/1.1"]


def install() -> None:
    """Guard every trio hypercorn connection in this process (see the module docstring)."""
    current = _tcp_server.ProtocolWrapper
    if current is GuardedProtocolWrapper:
        return
    if current is not _ORIGINAL_WRAPPER:
        raise RuntimeError(
            f"hypercorn.trio.tcp_server.ProtocolWrapper was already replaced by {current!r}"
        )
    _tcp_server.ProtocolWrapper = GuardedProtocolWrapper  # type: ignore[misc]
