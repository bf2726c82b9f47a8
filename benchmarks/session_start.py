"""Benchmark: how fast a session is up (create -> ``running``), local vs docker.

"Up" is the API's definition: the display runs and the runtime agent can serve
a first frame. Each backend runs in its own in-process gateway (full desktop:
fluxbox, xterm, Chromium) one session at a time; a session is stopped before
the next is created. The docker backend is the baseline measured in the same
run (the prototype measured 2.6-3.2 s for a full Docker session here).

Prints a table and writes benchmarks/results/session_start.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.app import create_app  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402

TOKEN = "bench-token-0123456789"


async def measure(backend: str, runs: int, resolution: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"vr-bench-{backend}-") as tmp:
        config = GatewayConfig(state_dir=Path(tmp) / "state", token=TOKEN, port=0,
                               backend=backend, poll_interval_s=0.25)
        app = create_app(config, TOKEN)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        times: list[float] = []
        try:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                base = str(server.make_url("/api/visual-sessions"))
                for _ in range(runs):
                    t0 = time.perf_counter()
                    async with http.post(base, json={"resolution": resolution}) as resp:
                        created = await resp.json()
                        if resp.status != 201:
                            raise RuntimeError(f"create failed: {created}")
                    sid = created["session_id"]
                    async with http.get(f"{base}/{sid}?wait=running") as resp:
                        session = await resp.json()
                    elapsed = time.perf_counter() - t0
                    if session["status"] != "running":
                        raise RuntimeError(f"{backend} session did not start: {session}")
                    times.append(elapsed)
                    async with http.post(f"{base}/{sid}/stop") as resp:
                        await resp.read()
        finally:
            await server.close()
    return {"backend": backend, "runs": runs, "seconds": times,
            "p50": statistics.median(times), "max": max(times), "min": min(times)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = {"resolution": args.resolution, "local": await measure("local", args.runs,
                                                                       args.resolution)}
    if not args.no_baseline:
        results["docker"] = await measure("docker", args.runs, args.resolution)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--resolution", default="1600x900")
    parser.add_argument("--no-baseline", action="store_true", help="skip the docker baseline")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "session_start.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(f"\nsession start (create -> running), {args.resolution}, full desktop, "
          f"{args.runs} runs each\n")
    print(f"{'backend':<8} {'p50 s':>7} {'min s':>7} {'max s':>7}  ratio vs docker")
    docker_p50 = results.get("docker", {}).get("p50")
    for key in ("local", "docker"):
        if key not in results:
            continue
        r = results[key]
        ratio = f"{r['p50'] / docker_p50:.2f}" if docker_p50 else "-"
        print(f"{key:<8} {r['p50']:7.2f} {r['min']:7.2f} {r['max']:7.2f}  {ratio}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
