"""SIGKILL mid-stream: every write acknowledged before the kill is stored after restart.

A child process (``tests/storage/crash_writer.py``) checkpoints 20 rooms through one
``Database`` and prints each event ID once ``db.write`` returned. The test kills it
with SIGKILL while writes are in flight, then opens the file again (SQLite recovers
the WAL) and checks: every acknowledged event is stored, with its state and
extremity rows consistent, and ``PRAGMA integrity_check`` / ``foreign_key_check`` pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


from storage import rooms as R
from storage.db import create_engine
from storage.migrations import migrate

ROOT = Path(__file__).resolve().parents[2]


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(line.split()[1])
            if len(acked) >= 400:
                break
        child.send_signal(signal.SIGKILL)
        acked.extend(line.split()[1] for line in child.stdout if line.startswith("ack "))
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    assert len(acked) >= 400

    engine = create_engine(path, writer=True)
    try:
        with engine.connect() as conn:
            migrate(conn)
            with conn.begin():
                stored = R.get_events(conn, acked)
                missing = [event_id for event_id in acked if event_id not in stored]
                assert missing == []
                for room_id in R.list_room_ids(conn):
                    record = R.load_room(conn, room_id)
                    (tip,) = record.forward_extremities
                    tip_event = R.get_events(conn, [tip])[tip]
                    # The extremity is the room's newest event, and the current state
                    # equals the state stored after it.
                    assert tip_event.stream_ordering == record.max_stream_ordering
                    assert R.get_state(conn, record.extremity_state_refs[tip]) == record.current_state
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    finally:
        engine.dispose()
