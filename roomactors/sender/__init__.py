"""Outbound federation: :class:`SenderHub` and one :class:`DestinationQueue` per remote
server (theory of operation in ``hub.py`` and ``queue.py``)."""

from __future__ import annotations

from .hub import SenderHub, SenderStatistics
from .queue import SEND_PATH, DestinationQueue, DestinationStatistics, Transaction, TransactionClient

__all__ = [
    "SenderHub",
    "SenderStatistics",
    "DestinationQueue",
    "DestinationStatistics",
    "Transaction",
    "TransactionClient",
    "SEND_PATH",
]
