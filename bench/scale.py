"""The operator at scale on the real lab: many NimServices, each a real pod served by a simulator.

Measures what an operator of hundreds of NIMs cares about: time until all are Ready, how
responsive the operator stays while converging (/healthz latency), what a steady cluster costs
(API reads and writes per NimService per minute: writes must be zero), reconcile latency, and
the operator's memory and CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from nimlab import nodes
from nimlab.binaries import ensure_binaries, repo_root
from nimlab.cluster import Cluster, free_port

NAMESPACE = "bench"
RECONCILE = "nimop_reconcile_duration_seconds"


def _nimservice(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": f"nim-{i:04d}", "namespace": NAMESPACE},
        "spec": {
            "image": {
                "repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct",
                "tag": "1.3.3-load-1s",
            },
            "model": "meta/llama-3.1-8b-instruct",
            "authSecret": "ngc-api",
            "gpu": {"count": 1},
            "probes": {
                "startup": {"periodSeconds": 2},
                "readiness": {"periodSeconds": 5},
                "liveness": {"periodSeconds": 10},
            },
        },
    }


def _metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k.split("{")[0] == name)


def _quantile(after: dict[str, float], before: dict[str, float], q: float) -> float:
    """The upper bucket bound holding quantile q of the reconcile passes made between two
    scrapes (Prometheus buckets are cumulative, so a window is the difference of two scrapes)."""
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v - before.get(k, 0.0))
        for k, v in after.items()
        if k.startswith(f"{RECONCILE}_bucket")
    )
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound
    return math.inf


def _proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def run(count: int = 100, steady_seconds: float = 60.0) -> dict[str, float]:
    bin_dir = ensure_binaries()
    gpu_nodes = math.ceil(count / 8) + 1
    with tempfile.TemporaryDirectory(prefix="nimop-bench-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        lab = Cluster(
            workdir=work / "lab",
            bin_dir=bin_dir,
            topology=nodes.Topology.default(gpu_nodes=gpu_nodes, cpu_nodes=0),
        )
        lab.start()
        lab_seconds = time.monotonic() - started
        operator: subprocess.Popen[bytes] | None = None
        try:
            crd = repo_root() / "crds" / "nimservices.nimop.dev.yaml"
            lab.kubectl("apply", "--server-side", "-f", str(crd))
            lab.kubectl("wait", "--for=condition=Established", "crd/nimservices.nimop.dev")
            lab.kubectl("create", "namespace", NAMESPACE)
            lab.kubectl("wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE)
            lab.kubectl(
                "create",
                "secret",
                "generic",
                "ngc-api",
                "-n",
                NAMESPACE,
                "--from-literal=NGC_API_KEY=x",
            )
            port = free_port()
            env = {
                **os.environ,
                "KUBECONFIG": str(lab.kubeconfig),
                "NIMOP_HTTP_ADDRESS": f"127.0.0.1:{port}",
                "NIMOP_LOG_LEVEL": "WARNING",
            }
            with (work / "operator.log").open("wb") as log:
                operator = subprocess.Popen(
                    [sys.executable, "-m", "nimop", "run"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            while True:
                try:
                    if httpx.get(
                        f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False
                    ).is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)

            healthz: list[float] = []
            stop = threading.Event()

            def sample_healthz() -> None:
                with httpx.Client(timeout=10, trust_env=False) as client:
                    while not stop.wait(0.5):
                        t = time.perf_counter()
                        client.get(f"http://127.0.0.1:{port}/healthz")
                        healthz.append((time.perf_counter() - t) * 1000)

            sampler = threading.Thread(target=sample_healthz, daemon=True)
            sampler.start()
            start_metrics = _metrics(port)
            created = time.monotonic()
            docs = yaml.safe_dump_all([_nimservice(i) for i in range(count)])
            lab.kubectl("apply", "-f", "-", input=docs)
            while True:
                items = json.loads(lab.kubectl("get", "nims", "-n", NAMESPACE, "-o", "json"))[
                    "items"
                ]
                ready = sum(
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in i.get("status", {}).get("conditions", [])
                    )
                    for i in items
                )
                if ready == count:
                    break
                if time.monotonic() - created > 900:
                    raise RuntimeError(f"only {ready}/{count} Ready after 900s")
                time.sleep(1)
            converge = time.monotonic() - created
            converged = _metrics(port)
            stop.set()
            sampler.join()

            time.sleep(35)  # one steady interval, so every NimService left the fast cadence
            before = _metrics(port)
            _, cpu_before = _proc_stats(operator.pid)
            time.sleep(steady_seconds)
            after = _metrics(port)
            rss, cpu_after = _proc_stats(operator.pid)
            per_minute = 60.0 / steady_seconds / count
            return {
                "NimServices (1 GPU replica each)": count,
                "lab start-up, warm (s)": lab_seconds,
                "all Ready after apply (s)": converge,
                "/healthz p99 while converging (ms)": sorted(healthz)[
                    int(0.99 * (len(healthz) - 1))
                ],
                "steady API writes per NimService-minute": per_minute
                * (_sum(after, "nimop_api_writes_total") - _sum(before, "nimop_api_writes_total")),
                "steady API requests per NimService-minute": per_minute
                * (
                    _sum(after, "nimop_api_requests_total")
                    - _sum(before, "nimop_api_requests_total")
                ),
                "reconcile p50 converging (s, bucket bound)": _quantile(
                    converged, start_metrics, 0.5
                ),
                "reconcile p99 converging (s, bucket bound)": _quantile(
                    converged, start_metrics, 0.99
                ),
                "reconcile p50 steady (s, bucket bound)": _quantile(after, before, 0.5),
                "reconcile p99 steady (s, bucket bound)": _quantile(after, before, 0.99),
                "operator RSS (MiB)": rss,
                "operator CPU while steady (% of one core)": 100
                * (cpu_after - cpu_before)
                / steady_seconds,
            }
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(20)
            lab.stop()
