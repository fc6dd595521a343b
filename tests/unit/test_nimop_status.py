"""Status is a pure function of observations: Ready only when verified, Stalled only for humans."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nimop.core import children, conditions, pods
from nimop.core.children import DeploymentFacts
from nimop.core.probes import ProbeResult
from nimop.nimservice import models, status

from . import factories

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SPEC = models.NimServiceSpec.model_validate(
    {
        "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
        "model": "meta/llama-3.1-8b-instruct",
        "authSecret": "ngc-api",
        "replicas": 2,
    }
)


def pod(name: str, revision: str = "r1", running: bool = True, **kw: Any) -> pods.PodFacts:
    fields: dict[str, Any] = {
        "revision": revision,
        "model": SPEC.model,
        "running": running,
        "started_once": running,
        "ready": running,
        **kw,
    }
    return factories.pod_facts(name, **fields)


def deployment(
    replicas: int = 2, ready: int = 2, generation: int = 1, observed: int = 1
) -> DeploymentFacts:
    return children.deployment(
        {
            "metadata": {"generation": generation},
            "spec": {"replicas": replicas},
            "status": {
                "observedGeneration": observed,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            },
        }
    )


def complete(revision: str = "r1") -> models.RolloutStatus:
    return models.RolloutStatus(
        phase="Complete",
        target_revision=revision,
        current_revision=revision,
        last_good_revision=revision,
    )


def snapshot(**overrides: Any) -> status.Snapshot:
    base = status.Snapshot(
        name="llama",
        namespace="ai",
        generation=3,
        now=NOW,
        spec=SPEC,
        deployment=deployment(),
        facts=[pod("a"), pod("b")],
        probes={n: ProbeResult(n, "Serving", (SPEC.model,)) for n in ("a", "b")},
        rollout=complete(),
        desired_replicas=2,
        live_revision="r1",
    )
    return replace(base, **overrides)


def conds(s: status.Snapshot) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions_of(s)}


def test_ready_when_every_replica_serves_the_model() -> None:
    c = conds(snapshot())
    assert c["Ready"] == ("True", "Serving")
    assert c["Reconciling"][0] == "False"
    assert c["Stalled"] == ("False", "NotStalled")
    assert c["ModelReady"] == ("True", "Serving")
    assert c["Available"] == ("True", "MinimumReplicasAvailable")


def test_not_ready_while_the_model_loads() -> None:
    s = snapshot(
        probes={"a": ProbeResult("a", "Serving", (SPEC.model,)), "b": ProbeResult("b", "Loading")}
    )
    c = conds(s)
    assert c["Ready"] == ("False", "ModelLoading")
    assert c["Reconciling"] == ("True", "ModelLoading")
    assert c["Stalled"][0] == "False"


def test_wrong_model_is_model_mismatch_even_if_others_serve() -> None:
    s = snapshot(
        probes={
            "a": ProbeResult("a", "Serving", (SPEC.model,)),
            "b": ProbeResult("b", "Mismatch", ("other",), "serves other"),
        }
    )
    assert conds(s)["ModelReady"] == ("False", "ModelMismatch")
    assert conds(s)["Ready"] == ("False", "ModelMismatch")


def test_unreachable_replica() -> None:
    s = snapshot(
        probes={
            "a": ProbeResult("a", "Serving", (SPEC.model,)),
            "b": ProbeResult("b", "Unreachable", detail="ConnectError"),
        }
    )
    assert conds(s)["Ready"] == ("False", "Unreachable")


def test_not_ready_before_the_deployment_controller_catches_up() -> None:
    s = snapshot(deployment=deployment(generation=2, observed=1))
    assert conds(s)["Ready"] == ("False", "RolloutInProgress")


def test_not_ready_while_rolling_out_even_if_old_pods_serve() -> None:
    rolling = models.RolloutStatus(phase="Progressing", target_revision="r2", message="rolling")
    s = snapshot(rollout=rolling, live_revision="r2", facts=[pod("a", "r1"), pod("b", "r1")])
    c = conds(s)
    assert c["Ready"][0] == "False"
    assert c["Reconciling"][0] == "True"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"invalid": "spec.replicas: bad"}, "InvalidSpec"),
        ({"missing": ("Secret ngc-api",)}, "SecretNotFound"),
        ({"missing": ("PersistentVolumeClaim cache",)}, "PersistentVolumeClaimNotFound"),
        (
            {"rollout": complete().model_copy(update={"phase": "RolledBack", "message": "x"})},
            "RolledBack",
        ),
        (
            {
                "rollout": complete().model_copy(
                    update={"phase": "Failed", "failure_reason": "ImagePullBackOff"}
                )
            },
            "ImagePullBackOff",
        ),
    ],
)
def test_stalled_needs_a_human(overrides: dict[str, Any], reason: str) -> None:
    c = conds(snapshot(**overrides))
    assert c["Stalled"] == ("True", reason)
    assert c["Ready"] == ("False", reason)
    assert c["Reconciling"][0] == "False"


def test_scaled_to_zero_is_ready() -> None:
    s = snapshot(
        desired_replicas=0, facts=[], probes={}, deployment=deployment(replicas=0, ready=0)
    )
    assert conds(s)["Ready"] == ("True", "ScaledToZero")


def test_zero_downtime_condition_follows_the_rollout_strategy() -> None:
    one = complete().model_copy(update={"strategy": "OneAtATime"})
    c = {x.type: x for x in status.conditions_of(snapshot(rollout=one, desired_replicas=1))}
    assert c["ZeroDowntimeRollout"].status == "False"
    assert "service is down" in c["ZeroDowntimeRollout"].message


def test_compute_fills_counts_selector_and_endpoint() -> None:
    new = status.compute(snapshot(), models.NimServiceStatus())
    assert new.observed_generation == 3
    assert new.serving_replicas == 2
    assert new.replicas_summary == "2/2"
    assert new.selector == "nimop.dev/nimservice=llama"
    assert new.endpoint == "http://llama.ai.svc.cluster.local:8000"
    assert new.served_models == [SPEC.model]
    assert all(c.observed_generation == 3 for c in new.conditions)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = status.compute(snapshot(), models.NimServiceStatus())
    later = replace(
        snapshot(),
        now=NOW + timedelta(minutes=5),
        probes={"a": ProbeResult("a", "Serving", (SPEC.model,)), "b": ProbeResult("b", "Loading")},
    )
    second = status.compute(later, first)
    third = status.compute(replace(later, now=NOW + timedelta(minutes=6)), second)
    ready = [s.condition("Ready") for s in (first, second, third)]
    assert ready[0]
    assert ready[1]
    assert ready[2]
    assert ready[1].last_transition_time != ready[0].last_transition_time
    assert ready[2].last_transition_time == ready[1].last_transition_time


def test_steady_state_computes_an_identical_status() -> None:
    first = status.compute(snapshot(), models.NimServiceStatus())
    again = status.compute(replace(snapshot(), now=NOW + timedelta(hours=1)), first)
    assert status.merge_patch(status.to_api(first), status.to_api(again)) == {}


def test_events_only_on_transitions() -> None:
    empty = models.NimServiceStatus()
    ready = status.compute(snapshot(), empty)
    assert [e.reason for e in status.transitions(empty, ready)] == ["Ready"]
    assert status.transitions(ready, ready) == []
    broken = status.compute(snapshot(invalid="bad"), ready)
    reasons = [(e.type, e.reason) for e in status.transitions(ready, broken)]
    assert ("Warning", "InvalidSpec") in reasons
    assert ("Warning", "NotReady") in reasons


def test_merge_patch_removes_what_is_no_longer_reported() -> None:
    assert status.merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}}) == {
        "a": None,
        "b": {"d": None},
    }
    assert status.merge_patch({"a": [1]}, {"a": [1, 2]}) == {"a": [1, 2]}


def test_an_invalid_spec_still_reports_what_serves() -> None:
    new = status.compute(
        snapshot(spec=None, invalid="spec.replicas: bad"), models.NimServiceStatus()
    )
    assert new.serving_replicas == 2
    assert new.replicas == 2
    stalled = new.condition("Stalled")
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    available = new.condition("Available")
    assert available is not None
    assert available.status == "True"


# -- cold starts ------------------------------------------------------------------------------


def starting(name: str, started: datetime, **kw: Any) -> pods.PodFacts:
    return pod(name, ready=False, started_at=conditions.timestamp(started), **kw)


def test_a_replica_that_has_not_answered_yet_is_downloading_not_unreachable() -> None:
    s = snapshot(
        facts=[pod("a"), starting("b", NOW - timedelta(minutes=12))],
        probes={
            "a": ProbeResult("a", "Serving", (SPEC.model,)),
            "b": ProbeResult("b", "Refused", detail="ConnectError", answered=False),
        },
        startup_budget=1800,
    )
    c = conds(s)
    assert c["ModelReady"] == ("False", "Downloading")
    assert c["Reconciling"] == ("True", "Downloading")
    assert c["Stalled"][0] == "False"


def test_a_cold_start_posts_normal_events_only() -> None:
    s = snapshot(
        facts=[starting("a", NOW - timedelta(minutes=1)), starting("b", NOW)],
        probes={
            "a": ProbeResult("a", "Refused", answered=False),
            "b": ProbeResult("b", "Loading"),
        },
        startup_budget=1800,
    )
    new = status.compute(s, models.NimServiceStatus())
    assert all(e.type == "Normal" for e in status.transitions(models.NimServiceStatus(), new))


def test_silence_past_the_startup_budget_is_unreachable() -> None:
    s = snapshot(
        facts=[pod("a"), starting("b", NOW - timedelta(minutes=31))],
        probes={
            "a": ProbeResult("a", "Serving", (SPEC.model,)),
            "b": ProbeResult("b", "Refused", answered=False),
        },
        startup_budget=1800,
    )
    condition = {c.type: c for c in status.conditions_of(s)}["ModelReady"]
    assert (condition.status, condition.reason) == ("False", "Unreachable")
    assert "past its startup budget" in condition.message


def test_a_replica_that_served_before_and_went_silent_is_unreachable() -> None:
    s = snapshot(
        facts=[pod("a"), starting("b", NOW, gate="True")],
        probes={
            "a": ProbeResult("a", "Serving", (SPEC.model,)),
            "b": ProbeResult("b", "Refused", answered=False),
        },
        startup_budget=1800,
    )
    new = status.compute(s, models.NimServiceStatus())
    condition = new.condition("ModelReady")
    assert condition is not None
    assert condition.reason == "Unreachable"
    assert "answered before" in condition.message
    assert ("Warning", "Unreachable") in [
        (e.type, e.reason) for e in status.transitions(models.NimServiceStatus(), new)
    ]


# -- node autoscaling -------------------------------------------------------------------------


def test_a_pod_waiting_for_a_new_node_is_reconciling_not_stalled() -> None:
    pending = pod(
        "b",
        running=False,
        unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        unschedulable_since="2026-11-25T11:59:00Z",
    )
    s = snapshot(
        facts=[pod("a"), pending],
        probes={"a": ProbeResult("a", "Serving", (SPEC.model,))},
        waiting_for_node={"b": "NodeClaim gpu-x7k2p of NodePool gpu is launching"},
    )
    c = {x.type: x for x in status.conditions_of(s)}
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "WaitingForNode")
    assert c["Reconciling"].status == "True"
    assert c["Stalled"].status == "False"
    assert "NodeClaim gpu-x7k2p" in c["ModelReady"].message
    assert "2026-11-25T11:59:00Z" in c["ModelReady"].message


def test_a_pod_no_autoscaler_will_serve_stays_pending() -> None:
    pending = pod("b", running=False, unschedulable="0/3 nodes are available")
    s = snapshot(
        facts=[pod("a"), pending], probes={"a": ProbeResult("a", "Serving", (SPEC.model,))}
    )
    assert conds(s)["ModelReady"] == ("False", "Pending")


def test_a_surge_onto_a_new_node_is_zero_downtime() -> None:
    surge = complete().model_copy(update={"strategy": "SurgeOnNewNode"})
    c = {x.type: x for x in status.conditions_of(snapshot(rollout=surge, desired_replicas=1))}
    assert (c["ZeroDowntimeRollout"].status, c["ZeroDowntimeRollout"].reason) == (
        "True",
        "SurgeOnNewNode",
    )


# -- failures only the cluster reports --------------------------------------------------------


def test_a_secret_the_pods_wait_for_is_reported_missing() -> None:
    waiting = pod(
        "a",
        running=False,
        waiting_reason="CreateContainerConfigError",
        waiting_message='secret "ngc-api" not found',
    )
    s = snapshot(facts=[waiting], probes={}, desired_replicas=1)
    stalled = {c.type: c for c in status.conditions_of(s)}["Stalled"]
    assert (stalled.status, stalled.reason) == ("True", "SecretNotFound")
    assert "Secret ngc-api" in stalled.message


def test_replica_set_creation_failures_stall_with_their_message() -> None:
    failing = children.deployment(
        {
            "metadata": {"generation": 1},
            "spec": {"replicas": 1},
            "status": {
                "conditions": [
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": 'pods "llama-x" is forbidden: exceeded quota: gpu',
                    }
                ]
            },
        }
    )
    s = snapshot(deployment=failing, facts=[], probes={}, desired_replicas=1)
    stalled = {c.type: c for c in status.conditions_of(s)}["Stalled"]
    assert (stalled.status, stalled.reason) == ("True", "FailedCreate")
    assert "exceeded quota" in stalled.message


def test_an_invalid_edit_says_the_previous_revision_keeps_serving() -> None:
    stalled = {c.type: c for c in status.conditions_of(snapshot(invalid="spec.x: bad"))}["Stalled"]
    assert "revision r1 keeps serving 2 replica(s), unchanged" in stalled.message


def test_waiting_for_a_nimcache_is_reconciling() -> None:
    s = snapshot(deployment=None, facts=[], probes={}, waiting_for_cache="waiting for NimCache c")
    c = conds(s)
    assert c["Ready"] == ("False", "CacheNotReady")
    assert c["Reconciling"][0] == "True"
    assert c["Stalled"][0] == "False"


# -- which changes are written at once ---------------------------------------------------------


def cold(minutes: float, verdict: str) -> models.NimServiceStatus:
    s = snapshot(
        facts=[starting("a", NOW - timedelta(minutes=minutes))],
        probes={"a": ProbeResult("a", verdict, answered=verdict != "Refused")},  # type: ignore[arg-type]
        desired_replicas=1,
        startup_budget=1800,
    )
    return status.compute(s, models.NimServiceStatus())


def test_progress_alone_may_wait_for_the_next_write() -> None:
    downloading = cold(1, "Refused")
    loading = status.compute(
        snapshot(
            facts=[starting("a", NOW - timedelta(minutes=1))],
            probes={"a": ProbeResult("a", "Loading")},
            desired_replicas=1,
            startup_budget=1800,
        ),
        downloading,
    )
    assert downloading.condition("ModelReady").reason == "Downloading"  # type: ignore[union-attr]
    assert loading.condition("ModelReady").reason == "ModelLoading"  # type: ignore[union-attr]
    assert not status.urgent(downloading, loading)


def test_what_tools_act_on_is_written_at_once() -> None:
    loading = cold(1, "Loading")
    ready = status.compute(snapshot(), loading)
    assert status.urgent(loading, ready), "Ready turned True"
    assert status.urgent(models.NimServiceStatus(), loading), "the first status"
    newer = loading.model_copy(update={"observed_generation": loading.observed_generation + 1})
    assert status.urgent(loading, newer), "a new generation was seen"
    rolled = ready.model_copy(
        update={"rollout": ready.rollout.model_copy(update={"phase": "RolledBack"})}  # type: ignore[union-attr]
    )
    assert status.urgent(ready, rolled), "the rollout's state"
    reworded = ready.model_copy(
        update={"rollout": ready.rollout.model_copy(update={"message": "other words"})}  # type: ignore[union-attr]
    )
    assert not status.urgent(ready, reworded), "a rollout message is progress"
    counted = ready.model_copy(
        update={"rollout": ready.rollout.model_copy(update={"revisions": []})}  # type: ignore[union-attr]
    )
    assert not status.urgent(ready, counted), "so are its counts"
    stalled = status.compute(snapshot(invalid="spec.replicas: bad"), ready)
    other = status.compute(snapshot(invalid="x", invalid_reason="PolicyViolation"), stalled)
    assert status.urgent(stalled, other), "a Stalled reason"
