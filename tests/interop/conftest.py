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
