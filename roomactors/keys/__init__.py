"""Server signing keys: ours (published, rotated) and other servers' (fetched,
checked, cached, served as a notary). See :mod:`roomactors.keys.service`."""

from __future__ import annotations

from .service import KeyService, KeyServiceStatistics

__all__ = ["KeyService", "KeyServiceStatistics"]
