"""The kubelet's status rules, as pure functions: what to report and when not to write."""

from __future__ import annotations

import copy
from typing import Any

from nimlab.podstatus import ContainerView, desired_conditions, pod_phase, status_patch
from nimlab.termination import MAX_POD_MESSAGE_BYTES


def make_pod(
    gates: list[str] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    restart_policy: str = "Always",
    containers: int = 1,
    init_containers: int = 0,
) -> Any:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "restartPolicy": restart_policy,
            "readinessGates": [{"conditionType": g} for g in gates or []],
            "containers": [{"name": f"c{i}"} for i in range(containers)],
            "initContainers": [{"name": f"i{i}"} for i in range(init_containers)],
        },
        "status": {"phase": "Pending", "conditions": conditions or []},
    }


def running(name: str = "nim", ready: bool = True) -> ContainerView:
    return ContainerView(
        name=name,
        image="nvcr.io/nim/meta/llama-3.1-8b-instruct:1.0",
        state={"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        ready=ready,
        started=True,
        ever_started=True,
    )


def apply(pod: Any, patch: dict[str, Any]) -> Any:
    """What the API server's strategic merge does with our patch (conditions merge by type)."""
    result = copy.deepcopy(pod)
    status = result["status"]
    status["phase"] = patch["status"]["phase"]
    status["containerStatuses"] = patch["status"]["containerStatuses"]
    if "initContainerStatuses" in patch["status"]:
        status["initContainerStatuses"] = patch["status"]["initContainerStatuses"]
    by_type = {c["type"]: c for c in status["conditions"]}
    for cond in patch["status"]["conditions"]:
        merged = {**by_type.get(cond["type"], {}), **cond}
        by_type[cond["type"]] = {k: v for k, v in merged.items() if v is not None}
    status["conditions"] = list(by_type.values())
    return result


def test_a_written_status_needs_no_second_write() -> None:
    pod = make_pod()
    views = [running()]
    patch = status_patch(pod, views, now="2026-01-01T00:00:01Z")
    assert patch is not None
    assert patch["status"]["phase"] == "Running"
    assert status_patch(apply(pod, patch), views) is None


def test_only_owned_conditions_are_in_the_patch() -> None:
    pod = make_pod(gates=["example.com/gate"])
    patch = status_patch(pod, [running()])
    assert patch is not None
    assert [c["type"] for c in patch["status"]["conditions"]] == [
        "Initialized",
        "ContainersReady",
        "Ready",
    ]


def test_readiness_gates_hold_ready() -> None:
    pod = make_pod(gates=["example.com/gate"])
    conditions = desired_conditions(pod, [running()])
    assert conditions["ContainersReady"][0] == "True"
    status, reason, message = conditions["Ready"]
    assert (status, reason) == ("False", "ReadinessGatesNotReady")
    assert (
        message
        == 'corresponding condition of pod readiness gate "example.com/gate" does not exist.'
    )

    pod["status"]["conditions"] = [{"type": "example.com/gate", "status": "True"}]
    assert desired_conditions(pod, [running()])["Ready"] == ("True", None, None)


def test_unready_containers_are_named() -> None:
    conditions = desired_conditions(make_pod(), [running("a"), running("b", ready=False)])
    assert conditions["Ready"] == (
        "False",
        "ContainersNotReady",
        "containers with unready status: [b]",
    )


def test_transition_time_only_moves_when_the_status_flips() -> None:
    pod = make_pod()
    first = apply(pod, status_patch(pod, [running(ready=False)], now="T1") or {})
    unready_again = status_patch(first, [running(ready=False)], now="T2")
    assert unready_again is None
    flipped = status_patch(first, [running(ready=True)], now="T3")
    assert flipped is not None
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["status"]["conditions"]}
    assert times == {"Initialized": "T1", "ContainersReady": "T3", "Ready": "T3"}


def terminated(name: str, code: int, *, finished: bool = True, **extra: Any) -> ContainerView:
    return ContainerView(
        name=name,
        image="x",
        state={"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}},
        ever_started=True,
        finished=finished,
        **extra,
    )


def backing_off(name: str, code: int) -> ContainerView:
    return ContainerView(
        name=name,
        image="x",
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        last_state={"terminated": {"exitCode": code}},
        ever_started=True,
        restart_count=1,
    )


def test_phase_follows_get_phase() -> None:
    waiting = ContainerView(name="nim", image="x")
    assert pod_phase("Pending", "Always", [waiting]) == "Pending"
    assert pod_phase("Pending", "Always", [running()]) == "Running"
    done, failed = terminated("a", 0), terminated("b", 2)
    assert pod_phase("Running", "Never", [done]) == "Succeeded"
    assert pod_phase("Running", "Never", [done, failed]) == "Failed"
    assert pod_phase("Running", "OnFailure", [done]) == "Succeeded"
    # Still to be restarted: the pod keeps running.
    assert pod_phase("Running", "OnFailure", [backing_off("b", 1)]) == "Running"
    assert pod_phase("Running", "Always", [backing_off("b", 1)]) == "Running"
    assert pod_phase("Running", "Never", [done, running("c")]) == "Running"
    # A terminal phase never changes again.
    assert pod_phase("Succeeded", "Always", [running()]) == "Succeeded"


def test_init_containers_keep_the_pod_pending_and_can_fail_it() -> None:
    main = ContainerView(name="nim", image="x", state={"waiting": {"reason": "PodInitializing"}})
    first_running = ContainerView(
        name="i0", image="x", state={"running": {"startedAt": "T"}}, ever_started=True
    )
    assert pod_phase("Pending", "Always", [main], [first_running]) == "Pending"
    assert pod_phase("Pending", "Never", [main], [terminated("i0", 0, ready=True)]) == "Pending"
    assert pod_phase("Pending", "Never", [main], [terminated("i0", 1)]) == "Failed"
    # With a restarting policy a failed init container is retried: the pod stays Pending.
    assert pod_phase("Pending", "OnFailure", [main], [backing_off("i0", 1)]) == "Pending"
    assert pod_phase("Pending", "Always", [running()], [terminated("i0", 0, ready=True)]) == (
        "Running"
    )


def test_initialized_names_the_incomplete_init_containers() -> None:
    pod = make_pod(init_containers=2)
    main = ContainerView(name="nim", image="x", state={"waiting": {"reason": "PodInitializing"}})
    first = terminated("i0", 0, ready=True)
    second = ContainerView(name="i1", image="x", state={"running": {}}, ever_started=True)
    conditions = desired_conditions(pod, [main], [first, second], "Pending")
    assert conditions["Initialized"] == (
        "False",
        "ContainersNotInitialized",
        "containers with incomplete status: [i1]",
    )
    both = [first, terminated("i1", 0, ready=True)]
    assert desired_conditions(pod, [running()], both, "Running")["Initialized"] == (
        "True",
        None,
        None,
    )


def test_terminal_phases_have_the_kubelets_reasons() -> None:
    pod = make_pod(restart_policy="Never")
    succeeded = desired_conditions(pod, [terminated("c0", 0)], [], "Succeeded")
    assert succeeded == {
        "Initialized": ("True", "PodCompleted", None),
        "ContainersReady": ("False", "PodCompleted", None),
        "Ready": ("False", "PodCompleted", None),
    }
    failed = desired_conditions(pod, [terminated("c0", 1)], [], "Failed")
    assert failed["Ready"] == ("False", "PodFailed", None)
    assert failed["ContainersReady"] == ("False", "PodFailed", None)


def test_patch_carries_init_statuses_in_order_and_containers_by_name() -> None:
    pod = make_pod(init_containers=2, containers=2)
    views = [running("zeta"), running("alpha")]
    inits = [terminated("second", 0, ready=True), terminated("first", 0, ready=True)]
    patch = status_patch(pod, views, init_views=inits)
    assert patch is not None
    assert [c["name"] for c in patch["status"]["containerStatuses"]] == ["alpha", "zeta"]
    assert [c["name"] for c in patch["status"]["initContainerStatuses"]] == ["second", "first"]
    assert status_patch(apply(pod, patch), views, init_views=inits) is None


def test_termination_messages_share_the_pods_budget() -> None:
    pod = make_pod(restart_policy="Never", containers=2, init_containers=1)
    long = "x" * 6000
    views = [
        terminated("c0", 1, last_state={}),
        ContainerView(
            name="c1",
            image="x",
            state={"terminated": {"exitCode": 1, "message": long}},
            ever_started=True,
            finished=True,
        ),
    ]
    patch = status_patch(pod, views)
    assert patch is not None
    statuses = {c["name"]: c for c in patch["status"]["containerStatuses"]}
    message = statuses["c1"]["state"]["terminated"]["message"]
    assert message == "x" * (MAX_POD_MESSAGE_BYTES // 3)
    assert views[1].state["terminated"]["message"] == long  # the view itself is untouched


def test_container_ids_are_stable_per_instance() -> None:
    view = running()
    first = view.status("u-1")["containerID"]
    assert view.status("u-1")["containerID"] == first
    view.restart_count += 1
    assert view.status("u-1")["containerID"] != first
