"""`make demo`: the whole path a user takes, on the local lab, left running.

Start (or reuse) the lab, install the CRDs, start the operator, create the NGC Secrets the
example references (dummy values: the simulator downloads nothing), apply the llama example, wait
for Ready, show `kubectl get nims`, answer one chat completion through the Service's endpoint with
the request from the NIM API reference, and run `kubectl nim check` against it. `make down` stops
all of it: every process the demo starts names the lab's state directory on its command line,
which is how `nimlab down` finds them.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from nimlab import daemon, procs
from nimlab.binaries import ensure_binaries, repo_root
from nimlab.cluster import LabError, crd_names, free_port, wait_established
from nimlab.control import RunnerControl

EXAMPLE = "examples/llama-3.1-8b-instruct.yaml"
NAMESPACE = "default"
OPERATOR_LOG = "operator.log"
CHAT = {
    "model": "meta/llama-3.1-8b-instruct",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 50,
}


class DemoError(RuntimeError):
    pass


def _kubectl(bin_dir: Path, kubeconfig: Path, *args: str, input: str | None = None) -> str:
    out = subprocess.run(
        [str(bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def _operator_running(state_dir: Path) -> bool:
    return any(
        "nimop" in argv and "run" in argv for argv in procs.lab_processes(state_dir).values()
    )


def _start_operator(state_dir: Path, kubeconfig: Path) -> None:
    if _operator_running(state_dir):
        print("operator already running")
        return
    env = {
        **os.environ,
        "NIMOP_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "NIMOP_PROBE_INTERVAL_FAST": "2",
        "NIMOP_PROBE_INTERVAL_STEADY": "10",
    }
    with (state_dir / OPERATOR_LOG).open("ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "nimop", "run", "--kubeconfig", str(kubeconfig)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"operator started (log: {state_dir / OPERATOR_LOG})")


def _secrets(bin_dir: Path, kubeconfig: Path) -> None:
    existing = _kubectl(bin_dir, kubeconfig, "get", "secrets", "-n", NAMESPACE, "-o", "name")
    if "secret/ngc-api" not in existing:
        _kubectl(
            bin_dir,
            kubeconfig,
            "create",
            "secret",
            "generic",
            "ngc-api",
            "-n",
            NAMESPACE,
            "--from-literal=NGC_API_KEY=nvapi-demo-not-a-real-key",
        )
    if "secret/ngc-secret" not in existing:
        _kubectl(
            bin_dir,
            kubeconfig,
            "create",
            "secret",
            "docker-registry",
            "ngc-secret",
            "-n",
            NAMESPACE,
            "--docker-server=nvcr.io",
            "--docker-username=$oauthtoken",
            "--docker-password=nvapi-demo-not-a-real-key",
        )


def _wait_ready(bin_dir: Path, kubeconfig: Path, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obj = json.loads(
            _kubectl(bin_dir, kubeconfig, "get", "nimservice", name, "-n", NAMESPACE, "-o", "json")
        )
        status = obj.get("status", {})
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        if ready:
            line = f"  Ready={ready['status']} {ready['reason']}: {ready['message']}"
            if line != last:
                print(line)
                last = line
            current = status.get("observedGeneration") == obj["metadata"]["generation"]
            if ready["status"] == "True" and current:
                result: dict[str, Any] = obj
                return result
        time.sleep(1)
    raise DemoError(f"{name} did not become Ready within {timeout:.0f}s")


def _check(kubeconfig: Path, name: str, url: str) -> None:
    """`kubectl nim check`: every request of the NIM API reference, with its verdict."""
    print(f"\n$ kubectl nim check {name} --endpoint {url}")
    result = subprocess.run(
        [sys.executable, "-m", "nimcheck", "check", name, "-n", NAMESPACE, "--endpoint", url],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"kubectl nim check failed (exit {result.returncode})")


def run(state_dir: Path, timeout: float = 240.0) -> int:
    state_dir = state_dir.resolve()
    started = time.monotonic()
    try:
        bin_dir = ensure_binaries()
        if daemon.up(state_dir, []) != 0:
            return 1
        kubeconfig = state_dir / "kubeconfig"
        root = repo_root()
        crds = root / "crds"
        _kubectl(bin_dir, kubeconfig, "apply", "--server-side", "-k", str(crds))
        wait_established(functools.partial(_kubectl, bin_dir, kubeconfig), crd_names(crds))
        _start_operator(state_dir, kubeconfig)
        _secrets(bin_dir, kubeconfig)
        print(f"\n$ kubectl apply -f {EXAMPLE}")
        print(_kubectl(bin_dir, kubeconfig, "apply", "-n", NAMESPACE, "-f", str(root / EXAMPLE)))
        name = "llama-3-1-8b-instruct"
        nim = _wait_ready(bin_dir, kubeconfig, name, timeout)
        print("\n$ kubectl get nims")
        print(_kubectl(bin_dir, kubeconfig, "get", "nims", "-n", NAMESPACE))
        info = daemon.describe(state_dir) or {}
        control = RunnerControl(str(info.get("runner", "")))
        service = nim["status"]["endpoint"].split("//", 1)[1].split(".", 1)[0]
        url = control.service_url(NAMESPACE, service)
        if url is None:
            raise DemoError(f"the lab proxy has no address for Service {service}")
        print(f"# {nim['status']['endpoint']} is reachable on this machine at {url}")
        print(f"$ curl -X POST {url}/v1/chat/completions -H 'Content-Type: application/json' \\")
        print(f"    -d '{json.dumps(CHAT)}'")
        resp = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30, trust_env=False)
        resp.raise_for_status()
        print(json.dumps(resp.json(), indent=2))
        _check(kubeconfig, name, url)
    except (DemoError, LabError, daemon.StateError, httpx.HTTPError, OSError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    print(
        f"\nDemo ready in {time.monotonic() - started:.0f}s. Everything keeps running:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  export NIM_ENDPOINT={url}\n"
        f"  kubectl get nims,deploy,pods -o wide\n"
        f"  curl $NIM_ENDPOINT/v1/models\n"
        f"  kubectl nim check {name} --endpoint $NIM_ENDPOINT\n"
        "Stop it all with: make down"
    )
    return 0
