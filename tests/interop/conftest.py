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


@pytest.fixture(scope="module")
def ours_federating(tmp_path_factory):
    """Our server for real (``roomactors.testing.homeserver_in_thread``: hypercorn,
    SQLite, the federation TLS listener with a self-signed certificate) as
    ``localhost:<port>``, set up to federate with ``synapse_peer`` on loopback
    (:func:`synapse_peer.ours_federation_overrides`); one per test module."""
    from roomactors.testing import homeserver_in_thread
    from synapse_peer import free_ports, ours_federation_overrides

    (port,) = free_ports(1)
    with homeserver_in_thread(server_name=f"localhost:{port}", data_dir=tmp_path_factory.mktemp("ours"),
                              settings_overrides=ours_federation_overrides(port)) as hs:
        yield hs
