"""Volumes on the lab's nodes: real directories the simulated containers read and write."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx

from nimlab.control import RunnerControl
from nimlab.testing import GPU_TOLERATION, NIM_IMAGE, nim_container, pod, wait_for

BASE_MODEL = "meta/llama-3.1-8b-instruct"


def script_container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"{NIM_IMAGE}:1.3.3",
        "command": ["sh", "-c", script],
        **extra,
    }


def pod_body(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"tolerations": [GPU_TOLERATION], "containers": list(containers), **spec}


def phase(core: Any, namespace: str, name: str) -> str:
    return str(core.read_namespaced_pod_status(name, namespace).status.phase)


def succeeded(core: Any, namespace: str, name: str) -> Any:
    return lambda: phase(core, namespace, name) == "Succeeded"


def host_path(control: RunnerControl, namespace: str, name: str, mount: str) -> Path:
    """Where a running container's mount lives on this machine, as the runner reports it."""
    raw = httpx.get(f"{control.url}/pods", trust_env=False).json()
    for item in raw:
        if (item["namespace"], item["name"]) == (namespace, name):
            for container in item["containers"]:
                for entry in container["mounts"]:
                    if entry["path"] == mount:
                        return Path(entry["hostPath"])
    raise AssertionError(f"{namespace}/{name} has no mount at {mount}")


def warnings(core: Any, namespace: str, name: str) -> list[tuple[str, str]]:
    events = core.list_namespaced_event(namespace).items
    return [
        (e.reason, e.message)
        for e in events
        if e.involved_object.name == name and e.type == "Warning"
    ]


def test_config_map_files_are_what_the_simulator_reads(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    adapter = '{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}'
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "loras"}, "data": {"sql": adapter, "unused": "x"}},
    )
    container = nim_container("1.3.3-load-0s")
    container["env"].append({"name": "NIM_PEFT_SOURCE", "value": "/loras"})
    container["volumeMounts"] = [{"name": "loras", "mountPath": "/loras"}]
    items = [{"key": "sql", "path": "llama-sql-lora/adapter_config.json", "mode": 0o400}]
    volumes = [{"name": "loras", "configMap": {"name": "loras", "items": items}}]
    core.create_namespaced_pod(namespace, pod("lora", pod_body(container, volumes=volumes)))

    url = wait_for(
        "simulator", lambda: (p := control.pod(namespace, "lora")) and p.containers[0].url
    )
    models = httpx.get(f"{url}/v1/models", trust_env=False).json()["data"]
    by_id = {m["id"]: m for m in models}
    assert set(by_id) == {BASE_MODEL, "llama-sql-lora"}
    assert by_id["llama-sql-lora"]["parent"] == BASE_MODEL

    files = host_path(control, namespace, "lora", "/loras")
    config = files / "llama-sql-lora" / "adapter_config.json"
    assert config.read_text() == adapter
    assert stat.S_IMODE(config.stat().st_mode) == 0o400
    assert sorted(p.name for p in files.iterdir()) == ["llama-sql-lora"]  # items pick keys


def test_secret_volumes_and_env_carry_the_real_values(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "ngc"}, "stringData": {"NGC_API_KEY": "nvapi-real-1"}}
    )
    env = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "ngc", "key": "NGC_API_KEY"}}}]
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    script = f'cat /etc/ngc/NGC_API_KEY; echo; echo "$KEY"; cat {account}/namespace'
    container = script_container(
        "show",
        script,
        env=env,
        volumeMounts=[{"name": "ngc", "mountPath": "/etc/ngc", "readOnly": True}],
    )
    body = pod_body(
        container,
        restartPolicy="Never",
        volumes=[{"name": "ngc", "secret": {"secretName": "ngc", "defaultMode": 0o440}}],
        # Mode 0440 files are root's: the image's user reads them through the fsGroup.
        securityContext={"fsGroup": 1000},
    )
    core.create_namespaced_pod(namespace, pod("show", body))
    wait_for("Succeeded", lambda: phase(core, namespace, "show") == "Succeeded")
    assert control.log(namespace, "show").splitlines() == [
        "nvapi-real-1",
        "nvapi-real-1",
        namespace,
    ]


def test_a_missing_config_map_holds_the_pod_until_it_exists(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    container = script_container(
        "reader", "cat /etc/nim/model", volumeMounts=[{"name": "cfg", "mountPath": "/etc/nim"}]
    )
    volumes = [{"name": "cfg", "configMap": {"name": "nim-config"}}]
    core.create_namespaced_pod(
        namespace, pod("waits", pod_body(container, restartPolicy="Never", volumes=volumes))
    )
    expected = (
        "FailedMount",
        'MountVolume.SetUp failed for volume "cfg" : configmap "nim-config" not found',
    )
    wait_for("FailedMount event", lambda: expected in warnings(core, namespace, "waits"))
    status = core.read_namespaced_pod_status("waits", namespace).status
    assert status.phase == "Pending"
    assert status.container_statuses[0].state.waiting.reason == "ContainerCreating"

    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "nim-config"}, "data": {"model": "acme/custom-llm"}}
    )
    wait_for("Succeeded", lambda: phase(core, namespace, "waits") == "Succeeded", timeout=60)
    assert control.log(namespace, "waits") == "acme/custom-llm\n"


def test_empty_dirs_are_per_pod_survive_restarts_and_go_with_the_pod(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    # Fails once, leaving a marker; the restarted container finds it and succeeds.
    script = (
        "test -f /scratch/marker && cat /scratch/marker && exit 0; "
        'echo "written by $POD" > /scratch/marker; exit 1'
    )
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    for name in ("first", "second"):
        container = script_container(
            "work", script, env=env, volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}]
        )
        body = pod_body(
            container, restartPolicy="OnFailure", volumes=[{"name": "scratch", "emptyDir": {}}]
        )
        core.create_namespaced_pod(namespace, pod(name, body))
    for name in ("first", "second"):
        wait_for(f"{name} Succeeded", succeeded(core, namespace, name), timeout=60)
        status = core.read_namespaced_pod_status(name, namespace).status.container_statuses[0]
        assert status.restart_count == 1
        assert control.log(namespace, name) == f"written by {name}\n"  # its own, not the other's

    directory = host_path(control, namespace, "first", "/scratch")
    assert directory.is_dir()
    assert "kubernetes.io~empty-dir" in directory.parts
    core.delete_namespaced_pod("first", namespace)
    wait_for("emptyDir removed with its pod", lambda: not directory.exists())


def test_sub_paths_and_read_only_mounts_map_into_the_claim(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "shared"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    writer = script_container(
        "writer",
        "mkdir -p /data/out && echo hello > /data/out/greeting",
        volumeMounts=[{"name": "shared", "mountPath": "/data", "subPath": "models/llama"}],
    )
    reader = script_container(
        "reader",
        "cat /in/out/greeting",
        volumeMounts=[
            {"name": "shared", "mountPath": "/in", "subPath": "models/llama", "readOnly": True}
        ],
    )
    volumes = [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}]
    core.create_namespaced_pod(
        namespace,
        pod(
            "pipeline",
            pod_body(reader, initContainers=[writer], restartPolicy="Never", volumes=volumes),
        ),
    )
    wait_for("Succeeded", lambda: phase(core, namespace, "pipeline") == "Succeeded")
    assert control.log(namespace, "pipeline", container="reader") == "hello\n"

    bound = core.read_namespaced_persistent_volume_claim("shared", namespace)
    root = Path(core.read_persistent_volume(bound.spec.volume_name).spec.host_path.path)
    assert (root / "models" / "llama" / "out" / "greeting").read_text() == "hello\n"
    raw = httpx.get(f"{control.url}/pods", trust_env=False).json()
    (entry,) = [p for p in raw if (p["namespace"], p["name"]) == (namespace, "pipeline")]
    mounts = {m["path"]: m for m in entry["containers"][0]["mounts"]}
    assert mounts["/in"]["readOnly"] is True
    assert mounts["/in"]["hostPath"] == str(root / "models" / "llama")


def test_a_read_write_once_claim_attaches_to_one_node_at_a_time(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "rwo"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "rwo"}}]
    mounts = [{"name": "data", "mountPath": "/data"}]

    def on(node: str, name: str) -> None:
        container = nim_container("1.3.3-load-0s", gpus=0)
        container["volumeMounts"] = mounts
        body = pod_body(container, volumes=volumes, nodeSelector={"kubernetes.io/hostname": node})
        core.create_namespaced_pod(namespace, pod(name, body))

    def ready(name: str) -> bool:
        status = core.read_namespaced_pod_status(name, namespace).status
        return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])

    on("gpu-node-0", "holder")
    wait_for("holder Ready", lambda: ready("holder"))
    on("gpu-node-0", "neighbour")  # the same node shares the attachment
    on("gpu-node-1", "elsewhere")
    wait_for("neighbour Ready", lambda: ready("neighbour"))

    def multi_attach() -> list[str]:
        return [m for r, m in warnings(core, namespace, "elsewhere") if r == "FailedAttachVolume"]

    (message,) = wait_for("Multi-Attach error", multi_attach)
    assert message.startswith('Multi-Attach error for volume "pvc-')
    assert message.endswith("Volume is already used by pod(s) holder, neighbour")
    status = core.read_namespaced_pod_status("elsewhere", namespace).status
    assert status.container_statuses[0].state.waiting.reason == "ContainerCreating"

    core.delete_namespaced_pod("holder", namespace)
    core.delete_namespaced_pod("neighbour", namespace)
    wait_for("attached to the other node once free", lambda: ready("elsewhere"), timeout=60)


def test_every_pod_gets_its_service_account_token(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    container = script_container("idle", "sleep 30")
    core.create_namespaced_pod(namespace, pod("token", pod_body(container)))
    wait_for("running", lambda: phase(core, namespace, "token") == "Running")
    directory = host_path(
        control, namespace, "token", "/var/run/secrets/kubernetes.io/serviceaccount"
    )
    token = (directory / "token").read_text()
    assert token.count(".") == 2  # a JWT from the TokenRequest API
    assert (directory / "namespace").read_text() == namespace
    assert (directory / "ca.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert os.access(directory / "token", os.R_OK)


def test_a_nim_on_an_empty_read_only_cache_fails_as_a_real_one_does(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "empty"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    container = nim_container("1.3.3-load-0s")
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["volumeMounts"] = [
        {"name": "cache", "mountPath": "/opt/nim/.cache", "readOnly": True}
    ]
    volumes = [{"name": "cache", "persistentVolumeClaim": {"claimName": "empty"}}]
    body = pod_body(container, restartPolicy="Never", volumes=volumes)
    core.create_namespaced_pod(namespace, pod("readonly", body))
    wait_for("Failed", lambda: phase(core, namespace, "readonly") == "Failed")
    terminated = core.read_namespaced_pod_status("readonly", namespace).status
    message = terminated.container_statuses[0].state.terminated.message
    assert "Read-only file system" in message
    assert "/opt/nim/.cache is read-only" in control.log(namespace, "readonly")


def test_an_unbound_claim_holds_the_pod_until_a_volume_binds(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    # No provisioner serves class "manual": the claim waits for an administrator's volume.
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "manual"},
            "spec": {
                "storageClassName": "manual",
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    writer = script_container(
        "writer",
        "echo kept > /data/file",
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
        # A hostPath directory the kubelet creates is root's, mode 0755, as on any node.
        securityContext={"runAsUser": 0},
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "manual"}}]
    # Bound to a node by name, as a DaemonSet pod would be, so the scheduler does not wait.
    body = pod_body(writer, restartPolicy="Never", volumes=volumes, nodeName="cpu-node-0")
    core.create_namespaced_pod(namespace, pod("early", body))

    def not_bound() -> bool:
        return any("PVC is not bound" in m for r, m in warnings(core, namespace, "early"))

    wait_for("FailedMount: not bound", not_bound)
    assert phase(core, namespace, "early") == "Pending"

    host = f"/srv/{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": f"{namespace}-manual"},
            "spec": {
                "storageClassName": "manual",
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "hostPath": {"path": host, "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": namespace, "name": "manual"},
            },
        }
    )
    try:
        wait_for("Succeeded once bound", succeeded(core, namespace, "early"), timeout=60)
        # A hostPath is the node's own directory, never this machine's /srv.
        node_dir = host_path(control, namespace, "early", "/data")
        assert node_dir.parts[-4:] == ("nodes", "cpu-node-0", "srv", namespace)
        assert (node_dir / "file").read_text() == "kept\n"
        assert not Path(host).exists()
    finally:
        core.delete_namespaced_pod("early", namespace)
        core.delete_namespaced_persistent_volume_claim("manual", namespace)
        core.delete_persistent_volume(f"{namespace}-manual")
