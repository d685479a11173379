"""Differential tests against Synapse (see ``test_synapse_differential.py``).

The room builders of the kernel tests (``tests/protocol/state_res_dag.py`` and
``tests/protocol/auth_builders.py``) are imported under the same top-level names the
protocol tests use (pytest puts ``tests/protocol`` on ``sys.path`` for those, as the
directory has no ``__init__.py``), so a combined run shares one copy of each module.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PROTOCOL_TESTS = str(Path(__file__).resolve().parent.parent / "protocol")
if _PROTOCOL_TESTS not in sys.path:
    sys.path.insert(0, _PROTOCOL_TESTS)


# A real Synapse as a federation peer, one per session: see synapse_peer.py.
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synapse_peer(tmp_path_factory):
    """A started :class:`synapse_peer.SynapsePeer` (skips without .venv-synapse unless
    ROOMACTORS_REQUIRE_SYNAPSE is set); stopped at the end of the session."""
    from synapse_peer import SynapsePeer, synapse_python_or_skip

    peer = SynapsePeer(tmp_path_factory.mktemp("synapse-peer"), python=synapse_python_or_skip())
    with peer:
        yield peer
