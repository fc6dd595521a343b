"""The compact facts the NimCache pipeline and its consumers read, parsed once from objects as the
API server returns them (core.children: JobFacts, ClaimFacts, NimCacheFacts; core.pods: a
container's last termination)."""

from __future__ import annotations

from typing import Any

from nimop import names
from nimop.core import children, pods

Obj = dict[str, Any]


def test_job_facts() -> None:
    job = children.job(
        {
            "metadata": {
                "name": "c-abc",
                "namespace": "ns",
                "uid": "j1",
                "labels": {children.LABEL_JOB_HASH: "abc"},
                "annotations": {children.ANNOTATION_GENERATION: "4"},
                "ownerReferences": [{"uid": "owner", "controller": True}],
            },
            "spec": {"backoffLimit": 2},
            "status": {
                "active": 1,
                "ready": 1,
                "failed": 2,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"},
                ],
            },
        }
    )
    assert (job.api_version, job.kind, job.key) == ("batch/v1", "Job", ("batch/v1", "Job", "c-abc"))
    assert (job.active, job.ready, job.succeeded, job.failed, job.backoff_limit) == (1, 1, 0, 2, 2)
    assert job.created_generation == 4
    assert job.controller_uid == "owner"
    assert job.failed_condition is not None
    assert job.failed_condition.reason == "BackoffLimitExceeded"
    assert not job.complete
    assert job.attempts == 3


def test_job_facts_of_a_fresh_job() -> None:
    job = children.job({"metadata": {"name": "j", "annotations": {}}, "spec": {}})
    assert (job.backoff_limit, job.created_generation, job.attempts) == (6, None, 0)
    assert job.failed_condition is None
    assert not job.complete
    odd = children.job(
        {"metadata": {"name": "j", "annotations": {children.ANNOTATION_GENERATION: "x"}}}
    )
    assert odd.created_generation == 0


def test_complete_job() -> None:
    job = children.job(
        {
            "metadata": {"name": "j"},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
        }
    )
    assert job.complete
    assert job.failed_condition is None


def test_claim_facts() -> None:
    claim = children.claim(
        {
            "metadata": {"name": "c", "uid": "u"},
            "spec": {"storageClassName": "standard"},
            "status": {"phase": "Bound"},
        }
    )
    assert (claim.kind, claim.phase, claim.storage_class) == (
        "PersistentVolumeClaim",
        "Bound",
        "standard",
    )
    assert children.claim({"metadata": {"name": "c"}}).phase == "Pending"


def nimcache_obj(status: Any, generation: int = 3) -> Obj:
    return {
        "metadata": {"name": "cache", "namespace": "ns", "uid": "u1", "generation": generation},
        "status": status,
    }


def test_nimcache_view_when_ready() -> None:
    view = children.nimcache(
        nimcache_obj(
            {
                "observedGeneration": 3,
                "phase": "Ready",
                "pvc": "cache-nimcache",
                "subPath": "llama",
                "profiles": ["a" * 64],
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Cached", "message": "1 profile"},
                    {"type": "Stalled", "status": "False", "reason": "NotStalled"},
                ],
            }
        )
    )
    assert (view.namespace, view.name, view.uid, view.generation) == ("ns", "cache", "u1", 3)
    assert (view.ready, view.reason, view.stalled_reason, view.stalled_message) == (
        True,
        "Cached",
        None,
        "",
    )
    assert (view.pvc, view.sub_path, view.profiles, view.phase) == (
        "cache-nimcache",
        "llama",
        ("a" * 64,),
        "Ready",
    )
    assert view.current
    assert view.usable


def test_nimcache_view_of_an_older_generation_is_not_usable() -> None:
    view = children.nimcache(
        nimcache_obj(
            {
                "observedGeneration": 2,
                "pvc": "p",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Cached"}],
            }
        )
    )
    assert view.ready
    assert not view.current
    assert not view.usable


def test_nimcache_view_when_stalled() -> None:
    view = children.nimcache(
        nimcache_obj(
            {
                "observedGeneration": 3,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "AuthenticationFailed"},
                    {
                        "type": "Stalled",
                        "status": "True",
                        "reason": "AuthenticationFailed",
                        "message": "the NGC key in Secret ngc-api was refused",
                    },
                ],
            }
        )
    )
    assert view.stalled_reason == "AuthenticationFailed"
    assert view.stalled_message == "the NGC key in Secret ngc-api was refused"
    assert not view.usable


def test_nimcache_view_survives_any_status() -> None:
    for status in (None, "junk", {"conditions": "x"}, {"conditions": [1, "a", {"type": "Ready"}]}):
        view = children.nimcache(nimcache_obj(status))
        assert not view.ready
        assert not view.usable
    assert children.nimcache({"metadata": {"name": "n"}}).generation == 0


def pod(state: Obj, last: Obj | None = None) -> pods.PodFacts:
    status: Obj = {"name": "nim-cache", "state": state}
    if last is not None:
        status["lastState"] = last
    return pods.facts(
        {
            "metadata": {"name": "p", "labels": {names.LABEL_NIMCACHE: "c"}},
            "status": {"phase": "Failed", "containerStatuses": [status]},
        }
    )


def test_pod_termination_facts() -> None:
    done = pod(
        {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "message": "Error: 401",
                "finishedAt": "2026-01-05T09:05:00Z",
            }
        }
    )
    assert (
        done.exit_code,
        done.termination_reason,
        done.termination_message,
        done.finished_at,
    ) == (
        1,
        "Error",
        "Error: 401",
        "2026-01-05T09:05:00Z",
    )


def test_pod_termination_falls_back_to_the_last_state() -> None:
    restarted = pod(
        {"running": {"startedAt": "2026-01-05T09:06:00Z"}},
        {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    )
    assert (restarted.exit_code, restarted.termination_reason) == (137, "OOMKilled")
    assert pod({"running": {}}).exit_code is None
    assert pod({"terminated": {"exitCode": "x"}}).exit_code is None
