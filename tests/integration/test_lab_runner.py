"""The pod runner plays the kubelet: simulators on pod IPs, probes, restarts, and honest status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kubernetes import watch

from nimlab.control import ControlError, RunnerControl
from nimlab.testing import (
    deployment,
    http_probe,
    nim_container,
    pod,
    pod_spec,
    wait_for,
)


def condition(pod_obj: Any, kind: str) -> str | None:
    for cond in pod_obj.status.conditions or []:
        if cond.type == kind:
            return str(cond.status)
    return None


def container_status(core: Any, namespace: str, name: str) -> Any:
    statuses = core.read_namespaced_pod_status(name, namespace).status.container_statuses
    return statuses[0] if statuses else None


def waiting_reason(core: Any, namespace: str, name: str) -> str | None:
    status = container_status(core, namespace, name)
    waiting = status.state.waiting if status else None
    return str(waiting.reason) if waiting else None


def test_pod_serves_the_simulator_and_ready_follows_the_probe(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    container = nim_container("1.0-load-2s", startup=True)
    core.create_namespaced_pod(namespace, pod("llama", pod_spec(container)))
    info: Any = wait_for(
        "simulator running",
        lambda: (p := control.pod(namespace, "llama")) and p.containers[0].url and p,
    )
    ip = info.ip
    assert ip.startswith("127.1.")
    assert info.containers[0].url == f"http://{ip}:8000"

    loading = httpx.get(f"http://{ip}:8000/v1/health/ready", trust_env=False)
    assert loading.status_code == 503
    current = core.read_namespaced_pod_status("llama", namespace)
    assert condition(current, "Ready") == "False"
    assert current.status.container_statuses[0].started is False

    wait_for(
        "ready endpoint",
        lambda: httpx.get(f"http://{ip}:8000/v1/health/ready", trust_env=False).status_code == 200,
    )
    ready = wait_for(
        "pod Ready",
        lambda: (
            (p := core.read_namespaced_pod_status("llama", namespace))
            and condition(p, "Ready") == "True"
            and p
        ),
        timeout=10,
    )
    assert ready.status.phase == "Running"
    assert ready.status.container_statuses[0].started is True
    models = httpx.get(f"http://{ip}:8000/v1/models", trust_env=False).json()
    assert [m["id"] for m in models["data"]] == ["meta/llama-3.1-8b-instruct"]


def test_readiness_gate_holds_ready_until_its_condition_is_true(namespace: str, core: Any) -> None:
    gate = "nimop.nvidia.com/model-ready"
    spec = pod_spec(nim_container("1.0-load-0s"), readinessGates=[{"conditionType": gate}])
    core.create_namespaced_pod(namespace, pod("gated", spec))

    def conditions() -> dict[str, str]:
        current = core.read_namespaced_pod_status("gated", namespace)
        return {c.type: c.status for c in current.status.conditions or []}

    wait_for("ContainersReady", lambda: conditions().get("ContainersReady") == "True")
    assert conditions()["Ready"] == "False"

    def set_gate(status: str) -> None:
        body = {"status": {"conditions": [{"type": gate, "status": status}]}}
        core.patch_namespaced_pod_status("gated", namespace, body)

    set_gate("True")
    wait_for("Ready after the gate", lambda: conditions().get("Ready") == "True", timeout=10)
    set_gate("False")
    wait_for("not Ready again", lambda: conditions().get("Ready") == "False", timeout=10)
    assert conditions()[gate] == "False"


def test_kill_restarts_the_container_and_hold_keeps_it_down(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_pod(namespace, pod("victim", pod_spec(nim_container("1.0-load-0s"))))
    wait_for(
        "Ready",
        lambda: condition(core.read_namespaced_pod_status("victim", namespace), "Ready") == "True",
    )
    control.kill(namespace, "victim")
    restarted = wait_for(
        "restart",
        lambda: (
            (s := container_status(core, namespace, "victim"))
            and s.restart_count == 1
            and s.ready
            and s
        ),
        timeout=10,
    )
    assert restarted.last_state.terminated.exit_code == 1
    assert restarted.last_state.terminated.reason == "Error"
    assert restarted.state.running is not None

    control.kill(namespace, "victim", hold=True)
    held = wait_for(
        "held down",
        lambda: (s := container_status(core, namespace, "victim")) and s.state.terminated and s,
        timeout=10,
    )
    assert held.restart_count == 1
    assert not held.ready
    assert control.pod(namespace, "victim").containers[0].url == ""  # type: ignore[union-attr]
    control.release(namespace, "victim")
    wait_for(
        "running after release",
        lambda: (
            (s := container_status(core, namespace, "victim")) and s.restart_count == 2 and s.ready
        ),
        timeout=10,
    )


def test_crashing_simulator_ends_in_crash_loop_back_off(namespace: str, core: Any) -> None:
    core.create_namespaced_pod(
        namespace, pod("crashy", pod_spec(nim_container("1.0-crash-after-0.5")))
    )
    wait_for(
        "CrashLoopBackOff",
        lambda: waiting_reason(core, namespace, "crashy") == "CrashLoopBackOff",
        timeout=20,
    )
    status = container_status(core, namespace, "crashy")
    assert status.restart_count >= 1
    assert status.last_state.terminated.exit_code == 1
    assert "back-off" in status.state.waiting.message
    current = core.read_namespaced_pod_status("crashy", namespace)
    assert current.status.phase == "Running"
    assert condition(current, "Ready") == "False"


def test_liveness_failures_restart_the_container(namespace: str, core: Any) -> None:
    liveness = http_probe("/v1/health/ready", failureThreshold=2)
    container = nim_container("1.0-never-ready", readiness=False, liveness=liveness)
    core.create_namespaced_pod(namespace, pod("dead", pod_spec(container)))
    status = wait_for(
        "liveness restart",
        lambda: (s := container_status(core, namespace, "dead")) and s.restart_count >= 1 and s,
        timeout=20,
    )
    assert status.last_state.terminated.exit_code == 137


def test_pull_error_tag_backs_off_pulling(namespace: str, core: Any) -> None:
    core.create_namespaced_pod(namespace, pod("nopull", pod_spec(nim_container("1.0-pull-error"))))
    wait_for(
        "ImagePullBackOff",
        lambda: waiting_reason(core, namespace, "nopull") == "ImagePullBackOff",
        timeout=10,
    )
    current = core.read_namespaced_pod_status("nopull", namespace)
    assert current.status.phase == "Pending"
    assert current.status.container_statuses[0].restart_count == 0
    assert "ErrImagePull" in current.status.container_statuses[0].state.waiting.message


def test_missing_secret_blocks_the_container_until_it_exists(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    env = [
        {
            "name": "NGC_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "ngc-api", "key": "NGC_API_KEY"}},
        }
    ]
    container = nim_container("1.0-load-0s", env=env)
    core.create_namespaced_pod(namespace, pod("needs-secret", pod_spec(container)))
    wait_for(
        "CreateContainerConfigError",
        lambda: waiting_reason(core, namespace, "needs-secret") == "CreateContainerConfigError",
        timeout=10,
    )
    status = container_status(core, namespace, "needs-secret")
    assert status.state.waiting.message == 'secret "ngc-api" not found'

    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "ngc-api"}, "stringData": {"NGC_API_KEY": "nvapi-not-a-real-key"}},
    )
    wait_for(
        "Ready once the Secret exists",
        lambda: (
            condition(core.read_namespaced_pod_status("needs-secret", namespace), "Ready") == "True"
        ),
        timeout=15,
    )
    info = control.pod(namespace, "needs-secret")
    assert info is not None
    assert info.containers[0].restart_count == 0


def test_steady_state_makes_no_pod_writes(
    namespace: str, core: Any, apps: Any, control: RunnerControl
) -> None:
    liveness = http_probe("/v1/health/live")
    spec = pod_spec(nim_container("1.0-load-0s", startup=True, liveness=liveness))
    apps.create_namespaced_deployment(namespace, deployment("steady", spec, 3))

    def all_ready() -> Any:
        pods = core.list_namespaced_pod(namespace)
        ready = [p for p in pods.items if condition(p, "Ready") == "True"]
        return pods if len(ready) == 3 else None

    pods = wait_for("3 Ready pods", all_ready)
    writes = {p.name: p.status_writes for p in control.pods() if p.namespace == namespace}
    changes = []
    # Probes run every 0.2 s here, so 3 s is 15 probe rounds of each kind on each pod.
    for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
        core.list_namespaced_pod,
        namespace,
        resource_version=pods.metadata.resource_version,
        timeout_seconds=3,
    ):
        changes.append((event["type"], event["object"].metadata.name))
    assert changes == []
    after = {p.name: p.status_writes for p in control.pods() if p.namespace == namespace}
    assert after == writes


def test_config_map_env_reaches_the_simulator(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "nim-config"}, "data": {"model": "acme/custom-llm"}}
    )
    env: list[dict[str, Any]] = [
        {"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "nim-config", "key": "model"}}},
        {"name": "NIM_SERVED_MODEL_NAME", "value": "$(MODEL)"},
    ]
    core.create_namespaced_pod(
        namespace, pod("configured", pod_spec(nim_container("1.0-load-0s", env=env)))
    )
    url = wait_for(
        "simulator", lambda: (p := control.pod(namespace, "configured")) and p.containers[0].url
    )
    models = httpx.get(f"{url}/v1/models", trust_env=False).json()
    assert [m["id"] for m in models["data"]] == ["acme/custom-llm"]


def test_deleting_a_pod_stops_its_simulator(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_pod(namespace, pod("doomed", pod_spec(nim_container("1.0-load-0s"))))
    url = wait_for(
        "simulator", lambda: (p := control.pod(namespace, "doomed")) and p.containers[0].url
    )
    assert httpx.get(f"{url}/v1/health/live", trust_env=False).status_code == 200
    core.delete_namespaced_pod("doomed", namespace)

    def refused() -> bool:
        try:
            httpx.get(f"{url}/v1/health/live", trust_env=False, timeout=1)
        except httpx.ConnectError:
            return True
        return False

    wait_for("simulator stopped", refused, timeout=3)
    assert control.pod(namespace, "doomed") is None


def test_logs_keep_the_current_and_the_previous_instance(
    namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_pod(
        namespace, pod("talky", pod_spec(nim_container("1.0-load-0s-crash-after-1")))
    )
    wait_for(
        "a restart",
        lambda: (s := container_status(core, namespace, "talky")) and s.restart_count >= 1,
        timeout=20,
    )
    previous = control.log(namespace, "talky", previous=True)
    assert "Selected profile" in previous
    assert previous.rstrip().endswith("simulated crash (fault crash-after:1)")
    status = container_status(core, namespace, "talky")
    assert status.last_state.terminated.exit_code == 1
    assert "Selected profile" in control.log(namespace, "talky", container="nim")
    with pytest.raises(ControlError, match="container nope is not valid"):
        control.log(namespace, "talky", container="nope")
