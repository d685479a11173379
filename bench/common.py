"""Shared pieces of the benches that compare roomactors with Synapse over HTTP
(``bench/federation.py``, ``bench/e2ee.py``, ``bench/media.py``).

How it works: a bench script runs as ``python bench/<name>.py``; it puts the
repository root on ``sys.path`` and imports this module as ``bench.common``, which
also adds ``tests/interop`` (for ``synapse_peer``). This module owns:

* small helpers: :func:`logger` (``[<bench> HH:MM:SS] ...`` on stderr), :func:`q`
  (a path segment), :func:`proc_cpu_s` (CPU seconds of a process from
  ``/proc/<pid>/stat``, every thread), :func:`pct`, :func:`ratio`;
* the servers as separate processes: :func:`ours_child` starts the bench script
  itself with ``--serve-ours DATA`` (the child calls :func:`serve_until_stdin_closes`
  with one JSON line of details) and stops it by closing its stdin;
  :func:`synapse_peer` starts the pinned Synapse in ``.venv-synapse`` through
  ``tests/interop/synapse_peer.py``; :func:`register_shared_secret` registers a
  user on either through ``/_synapse/admin/v1/register``;
* the run: :func:`scratch_dir` (a temporary data directory, removed unless
  ``--keep``) and :func:`run_and_report` (``trio.run``, the JSON in
  ``bench/results/<UTC time>/<bench>.json``, the table and the ratio line).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _p in (str(REPO / "tests" / "interop"), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import httpx  # noqa: E402
import trio  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNAPSE_PYTHON = REPO / ".venv-synapse" / "bin" / "python"


def logger(name: str) -> Callable[[str], None]:
    """A ``log(msg)`` writing ``[<name> HH:MM:SS] msg`` to stderr."""

    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def proc_cpu_s(pid: int) -> float:
    """user+system CPU seconds of ``pid`` (all threads) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], p: float) -> float | None:
    """The ``p`` quantile (0..1) of ``values`` (nearest rank), rounded to 2 places."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(p * (len(s) - 1))))], 2)


def ratio(ours: float | None, synapse: float | None, higher_is_better: bool) -> float | None:
    """ours vs Synapse: > 1 means roomactors is better."""
    if not ours or not synapse:
        return None
    return round(ours / synapse if higher_is_better else synapse / ours, 2)


def format_table(rows: list[tuple[str, Any, Any, Any]], ours_width: int, synapse_width: int) -> str:
    """Rows of (figure, ours, synapse, ratio) as aligned text under a header line;
    None prints as blank in the synapse and ratio columns."""
    width = max(len(r[0]) for r in rows) if rows else 10
    lines = [f"{'figure':<{width}}  {'ours':>{ours_width}}  {'synapse':>{synapse_width}}  {'ratio':>6}"]
    for name, o, y, r in rows:
        lines.append(f"{name:<{width}}  {str(o):>{ours_width}}  {str('' if y is None else y):>{synapse_width}}  "
                     f"{str('' if r is None else r):>6}")
    return "\n".join(lines)


# ====================================================================== servers


@asynccontextmanager
async def ours_child(script: str, data: Path, *args: str) -> AsyncIterator[tuple[subprocess.Popen, dict[str, Any]]]:
    """Our server as a child process: ``script --serve-ours DATA *args`` (``data`` is
    created). Yields the process and the JSON line it printed; on exit closes its
    stdin (the child then stops) and waits, terminating it if that fails."""
    data.mkdir()
    errlog = open(data / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, str(Path(script).resolve()), "--serve-ours", str(data), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, cwd=REPO)
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"ours child {data.name} died; see {data / 'stderr.log'}:\n"
                               + (data / "stderr.log").read_text()[-3000:])
        yield proc, json.loads(line)
    finally:
        try:
            proc.stdin.close()  # type: ignore[union-attr]
            await trio.to_thread.run_sync(functools.partial(proc.wait, 30))
        except Exception:
            proc.terminate()
            proc.wait()
        errlog.close()


def serve_until_stdin_closes(info: dict[str, Any]) -> None:
    """Child side of :func:`ours_child`: print ``info`` as one JSON line, then block
    until the parent closes stdin (the caller's ``with`` then stops the server)."""
    print(json.dumps(info), flush=True)
    sys.stdin.read()


@asynccontextmanager
async def synapse_peer(data: Path, extra_config: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    """A started ``SynapsePeer`` in ``data`` (log level ``$BENCH_SYNAPSE_LOG``,
    default WARNING), stopped on exit."""
    from synapse_peer import SynapsePeer

    peer = SynapsePeer(data, log_level=os.environ.get("BENCH_SYNAPSE_LOG", "WARNING"), extra_config=extra_config)
    await trio.to_thread.run_sync(peer.start)
    try:
        assert peer.proc is not None
        yield peer
    finally:
        await trio.to_thread.run_sync(peer.stop)


async def register_shared_secret(http: httpx.AsyncClient, base: str, secret: str, localpart: str,
                                 **kwargs: Any) -> dict[str, Any]:
    """Register ``localpart`` (password "password") through the shared-secret admin
    API, which both servers serve; the answer (user_id, device_id, access_token).
    ``kwargs`` go to the POST (e.g. ``timeout``)."""
    from api.shared_secret import registration_mac

    nonce = (await http.get(base + "/_synapse/admin/v1/register")).json()["nonce"]
    mac = registration_mac(secret, nonce, localpart, "password", False)
    r = await http.post(base + "/_synapse/admin/v1/register",
                        json={"nonce": nonce, "username": localpart, "password": "password", "admin": False,
                              "mac": mac}, **kwargs)
    r.raise_for_status()
    return r.json()


# ====================================================================== the run


@contextmanager
def scratch_dir(name: str, keep: bool) -> Iterator[Path]:
    """A temporary data directory ``bench-<name>-*``, removed at the end unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        yield root
    finally:
        if keep:
            logger(name)(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_and_report(name: str, run: Callable[[Any], Awaitable[dict[str, Any]]], a: Any,
                   table: Callable[[dict[str, Any]], str], note: str = "") -> dict[str, Any]:
    """``trio.run(run, a)`` timed; the result as ``<results dir>/<name>.json``
    (``a.results_dir`` or ``bench/results/<UTC time>/``); then the table and the
    ratio line (``note`` goes before the total). Without ``.venv-synapse``,
    ``a.synapse`` is turned off first (ours only)."""
    if a.synapse and not SYNAPSE_PYTHON.exists():
        logger(name)("no .venv-synapse (make synapse-venv): ours only")
        a.synapse = False
    t0 = time.monotonic()
    res = trio.run(run, a)
    res["total_s"] = round(time.monotonic() - t0, 1)
    out = Path(a.results_dir or REPO / "bench" / "results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=2, default=str))
    print(table(res))
    print(f"\n(ratio: ours vs Synapse, > 1 = roomactors better; {note}total {res['total_s']} s; "
          f"{out / f'{name}.json'})")
    return res
