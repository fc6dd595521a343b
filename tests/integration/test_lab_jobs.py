"""Jobs on the lab: the real Job controller, pods that run NIM utilities to completion, init
containers, exit codes and termination messages as the kubelet reports them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from nimlab.control import RunnerControl
from nimlab.testing import GPU_TOLERATION, NIM_IMAGE, http_probe, nim_container, pod, wait_for

NGC_KEY_ENV = [
    {"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": {"name": "ngc", "key": "NGC_API_KEY"}}}
]


def secret(core: Any, namespace: str, key: str, name: str = "ngc") -> None:
    body = {"metadata": {"name": name}, "stringData": {"NGC_API_KEY": key}}
    core.create_namespaced_secret(namespace, body)


def claim(core: Any, namespace: str, name: str, mode: str = "ReadWriteMany") -> None:
    body = {
        "metadata": {"name": name},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "50Gi"}}},
    }
    core.create_namespaced_persistent_volume_claim(namespace, body)


def job(name: str, spec: dict[str, Any], backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": spec}},
    }


def cache_container(tag: str = "1.3.3", **extra: Any) -> dict[str, Any]:
    """A NIM cache download as NVIDIA's NIMCache Job runs it: the image's own utility."""
    return {
        "name": "download",
        "image": f"{NIM_IMAGE}:{tag}",
        "command": ["download-to-cache"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [*NGC_KEY_ENV, {"name": "NIM_CACHE_PATH", "value": "/model-store"}],
        "volumeMounts": [{"name": "cache", "mountPath": "/model-store"}],
        **extra,
    }


def claim_volume(name: str = "cache", claim_name: str = "model-cache") -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim_name}}


def job_condition(batch: Any, namespace: str, name: str, kind: str) -> Any:
    status = batch.read_namespaced_job_status(name, namespace).status
    return next((c for c in status.conditions or [] if c.type == kind and c.status == "True"), None)


def job_pods(core: Any, namespace: str, name: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
    return sorted(pods, key=lambda p: p.metadata.creation_timestamp)


def phase(core: Any, namespace: str, name: str) -> str:
    return str(core.read_namespaced_pod_status(name, namespace).status.phase)


def test_a_cache_job_fills_a_claim_that_a_serving_pod_then_finds(
    namespace: str, core: Any, api: Any, control: RunnerControl
) -> None:
    batch: Any = client.BatchV1Api(api)
    secret(core, namespace, "nvapi-lab-key")
    claim(core, namespace, "model-cache")
    spec = {
        "restartPolicy": "Never",
        "containers": [cache_container()],
        "volumes": [claim_volume()],
    }
    batch.create_namespaced_job(namespace, job("fill", spec))
    wait_for("Job Complete", lambda: job_condition(batch, namespace, "fill", "Complete"))

    (done,) = job_pods(core, namespace, "fill")
    assert done.status.phase == "Succeeded"
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    summary = json.loads(terminated.message)  # what download-to-cache reports it wrote
    assert summary["bytes"] > 0
    assert summary["profiles"]
    log = control.log(namespace, done.metadata.name)
    assert "Downloaded profile" in log

    # The claim's directory on this machine holds what the Job wrote.
    bound = core.read_namespaced_persistent_volume_claim("model-cache", namespace)
    directory = Path(core.read_persistent_volume(bound.spec.volume_name).spec.host_path.path)
    written = [p for p in directory.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in written) >= summary["bytes"]

    # A serving pod on the same claim starts from the cache: no download phase.
    warm = nim_container("1.3.3-load-1s", startup=True, env=NGC_KEY_ENV)
    warm["env"].append({"name": "NIM_CACHE_PATH", "value": "/opt/nim/.cache"})
    warm["volumeMounts"] = [{"name": "cache", "mountPath": "/opt/nim/.cache", "readOnly": True}]
    cold = nim_container("1.3.3-load-1s", startup=True, env=NGC_KEY_ENV)
    for name, container, volumes in (
        ("warm", warm, [claim_volume()]),
        ("cold", cold, []),
    ):
        body = {"tolerations": [GPU_TOLERATION], "containers": [container], "volumes": volumes}
        core.create_namespaced_pod(namespace, pod(name, body))

    def ready(name: str) -> Any:
        info = control.pod(namespace, name)
        return info if info and info.containers[0].phase == "ready" else None

    warm_info = wait_for("warm pod serving", lambda: ready("warm"))
    cold_info = wait_for("cold pod serving", lambda: ready("cold"))
    assert warm_info.containers[0].phases == ("loading", "ready")
    assert cold_info.containers[0].phases[0] == "downloading"
    assert "Downloading profile" not in control.log(namespace, "warm")
    assert "Downloading profile" in control.log(namespace, "cold")
    models = httpx.get(f"{warm_info.containers[0].url}/v1/models", trust_env=False).json()
    assert [m["id"] for m in models["data"]] == ["meta/llama-3.1-8b-instruct"]


def test_a_rejected_key_fails_the_job_after_its_retries(
    namespace: str, core: Any, api: Any
) -> None:
    batch: Any = client.BatchV1Api(api)
    secret(core, namespace, "nvapi-invalid-key")
    spec = {"restartPolicy": "Never", "containers": [cache_container(volumeMounts=[])]}
    batch.create_namespaced_job(namespace, job("fill", spec, backoff_limit=1))

    failed = wait_for(
        "Job Failed", lambda: job_condition(batch, namespace, "fill", "Failed"), timeout=90
    )
    assert failed.reason == "BackoffLimitExceeded"
    pods = job_pods(core, namespace, "fill")
    assert len(pods) == 2  # the first attempt and the Job controller's one retry
    for attempt in pods:
        assert attempt.status.phase == "Failed"
        terminated = attempt.status.container_statuses[0].state.terminated
        assert terminated.exit_code != 0
        assert terminated.reason == "Error"
        # FallbackToLogsOnError: the log's last lines, ending with the error a person needs.
        assert "401" in terminated.message.strip().splitlines()[-1]
        conditions = {c.type: c.reason for c in attempt.status.conditions}
        assert conditions["Ready"] == "PodFailed"


def test_on_failure_restarts_in_place_until_the_backoff_limit(
    namespace: str, core: Any, api: Any
) -> None:
    batch: Any = client.BatchV1Api(api)
    script = "echo 'no GPU visible' > /dev/termination-log; exit 3"
    container = {"name": "work", "image": f"{NIM_IMAGE}:1.3.3", "command": ["sh", "-c", script]}
    spec = {"restartPolicy": "OnFailure", "containers": [container]}
    batch.create_namespaced_job(namespace, job("retry", spec, backoff_limit=1))

    def restarted() -> Any:
        pods = job_pods(core, namespace, "retry")
        statuses = pods[0].status.container_statuses if pods else None
        status = statuses[0] if statuses else None
        return status if status and status.restart_count >= 1 else None

    status = wait_for("restarted in place", restarted)
    last = status.last_state.terminated
    assert (last.exit_code, last.reason, last.message) == (3, "Error", "no GPU visible\n")
    assert len(job_pods(core, namespace, "retry")) == 1  # restarted in place, not replaced

    # The Job controller counts the restarts against backoffLimit and gives up on the pod.
    failed = wait_for("Job Failed", lambda: job_condition(batch, namespace, "retry", "Failed"))
    assert failed.reason == "BackoffLimitExceeded"
    wait_for(
        "pod removed by the Job controller",
        lambda: all(p.metadata.deletion_timestamp for p in job_pods(core, namespace, "retry")),
    )


def test_init_containers_run_in_order_before_the_main_container(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    secret(core, namespace, "nvapi-lab-key")
    fill = cache_container("1.3.3-download-1s", name="fill")
    check = {
        "name": "check",
        "image": f"{NIM_IMAGE}:1.3.3",
        "command": ["sh", "-c", "ls /model-store > /dev/termination-log"],
        "volumeMounts": [{"name": "cache", "mountPath": "/model-store"}],
    }
    serve = nim_container("1.3.3-load-0s", env=NGC_KEY_ENV)
    serve["env"].append({"name": "NIM_CACHE_PATH", "value": "/model-store"})
    serve["volumeMounts"] = [{"name": "cache", "mountPath": "/model-store"}]
    body = {
        "tolerations": [GPU_TOLERATION],
        "initContainers": [fill, check],
        "containers": [serve],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }
    core.create_namespaced_pod(namespace, pod("staged", body))

    snapshots: list[Any] = []

    def running() -> bool:
        status = core.read_namespaced_pod_status("staged", namespace).status
        snapshots.append(status)
        return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])

    wait_for("pod Ready", running, timeout=60)
    for status in snapshots:
        inits = {c.name: c for c in status.init_container_statuses or []}
        if not inits:
            continue  # kwok's first status, before the runner wrote
        fill_state, check_state = inits["fill"].state, inits["check"].state
        if not check_state.waiting:  # check started only after fill completed
            assert fill_state.terminated is not None
            assert fill_state.terminated.reason == "Completed"
        if status.phase == "Running":
            assert all(c.state.terminated for c in inits.values())
        else:
            assert status.phase == "Pending"
    during = [s for s in snapshots if s.phase == "Pending" and s.init_container_statuses]
    initialized = [c for c in during[0].conditions if c.type == "Initialized"]
    assert initialized[0].status == "False"
    assert initialized[0].reason == "ContainersNotInitialized"

    final = snapshots[-1]
    assert {c.type: c.status for c in final.conditions}["Initialized"] == "True"
    check_done = next(c for c in final.init_container_statuses if c.name == "check")
    assert check_done.ready is True
    assert check_done.state.terminated.message.strip()  # it saw fill's cache
    info = control.pod(namespace, "staged")
    assert info is not None
    assert [c.name for c in info.init_containers] == ["fill", "check"]
    assert "downloading" not in info.containers[0].phases


def test_a_failed_init_container_fails_a_never_pod_and_is_retried_otherwise(
    namespace: str, core: Any
) -> None:
    fail = {"name": "prepare", "image": f"{NIM_IMAGE}:1.3.3", "command": ["sh", "-c", "exit 2"]}
    main = nim_container("1.3.3-load-0s")
    for name, policy in (("never", "Never"), ("always", "Always")):
        body = {
            "tolerations": [GPU_TOLERATION],
            "restartPolicy": policy,
            "initContainers": [fail],
            "containers": [main],
        }
        core.create_namespaced_pod(namespace, pod(name, body))

    wait_for("Never pod Failed", lambda: phase(core, namespace, "never") == "Failed")
    failed = core.read_namespaced_pod_status("never", namespace).status
    (init,) = failed.init_container_statuses
    assert (init.state.terminated.exit_code, init.restart_count) == (2, 0)
    assert failed.container_statuses[0].state.waiting.reason == "PodInitializing"

    def backing_off() -> Any:
        status = core.read_namespaced_pod_status("always", namespace).status
        (init,) = status.init_container_statuses or [None]
        waiting = init.state.waiting if init else None
        return status if waiting and waiting.reason == "CrashLoopBackOff" else None

    retried = wait_for("init CrashLoopBackOff", backing_off, timeout=30)
    assert retried.phase == "Pending"
    assert retried.init_container_statuses[0].restart_count >= 1
    assert retried.init_container_statuses[0].last_state.terminated.exit_code == 2
    assert retried.container_statuses[0].state.waiting.reason == "PodInitializing"


def test_probes_see_connection_refused_while_a_nim_downloads(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    secret(core, namespace, "nvapi-lab-key")
    container = nim_container("1.3.3-download-2s-load-0s", startup=True, env=NGC_KEY_ENV)
    container["startupProbe"] = http_probe("/v1/health/ready", failureThreshold=100)
    core.create_namespaced_pod(
        namespace, pod("cold", {"tolerations": [GPU_TOLERATION], "containers": [container]})
    )
    info: Any = wait_for(
        "downloading",
        lambda: (
            (p := control.pod(namespace, "cold")) and p.containers[0].phase == "downloading" and p
        ),
    )
    try:
        httpx.get(f"http://{info.ip}:8000/v1/health/live", trust_env=False, timeout=1)
        refused = False
    except httpx.ConnectError:
        refused = True
    assert refused
    status = core.read_namespaced_pod_status("cold", namespace).status.container_statuses[0]
    assert status.state.running is not None
    assert status.started is False
    wait_for(
        "Ready after the download",
        lambda: (
            (s := core.read_namespaced_pod_status("cold", namespace).status.container_statuses)
            and s[0].ready
        ),
        timeout=30,
    )
