"""Prober throughput: one pooled client probing many simulators on loopback at once."""

from __future__ import annotations

import asyncio
import time

from nimop import pods
from nimop.probe import DirectTransport, Prober
from nimsim import SimConfig, Simulator

MODEL = "meta/llama-3.1-8b-instruct"


async def _run(servers: int, rounds: int) -> dict[str, float]:
    sims = []
    for _ in range(servers):
        sim = Simulator(
            SimConfig.from_env(
                {
                    "NIMSIM_HOST": "127.0.0.1",
                    "NIM_SERVER_PORT": "0",
                    "NIMSIM_LOAD_DELAY": "0",
                    "NIM_SERVED_MODEL_NAME": MODEL,
                }
            )
        )
        await sim.start()
        sims.append(sim)
    prober = Prober(DirectTransport(timeout=2.0, max_connections=64), concurrency=64)
    targets = [
        pods.facts(
            {"metadata": {"name": f"p{i}"}, "status": {"podIP": "127.0.0.1", "phase": "Running"}}
        )
        for i in range(servers)
    ]
    try:
        start = time.perf_counter()
        served = 0
        for _ in range(rounds):
            results = await asyncio.gather(
                *(
                    prober.probe_pod("bench", t, s.port, MODEL)
                    for t, s in zip(targets, sims, strict=True)
                )
            )
            served += sum(r.serving for r in results)
        elapsed = time.perf_counter() - start
    finally:
        await prober.aclose()
        for sim in sims:
            await sim.stop()
    total = servers * rounds
    return {
        "replicas probed per round": servers,
        "probe (ready + models) per second": total / elapsed,
        "round latency (ms)": elapsed * 1000 / rounds,
        "serving verdicts (%)": 100.0 * served / total,
    }


def run(servers: int = 200, rounds: int = 10) -> dict[str, float]:
    return asyncio.run(_run(servers, rounds))
