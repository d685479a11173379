"""Inbound ``m.direct_to_device`` EDUs (server-server API "Send-to-device messaging";
the EDU schema ``definitions/event-schemas/m.direct_to_device.yaml``).

Theory of operation
-------------------
``api.federation.transactions.send_transaction`` hands the EDUs of a ``/send``
transaction to :func:`apply_direct_to_device_edus` *before* the write that records
its answer (a retried transaction is answered from that record without being
processed again, so a to-device write after it could be lost by a crash between):

* the content must be well formed (``sender``, ``type``, ``message_id`` strings,
  ``message_id`` at most 32 code points; ``messages`` a map of user IDs to maps of
  device IDs to objects), else the EDU is dropped (logged);
* ``sender`` must be a user of the origin server (the origin speaks only for its own
  users), else the EDU is dropped;
* only our own users are targets: others are skipped; ``*`` means every current
  device of the target, unknown devices are skipped (as for local senders);
* **exactly once**: ``storage.to_device.receive_remote_batch`` records
  (origin, message_id) in the same write as the inbox rows, so a retried
  transaction, the same EDU in another transaction (our peer's sender resends
  outbox rows after a crash under a new txn ID) or a crash between is never
  delivered twice and never lost; the write commits before ``/send`` answers 200;
* after the commit the target users are notified, so their ``/sync`` long polls
  return at once.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from api.deps import Deps
from roomactors.protocol.ids import is_valid_user_id
from storage import to_device

__all__ = ["apply_direct_to_device_edus", "MAX_MESSAGE_ID_CODEPOINTS"]

log = logging.getLogger(__name__)

#: m.direct_to_device "message_id": "Arbitrary utf8 string, of maximum length 32 codepoints".
MAX_MESSAGE_ID_CODEPOINTS = 32


async def apply_direct_to_device_edus(d: Deps, origin: str, edus: list[Any]) -> None:
    """Deliver every ``m.direct_to_device`` EDU of one inbound transaction from
    ``origin`` (module docstring), in one write. Called before the transaction's
    answer is recorded, so a crash in between makes the peer retry, and the retry
    is deduplicated by message ID rather than lost."""
    parsed = [
        p
        for edu in edus
        if isinstance(edu, dict) and edu.get("edu_type") == "m.direct_to_device" and isinstance(edu.get("content"), dict)
        for p in [_parse(d, origin, edu["content"])]
        if p is not None
    ]
    if not parsed:
        return
    delivery = await d.db.write(partial(to_device.receive_remote_batch, origin=origin, edus=parsed, now_ms=d.clock.time_ms()))
    if delivery.users:
        d.notifier.notify(*delivery.users)


def _parse(d: Deps, origin: str, content: dict[str, Any]) -> to_device.RemoteMessage | None:
    sender, event_type, message_id = content.get("sender"), content.get("type"), content.get("message_id")
    messages = content.get("messages")
    if not (
        isinstance(sender, str)
        and isinstance(event_type, str)
        and event_type
        and isinstance(message_id, str)
        and message_id
        and len(message_id) <= MAX_MESSAGE_ID_CODEPOINTS
        and isinstance(messages, dict)
    ):
        log.info("dropped a malformed m.direct_to_device EDU from %s", origin)
        return None
    if not is_valid_user_id(sender) or sender.split(":", 1)[1] != origin:
        log.warning("dropped m.direct_to_device from %s with a sender of another server: %r", origin, sender)
        return None
    local: dict[str, dict[str, dict[str, Any]]] = {}
    for user_id, by_device in messages.items():
        if not isinstance(user_id, str) or not user_id.startswith("@") or user_id.split(":", 1)[-1] != d.server_name:
            log.info("m.direct_to_device from %s names %r, not a user of ours: skipped", origin, user_id)
            continue
        if not isinstance(by_device, dict):
            continue
        kept = {dev: c for dev, c in by_device.items() if isinstance(dev, str) and dev and isinstance(c, dict)}
        if kept:
            local[user_id] = kept
    return to_device.RemoteMessage(message_id=message_id, sender=sender, event_type=event_type, messages=local)
