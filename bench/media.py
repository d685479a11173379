"""Benchmark: thumbnail generation per second, roomactors against Synapse.

Run from the repository root (``make bench-media`` does the same)::

    .venv/bin/python bench/media.py                 # 60 images, ~2 minutes
    .venv/bin/python bench/media.py --images 20 --no-synapse

Both servers run as separate processes on loopback and are driven over HTTP from
this process: ours as a child of this script (``--serve-ours``:
``roomactors.testing.homeserver_in_thread``, federation off), Synapse (the pinned
release in ``.venv-synapse``) through ``tests/interop/synapse_peer.py`` with
``dynamic_thumbnails: true``, so a size it did not pre-generate at upload is made
when asked for, as ours always does.

Method: ``--images`` distinct images (half JPEG, half PNG, ``--size`` pixels, each
with its own pattern) are uploaded to each server, untimed (Synapse makes its five
default thumbnails during the upload). Then, per round, one thumbnail per image is
requested through ``GET /_matrix/client/v1/media/thumbnail``, ``--concurrency`` at
a time, at a size neither server has made yet for that image:

* ``crop 150x150``: neither server has a 150x150 crop; both make exactly that;
* ``scale 400x400``: Synapse makes 400x300 exactly; ours makes the smallest
  recommended size not smaller than the request, 640x480 (its rule), from the
  same decoded original.

Each request must answer 200 with an image. Figures: thumbnails per second (wall
time of the round) and CPU milliseconds per thumbnail of the server process (all
threads, ``/proc/<pid>/stat``). Ratio: ours / Synapse for thumbnails/s and
Synapse / ours for CPU, so > 1 means roomactors is better. Results: a table on
stdout and ``bench/results/<UTC time>/media.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import trio  # noqa: E402

from bench import common  # noqa: E402
from bench.common import proc_cpu_s, ratio  # noqa: E402

ROUNDS = (("crop", 150, 150), ("scale", 400, 400))
log = common.logger("media")


def make_images(n: int, width: int, height: int, seed: int = 6) -> list[tuple[bytes, str]]:
    """``n`` distinct images: alternately JPEG and PNG, a gradient plus random shapes."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    base = Image.linear_gradient("L").resize((width, height))
    for i in range(n):
        image = Image.merge("RGB", (base, base.rotate(90).resize((width, height)), Image.new("L", (width, height), i * 4 % 256)))
        draw = ImageDraw.Draw(image)
        for _ in range(40):
            x, y = rng.randrange(width), rng.randrange(height)
            draw.ellipse((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)),
                         fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        buffer = io.BytesIO()
        if i % 2 == 0:
            image.save(buffer, "JPEG", quality=90)
            out.append((buffer.getvalue(), "image/jpeg"))
        else:
            image.save(buffer, "PNG")
            out.append((buffer.getvalue(), "image/png"))
    return out


class Target:
    def __init__(self, kind: str, base: str, pid: int, token: str) -> None:
        self.kind, self.base, self.pid, self.token = kind, base, pid, token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def upload_all(http: httpx.AsyncClient, target: Target, images: list[tuple[bytes, str]], concurrency: int) -> list[str]:
    uris: list[str | None] = [None] * len(images)
    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        data, content_type = images[i]
        async with limiter:
            r = await http.post(target.base + "/_matrix/media/v3/upload", content=data,
                                headers={**target.auth, "Content-Type": content_type}, timeout=300)
        r.raise_for_status()
        uris[i] = r.json()["content_uri"]

    async with trio.open_nursery() as nursery:
        for i in range(len(images)):
            nursery.start_soon(one, i)
    return [u for u in uris if u]


async def thumbnail_round(http: httpx.AsyncClient, target: Target, uris: list[str], method: str, width: int,
                          height: int, concurrency: int) -> dict[str, Any]:
    limiter = trio.CapacityLimiter(concurrency)
    latencies: list[float] = []
    failures: list[str] = []

    async def one(uri: str) -> None:
        server_name, media_id = uri.removeprefix("mxc://").split("/")
        async with limiter:
            t = time.perf_counter()
            r = await http.get(f"{target.base}/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
                               params={"width": width, "height": height, "method": method},
                               headers=target.auth, timeout=300)
            latencies.append(time.perf_counter() - t)
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith("image/"):
            failures.append(f"{r.status_code} {r.text[:200]}")

    cpu0 = proc_cpu_s(target.pid)
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for uri in uris:
            nursery.start_soon(one, uri)
    wall = time.perf_counter() - t0
    cpu = proc_cpu_s(target.pid) - cpu0
    if failures:
        raise RuntimeError(f"{target.kind}: {len(failures)} thumbnail requests failed, e.g. {failures[0]}")
    latencies.sort()
    return {
        "method": method, "width": width, "height": height, "thumbnails": len(uris),
        "wall_s": round(wall, 3), "thumbnails_per_s": round(len(uris) / wall, 2),
        "cpu_ms_per_thumbnail": round(cpu * 1000 / len(uris), 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
    }


async def bench_target(http: httpx.AsyncClient, target: Target, images: list[tuple[bytes, str]], a: argparse.Namespace) -> dict[str, Any]:
    log(f"{target.kind}: uploading {len(images)} images")
    t0 = time.perf_counter()
    uris = await upload_all(http, target, images, a.concurrency)
    upload_s = time.perf_counter() - t0
    result: dict[str, Any] = {"upload_s": round(upload_s, 2), "rounds": []}
    for method, width, height in ROUNDS:
        log(f"{target.kind}: {method} {width}x{height} for {len(uris)} images, {a.concurrency} at a time")
        result["rounds"].append(await thumbnail_round(http, target, uris, method, width, height, a.concurrency))
    total = sum(r["thumbnails"] for r in result["rounds"])
    wall = sum(r["wall_s"] for r in result["rounds"])
    result["overall_thumbnails_per_s"] = round(total / wall, 2)
    return result


async def run(a: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"args": vars(a), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "cores": os.cpu_count()}
    images = make_images(a.images, *a.size)
    res["image_bytes_mean"] = int(sum(len(d) for d, _ in images) / len(images))
    with common.scratch_dir("media", a.keep) as root:
        async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=64)) as http:
            # ---- ours, a child process
            async with common.ours_child(__file__, root / "ours") as (proc, info):
                target = Target("ours", info["base_url"], proc.pid, info["access_token"])
                res["ours"] = await bench_target(http, target, images, a)
            # ---- Synapse
            if a.synapse:
                config = {"dynamic_thumbnails": True, "max_upload_size": "50M"}
                async with common.synapse_peer(root / "synapse", config) as peer:
                    _, token = await trio.to_thread.run_sync(peer.register_user, "bench")
                    target = Target("synapse", peer.client_url, peer.proc.pid, token)
                    res["synapse"] = await bench_target(http, target, images, a)
                    res["synapse_version"] = peer.version
    return res


def serve_ours_child(a: argparse.Namespace) -> None:
    """``--serve-ours``: our server until stdin closes; prints its URL and a user's token."""
    from roomactors.testing import homeserver_in_thread

    data = Path(a.serve_ours).resolve()
    with homeserver_in_thread(data_dir=data, settings_overrides={"federation": {"enabled": False}}) as hs:
        user = hs.register_user("bench")
        common.serve_until_stdin_closes({"base_url": hs.base_url, "access_token": user.access_token})


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, Any, Any, Any]] = []
    ours, syn = res.get("ours", {}), res.get("synapse")
    for i, r in enumerate(ours.get("rounds", [])):
        y = syn["rounds"][i] if syn else None
        label = f"{r['method']} {r['width']}x{r['height']}"
        rows.append((f"{label}: thumbnails/s", r["thumbnails_per_s"], y and y["thumbnails_per_s"],
                     ratio(r["thumbnails_per_s"], y and y["thumbnails_per_s"], True)))
        rows.append((f"{label}: server CPU ms/thumbnail", r["cpu_ms_per_thumbnail"], y and y["cpu_ms_per_thumbnail"],
                     ratio(r["cpu_ms_per_thumbnail"], y and y["cpu_ms_per_thumbnail"], False)))
        rows.append((f"{label}: latency p50 ms", r["p50_ms"], y and y["p50_ms"], ratio(r["p50_ms"], y and y["p50_ms"], False)))
    o, y = ours.get("overall_thumbnails_per_s"), syn and syn.get("overall_thumbnails_per_s")
    rows.append(("all rounds: thumbnails/s", o, y, ratio(o, y, True)))
    o, y = ours.get("upload_s"), syn and syn.get("upload_s")
    rows.append(("uploads, s (untimed phase; Synapse thumbnails here)", o, y, None))
    return common.format_table(rows, 10, 10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--size", type=lambda s: tuple(int(x) for x in s.split("x")), default=(1280, 960),
                   help="WIDTHxHEIGHT of each image")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--no-synapse", dest="synapse", action="store_false")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--serve-ours", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_ours:
        serve_ours_child(a)
        return
    common.run_and_report("media", run, a, table, note=f"{os.cpu_count()} cores; ")


if __name__ == "__main__":
    main()
