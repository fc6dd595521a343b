"""The kubelet's status rules, as pure functions: what to report and when not to write."""

from __future__ import annotations

import copy
from typing import Any

from nimlab.podstatus import ContainerView, desired_conditions, pod_phase, status_patch


def make_pod(gates: list[str] | None = None, conditions: list[dict[str, Any]] | None = None) -> Any:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"readinessGates": [{"conditionType": g} for g in gates or []]},
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
    assert [c["type"] for c in patch["status"]["conditions"]] == ["ContainersReady", "Ready"]


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
    assert times == {"ContainersReady": "T3", "Ready": "T3"}


def test_phase() -> None:
    waiting = ContainerView(name="nim", image="x")
    assert pod_phase("Pending", [waiting]) == "Pending"
    assert pod_phase("Pending", [running()]) == "Running"
    done = ContainerView(
        name="job",
        image="x",
        state={"terminated": {"exitCode": 0}},
        ever_started=True,
        finished=True,
    )
    failed = ContainerView(
        name="job",
        image="x",
        state={"terminated": {"exitCode": 2}},
        ever_started=True,
        finished=True,
    )
    assert pod_phase("Running", [done]) == "Succeeded"
    assert pod_phase("Running", [done, failed]) == "Failed"
    assert pod_phase("Succeeded", [running()]) == "Succeeded"


def test_container_ids_are_stable_per_instance() -> None:
    view = running()
    first = view.status("u-1")["containerID"]
    assert view.status("u-1")["containerID"] == first
    view.restart_count += 1
    assert view.status("u-1")["containerID"] != first
