"""Starting and stopping whole labs: the CLI, and no orphan processes however a lab ends.

Each test starts its own small lab in a subprocess (that is what is under test) and checks /proc
for any process that still names the lab's directory on its command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimlab import procs
from nimlab.testing import wait_for

NIMLAB = [sys.executable, "-m", "nimlab"]
SMALL = ["--gpu-nodes", "1", "--cpu-nodes", "0", "--time-scale", "0.2"]


def nimlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NIMLAB, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "lab"
    yield path
    leftovers = procs.lab_processes(path)
    if leftovers:  # a failed test must not leak a lab into the rest of the session
        procs.signal_all(set(leftovers), signal.SIGKILL)


def no_processes_left(path: Path) -> bool:
    return not procs.lab_processes(path)


def start_serve(path: Path) -> subprocess.Popen[bytes]:
    output = path.with_name("serve.out")
    log = output.open("wb")
    proc = subprocess.Popen(
        [*NIMLAB, "serve", "--state-dir", str(path), *SMALL],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(output.read_text())
        return (path / "lab.json").exists()

    try:
        wait_for("lab.json", ready, timeout=60)
    except BaseException:
        proc.kill()
        raise
    assert len(procs.lab_processes(path)) >= 7  # serve, 5 components, the runner
    return proc


@pytest.mark.parametrize("how", ["sigint", "sigkill", "apiserver-dies"])
def test_no_orphans_however_the_lab_ends(state_dir: Path, how: str) -> None:
    proc = start_serve(state_dir)
    info = json.loads((state_dir / "lab.json").read_text())
    assert info["serve_pid"] == proc.pid
    assert int((state_dir / "pid").read_text()) == proc.pid
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not (state_dir / "pid").exists()
    elif how == "sigkill":
        proc.kill()
        proc.wait(10)
    else:
        os.kill(info["pids"]["kube-apiserver"], signal.SIGKILL)
        assert proc.wait(30) != 0
        assert "kube-apiserver exited" in state_dir.with_name("serve.out").read_text()
    wait_for("every lab process gone", lambda: no_processes_left(state_dir), timeout=10)


def test_up_down_and_friends(state_dir: Path, lab_bin: Path) -> None:
    try:
        first = nimlab("up", "--state-dir", str(state_dir), *SMALL)
        assert first.returncode == 0, first.stderr
        kubeconfig = state_dir / "kubeconfig"
        assert str(kubeconfig) in first.stdout
        assert "gpu-node-0" in first.stdout

        again = nimlab("up", "--state-dir", str(state_dir), *SMALL)
        assert again.returncode == 0
        assert again.stdout.splitlines() == ["lab already running", str(kubeconfig)]

        printed = nimlab("kubeconfig", "--state-dir", str(state_dir))
        assert printed.stdout.strip() == str(kubeconfig)

        kubectl = [str(lab_bin / "kubectl"), "--kubeconfig", str(kubeconfig)]
        subprocess.run(
            [*kubectl, "create", "service", "clusterip", "web", "--tcp=8000:8000"], check=True
        )
        url = wait_for(
            "endpoint",
            lambda: nimlab("endpoint", "default/web", "--state-dir", str(state_dir)).stdout,
        )
        assert url.startswith("http://127.2.")
        assert url.strip().endswith(":8000")
    finally:
        down = nimlab("down", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert down.stdout.strip() == "lab stopped"
    assert no_processes_left(state_dir)
    gone = nimlab("kubeconfig", "--state-dir", str(state_dir))
    assert gone.returncode == 1
    assert "no lab is running" in gone.stderr
    assert nimlab("down", "--state-dir", str(state_dir)).stdout.strip() == "no lab is running"


@pytest.fixture(scope="module")
def lab_bin() -> Path:
    from nimlab.binaries import ensure_binaries

    return ensure_binaries()
