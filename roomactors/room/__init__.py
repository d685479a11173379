"""roomactors.room: the room actor, its messages, its event builders and the
inbound PDU pipeline (see docs/ROOM-ACTORS.md and docs/ARCHITECTURE.md §3–5)."""
