"""`python -m bench runner`: what the lab's pod runner costs per pod, at a thousand pods.

N bare Deployments (BENCH_RUNNER_PODS, default 1000) of one 1-GPU pod each, on a lab of its
own with 8-GPU kwok nodes, shaped like the pods the operator renders: a NIM simulator with
startup, readiness and liveness probes on the NIM health endpoints, the NGC key from a Secret,
a model cache emptyDir (so each pod downloads, then loads for 1 s). Printed: time from the
first create to all Available, the runner's CPU and RSS while converging and at rest (also per
pod), CPU-seconds per pod start, and status writes per pod (from the runner's control API).

BENCH_RUNNER_PREVIOUS=<dir> names an `operator/` source tree holding an earlier runner (a copy
or a `git worktree` of an earlier commit); the same run is then repeated with that runner (its
modules first on PYTHONPATH), on a fresh lab, and printed beside it with a "previous:" prefix.
BENCH_RUNNER_TIMEOUT bounds each convergence (default 900 s; a runner that stalls is reported
with how many Deployments were Available by then), BENCH_RUNNER_REST the rest window (60 s).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nimlab import nodes
from nimlab.binaries import ensure_binaries
from nimlab.cluster import Cluster
from nimlab.control import ControlError, RunnerControl

NAMESPACE = "bench-runner"
IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3-load-1s"
CREATE_CONCURRENCY = 16
POLL_SECONDS = 1.0
SETTLE_SECONDS = 20.0  # after all Available, before the rest window
IDLE_SECONDS = 10.0  # the runner alone on the lab, before any pod


def deployment(i: int) -> dict[str, Any]:
    name = f"nim-{i:04d}"
    labels = {"app": name}

    def probe(path: str, period: int, failures: int = 3) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "api"},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    container = {
        "name": "nim",
        "image": IMAGE,
        "ports": [{"name": "api", "containerPort": 8000}],
        "env": [
            {
                "name": "NGC_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "ngc-api", "key": "NGC_API_KEY"}},
            },
            {"name": "NIM_CACHE_PATH", "value": "/opt/nim/.cache"},
        ],
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        "startupProbe": probe("/v1/health/ready", 2, 180),
        "readinessProbe": probe("/v1/health/ready", 5),
        "livenessProbe": probe("/v1/health/live", 10),
        "volumeMounts": [{"name": "model-cache", "mountPath": "/opt/nim/.cache"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 0,
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [container],
                    "volumes": [{"name": "model-cache", "emptyDir": {}}],
                },
            },
        },
    }


@dataclass
class Sample:
    rss_mib: float
    cpu_seconds: float
    at: float


def sample(pid: int) -> Sample:
    """RSS and user+system CPU of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return Sample(rss, cpu, time.monotonic())


def core_percent(before: Sample, after: Sample) -> float:
    return 100 * (after.cpu_seconds - before.cpu_seconds) / max(1e-9, after.at - before.at)


@contextmanager
def runner_modules(source: Path | None) -> Iterator[None]:
    """Make the lab start the runner from `source` (an operator/ tree), if given."""
    if source is None:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), before) if p)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def available(api: httpx.Client) -> int:
    listing = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments").json()
    return sum(
        any(
            c.get("type") == "Available" and c.get("status") == "True"
            for c in (d.get("status") or {}).get("conditions") or []
        )
        for d in listing.get("items") or []
    )


def status_writes(control: RunnerControl) -> float:
    """Status writes so far, from the runner; NaN when a saturated runner cannot answer."""
    try:
        return float(sum(p.status_writes for p in control.pods() if p.namespace == NAMESPACE))
    except (ControlError, httpx.HTTPError) as err:
        print(f"  (the runner's control API did not answer: {err})", file=sys.stderr)
        return math.nan


def measure(count: int, source: Path | None, timeout: float, rest: float) -> dict[str, float]:
    bin_dir = ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="nimop-bench-runner-") as tmp:
        lab = Cluster(
            workdir=Path(tmp) / "lab",
            bin_dir=bin_dir,
            topology=nodes.Topology.default(gpu_nodes=math.ceil(count / 8), cpu_nodes=0),
        )
        with runner_modules(source):
            lab.start(timeout=300)
        try:
            return _run(lab, count, timeout, rest)
        finally:
            lab.stop()


def _run(lab: Cluster, count: int, timeout: float, rest: float) -> dict[str, float]:
    pid = int(lab.describe()["pids"]["pod-runner"])
    control = RunnerControl(lab.runner_control, timeout=120)
    with lab.api() as api:
        api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}).raise_for_status()
        secret = {"metadata": {"name": "ngc-api"}, "stringData": {"NGC_API_KEY": "nvapi-bench"}}
        api.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=secret).raise_for_status()
        account = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"
        while api.get(account).status_code != 200:  # pods need it; the controller makes it
            time.sleep(0.1)
        time.sleep(IDLE_SECONDS / 2)
        idle_start = sample(pid)
        time.sleep(IDLE_SECONDS)
        idle = sample(pid)

        def create(i: int) -> None:
            path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
            api.post(path, json=deployment(i)).raise_for_status()

        created = sample(pid)
        with ThreadPoolExecutor(CREATE_CONCURRENCY) as pool:
            list(pool.map(create, range(count)))
        peak_rss = created.rss_mib
        done = 0
        while time.monotonic() - created.at < timeout:
            done = available(api)
            peak_rss = max(peak_rss, sample(pid).rss_mib)
            if done == count:
                break
            time.sleep(POLL_SECONDS)
        converged = sample(pid)
        writes_converging = status_writes(control)
        time.sleep(SETTLE_SECONDS)
        rest_start = sample(pid)
        writes_before = status_writes(control)
        time.sleep(rest)
        rest_end = sample(pid)
        writes_at_rest = status_writes(control) - writes_before
        try:
            stats = control.stats()
        except (ControlError, httpx.HTTPError):  # an earlier runner has no /stats
            stats = {}

    converge = converged.at - created.at
    cpu_converging = converged.cpu_seconds - created.cpu_seconds
    rest_percent = core_percent(rest_start, rest_end)
    results = {
        "pods (1 GPU each, 8-GPU nodes)": float(count),
        "all Available after the first create (s)": converge if done == count else math.inf,
        "Deployments Available at the end": float(done),
        "runner CPU while converging (% of one core)": 100 * cpu_converging / converge,
        "runner CPU-seconds per pod start (create to Available)": cpu_converging / count,
        "runner RSS before any pod (MiB)": idle.rss_mib,
        "runner RSS peak while converging (MiB)": peak_rss,
        "runner RSS at rest (MiB)": rest_end.rss_mib,
        "runner RSS per pod at rest (KiB)": 1024 * (rest_end.rss_mib - idle.rss_mib) / count,
        "runner CPU before any pod (% of one core)": core_percent(idle_start, idle),
        "runner CPU at rest (% of one core)": rest_percent,
        "runner CPU at rest per pod (ms per minute)": 600 * rest_percent / count,
        "status writes per pod, converging": writes_converging / count,
        "status writes per pod-minute at rest": writes_at_rest / count / (rest / 60),
    }
    if stats:
        results["status write retries"] = float(stats.get("statusWriteRetries", 0))
        results["probes sent over the network (all)"] = float(stats.get("networkProbes", 0))
        results["derived-probe timers pending at rest"] = float(stats.get("probeTimers", 0))
    return results


def _setting(name: str, default: str, minimum: float) -> float:
    text = os.environ.get(name, default)
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"{name}={text!r}: not a number") from None
    if not value >= minimum:
        raise SystemExit(f"{name}={text!r}: must be at least {minimum:g}")
    return value


def run() -> dict[str, float]:
    count = int(_setting("BENCH_RUNNER_PODS", "1000", 1))
    timeout = _setting("BENCH_RUNNER_TIMEOUT", "900", 1)
    rest = _setting("BENCH_RUNNER_REST", "60", 1)
    results = measure(count, None, timeout, rest)
    previous = os.environ.get("BENCH_RUNNER_PREVIOUS")
    if previous:
        # Shown now too: the earlier runner may take the better part of an hour.
        for key, value in results.items():
            print(f"  {key:<56} {value:10.3f}", file=sys.stderr)
        source = Path(previous).resolve()
        if not (source / "nimlab" / "runner.py").is_file():
            raise SystemExit(
                f"BENCH_RUNNER_PREVIOUS={previous}: no nimlab/runner.py there "
                "(name the operator/ directory of an earlier tree)"
            )
        before = measure(count, source, timeout, rest)
        results |= {f"previous: {key}": value for key, value in before.items()}
    return results
