"""storage: SQLAlchemy Core on stdlib sqlite3, one dedicated writer thread in WAL mode.

Repository functions are synchronous (``def verb_noun(conn, ...)``); ``Database``
exposes the only async surface (``write``/``read`` over threads). Filled by the
room actors issue; see docs/ARCHITECTURE.md, "Storage conventions".
"""
