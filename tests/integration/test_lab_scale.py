"""The pod runner carries a few hundred pods cheaply: all Ready, a few writes each, and at rest
nothing at all (no probe sent, no timer pending, no write), with what the benchmark reads."""

from __future__ import annotations

from typing import Any

from kubernetes import watch

from nimlab.control import RunnerControl
from nimlab.testing import deployment, http_probe, nim_container, pod_spec, wait_for

PODS = 240  # three lab nodes of 110 pods each, beside what other tests leave behind
MAX_WRITES_PER_POD = 4  # ContainerCreating, running, started and ready, at worst one each


def ready_pods(core: Any, namespace: str) -> Any:
    pods = core.list_namespaced_pod(namespace)
    ready = [
        p
        for p in pods.items
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return pods if len(ready) == PODS else None


def test_hundreds_of_pods_become_ready_with_few_writes_and_cost_nothing_at_rest(
    namespace: str, core: Any, apps: Any, control: RunnerControl
) -> None:
    container = nim_container(
        "1.3.3-load-1s",
        gpus=0,
        liveness=http_probe("/v1/health/live", period=2),
    )
    container["startupProbe"] = http_probe("/v1/health/ready", failureThreshold=600)
    apps.create_namespaced_deployment(namespace, deployment("many", pod_spec(container), PODS))

    pods = wait_for("every pod Ready", lambda: ready_pods(core, namespace), timeout=300, interval=1)

    infos = [p for p in control.pods() if p.namespace == namespace]
    assert len(infos) == PODS
    assert max(p.status_writes for p in infos) <= MAX_WRITES_PER_POD
    for info in infos:
        (nim,) = info.containers
        assert nim.probes_sent == 0  # every probe derived from the simulator's transitions
        assert not nim.probe_timer  # and nothing pending for a pod at rest
        names = [t.name for t in nim.transitions]
        assert names == ["started", "downloading", "listening", "ready"]
        times = [t.time for t in nim.transitions]
        assert times == sorted(times)
        turned_ready = nim.transition_time("ready")
        assert turned_ready is not None
        assert [c.ready for c in nim.ready_changes] == [True]
        assert nim.ready_changes[0].time >= turned_ready
        assert [w.ready for w in info.ready_written] == [True]
        assert info.ready_written[0].time >= nim.ready_changes[0].time

    # At rest: probes are due every 0.4 s on each pod, yet nothing is sent and nothing written.
    writes = {p.name: p.status_writes for p in infos}
    changes = [
        (event["type"], event["object"].metadata.name)
        for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod,
            namespace,
            resource_version=pods.metadata.resource_version,
            timeout_seconds=3,
        )
    ]
    assert changes == []
    after = [p for p in control.pods() if p.namespace == namespace]
    assert {p.name: p.status_writes for p in after} == writes
    assert all(c.probes_sent == 0 and not c.probe_timer for p in after for c in p.containers)
