"""The lab as a long-lived background service in a state directory (`make cluster-up`).

`serve` is the lab's one owning process: every component is its child and dies with it. `up`
and `down` only start and stop `serve`, so a lab is always exactly one process tree, which a
state directory's pid file names and whose members all mention that directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

from nimlab import procs
from nimlab.atomic import write_atomically
from nimlab.binaries import ensure_binaries
from nimlab.cluster import Cluster, LabError
from nimlab.control import ControlError, RunnerControl
from nimlab.karpenter import KarpenterConfig
from nimlab.nodes import Topology

MARKER = ".nimlab-state"
LOG = "lab.log"
UP_TIMEOUT = 180.0
DOWN_GRACE = 15.0


class StateError(RuntimeError):
    pass


def prepare(state_dir: Path) -> None:
    """Create the state directory, refusing to adopt one the lab did not create: it gets wiped."""
    state_dir.mkdir(parents=True, exist_ok=True)
    marker = state_dir / MARKER
    if not marker.exists() and any(state_dir.iterdir()):
        raise StateError(f"{state_dir} is not empty and not a nimlab state directory; refusing")
    marker.touch()


def wipe(state_dir: Path) -> None:
    for entry in state_dir.iterdir():
        if entry.name in (MARKER, LOG):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def serve_pid(state_dir: Path) -> int | None:
    """The pid of the state directory's live serve process, if there is one."""
    try:
        pid = int((state_dir / "pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not procs.alive(pid):
        return None
    return pid if procs.mentions(procs.cmdline(pid), state_dir) else None


def describe(state_dir: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads((state_dir / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    return doc


def apiserver_ready(state_dir: Path) -> bool:
    info = describe(state_dir)
    if info is None:
        return False
    try:
        config = yaml.safe_load(Path(info["kubeconfig"]).read_text())
        resp = httpx.get(
            f"{info['server']}/readyz",
            headers={"Authorization": f"Bearer {config['users'][0]['user']['token']}"},
            verify=ssl.create_default_context(
                cafile=config["clusters"][0]["cluster"]["certificate-authority"]
            ),
            timeout=3,
            trust_env=False,
        )
    except (OSError, KeyError, ValueError, httpx.HTTPError):
        return False
    return resp.status_code == 200


def nodes_summary(info: dict[str, Any]) -> str:
    lines = []
    for node in info.get("nodes", []):
        what = f"{node['gpus']} x {node['product']}" if node["gpus"] else "CPU only"
        lines.append(f"  {node['name']:<12} {node['ip']:<12} {what}")
    if karpenter := info.get("karpenter"):
        pools = ", ".join(karpenter["node_pools"])
        lines.append(
            f"  Karpenter NodePools {pools} (at zero nodes; nvidia.com/gpu limit "
            f"{karpenter['gpu_limit']}, consolidateAfter {karpenter['consolidate_after']})"
        )
    return "\n".join(lines)


# -- serve --------------------------------------------------------------------------------------


def serve(
    state_dir: Path,
    topology: Topology,
    runner_args: list[str],
    karpenter: KarpenterConfig | None = None,
) -> int:
    state_dir = state_dir.resolve()
    try:
        prepare(state_dir)
        if serve_pid(state_dir) is not None:
            raise StateError(f"a lab is already running in {state_dir}")
    except StateError as err:
        print(f"nimlab: {err}", file=sys.stderr)
        return 1
    wipe(state_dir)
    (state_dir / "pid").write_text(f"{os.getpid()}\n")
    stop = threading.Event()
    crashed: list[str] = []

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def request_stop(signum: int, _: FrameType | None) -> None:
        stop.set()

    def on_crash(component: str) -> None:
        crashed.append(component)
        stop.set()

    # Until the lab is up, a signal unwinds start(), which stops whatever already started.
    signal.signal(signal.SIGTERM, interrupt)
    cluster = Cluster(
        workdir=state_dir,
        bin_dir=ensure_binaries(),
        topology=topology,
        runner_args=runner_args,
        on_crash=on_crash,
        karpenter=karpenter,
    )
    started = time.monotonic()
    try:
        cluster.start()
    except (LabError, KeyboardInterrupt) as err:
        print(f"nimlab: the lab did not start: {err}", file=sys.stderr)
        (state_dir / "pid").unlink(missing_ok=True)
        return 1
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    info = cluster.describe() | {
        "serve_pid": os.getpid(),
        "startup_seconds": round(time.monotonic() - started, 2),
    }
    write_atomically(state_dir / "lab.json", json.dumps(info, indent=2) + "\n")
    print(
        f"nimlab: lab ready in {info['startup_seconds']}s; KUBECONFIG={cluster.kubeconfig}",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    if crashed:
        print(f"nimlab: {crashed[0]} exited; lab stopped", file=sys.stderr, flush=True)
    cluster.stop()
    (state_dir / "lab.json").unlink(missing_ok=True)
    (state_dir / "pid").unlink(missing_ok=True)
    print("nimlab: lab stopped", flush=True)
    return 1 if crashed else 0


# -- up / down ----------------------------------------------------------------------------------


def up(state_dir: Path, serve_args: list[str]) -> int:
    state_dir = state_dir.resolve()
    try:
        prepare(state_dir)
    except StateError as err:
        print(f"nimlab: {err}", file=sys.stderr)
        return 1
    pid = serve_pid(state_dir)
    if pid is not None and describe(state_dir) is not None:
        if apiserver_ready(state_dir):
            print("lab already running")
            print(state_dir / "kubeconfig")
            return 0
        print("nimlab: the running lab does not answer; restarting it", file=sys.stderr)
        down(state_dir, quiet=True)
        pid = None
    if pid is None:
        (state_dir / "lab.json").unlink(missing_ok=True)
        with (state_dir / LOG).open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nimlab",
                    "serve",
                    "--state-dir",
                    str(state_dir),
                    *serve_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid = proc.pid
    return _await_ready(state_dir, pid)


def _await_ready(state_dir: Path, pid: int) -> int:
    deadline = time.monotonic() + UP_TIMEOUT
    while (info := describe(state_dir)) is None:
        if not procs.alive(pid) or time.monotonic() > deadline:
            tail = "\n".join(_read_log(state_dir).splitlines()[-30:])
            print(f"nimlab: the lab failed to start; {state_dir / LOG}:\n{tail}", file=sys.stderr)
            if procs.alive(pid):
                down(state_dir, quiet=True)
            return 1
        time.sleep(0.1)
    print(info["kubeconfig"])
    print(f"lab up in {info['startup_seconds']}s (server {info['server']})")
    print(nodes_summary(info))
    return 0


def _read_log(state_dir: Path) -> str:
    try:
        return (state_dir / LOG).read_text(errors="replace")
    except OSError:
        return ""


def down(state_dir: Path, quiet: bool = False) -> int:
    state_dir = state_dir.resolve()
    if not state_dir.is_dir():
        if not quiet:
            print("no lab is running")
        return 0
    pid = serve_pid(state_dir)
    members = set(procs.lab_processes(state_dir))
    if pid is not None:
        members.add(pid)
        procs.signal_all({pid}, signal.SIGTERM)
    else:
        procs.signal_all(members, signal.SIGTERM)
    if not members:
        if not quiet:
            print("no lab is running")
        return 0
    left = procs.wait_gone(members | set(procs.lab_processes(state_dir)), DOWN_GRACE)
    if left:
        procs.signal_all(left, signal.SIGKILL)
        procs.wait_gone(left, 5.0)
    if not quiet:
        print("lab stopped")
    return 0


# -- queries ------------------------------------------------------------------------------------


def kubeconfig(state_dir: Path) -> int:
    state_dir = state_dir.resolve()
    if serve_pid(state_dir) is None or describe(state_dir) is None:
        print(f"no lab is running in {state_dir}: run `make cluster-up`", file=sys.stderr)
        return 1
    print(state_dir / "kubeconfig")
    return 0


def endpoint(state_dir: Path, target: str, port: str | None) -> int:
    namespace, sep, name = target.partition("/")
    if not sep or not name:
        print("nimlab: expected NAMESPACE/SERVICE", file=sys.stderr)
        return 2
    info = describe(state_dir.resolve())
    if info is None or serve_pid(state_dir.resolve()) is None:
        print(f"no lab is running in {state_dir}: run `make cluster-up`", file=sys.stderr)
        return 1
    wanted: int | str | None = int(port) if port and port.isdigit() else port
    try:
        print(RunnerControl(info["runner"]).service_url(namespace, name, wanted))
    except (ControlError, httpx.HTTPError) as err:
        print(f"nimlab: {err}", file=sys.stderr)
        return 1
    return 0
