"""Prober throughput: one pooled client probing many simulators on loopback at once.

The simulators run in a separate process, as NIMs run apart from the operator, so the numbers
are the prober's own (one Python process on one core) rather than a share of a loop it also
serves from.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from nimop.core import pods
from nimop.runtime.probe import DirectTransport, Prober

MODEL = "meta/llama-3.1-8b-instruct"

FARM = """
import asyncio, json, sys
from nimsim import SimConfig, Simulator

async def main(count):
    sims = []
    for _ in range(count):
        sim = Simulator(SimConfig.from_env({
            "NIMSIM_HOST": "127.0.0.1", "NIM_SERVER_PORT": "0", "NIMSIM_LOAD_DELAY": "0",
            "NIM_SERVED_MODEL_NAME": sys.argv[2]}))
        await sim.start()
        sims.append(sim)
    print(json.dumps([s.port for s in sims]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main(int(sys.argv[1])))
"""


async def _probe(ports: list[int], rounds: int) -> dict[str, float]:
    prober = Prober(DirectTransport(timeout=5.0), concurrency=64)
    targets = [
        pods.facts(
            {"metadata": {"name": f"p{i}"}, "status": {"podIP": "127.0.0.1", "phase": "Running"}}
        )
        for i in range(len(ports))
    ]
    try:
        await prober.probe_pod("bench", targets[0], ports[0], MODEL)  # warm the pool
        latencies: list[float] = []
        served = 0
        start = time.perf_counter()
        for _ in range(rounds):
            t = time.perf_counter()
            results = await asyncio.gather(
                *(
                    prober.probe_pod("bench", f, p, MODEL)
                    for f, p in zip(targets, ports, strict=True)
                )
            )
            latencies.append(time.perf_counter() - t)
            served += sum(r.serving for r in results)
        elapsed = time.perf_counter() - start
    finally:
        await prober.aclose()
    total = len(ports) * rounds
    return {
        "replicas probed per round": len(ports),
        "replicas probed per second": total / elapsed,
        "round latency p50 (ms)": sorted(latencies)[len(latencies) // 2] * 1000,
        "serving verdicts (%)": 100.0 * served / total,
    }


def run(servers: int = 200, rounds: int = 10) -> dict[str, float]:
    farm = subprocess.Popen(
        [sys.executable, "-c", FARM, str(servers), MODEL],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert farm.stdout is not None
        ports: list[int] = json.loads(farm.stdout.readline())
        return asyncio.run(_probe(ports, rounds))
    finally:
        assert farm.stdin is not None
        farm.stdin.close()
        farm.wait(30)
