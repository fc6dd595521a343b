"""NimCache objects in every state the operator writes, built by the operator's own pure status
computation (nimcache.status.compute) from Job and Pod objects shaped as the API server returns
them. Shared by the status tests and the Argo CD / kstatus agreement tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nimop import names
from nimop.core import children, pods
from nimop.nimcache import models, params, status

Obj = dict[str, Any]

NAME, NAMESPACE = "llama-cache", "ai"
UID = "7d4f9b2e-1c3a-4e5f-8a6b-9c0d1e2f3a4b"
START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
ID_FP8 = "2959f7f0dfeb14631352967402c282e904ff33e1d1fa015f603d9890cf92ca0f"
ID_BF16 = "9cff0915527166b2e93c08907afd4f74e168562992034a51db00df802e86518c"
SPEC_RAW: Obj = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "authSecret": "ngc-api",
    "imagePullSecrets": ["ngc-registry"],
    "profiles": ["tensorrt_llm-h100-fp8-tp1-throughput"],
    "storage": {"size": "50Gi"},
}
SPEC = models.NimCacheSpec.model_validate(SPEC_RAW)
SPEC2 = SPEC.model_copy(update={"profiles": ["tensorrt_llm-h100-bf16-tp1-throughput"]})
JOB_HASH = "4d17f76e7e"
JOB = params.job_name(NAME, JOB_HASH)
CLAIM = params.claim_name(NAME)
REPORT = json.dumps({"profiles": [ID_FP8], "count": 1, "bytes": 17_394_108_416})
AUTH_401 = (
    "ERROR 01-05 09:01:02.110 ngc_injector.py:118] Authentication Error: failed to fetch the "
    "model manifest: HTTP 401 Unauthorized\n"
    "Error: Authentication failed (HTTP 401 Unauthorized) downloading "
    "nim/meta/llama-3_1-8b-instruct from NGC: NGC_API_KEY was rejected; check that the key is "
    "valid and has not expired\n"
)
DISK_FULL = (
    "INFO 01-05 09:03:00.000 pre_download.py:80] Downloading profile ...\n"
    "Error: Disk full writing the model cache: [Errno 28] No space left on device after "
    "4294967296 bytes; enlarge the cache volume\n"
)
NETWORK = (
    "Error: Network failure downloading the model: cannot connect to api.ngc.nvidia.com:443 "
    "(Network is unreachable); check the cluster's egress, HTTPS_PROXY and NO_PROXY\n"
)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def ts(minutes: float) -> str:
    return at(minutes).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(
    *,
    name: str = JOB,
    active: int = 0,
    succeeded: int = 0,
    failed: int = 0,
    backoff_limit: int = 3,
    condition: tuple[str, str, str] | None = None,
    generation: int = 1,
) -> children.JobFacts:
    """A Job as the Job controller reports it; condition is (type, reason, message)."""
    conds = []
    if condition is not None:
        kind, reason, message = condition
        conds.append({"type": kind, "status": "True", "reason": reason, "message": message})
    return children.job(
        {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"job-{name}",
                "labels": {**params.owner_labels(NAME), params.LABEL_JOB_HASH: JOB_HASH},
                "annotations": {params.ANNOTATION_GENERATION: str(generation)},
                "ownerReferences": [{"uid": UID, "controller": True}],
            },
            "spec": {"backoffLimit": backoff_limit},
            "status": {
                "active": active,
                "succeeded": succeeded,
                "failed": failed,
                "conditions": conds,
            },
        }
    )


def pod(
    name: str,
    *,
    phase: str = "Running",
    running: bool = False,
    waiting: tuple[str, str] | None = None,
    exit_code: int | None = None,
    message: str = "",
    finished: float = 5,
    unschedulable: str | None = None,
    job_name: str = JOB,
) -> pods.PodFacts:
    state: Obj = {}
    if running:
        state = {"running": {"startedAt": ts(1)}}
    elif waiting is not None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    elif exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "message": message,
                "startedAt": ts(1),
                "finishedAt": ts(finished),
            }
        }
    conditions = []
    if unschedulable:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        )
    return pods.facts(
        {
            "metadata": {
                "name": name,
                "uid": f"pod-{name}",
                "labels": params.owner_labels(NAME),
                "ownerReferences": [{"uid": f"job-{job_name}", "controller": True}],
                "creationTimestamp": ts(0),
            },
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [{"name": params.CONTAINER, "state": state}],
            },
        }
    )


def claim(phase: str = "Bound") -> children.ClaimFacts:
    return children.claim(
        {
            "metadata": {"name": CLAIM, "namespace": NAMESPACE, "uid": "claim-uid"},
            "status": {"phase": phase},
        }
    )


def snapshot(
    generation: int = 1, minutes: float = 10, spec: models.NimCacheSpec | None = SPEC, **kw: Any
) -> status.Snapshot:
    base = status.Snapshot(
        name=NAME,
        namespace=NAMESPACE,
        generation=generation,
        now=at(minutes),
        spec=spec,
        claim_name=CLAIM,
        creates_claim=True,
        claim=claim(),
        job_hash=JOB_HASH,
        job_name=JOB,
    )
    return replace(base, **kw)


def nimcache(
    generation: int, status_: Obj | None, spec: models.NimCacheSpec = SPEC, name: str = NAME
) -> Obj:
    obj: Obj = {
        "apiVersion": names.API_VERSION,
        "kind": models.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "generation": generation,
            "uid": UID,
            "creationTimestamp": ts(0),
        },
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_defaults=True),
    }
    if status_ is not None:
        obj["status"] = status_
    return obj


def computed(
    snap: status.Snapshot, prev: models.NimCacheStatus | None = None
) -> models.NimCacheStatus:
    return status.compute(snap, prev or models.NimCacheStatus())


def api(st: models.NimCacheStatus) -> Obj:
    return status.to_api(st)


@dataclass(frozen=True)
class Case:
    obj: Obj
    argo: str
    kstatus: str
    message: str
    """A part of Argo CD's message."""


def operator_states() -> dict[str, Case]:
    """Every state the pipeline writes, from a fresh object to each Stalled reason."""
    creating = computed(snapshot(minutes=0, job=None))
    downloading = computed(
        snapshot(minutes=2, job=job(active=1), facts=[pod("llama-cache-a", running=True)]),
        creating,
    )
    ready = computed(
        snapshot(
            minutes=20,
            job=job(succeeded=1, condition=("Complete", "", "")),
            facts=[pod("llama-cache-a", phase="Succeeded", exit_code=0, message=REPORT)],
        ),
        downloading,
    )
    failed_once = pod("llama-cache-a", phase="Failed", exit_code=1, message=AUTH_401)
    retrying = computed(
        snapshot(
            minutes=3,
            job=job(active=1, failed=1),
            facts=[failed_once, pod("llama-cache-b", running=True)],
        ),
        downloading,
    )
    auth = computed(
        snapshot(
            minutes=8,
            job=job(
                failed=4,
                condition=(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            ),
            facts=[
                pod(f"llama-cache-{i}", phase="Failed", exit_code=1, message=AUTH_401, finished=i)
                for i in range(4)
            ],
        ),
        retrying,
    )
    disk = computed(
        snapshot(
            minutes=8,
            job=job(
                failed=4,
                condition=(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            ),
            facts=[pod("llama-cache-d", phase="Failed", exit_code=1, message=DISK_FULL)],
        ),
        retrying,
    )
    network = computed(
        snapshot(
            minutes=8,
            job=job(
                failed=4,
                condition=(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            ),
            facts=[pod("llama-cache-n", phase="Failed", exit_code=1, message=NETWORK)],
        ),
        retrying,
    )
    no_report = computed(
        snapshot(
            minutes=20,
            job=job(succeeded=1, condition=("Complete", "", "")),
            facts=[pod("llama-cache-a", phase="Succeeded", exit_code=0, message="")],
        ),
        downloading,
    )
    missing_ca = computed(
        snapshot(minutes=0, job=None, job_name=None, missing=("ConfigMap proxy-ca",))
    )
    secret = computed(
        snapshot(
            minutes=1,
            job=job(active=1),
            facts=[
                pod(
                    "llama-cache-a",
                    phase="Pending",
                    waiting=("CreateContainerConfigError", 'secret "ngc-api" not found'),
                )
            ],
        ),
        creating,
    )
    invalid = computed(
        snapshot(
            minutes=1,
            spec=None,
            invalid="spec.storage: set exactly one of storage.size or storage.existingClaim",
        )
    )
    edited = computed(
        snapshot(
            generation=2,
            minutes=30,
            spec=SPEC2,
            job=None,
            job_name=params.job_name(NAME, "0a1b2c3d4e"),
        ),
        ready,
    )
    return {
        "creating": Case(
            nimcache(1, api(creating)), "Progressing", "InProgress", "Creating: creating Job"
        ),
        "downloading": Case(
            nimcache(1, api(downloading)),
            "Progressing",
            "InProgress",
            "Downloading: pod llama-cache-a",
        ),
        "retrying": Case(
            nimcache(1, api(retrying)),
            "Progressing",
            "InProgress",
            "Retrying: 1 of 4 attempt(s) failed",
        ),
        "ready": Case(
            nimcache(1, api(ready)), "Healthy", "Current", "Cached: 1 profile(s), 16.2Gi"
        ),
        "authentication-failed": Case(
            nimcache(1, api(auth)),
            "Degraded",
            "Failed",
            "AuthenticationFailed: the NGC key in Secret ngc-api",
        ),
        "disk-full": Case(
            nimcache(1, api(disk)), "Degraded", "Failed", "DiskFull: the cache volume"
        ),
        "network-error": Case(
            nimcache(1, api(network)),
            "Degraded",
            "Failed",
            "NetworkError: the download could not reach NGC",
        ),
        "no-report": Case(nimcache(1, api(no_report)), "Degraded", "Failed", "NoReport: Job"),
        "configmap-not-found": Case(
            nimcache(1, api(missing_ca)),
            "Degraded",
            "Failed",
            "ConfigMapNotFound: ConfigMap proxy-ca",
        ),
        "secret-not-found": Case(
            nimcache(1, api(secret)), "Degraded", "Failed", "SecretNotFound: Secret ngc-api"
        ),
        "invalid-spec": Case(
            nimcache(1, api(invalid)), "Degraded", "Failed", "InvalidSpec: spec.storage"
        ),
        "spec-changed": Case(
            nimcache(2, api(edited), SPEC2), "Progressing", "InProgress", "Creating: creating Job"
        ),
        "generation-ahead": Case(
            nimcache(2, api(ready), SPEC2),
            "Progressing",
            "InProgress",
            "Waiting for the operator to observe generation 2 (status is for generation 1)",
        ),
    }
