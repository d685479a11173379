"""storage: SQLAlchemy Core on stdlib sqlite3, one dedicated writer thread in WAL mode.

Repository functions are synchronous (``def verb_noun(conn, ...)``); ``Database``
exposes the only async surface (``write``/``read`` over threads). See
docs/ARCHITECTURE.md, "Storage conventions", and docs/ROOM-ACTORS.md (the contract
with the room actors).

* ``schema.py``: every table, declared once (SQLAlchemy Core);
* ``migrations/``: numbered migrations and the runner applied at open;
* ``db.py``: ``Database`` (writer thread, group commit, reader pool);
* ``rooms.py``: the room actors' repository functions (``checkpoint``, ``load_room``, …).
"""
