"""Benchmark: the client-server API of roomactors against Synapse, interleaved.

Run from the repository root (``make bench-client`` does the same)::

    .venv/bin/python bench/client_api.py                # 2 rounds each: 12-17 min (host load)
    .venv/bin/python bench/client_api.py --rounds 3
    .venv/bin/python bench/client_api.py --servers ours --rounds 1 --profile
    .venv/bin/python bench/client_api.py -- --s1-rooms 10   # extra loadgen.py args

Both servers are driven by the same shared load generator, ``loadgen.py`` (``$LOADGEN``,
default ``../shared/bench/loadgen.py`` beside this repository; its README describes
scenarios S1-S4), with the same arguments, the same interpreter and the same nice
level, in the order ours, synapse, ours, synapse, ... One run is:

1. a fresh data directory (ours: ``generate-config --open-registration`` plus
   ``[ratelimit] enabled = false``; Synapse: ``$SYN/data`` wiped, as
   ``run_synapse_baseline.sh`` does);
2. the server started under ``nice -n $NICE`` and polled until ``/versions`` answers
   (``server_startup_s_fresh_db``);
3. ``--settle`` idle seconds (default 10; idle RSS is read after them);
4. ``loadgen.py run --pid PID --db-glob ... --sqlite-checkpoint`` under the same nice;
5. the server stopped: SIGTERM, then SIGKILL after 20 s, to that PID only.

Synapse comes from PyPI through ``setup_synapse.sh`` (beside loadgen.py), pinned to
``--synapse-version`` (default 1.163.2, as the Makefile's ``SYNAPSE_VERSION``), into
``$SYN`` (default ``data/perf-synapse``, gitignored; the venv is reused once
installed, ~1 minute the first time). loadgen.py runs in that venv's Python (it
has httpx), as in the shared baseline runs.

loadgen's wait for a quiet host before each timed phase is capped at 5 s
(``--quiet-max-wait``; loadgen's own default is 30 s): on a shared host that is
never quiet it would add 2 minutes per run, and the noise is recorded anyway
(``foreign_cpu_frac``). Quote ratios from one sitting only, not against JSON from
another host or day.

Results go to ``bench/results/<UTC time>/`` (ignored by ``bench/results/.gitignore``): one JSON per run (``ours-r1.json``,
``synapse-r1.json``, ...), the medians per server (``ours-median.json``,
``synapse-median.json``, the same shape, so ``loadgen.py compare`` reads them) and
``summary.json``; scratch data dirs and server logs go to ``data/bench-client/``.
Printed at the end: ``loadgen.py summarize`` per server and ``loadgen.py compare``
of the medians (ratio > 1 = roomactors better).

``--profile`` adds one more roomactors run, not counted in the figures, under
``py-spy record --nonblocking`` (``.venv/bin/py-spy``), and prints the top
functions by own and by inclusive samples (``ours-profile.txt``, raw collapsed
stacks in ``ours-profile.collapsed``).

Setup is not timed by loadgen, but it runs at ``--setup-concurrency`` (default 1
here, 4 in loadgen): at 4, S4's concurrent createRooms by one user in the same
millisecond can get the same v12 room ID (a hash of the create event) and fail with
400 M_ROOM_IN_USE on roomactors, which loses the whole of S4.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LOADGEN = REPO.parent / "shared" / "bench" / "loadgen.py"

# The loadgen.py HEADLINES paths (scenario, dotted path), for the medians.
HEADLINE_PATHS = [
    ("s1", "events_per_s"), ("s1", "send_latency.p50_ms"), ("s1", "send_latency.p99_ms"),
    ("s1", "server_cpu_ms_per_event"), ("s1", "db_bytes_per_event"),
    ("s2", "delivery_latency.p50_ms"), ("s2", "delivery_latency.p99_ms"),
    ("s2", "delivered_fraction"), ("s2", "server_cpu_ms_per_delivery"),
    ("s3", "rooms_per_s"), ("s3", "create_latency.p50_ms"), ("s3", "create_latency.p99_ms"),
    ("s3", "server_cpu_ms_per_room"), ("s3", "db_bytes_per_room"),
    ("s4", "initial_sync_full.cold_ms"), ("s4", "initial_sync_full.warm_p50_ms"),
    ("s4", "initial_sync_lazy.cold_ms"), ("s4", "initial_sync_lazy.warm_p50_ms"),
    ("s4", "incremental_sync_1_new_event.p50_ms"), ("s4", "incremental_sync_1_new_event.p99_ms"),
    ("s1", "server_rss_peak_mb"), ("s2", "server_rss_peak_mb"), ("s3", "server_rss_peak_mb"),
    ("s1", "foreign_cpu_frac"), ("s2", "foreign_cpu_frac"), ("s3", "foreign_cpu_frac"),
    ("", "server_rss_idle_mb"), ("", "server_rss_end_mb"), ("", "server_startup_s_fresh_db"),
]


def log(msg: str) -> None:
    print(f"[client_api {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {base}")
        try:
            with urllib.request.urlopen(base + "/_matrix/client/versions", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not answer /versions within {timeout} s")


def stop(proc: subprocess.Popen, name: str) -> None:
    """Stop one server we started: its PID only, TERM then KILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        log(f"{name} pid {proc.pid} ignored SIGTERM for 20 s; SIGKILL")
        proc.kill()
        proc.wait()


def dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def put(d: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def median_run(runs: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """A loadgen-shaped JSON whose headline figures are the medians over runs."""
    out = copy.deepcopy(runs[0])
    out["label"] = label
    out["median_of"] = len(runs)
    for scn, path in HEADLINE_PATHS:
        vals = [dig(r["scenarios"].get(scn, {}) if scn else r, path) for r in runs]
        vals = [v for v in vals if isinstance(v, (int, float))]
        target = out["scenarios"].setdefault(scn, {}) if scn else out
        put(target, path, round(statistics.median(vals), 3) if vals else None)
    return out


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.results = Path(a.results_dir or REPO / "bench" / "results" / stamp)
        self.scratch = Path(a.scratch_dir or REPO / "data" / "bench-client" / stamp)
        self.results.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.syn = Path(a.syn).resolve()
        self.loadgen = Path(a.loadgen).resolve()
        self.shared = self.loadgen.parent
        self.syn_py = self.syn / "venv" / "bin" / "python"
        self.ours_bin = Path(a.venv) / "bin" / "roomactors"
        self.nice = a.nice if a.nice is not None else (-10 if os.geteuid() == 0 else 0)
        self.live: list[tuple[subprocess.Popen, str]] = []

    # ------------------------------------------------------------------ setup

    def setup_synapse(self) -> None:
        env = dict(os.environ, SYN=str(self.syn), SYNAPSE_VERSION=self.a.synapse_version,
                   PORT=str(self.a.synapse_port), PYTHON=os.environ.get("PYTHON", "python3"))
        stamp = self.syn / f".installed-{self.a.synapse_version}"
        if self.syn_py.exists() and not stamp.exists():
            # A venv from another version: setup_synapse.sh keeps an existing venv, so
            # pin by hand (pip is a no-op when the version already matches).
            log(f"pinning matrix-synapse=={self.a.synapse_version} in {self.syn}/venv")
            subprocess.run([str(self.syn_py), "-m", "pip", "install", "-q",
                            f"matrix-synapse=={self.a.synapse_version}", "httpx"], check=True)
        log(f"setup_synapse.sh SYN={self.syn} (installs from PyPI on first use)")
        subprocess.run(["bash", str(self.shared / "setup_synapse.sh")], env=env, check=True,
                       stdout=sys.stderr)
        ver = subprocess.run([str(self.syn_py), "-c", "import importlib.metadata as m;print(m.version('matrix-synapse'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
        if ver != self.a.synapse_version:
            raise SystemExit(f"{self.syn}/venv has Synapse {ver}, wanted {self.a.synapse_version}")
        stamp.touch()
        self.synapse_version = ver
        port = subprocess.run(
            [str(self.syn_py), "-c",
             "import sys,yaml;c=yaml.safe_load(open(sys.argv[1]));"
             "print([l['port'] for l in c['listeners'] if l.get('type')=='http'][0])",
             str(self.syn / "homeserver.yaml")], check=True, capture_output=True, text=True)
        self.syn_port = int(port.stdout.strip())

    def ours_label(self) -> str:
        try:
            sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                    "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            return f"roomactors-{sha}{'-dirty' if dirty else ''}-sqlite"
        except (OSError, subprocess.CalledProcessError):
            return "roomactors-sqlite"

    # ------------------------------------------------------------------ servers

    def start_ours(self, name: str) -> tuple[subprocess.Popen, str, str, Path]:
        run = self.scratch / name
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        port = self.a.ours_port or free_port()
        settings = run / "settings.toml"
        subprocess.run([str(self.ours_bin), "generate-config", "--server-name", "perf.local",
                        "--data-dir", str(run / "data"), "--client-port", str(port),
                        "--open-registration", "-o", str(settings)],
                       check=True, stdout=subprocess.DEVNULL)
        text = settings.read_text()
        # [ratelimit] enabled = true -> false (the [registration] enabled stays true).
        new, n = re.subn(r"(\[ratelimit\][^\[]*?\n)enabled = true", r"\1enabled = false", text, count=1)
        if n != 1:
            raise SystemExit(f"{settings}: no '[ratelimit] enabled = true' to turn off")
        settings.write_text(new)
        db = re.search(r'^\[database\][^\[]*?^path = "([^"]+)"', new, re.M | re.S)
        db_path = (settings.parent / (db.group(1) if db else "data/roomactors.db")).resolve()
        logf = open(run / "server.log", "w")
        proc = subprocess.Popen(["nice", "-n", str(self.nice), str(self.ours_bin), "serve",
                                 "-c", str(settings)], stdout=logf, stderr=subprocess.STDOUT,
                                cwd=run)
        self.live.append((proc, name))
        return proc, f"http://127.0.0.1:{port}", f"{db_path}*", run

    def start_synapse(self, name: str) -> tuple[subprocess.Popen, str, str, Path]:
        if port_in_use(self.syn_port):
            raise SystemExit(f"port {self.syn_port} (from {self.syn}/homeserver.yaml) is in use")
        data = self.syn / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        run = self.scratch / name
        run.mkdir(parents=True, exist_ok=True)
        logf = open(run / "server.log", "w")
        proc = subprocess.Popen(["nice", "-n", str(self.nice), str(self.syn_py), "-m",
                                 "synapse.app.homeserver", "-c", str(self.syn / "homeserver.yaml")],
                                stdout=logf, stderr=subprocess.STDOUT, cwd=self.syn)
        self.live.append((proc, name))
        return proc, f"http://127.0.0.1:{self.syn_port}", str(data / "homeserver.db*"), run

    def run_one(self, server: str, rnd: int, *, profile: bool = False) -> Path | None:
        name = f"{server}-r{rnd}" if not profile else "ours-profile"
        out = self.results / f"{name}.json"
        t0 = time.monotonic()
        proc, base, db_glob, run = (self.start_ours if server == "ours" else self.start_synapse)(name)
        spy = None
        try:
            t1 = wait_ready(base, proc)
            log(f"{name}: pid {proc.pid} ready after {t1 - t0:.2f} s at {base}; settling {self.a.settle} s")
            time.sleep(self.a.settle)
            label = self.ours_label() if server == "ours" else f"synapse-{self.synapse_version}-sqlite"
            if profile:
                spy_bin = Path(self.a.venv) / "bin" / "py-spy"
                spy = subprocess.Popen([str(spy_bin), "record", "--nonblocking", "--format", "raw",
                                        "--rate", "200", "-p", str(proc.pid),
                                        "-o", str(self.results / "ours-profile.collapsed")],
                                       stdout=subprocess.DEVNULL, stderr=open(run / "py-spy.log", "w"))
                time.sleep(1)
            cmd = ["nice", "-n", str(self.nice), str(self.syn_py), str(self.loadgen), "run",
                   "--base-url", base, "--pid", str(proc.pid), "--db-glob", db_glob,
                   "--sqlite-checkpoint", "--label", label, "--out", str(out),
                   "--setup-concurrency", str(self.a.setup_concurrency),
                   "--quiet-max-wait", str(self.a.quiet_max_wait), *self.a.loadgen_args]
            log(f"{name}: " + " ".join(cmd[3:]))
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if r.returncode != 0 or not out.exists():
                log(f"{name}: loadgen exited {r.returncode}; see {run}/server.log")
                return None
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    spy.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    spy.kill()
            stop(proc, name)
            self.live.remove((proc, name))
        d = json.loads(out.read_text())
        d["server_startup_s_fresh_db"] = round(t1 - t0, 2)
        d["nice"] = self.nice
        d["setup_concurrency"] = self.a.setup_concurrency
        out.write_text(json.dumps(d, indent=2) + "\n")
        errs = {s: v.get("error") or v.get("error_samples") for s, v in d["scenarios"].items()
                if v.get("error") or v.get("errors")}
        for key in ("initial_sync_full", "initial_sync_lazy", "incremental_sync_1_new_event"):
            e = dig(d, f"scenarios.s4.{key}.error")
            if e:
                errs[f"s4.{key}"] = e
        if errs:
            log(f"{name}: ERRORS {json.dumps(errs)[:1500]}")
        log(f"{name}: wrote {out} ({time.monotonic() - t0:.0f} s)")
        return out

    # ------------------------------------------------------------------ report

    def loadgen_cmd(self, *args: str) -> None:
        subprocess.run([str(self.syn_py), str(self.loadgen), *args], check=False)

    def report(self, files: dict[str, list[Path]]) -> None:
        meds: dict[str, Path] = {}
        for server, paths in files.items():
            if not paths:
                continue
            print(f"\n=== {server}: loadgen.py summarize ===", flush=True)
            self.loadgen_cmd("summarize", *map(str, paths))
            runs = [json.loads(p.read_text()) for p in paths]
            m = median_run(runs, f"{runs[0].get('label')} (median of {len(runs)})")
            meds[server] = self.results / f"{server}-median.json"
            meds[server].write_text(json.dumps(m, indent=2) + "\n")
        summary: dict[str, Any] = {"runs": {s: [p.name for p in ps] for s, ps in files.items()},
                                   "nice": self.nice, "setup_concurrency": self.a.setup_concurrency,
                                   "loadgen_args": self.a.loadgen_args}
        if "ours" in meds and "synapse" in meds:
            for rnd, (po, ps) in enumerate(zip(files["ours"], files["synapse"]), 1):
                print(f"\n=== round {rnd}: loadgen.py compare {ps.name} {po.name} ===", flush=True)
                self.loadgen_cmd("compare", str(ps), str(po))
            print("\n=== medians: loadgen.py compare synapse-median.json ours-median.json "
                  "(x better > 1 = roomactors better) ===", flush=True)
            self.loadgen_cmd("compare", str(meds["synapse"]), str(meds["ours"]))
            o, s = json.loads(meds["ours"].read_text()), json.loads(meds["synapse"].read_text())
            table = {}
            for scn, path in HEADLINE_PATHS:
                vo = dig(o["scenarios"].get(scn, {}) if scn else o, path)
                vs = dig(s["scenarios"].get(scn, {}) if scn else s, path)
                table[f"{scn}.{path}" if scn else path] = {"ours": vo, "synapse": vs}
            summary["medians"] = table
        (self.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nresults: {self.results}", flush=True)

    def profile_report(self) -> None:
        raw = self.results / "ours-profile.collapsed"
        if not raw.exists():
            log("no py-spy output")
            return
        own: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        total = 0
        # One "frame;frame;... COUNT" record per line, except that a frame name can
        # hold newlines (generated code): join lines until one ends in a count.
        records, buf = [], ""
        for line in raw.read_text().splitlines():
            buf += line
            if re.search(r" \d+$", line):
                records.append(buf)
                buf = ""
        for rec in records:
            stack, _, n = rec.rpartition(" ")
            n_i = int(n)
            frames = stack.split(";")
            # py-spy frame: "func (file:line)"; drop the thread-name root frame.
            frames = [f for f in frames if "(" in f]
            if not frames:
                continue
            total += n_i
            own[frames[-1]] += n_i
            for f in set(re.sub(r":\d+\)$", ")", f) for f in frames):
                incl[f] += n_i
        lines = [f"py-spy: {total} samples of the roomactors process during one loadgen run",
                 "", "top 25 by own samples (function (file:line)):"]
        lines += [f"{100 * n / total:6.1f}%  {f}" for f, n in own.most_common(25)]
        lines += ["", "top 40 by inclusive samples (function (file)):"]
        lines += [f"{100 * n / total:6.1f}%  {f}" for f, n in incl.most_common(40)]
        text = "\n".join(lines) + "\n"
        (self.results / "ours-profile.txt").write_text(text)
        print("\n" + text, flush=True)

    def main(self) -> int:
        servers = [s.strip() for s in self.a.servers.split(",") if s.strip()]
        self.setup_synapse()  # also needed for ours: loadgen.py runs in its venv (httpx)
        log(f"nice {self.nice}; results {self.results}; scratch {self.scratch}")
        files: dict[str, list[Path]] = {s: [] for s in servers}
        try:
            for rnd in range(1, self.a.rounds + 1):
                for server in servers:
                    p = self.run_one(server, rnd)
                    if p:
                        files[server].append(p)
            if self.a.profile:
                self.run_one("ours", 0, profile=True)
        finally:
            for proc, name in list(self.live):
                stop(proc, name)
        self.report(files)
        if self.a.profile:
            self.profile_report()
        return 0 if all(len(v) == self.a.rounds for v in files.values()) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Arguments after -- go to every `loadgen.py run`.")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 2)))
    p.add_argument("--servers", default="ours,synapse", help="order within a round")
    p.add_argument("--syn", default=os.environ.get("SYN", str(REPO / "data" / "perf-synapse")),
                   help="Synapse venv + config dir ($SYN; default data/perf-synapse)")
    p.add_argument("--synapse-version", default=os.environ.get("SYNAPSE_VERSION", "1.163.2"))
    p.add_argument("--synapse-port", type=int, default=28008,
                   help="port written into a new homeserver.yaml (an existing one is kept)")
    p.add_argument("--ours-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--loadgen", default=os.environ.get("LOADGEN", str(DEFAULT_LOADGEN)))
    p.add_argument("--venv", default=str(REPO / ".venv"))
    p.add_argument("--nice", type=int, default=None, help="default -10 as root (as the baselines), else 0")
    p.add_argument("--settle", type=float, default=float(os.environ.get("SETTLE_S", 10)),
                   help="idle seconds after start, before loadgen (run_synapse_baseline.sh: 20)")
    p.add_argument("--quiet-max-wait", type=float, default=5.0,
                   help="loadgen's wait for a quiet host before each timed phase (its default: 30)")
    p.add_argument("--setup-concurrency", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="one extra roomactors run under py-spy")
    p.add_argument("--results-dir")
    p.add_argument("--scratch-dir")
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    a = p.parse_args(argv)
    a.loadgen_args = extra
    if not Path(a.loadgen).exists():
        p.error(f"{a.loadgen} not found: set LOADGEN or --loadgen")
    return Bench(a).main()


if __name__ == "__main__":
    sys.exit(main())
