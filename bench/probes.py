"""Prober throughput and cost: one client probing many simulators on loopback at once.

The simulators run in a separate process, as NIMs run apart from the operator, so the numbers
are the prober's own (one Python process on one core) rather than a share of a loop it also
serves from. The baseline, in the same run: the same probes through httpx's transport
(httpcore and anyio), one small pool per replica, as the operator probed before
runtime/httpget.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import ssl
import subprocess
import sys
import time
import tracemalloc

import httpx

from nimop.core import pods
from nimop.runtime.probe import DirectTransport, Prober, Transport

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


class HttpxTransport:
    """The baseline: httpx's transport per replica address, keep-alive, no client layer."""

    def __init__(self, timeout: float) -> None:
        self._extensions = {"timeout": httpx.Timeout(timeout, pool=None).as_dict()}
        self._pools: dict[str, httpx.AsyncHTTPTransport] = {}
        self._tls = ssl.create_default_context()  # shared, as the operator shared it

    async def get(
        self, namespace: str, pod: pods.PodFacts, port: int, path: str
    ) -> tuple[int, str]:
        address = f"{pod.ip}:{port}"
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = httpx.AsyncHTTPTransport(
                verify=self._tls,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
                trust_env=False,
            )
        request = httpx.Request("GET", f"http://{address}{path}", extensions=self._extensions)
        response = await pool.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response.status_code, response.text

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _probe(transport: Transport, ports: list[int], rounds: int) -> dict[str, float]:
    prober = Prober(transport, concurrency=64)
    targets = [
        pods.facts(
            {"metadata": {"name": f"p{i}"}, "status": {"podIP": "127.0.0.1", "phase": "Running"}}
        )
        for i in range(len(ports))
    ]
    try:
        gc.collect()
        tracemalloc.start()
        await asyncio.gather(  # one connection per replica, kept for the rounds
            *(prober.probe_pod("bench", f, p, MODEL) for f, p in zip(targets, ports, strict=True))
        )
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        latencies: list[float] = []
        served = 0
        start, cpu = time.perf_counter(), _cpu()
        for _ in range(rounds):
            t = time.perf_counter()
            results = await asyncio.gather(
                *(
                    prober.probe_pod("bench", f, p, MODEL, serving=True)
                    for f, p in zip(targets, ports, strict=True)
                )
            )
            latencies.append(time.perf_counter() - t)
            served += sum(r.serving for r in results)
        elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    finally:
        await prober.aclose()
    total = len(ports) * rounds
    return {
        "replicas probed per second": total / elapsed,
        "CPU per probe (ms)": 1000 * cpu / total,
        "memory per kept connection (KiB)": held / len(ports) / 1024,
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
        results: dict[str, float] = {"replicas probed per round": len(ports)}
        for name, transport in (
            ("httpx, baseline", HttpxTransport(5.0)),
            ("nimop", DirectTransport(5.0)),
        ):
            measured = asyncio.run(_probe(transport, ports, rounds))
            results.update({f"{name}: {k}": v for k, v in measured.items()})
        return results
    finally:
        assert farm.stdin is not None
        farm.stdin.close()
        farm.wait(30)
