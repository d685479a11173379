"""Import layering (docs/ARCHITECTURE.md, "Module map"), enforced by scanning with ``ast``.

* ``roomactors/protocol/`` is pure: stdlib, ``canonicaljson``, ``signedjson``,
  ``nacl``, ``unpaddedbase64``, ``orjson`` and itself only; never ``api``,
  ``storage``, the rest of ``roomactors``, or any I/O framework.
* nothing under ``roomactors/`` imports the HTTP server stack (quart, hypercorn)
  or ``api``, with ONE exemption: ``roomactors/testing.py`` (the embedded test
  mode) may import ``api``, because like ``api.server`` it is a composition entry
  point that starts the whole server. It still may not import quart or hypercorn
  itself, and no other module under ``roomactors/`` may import it, so the rule
  holds for the runtime unchanged (``COMPOSITION_ENTRY_POINTS``);
* ``storage/`` imports ``roomactors.protocol`` types and nothing else of ours.

Every import statement counts, including those under ``if TYPE_CHECKING:`` and
inside functions. Relative imports are resolved against the importing module, so
``from .. import registry`` inside ``protocol`` is caught as ``roomactors.registry``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROTOCOL_THIRD_PARTY = frozenset({"canonicaljson", "signedjson", "nacl", "unpaddedbase64", "orjson"})
HTTP_STACK = frozenset({"quart", "quart_trio", "hypercorn"})

#: Modules under ``roomactors/`` allowed to import ``api`` (never the HTTP stack
#: directly), each with the reason. Keep this list to entry points that start a whole
#: server; runtime code never belongs here.
COMPOSITION_ENTRY_POINTS = {
    "roomactors.testing": "embedded test mode: starts api.server.serve for tests, like api.cli does",
    "roomactors.testing_network": "embedded test mode: N homeservers on an in-process network (open_homeserver)",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in the file at ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = package.split(".")
                if node.level - 1 > len(anchor):
                    yield node.lineno, "<relative import beyond the top-level package>"
                    continue
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if node.module is None:
                # `from . import x` / `from .. import x`: each name may be a module.
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, base


def top(name: str) -> str:
    return name.partition(".")[0]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def protocol_violation(name: str, importer: str = "") -> str | None:
    if within(name, "roomactors.protocol"):
        return None
    if top(name) in sys.stdlib_module_names or top(name) in PROTOCOL_THIRD_PARTY:
        return None
    return "protocol may import only the stdlib, itself and " + ", ".join(sorted(PROTOCOL_THIRD_PARTY))


def roomactors_violation(name: str, importer: str = "") -> str | None:
    if top(name) in HTTP_STACK:
        return "roomactors must not import the HTTP server stack (quart, hypercorn); that is api's job"
    if top(name) == "api" and importer not in COMPOSITION_ENTRY_POINTS:
        return "roomactors must not import api (api -> roomactors -> storage)"
    if any(within(name, entry) for entry in COMPOSITION_ENTRY_POINTS) and importer not in COMPOSITION_ENTRY_POINTS:
        return f"roomactors must not import {name}, a composition entry point that imports api"
    return None


def storage_violation(name: str, importer: str = "") -> str | None:
    if top(name) in HTTP_STACK or top(name) == "api":
        return "storage must not import api or the HTTP server stack"
    if top(name) == "roomactors" and not within(name, "roomactors.protocol"):
        return "storage may import roomactors.protocol types only"
    return None


def violations(package_dir: Path, root: Path, rule) -> list[str]:
    """Every forbidden import under ``package_dir``: ``rule(imported, importer)`` (both
    absolute module names) returns why an import is forbidden, or None."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        importer = module_name(path, root)
        for line, name in sorted(imported_modules(path, root)):
            reason = rule(name, importer)
            if reason:
                found.append(f"{path.relative_to(root)}:{line}: imports {name}: {reason}")
    return found


def test_protocol_is_pure() -> None:
    protocol = ROOT / "roomactors" / "protocol"
    if not protocol.is_dir():
        pytest.skip("roomactors/protocol does not exist yet")
    assert any(protocol.rglob("*.py"))
    assert violations(protocol, ROOT, protocol_violation) == []


def test_nothing_under_roomactors_imports_the_http_stack_or_api() -> None:
    assert violations(ROOT / "roomactors", ROOT, roomactors_violation) == []


def test_storage_imports_only_protocol_of_ours() -> None:
    assert violations(ROOT / "storage", ROOT, storage_violation) == []


def test_every_composition_entry_point_exists() -> None:
    # An exemption outliving its module would silently cover a future one of that name.
    for module in COMPOSITION_ENTRY_POINTS:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def test_roomactors_package_init_stays_empty() -> None:
    # Importing roomactors.protocol must pull in no runtime (docs/ARCHITECTURE.md).
    tree = ast.parse((ROOT / "roomactors" / "__init__.py").read_text(encoding="utf-8"))
    body = tree.body[1:] if tree.body and isinstance(tree.body[0], ast.Expr) else tree.body
    assert body == [], "roomactors/__init__.py must hold at most a docstring"


# The checker itself, on a synthetic tree, so a silently broken scan cannot pass.


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    files = {
        "roomactors/__init__.py": "",
        "roomactors/protocol/__init__.py": "from .good import x\n",
        "roomactors/protocol/good.py": (
            "from __future__ import annotations\nimport hashlib, json\nimport canonicaljson\n"
            "from nacl.signing import SigningKey\nfrom roomactors.protocol import ids\nfrom . import ids\n"
        ),
        "roomactors/protocol/bad.py": (
            "import trio\nfrom .. import registry\n"
            "from ..room.actor import RoomActor\n"
            "def f():\n    import sqlalchemy\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from api.app import create_app\nimport httpx\n"
        ),
        "roomactors/registry.py": "import trio\nfrom quart import request\nfrom api import app\n",
        # The one exemption: api is allowed here, the HTTP stack still is not...
        "roomactors/testing.py": (
            "import trio\nimport api\ndef f():\n    from api.server import serve\nimport hypercorn.trio\n"
        ),
        # ...and nothing else under roomactors may import it.
        "roomactors/room/uses_testing.py": "from roomactors.testing import start_homeserver\nfrom .. import testing\n",
        "storage/db.py": (
            "import sqlalchemy\nfrom roomactors.protocol.ids import RoomId\n"
            "from roomactors.room import actor\n"
        ),
    }
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_checker_flags_every_forbidden_import(fake_tree: Path) -> None:
    protocol = violations(fake_tree / "roomactors" / "protocol", fake_tree, protocol_violation)
    assert [v.split(": ")[0] + ": " + v.split(": ")[1] for v in protocol] == [
        "roomactors/protocol/bad.py:1: imports trio",
        "roomactors/protocol/bad.py:2: imports roomactors.registry",
        "roomactors/protocol/bad.py:3: imports roomactors.room.actor",
        "roomactors/protocol/bad.py:5: imports sqlalchemy",
        "roomactors/protocol/bad.py:8: imports api.app",
        "roomactors/protocol/bad.py:9: imports httpx",
    ]
    runtime = violations(fake_tree / "roomactors", fake_tree, roomactors_violation)
    assert [v.split(": ")[0] + ": " + v.split(": ")[1] for v in runtime] == [
        "roomactors/protocol/bad.py:8: imports api.app",
        "roomactors/registry.py:2: imports quart",
        "roomactors/registry.py:3: imports api",
        "roomactors/room/uses_testing.py:1: imports roomactors.testing",
        "roomactors/room/uses_testing.py:2: imports roomactors.testing",
        "roomactors/testing.py:5: imports hypercorn.trio",
    ]
    storage = violations(fake_tree / "storage", fake_tree, storage_violation)
    assert [v.split(": ")[1] for v in storage] == ["imports roomactors.room"]
