"""NimCache status (nimcache.status): pure, from the Job, its pods and the previous status.

Ready needs the Job's Complete condition and the report its pod wrote; attempts that fail while
retries remain are Reconciling/Retrying; only a Failed Job, a missing reference or an unusable
spec is Stalled, with the container's own words."""

from __future__ import annotations

import json

import pytest

from nimop.core import apitypes
from nimop.core.conditions import Event
from nimop.nimcache import models, params, status

from .nimcache_cases import (
    AUTH_401,
    CLAIM,
    DISK_FULL,
    ID_BF16,
    ID_FP8,
    JOB,
    JOB_HASH,
    NAME,
    NETWORK,
    REPORT,
    SPEC2,
    claim,
    computed,
    job,
    pod,
    snapshot,
)

BACKOFF = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


def cond(st: models.NimCacheStatus, type_: str) -> tuple[str, str, str]:
    found = st.condition(type_)
    assert found is not None, type_
    return found.status, found.reason, found.message


def kstatus_triplet(st: models.NimCacheStatus) -> tuple[str, str, str]:
    return tuple(cond(st, t)[0] for t in ("Ready", "Reconciling", "Stalled"))  # type: ignore[return-value]


# -- the report -----------------------------------------------------------------------------------


def test_report_parses_the_scripts_line() -> None:
    report = status.parse_report(REPORT + "\n")
    assert report == status.Report((ID_FP8,), 1, 17_394_108_416)


def test_report_count_may_exceed_the_listed_ids() -> None:
    text = json.dumps({"profiles": [ID_FP8], "count": 80, "bytes": 5})
    assert status.parse_report(text) == status.Report((ID_FP8,), 80, 5)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Cached 1 profile(s) in /opt/nim/.cache",
        '{"profiles": [], "bytes": -1}',
        '{"profiles": ["not-an-id"], "bytes": 1}',
        '{"profiles": [1], "bytes": 1}',
        '{"profiles": [], "bytes": "12"}',
        '{"profiles": [], "bytes": true}',
        '{"profiles": "all", "bytes": 1}',
        '{"bytes": 1}',
        f'{{"profiles": ["{ID_FP8}", "{ID_BF16}"], "count": 1, "bytes": 1}}',
        '["profiles"]',
        '{"profiles": [], "bytes": 1',  # cut off by the kubelet's 4096-byte limit
        "INFO log line\n" + REPORT,
        "[" * 100_000,
    ],
)
def test_anything_else_is_no_report(text: str) -> None:
    assert status.parse_report(text) is None


def test_human_size() -> None:
    assert status.human_size(0) == "0"
    assert status.human_size(1023) == "1023"
    assert status.human_size(17_394_108_416) == "16.2Gi"
    assert status.human_size(3 * 1024**5) == "3072.0Ti"


# -- classification of the container's error ------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (AUTH_401, "AuthenticationFailed"),
        (
            "requests.exceptions.HTTPError: 403 Client Error: Forbidden for url",
            "AuthenticationFailed",
        ),
        (DISK_FULL, "DiskFull"),
        ("OSError: [Errno 28] No space left on device", "DiskFull"),
        (NETWORK, "NetworkError"),
        ("Temporary failure in name resolution", "NetworkError"),
        (
            "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify",
            "NetworkError",
        ),
        ("ProxyError('Cannot connect to proxy.')", "NetworkError"),
        ("Traceback: KeyError: 'model'", "JobFailed"),
        ("", "JobFailed"),
    ],
)
def test_classify(message: str, reason: str) -> None:
    assert status.classify(message) == reason


def test_summary_prefers_the_error_line() -> None:
    log = "INFO starting\nError: the real cause\nINFO cleaning up\n"
    assert status.summary(log) == "Error: the real cause"
    assert status.summary("just one line") == "just one line"
    assert status.summary("\n\n") == ""
    long = "Error: " + "x" * 5000
    assert len(status.summary(long)) <= status.SUMMARY_LIMIT + 3


# -- every state ----------------------------------------------------------------------------------


def test_job_not_seen_yet_is_creating() -> None:
    st = computed(snapshot(job=None))
    assert kstatus_triplet(st) == ("False", "True", "False")
    assert cond(st, "Ready")[1:] == ("Creating", f"creating Job {JOB}")
    assert (st.phase, st.job, st.pvc, st.attempts) == ("Pending", JOB, CLAIM, 0)
    assert st.observed_generation == 1


def test_claim_pending() -> None:
    st = computed(
        snapshot(job=job(active=1), claim=claim("Pending"), facts=[pod("p", phase="Pending")])
    )
    assert cond(st, "Ready")[1:] == (
        "ClaimPending",
        f"waiting for PersistentVolumeClaim {CLAIM} to bind (Pending)",
    )
    assert st.phase == "Pending"
    assert kstatus_triplet(st) == ("False", "True", "False")


def test_claim_not_created_yet_is_pending_too() -> None:
    st = computed(snapshot(job=job(active=1), claim=None))
    assert cond(st, "Ready")[1] == "ClaimPending"
    assert "not created yet" in cond(st, "Ready")[2]


def test_unschedulable_pod_is_pending_with_the_schedulers_words() -> None:
    why = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    st = computed(snapshot(job=job(active=1), facts=[pod("p", phase="Pending", unschedulable=why)]))
    assert cond(st, "Ready")[1:] == ("JobPending", f"pod p: {why}")


def test_running_pod_is_downloading() -> None:
    st = computed(snapshot(job=job(active=1), facts=[pod("llama-cache-a", running=True)]))
    assert cond(st, "Ready")[:2] == ("False", "Downloading")
    assert st.phase == "Downloading"
    assert st.attempts == 1
    assert kstatus_triplet(st) == ("False", "True", "False")


def test_failed_attempt_with_retries_left_is_retrying_with_the_error() -> None:
    failed = pod("a", phase="Failed", exit_code=1, message=AUTH_401)
    st = computed(snapshot(job=job(active=1, failed=1), facts=[failed, pod("b", running=True)]))
    ready, reason, message = cond(st, "Ready")
    assert (ready, reason, st.phase) == ("False", "Retrying", "Retrying")
    assert message.startswith("1 of 4 attempt(s) failed, attempt 2 is running; last error: pod a")
    assert "exit code 1" in message
    assert "HTTP 401 Unauthorized" in message
    assert kstatus_triplet(st) == ("False", "True", "False"), "not Stalled while retries remain"
    assert (st.attempts, st.failed_attempts) == (2, 1)


def test_between_attempts_the_job_retries() -> None:
    failed = pod("a", phase="Failed", exit_code=1, message=NETWORK)
    st = computed(snapshot(job=job(failed=1), facts=[failed]))
    assert "the Job retries" in cond(st, "Ready")[2]


@pytest.mark.parametrize(
    ("log", "reason", "words"),
    [
        (
            AUTH_401,
            "AuthenticationFailed",
            "the NGC key in Secret ngc-api (key NGC_API_KEY) was refused",
        ),
        (DISK_FULL, "DiskFull", f"the cache volume (claim {CLAIM}) is full"),
        (NETWORK, "NetworkError", "check the cluster's egress and spec.proxy"),
        ("Traceback (most recent call last):\nKeyError: 'x'\n", "JobFailed", f"Job {JOB} failed"),
    ],
)
def test_retries_exhausted_is_stalled_with_the_containers_error(
    log: str, reason: str, words: str
) -> None:
    facts = [pod(f"p{i}", phase="Failed", exit_code=1, message=log, finished=i) for i in range(4)]
    st = computed(snapshot(job=job(failed=4, condition=BACKOFF), facts=facts))
    assert kstatus_triplet(st) == ("False", "False", "True")
    _stalled, stalled_reason, message = cond(st, "Stalled")
    assert stalled_reason == reason
    assert words in message
    assert "after 4 failed attempt(s)" in message
    assert cond(st, "Ready")[1] == reason
    assert st.phase == "Failed"
    if reason == "JobFailed":
        assert "BackoffLimitExceeded" in message
        assert "pod p3 failed (exit code 1): KeyError" in message


def test_the_latest_attempt_speaks() -> None:
    facts = [
        pod("early", phase="Failed", exit_code=1, message=NETWORK, finished=2),
        pod("late", phase="Failed", exit_code=1, message=AUTH_401, finished=7),
    ]
    st = computed(snapshot(job=job(failed=4, condition=BACKOFF), facts=facts))
    assert cond(st, "Stalled")[1] == "AuthenticationFailed"


def test_deadline_exceeded_without_a_container_error() -> None:
    deadline = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    st = computed(snapshot(job=job(failed=1, condition=deadline), facts=[]))
    _, reason, message = cond(st, "Stalled")
    assert reason == "JobFailed"
    assert "DeadlineExceeded: Job was active longer than specified deadline" in message


def test_complete_job_with_report_is_ready() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    st = computed(snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]))
    assert kstatus_triplet(st) == ("True", "False", "False")
    assert cond(st, "Ready")[1:] == ("Cached", f"1 profile(s), 16.2Gi in claim {CLAIM}")
    assert (st.phase, st.profiles, st.profile_count, st.size_bytes, st.size) == (
        "Ready",
        [ID_FP8],
        1,
        17_394_108_416,
        "16.2Gi",
    )
    assert (st.pvc, st.job, st.job_hash, st.attempts) == (CLAIM, JOB, JOB_HASH, 1)


def test_complete_job_without_report_is_never_ready() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message="")
    st = computed(snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]))
    assert kstatus_triplet(st) == ("False", "False", "True")
    assert cond(st, "Stalled")[1] == "NoReport"
    assert (st.phase, st.profiles, st.job_hash) == ("Failed", [], "")


def test_complete_job_whose_pods_are_gone_keeps_the_recorded_report() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    complete = job(succeeded=1, condition=("Complete", "", ""))
    ready = computed(snapshot(job=complete, facts=[done]))
    again = computed(snapshot(minutes=60, job=complete, facts=[]), ready)
    assert cond(again, "Ready")[:2] == ("True", "Cached")
    assert again.profiles == [ID_FP8]
    ready_at = ready.condition("Ready")
    again_at = again.condition("Ready")
    assert ready_at is not None
    assert again_at is not None
    assert again_at.last_transition_time == ready_at.last_transition_time


def test_ready_with_its_job_deleted_stays_ready() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    ready = computed(snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]))
    kept = computed(snapshot(minutes=90, job=None, job_name=None), ready)
    assert cond(kept, "Ready")[:2] == ("True", "Cached")
    assert (kept.profiles, kept.job, kept.job_hash, kept.attempts) == ([ID_FP8], JOB, JOB_HASH, 1)


def test_missing_config_map_is_stalled_before_anything_runs() -> None:
    st = computed(snapshot(job=None, job_name=None, missing=("ConfigMap proxy-ca",)))
    assert kstatus_triplet(st) == ("False", "False", "True")
    _, reason, message = cond(st, "Stalled")
    assert reason == "ConfigMapNotFound"
    assert message.startswith("ConfigMap proxy-ca not found in namespace ai; nothing was changed")
    assert st.phase == "Pending"
    assert not status.steady(st), "polled at the fast interval until it exists"


def test_missing_claim_is_stalled() -> None:
    st = computed(snapshot(job=None, job_name=None, missing=("PersistentVolumeClaim models",)))
    assert cond(st, "Stalled")[1] == "PersistentVolumeClaimNotFound"


def test_missing_secret_is_learned_from_the_pod() -> None:
    waiting = ("CreateContainerConfigError", 'secret "ngc-api" not found')
    st = computed(snapshot(job=job(active=1), facts=[pod("a", phase="Pending", waiting=waiting)]))
    _, reason, message = cond(st, "Stalled")
    assert reason == "SecretNotFound"
    assert "pod a waits for it" in message
    assert status.steady(st), "the pod's next status wakes the pass"


def test_image_pull_failure_names_the_pull_secrets() -> None:
    waiting = (
        "ImagePullBackOff",
        'Back-off pulling image "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"',
    )
    st = computed(snapshot(job=job(active=1), facts=[pod("a", phase="Pending", waiting=waiting)]))
    _, reason, message = cond(st, "Stalled")
    assert reason == "ImagePullBackOff"
    assert "(imagePullSecrets: ngc-registry)" in message


def test_invalid_spec() -> None:
    st = computed(snapshot(spec=None, invalid="spec.storage: bad"))
    assert cond(st, "Stalled")[1:] == ("InvalidSpec", "spec.storage: bad; nothing was changed")
    assert st.phase == "Failed"


def test_name_conflict_reason() -> None:
    st = computed(snapshot(invalid="Job x already exists", invalid_reason="NameConflict"))
    assert cond(st, "Stalled")[1] == "NameConflict"


def test_spec_change_moves_observed_generation_and_forgets_the_old_report() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    ready = computed(snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]))
    new_job = params.job_name(NAME, "0a1b2c3d4e")
    edited = computed(
        snapshot(
            generation=2, minutes=30, spec=SPEC2, job=None, job_name=new_job, job_hash="0a1b2c3d4e"
        ),
        ready,
    )
    assert edited.observed_generation == 2
    assert all(c.observed_generation == 2 for c in edited.conditions)
    assert cond(edited, "Ready")[:2] == ("False", "Creating")
    assert (edited.profiles, edited.size_bytes, edited.job, edited.job_hash) == ([], 0, new_job, "")


def test_invalid_edit_keeps_what_the_cache_holds() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    ready = computed(snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]))
    broken = computed(snapshot(generation=2, spec=None, invalid="spec: bad"), ready)
    assert broken.job_hash == JOB_HASH, "reverting the edit must not download again"


def test_transition_time_moves_only_with_status() -> None:
    first = computed(snapshot(minutes=1, job=job(active=1), facts=[pod("a", running=True)]))
    later = computed(snapshot(minutes=5, job=job(active=1), facts=[pod("a", running=True)]), first)
    a, b = first.condition("Ready"), later.condition("Ready")
    assert a is not None
    assert b is not None
    assert a.last_transition_time == b.last_transition_time


# -- Events -------------------------------------------------------------------------------------


def test_events_on_transitions_only() -> None:
    empty = models.NimCacheStatus()
    creating = computed(snapshot(job=None))
    downloading = computed(snapshot(job=job(active=1), facts=[pod("a", running=True)]), creating)
    failed = pod("a", phase="Failed", exit_code=1, message=AUTH_401, finished=3)
    retrying = computed(
        snapshot(job=job(active=1, failed=1), facts=[failed, pod("b", running=True)]), downloading
    )
    second = pod("b", phase="Failed", exit_code=1, message=AUTH_401, finished=4)
    retrying2 = computed(snapshot(job=job(failed=2), facts=[failed, second]), retrying)
    stalled = computed(
        snapshot(job=job(failed=4, condition=BACKOFF), facts=[failed, second]), retrying2
    )

    assert status.transitions(empty, creating) == []
    assert [e.reason for e in status.transitions(creating, downloading)] == ["Downloading"]
    assert status.transitions(downloading, downloading) == []
    warn = status.transitions(downloading, retrying)
    assert [(e.type, e.reason) for e in warn] == [("Warning", "Retrying")]
    assert "HTTP 401" in warn[0].message
    assert [e.reason for e in status.transitions(retrying, retrying2)] == ["Retrying"], (
        "one Warning per failed attempt"
    )
    assert status.transitions(retrying2, retrying2) == []
    final = status.transitions(retrying2, stalled)
    assert [(e.type, e.reason) for e in final] == [("Warning", "AuthenticationFailed")]
    assert status.transitions(stalled, stalled) == []


def test_ready_event_once() -> None:
    downloading = computed(snapshot(job=job(active=1), facts=[pod("a", running=True)]))
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    ready = computed(
        snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]), downloading
    )
    assert status.transitions(downloading, ready) == [
        Event("Normal", "Ready", f"1 profile(s), 16.2Gi in claim {CLAIM}")
    ]
    assert status.transitions(ready, ready) == []


def test_to_api_uses_the_wire_names() -> None:
    done = pod("a", phase="Succeeded", exit_code=0, message=REPORT)
    st = computed(snapshot(job=job(succeeded=1, condition=("Complete", "", "")), facts=[done]))
    wire = status.to_api(st)
    assert wire["bytes"] == 17_394_108_416
    assert {"observedGeneration", "profileCount", "subPath", "failedAttempts", "jobHash"} <= set(
        wire
    )
    assert apitypes.parse_status(models.NimCacheStatus, wire) == st
