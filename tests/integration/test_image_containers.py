"""Containers that run for real under runc in the lab: a NIM image's own commands in the
simulator image, with the kubelet's users, volume permissions, exit codes and messages
(nimlab.imageruntime). `make test` builds the images first (`make image`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nimlab.control import RunnerControl
from nimlab.testing import GPU_TOLERATION, NIM_IMAGE, pod, wait_for

IMAGE = f"{NIM_IMAGE}:1.3.3"


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["/bin/sh", "-ec", script], **extra}


def terminated(core: Any, namespace: str, name: str) -> Any:
    status = core.read_namespaced_pod_status(name, namespace).status
    statuses = status.container_statuses or []
    state = statuses[0].state if statuses else None
    return state.terminated if state is not None and state.terminated else None


def claim(core: Any, namespace: str, name: str) -> Path:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )

    def bound() -> Any:
        found = core.read_namespaced_persistent_volume_claim(name, namespace)
        return found.spec.volume_name if found.status.phase == "Bound" else None

    volume = wait_for(f"claim {name} bound", bound)
    return Path(core.read_persistent_volume(volume).spec.host_path.path)


def test_a_nim_images_script_runs_in_a_real_shell_with_the_pods_user_and_fs_group(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    """The NimCache Job's shape: a POSIX script with pipes and command substitution, NIM's
    utility on PATH, a claim owned through fsGroup, a JSON report in /dev/termination-log."""
    directory = claim(core, namespace, "cache")
    script = """
    list-model-profiles > /tmp/list
    grep -c '^ *- [0-9a-f]\\{64\\}' /tmp/list > /tmp/count
    download-to-cache > /tmp/download.log 2>&1
    echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
    printf '{"profiles":%s,"bytes":%s,"group":"%s"}\\n' "$(cat /tmp/count)" \\
      "$(du -sb "$NIM_CACHE_PATH" | cut -f1)" "$(stat -c %g "$NIM_CACHE_PATH")" \\
      > /dev/termination-log
    """
    container = shell(
        "fill",
        script,
        env=[
            {"name": "NGC_API_KEY", "value": "nvapi-lab-test"},
            {"name": "NIM_CACHE_PATH", "value": "/opt/nim/.cache"},
        ],
        volumeMounts=[
            {"name": "cache", "mountPath": "/opt/nim/.cache"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        securityContext={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    )
    spec = {
        "restartPolicy": "Never",
        "tolerations": [GPU_TOLERATION],
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 2000,
            "runAsNonRoot": True,
        },
        "containers": [container],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    core.create_namespaced_pod(namespace, pod("fill", spec))
    done = wait_for("fill terminated", lambda: terminated(core, namespace, "fill"), timeout=120)
    log = control.log(namespace, "fill")
    assert done.exit_code == 0, log
    assert "uid=1000 gid=1000 groups=1000 2000" in log
    report = json.loads(done.message)
    assert report["profiles"] > 0
    assert report["bytes"] > 0
    assert report["group"] == "2000"  # the claim's root, chgrp'd to the fsGroup, setgid
    written = [p for p in directory.rglob("*") if p.is_file()]
    assert written
    assert {p.stat().st_uid for p in written} == {1000}
    assert {p.stat().st_gid for p in written} == {2000}  # setgid directories pass it on
    info = control.pod(namespace, "fill")
    assert info is not None
    assert info.containers[0].runs == "sh in the simulator image"


def test_a_command_the_image_lacks_fails_to_start_with_the_runtimes_reason(
    namespace: str, core: Any
) -> None:
    container = {"name": "main", "image": IMAGE, "command": ["no-such-tool", "--all"]}
    spec = {"restartPolicy": "Never", "tolerations": [GPU_TOLERATION], "containers": [container]}
    core.create_namespaced_pod(namespace, pod("missing", spec))
    done = wait_for("terminated", lambda: terminated(core, namespace, "missing"), timeout=60)
    assert done.exit_code == 128
    assert 'exec: "no-such-tool": executable file not found in $PATH' in done.message


def test_run_as_non_root_refuses_a_root_user(namespace: str, core: Any) -> None:
    container = shell("main", "id -u", securityContext={"runAsUser": 0, "runAsNonRoot": True})
    spec = {"restartPolicy": "Never", "tolerations": [GPU_TOLERATION], "containers": [container]}
    core.create_namespaced_pod(namespace, pod("root", spec))
    done = wait_for("terminated", lambda: terminated(core, namespace, "root"), timeout=60)
    assert done.exit_code == 128
    assert "container's runAsUser breaks non-root policy" in done.message


def test_exec_runs_in_the_running_container(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    container = shell(
        "idle",
        "echo started; exec sleep 300",
        securityContext={"readOnlyRootFilesystem": True, "runAsUser": 4321},
    )
    spec = {"tolerations": [GPU_TOLERATION], "terminationGracePeriodSeconds": 1}
    core.create_namespaced_pod(namespace, pod("idle", {**spec, "containers": [container]}))
    wait_for("started", lambda: "started" in control.log(namespace, "idle"), timeout=60)
    result = control.exec(namespace, "idle", ["sh", "-c", "id -u; touch /x 2>&1; hostname"])
    lines = result.stdout.splitlines()
    assert lines[0] == "4321"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "idle"
    hosts = control.exec(namespace, "idle", ["cat", "/etc/hosts"]).stdout
    assert "kubernetes.default.svc" in hosts
    assert control.exec(namespace, "idle", ["false"]).exit_code == 1
