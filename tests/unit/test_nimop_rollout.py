"""The rollout state machine: strategy choice, health-gated completion, rollback, no retry loops."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from nimop.core import conditions, pods
from nimop.core.probes import ProbeResult
from nimop.nimservice import models, params, rollout

from . import factories

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def pod(
    name: str,
    revision: str,
    *,
    running: bool = True,
    ready: bool = True,
    waiting: str | None = None,
    unschedulable: str | None = None,
) -> pods.PodFacts:
    return factories.pod_facts(
        name,
        ip="127.1.0.1" if running else None,
        revision=revision,
        phase="Running" if running else "Pending",
        running=running,
        started_once=running,
        ready=ready,
        waiting_reason=waiting,
        unschedulable=unschedulable,
        node="gpu-node-0" if running else None,
    )


def inputs(**overrides: object) -> rollout.Inputs:
    base = rollout.Inputs(
        generation=2,
        desired_revision="new",
        live_revision="old",
        deployment_settled=False,
        deployment_deadline_exceeded=False,
        desired_replicas=1,
        health={},
        prev=None,
        now=NOW,
        requested=None,
        surge_fits=True,
        auto_rollback=True,
        deadline_seconds=600,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def progressing(
    target: str = "new", last_good: str | None = "old", started: datetime = NOW
) -> models.RolloutStatus:
    return models.RolloutStatus(
        phase="Progressing",
        target_revision=target,
        current_revision=target,
        last_good_revision=last_good,
        strategy="Surge",
        start_time=conditions.timestamp(started),
        observed_generation=2,
    )


def health(
    *facts: pods.PodFacts, probes: dict[str, ProbeResult] | None = None, can_fit: bool = True
) -> dict[str, rollout.RevisionHealth]:
    return rollout.revision_health(list(facts), probes or {}, can_fit)


def serving(*names: str) -> dict[str, ProbeResult]:
    return {n: ProbeResult(n, "Serving", ("m",)) for n in names}


class TestStart:
    def test_first_deployment_surges_without_asking_for_capacity(self) -> None:
        d = rollout.decide(inputs(live_revision=None, surge_fits=None))
        assert d.status.phase == "Progressing"
        assert d.strategy == params.SURGE
        assert d.apply_revision == "new"
        assert d.events == (), "a first deployment's Event is Ready, posted from the status"

    def test_update_with_spare_gpu_surges(self) -> None:
        prev = progressing("old").model_copy(
            update={"phase": "Complete", "last_good_revision": "old"}
        )
        d = rollout.decide(inputs(prev=prev, surge_fits=True))
        assert d.strategy == params.SURGE
        assert d.status.last_good_revision == "old"
        assert d.status.target_revision == "new"
        assert "Surge" in d.events[0].message

    def test_full_cluster_replaces_one_at_a_time_and_warns_plainly(self) -> None:
        prev = progressing("old").model_copy(update={"phase": "Complete"})
        d = rollout.decide(inputs(prev=prev, surge_fits=False, desired_replicas=1))
        assert d.strategy == params.ONE_AT_A_TIME
        warning = next(e for e in d.events if e.reason == "NoSpareGPU")
        assert warning.type == "Warning"
        assert "DOWN until the new replica is ready" in warning.message
        assert d.status.strategy == "OneAtATime"

    def test_full_cluster_with_several_replicas_says_capacity_drops(self) -> None:
        prev = progressing("old").model_copy(update={"phase": "Complete"})
        d = rollout.decide(inputs(prev=prev, surge_fits=False, desired_replicas=3))
        warning = next(e for e in d.events if e.reason == "NoSpareGPU")
        assert "2 of 3 replicas keep serving" in warning.message

    def test_full_cluster_surges_onto_a_node_the_autoscaler_adds(self) -> None:
        prev = progressing("old").model_copy(update={"phase": "Complete"})
        d = rollout.decide(
            inputs(prev=prev, surge_fits=False, surge_pool="gpu", desired_replicas=1)
        )
        assert d.strategy == params.SURGE_ON_NEW_NODE
        assert d.strategy.deployment_strategy() == params.SURGE.deployment_strategy()
        assert d.status.strategy == "SurgeOnNewNode"
        assert "NodePool gpu" in d.events[0].message
        assert not any(e.reason == "NoSpareGPU" for e in d.events)

    def test_a_surge_onto_a_new_node_stays_the_strategy(self) -> None:
        prev = progressing().model_copy(update={"strategy": "SurgeOnNewNode"})
        assert rollout.decide(inputs(prev=prev)).strategy == params.SURGE_ON_NEW_NODE

    def test_user_strategy_is_used_as_given(self) -> None:
        prev = progressing("old").model_copy(update={"phase": "Complete"})
        d = rollout.decide(inputs(prev=prev, surge_fits=False, requested=params.RECREATE))
        assert d.strategy == params.RECREATE
        assert not any(e.reason == "NoSpareGPU" for e in d.events)

    def test_strategy_stays_fixed_for_the_whole_rollout(self) -> None:
        prev = progressing().model_copy(update={"strategy": "OneAtATime"})
        d = rollout.decide(inputs(prev=prev, surge_fits=True))
        assert d.strategy == params.ONE_AT_A_TIME
        assert d.events == ()


class TestProgress:
    def test_not_complete_until_every_replica_serves_the_model(self) -> None:
        h = health(pod("a", "new"), probes={"a": ProbeResult("a", "Loading")})
        d = rollout.decide(
            inputs(prev=progressing(), live_revision="new", deployment_settled=True, health=h)
        )
        assert d.status.phase == "Progressing"

    def test_not_complete_while_old_pods_remain(self) -> None:
        h = health(pod("a", "new"), pod("b", "old"), probes=serving("a", "b"))
        d = rollout.decide(
            inputs(prev=progressing(), live_revision="new", deployment_settled=True, health=h)
        )
        assert d.status.phase == "Progressing"
        assert [r.revision for r in d.status.revisions] == ["new", "old"]

    def test_complete_when_settled_and_serving(self) -> None:
        h = health(pod("a", "new"), probes=serving("a"))
        d = rollout.decide(
            inputs(prev=progressing(), live_revision="new", deployment_settled=True, health=h)
        )
        assert d.status.phase == "Complete"
        assert d.status.last_good_revision == "new"
        assert [e.reason for e in d.events] == ["RolloutComplete"]

    def test_a_first_deployment_completes_without_an_event_of_its_own(self) -> None:
        h = health(pod("a", "new"), probes=serving("a"))
        d = rollout.decide(
            inputs(
                prev=progressing(last_good=None),
                live_revision="new",
                deployment_settled=True,
                health=h,
            )
        )
        assert d.status.phase == "Complete"
        assert d.events == ()

    def test_complete_is_sticky(self) -> None:
        prev = progressing().model_copy(update={"phase": "Complete", "last_good_revision": "new"})
        d = rollout.decide(
            inputs(prev=prev, live_revision="new", health=health(pod("a", "new", running=False)))
        )
        assert d.status.phase == "Complete"
        assert d.events == ()


class TestFailure:
    @pytest.mark.parametrize(
        ("fact", "probes", "reason"),
        [
            (pod("a", "new", running=False, waiting="ImagePullBackOff"), {}, "ImagePullBackOff"),
            (pod("a", "new", running=False, waiting="CrashLoopBackOff"), {}, "CrashLoopBackOff"),
            (
                pod("a", "new"),
                {"a": ProbeResult("a", "Mismatch", ("x",), "serves x, not m")},
                "ModelMismatch",
            ),
        ],
    )
    def test_broken_revision_rolls_back_to_last_good(
        self, fact: pods.PodFacts, probes: dict[str, ProbeResult], reason: str
    ) -> None:
        h = health(fact, pod("b", "old"), probes={**probes, **serving("b")})
        d = rollout.decide(inputs(prev=progressing(), live_revision="new", health=h))
        assert d.status.phase == "RolledBack"
        assert d.apply_revision == "old"
        assert d.status.failed_revision == "new"
        assert d.status.failure_reason == reason
        assert "rolled back to old" in d.status.message

    def test_unschedulable_only_fails_when_no_node_can_ever_fit(self) -> None:
        waiting = pod(
            "a", "new", running=False, unschedulable="0/3 nodes: Insufficient nvidia.com/gpu"
        )
        d = rollout.decide(inputs(prev=progressing(), health=health(waiting, can_fit=True)))
        assert d.status.phase == "Progressing"
        d = rollout.decide(inputs(prev=progressing(), health=health(waiting, can_fit=False)))
        assert d.status.failure_reason == "InsufficientGPU"

    def test_a_pod_waiting_for_a_new_node_is_no_failure(self) -> None:
        waiting = pod(
            "a", "new", running=False, unschedulable="0/3 nodes: Insufficient nvidia.com/gpu"
        )
        h = rollout.revision_health(
            [waiting], {}, gpus_can_fit=False, waiting_for_node={"a": "NodeClaim x is launching"}
        )
        d = rollout.decide(inputs(prev=progressing(), health=h))
        assert d.status.phase == "Progressing"

    def test_a_failed_first_deployment_that_recovers_completes(self) -> None:
        """A Secret or node appeared and the same revision now serves: no edit needed."""
        failed = progressing(last_good=None).model_copy(
            update={"phase": "Failed", "failure_reason": "InsufficientGPU"}
        )
        h = health(pod("a", "new"), probes=serving("a"))
        d = rollout.decide(
            inputs(prev=failed, live_revision="new", health=h, deployment_settled=True)
        )
        assert d.status.phase == "Complete"
        assert d.status.last_good_revision == "new"

    def test_deadline_rolls_back(self) -> None:
        prev = progressing(started=NOW - timedelta(seconds=601))
        d = rollout.decide(inputs(prev=prev, health=health(pod("a", "new"))))
        assert d.status.phase == "RolledBack"
        assert d.status.failure_reason == "ProgressDeadlineExceeded"

    def test_deployment_deadline_rolls_back(self) -> None:
        d = rollout.decide(inputs(prev=progressing(), deployment_deadline_exceeded=True))
        assert d.status.failure_reason == "ProgressDeadlineExceeded"

    def test_without_a_good_revision_it_fails_in_place(self) -> None:
        h = health(pod("a", "new", running=False, waiting="ImagePullBackOff"))
        d = rollout.decide(inputs(prev=progressing(last_good=None), health=h))
        assert d.status.phase == "Failed"
        assert d.apply_revision == "new"
        assert "no earlier revision ever served" in d.status.message

    def test_auto_rollback_off_fails_in_place(self) -> None:
        h = health(pod("a", "new", running=False, waiting="ImagePullBackOff"))
        d = rollout.decide(inputs(prev=progressing(), health=h, auto_rollback=False))
        assert d.status.phase == "Failed"
        assert d.apply_revision == "new"

    def test_rolled_back_stays_rolled_back_for_the_same_spec(self) -> None:
        h = health(pod("a", "new", running=False, waiting="ImagePullBackOff"))
        first = rollout.decide(inputs(prev=progressing(), health=h))
        # Later passes, even with a newer generation from an autoscaler, do not retry.
        later = rollout.decide(
            inputs(prev=first.status, generation=5, health=health(pod("b", "old")))
        )
        assert later.status.phase == "RolledBack"
        assert later.apply_revision == "old"
        assert later.events == ()

    def test_a_new_template_after_rollback_is_a_fresh_attempt(self) -> None:
        h = health(pod("a", "new", running=False, waiting="ImagePullBackOff"))
        rolled = rollout.decide(inputs(prev=progressing(), health=h))
        d = rollout.decide(
            inputs(prev=rolled.status, desired_revision="newer", generation=3, live_revision="old")
        )
        assert d.status.phase == "Progressing"
        assert d.status.target_revision == "newer"
        assert d.status.last_good_revision == "old"
        assert d.status.failed_revision is None

    def test_rollback_without_the_old_replicaset_fails(self) -> None:
        h = health(pod("a", "new", running=False, waiting="ImagePullBackOff"))
        d = rollout.rollback_unavailable(
            rollout.decide(inputs(prev=progressing(), health=h)), "new"
        )
        assert d.status.phase == "Failed"
        assert d.apply_revision == "new"
        assert "cannot roll back" in d.status.message


def test_time_round_trip() -> None:
    parsed = conditions.parse_time(conditions.timestamp(NOW))
    assert parsed == NOW.replace(tzinfo=None)
    assert conditions.parse_time("not a time") is None
