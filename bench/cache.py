"""Cold versus warm start: the same NimService with and without a Ready NimCache.

Without a cache every replica downloads its model before it listens (here a simulated download
of BENCH_DOWNLOAD_SECONDS, default 20, then a 2 s load); on a NimCache it only loads. Both are
timed from `kubectl apply` to Ready=True, on one lab, one after the other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from nimlab import nodes
from nimlab.binaries import ensure_binaries, repo_root
from nimlab.cluster import Cluster, free_port

NAMESPACE = "bench-cache"
IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct"
Obj = dict[str, Any]


def _ready(lab: Cluster, kind: str, name: str) -> bool:
    out = lab.kubectl(
        "get",
        kind,
        name,
        "-n",
        NAMESPACE,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )
    return out.strip() == "True"


def _timed(lab: Cluster, kind: str, name: str, doc: Obj, timeout: float = 600) -> float:
    start = time.monotonic()
    lab.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(doc))
    while not _ready(lab, kind, name):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{kind} {name} not Ready after {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - start


def run() -> dict[str, float]:
    download = float(os.environ.get("BENCH_DOWNLOAD_SECONDS", "20"))
    tag = f"1.3.3-download-{download:g}s-load-2s"
    with tempfile.TemporaryDirectory(prefix="nimop-cache-bench-") as tmp:
        work = Path(tmp)
        lab = Cluster(
            workdir=work / "lab",
            bin_dir=ensure_binaries(),
            topology=nodes.Topology.default(gpu_nodes=2, cpu_nodes=1),
        )
        lab.start()
        operator: subprocess.Popen[bytes] | None = None
        try:
            lab.install_crds(repo_root() / "crds")
            lab.create_namespace(NAMESPACE, ngc_api_key="nvapi-bench")
            port = free_port()
            env = {
                **os.environ,
                "KUBECONFIG": str(lab.kubeconfig),
                "NIMOP_HTTP_ADDRESS": f"127.0.0.1:{port}",
                "NIMOP_LOG_LEVEL": "WARNING",
            }
            with (work / "operator.log").open("wb") as log:
                operator = subprocess.Popen(
                    [sys.executable, "-m", "nimop", "run"], env=env, stdout=log, stderr=log
                )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(
                        f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False
                    ).is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            profile = "tensorrt_llm-h100-fp8-tp1-throughput"
            cache_seconds = _timed(
                lab,
                "nimcache",
                "llama",
                {
                    "apiVersion": "nimop.dev/v1alpha1",
                    "kind": "NimCache",
                    "metadata": {"name": "llama"},
                    "spec": {
                        "image": {"repository": IMAGE, "tag": tag},
                        "authSecret": "ngc-api",
                        "profiles": [profile],
                        "storage": {"size": "20Gi"},
                    },
                },
            )

            def nimservice(name: str, **spec: Any) -> Obj:
                return {
                    "apiVersion": "nimop.dev/v1alpha1",
                    "kind": "NimService",
                    "metadata": {"name": name},
                    "spec": {
                        "image": {"repository": IMAGE, "tag": tag},
                        "model": "meta/llama-3.1-8b-instruct",
                        "env": [{"name": "NIM_MODEL_PROFILE", "value": profile}],
                        "probes": {"startup": {"periodSeconds": 1, "failureThreshold": 600}},
                        **spec,
                    },
                }

            cold = _timed(lab, "nimservice", "cold", nimservice("cold", authSecret="ngc-api"))
            warm_doc = nimservice("warm", cache={"nimCache": {"name": "llama", "profile": profile}})
            del warm_doc["spec"]["env"]
            warm = _timed(lab, "nimservice", "warm", warm_doc)
            return {
                "simulated model download (s)": download,
                "NimCache Job to Ready (s)": cache_seconds,
                "cold start, no cache: apply to Ready (s)": cold,
                "warm start, on the NimCache: apply to Ready (s)": warm,
                "cold / warm": cold / warm,
            }
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            lab.stop()
