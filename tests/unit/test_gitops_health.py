"""Argo CD (our Lua health check) and Flux (kstatus, no script) read NimService and NimCache
status alike.

Realistic objects come from the operator's own pure status computation (`nimop.status.compute`)
on synthetic snapshots, so these tests prove the operator's real output maps to the right
health in both tools: Healthy ~ Current, Progressing ~ InProgress, Degraded ~ Failed. The Lua
runs on Lua 5.1, the language of Argo CD's gopher-lua, with the same libraries Argo CD opens;
kstatus runs as the real Go library, built by hack/kstatus/build.sh (needs Go and the module
proxy on a cold cache).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
import yaml

from nimop import names
from nimop.core import apitypes, children, pods
from nimop.core.children import DeploymentFacts
from nimop.core.pods import PodFacts
from nimop.core.probes import ProbeResult, Verdict
from nimop.nimservice import models, status, validate

from . import nimcache_cases

Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "gitops" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
UPSTREAM = ARGOCD / "resource_customizations" / "nimop.dev" / "NimService"
CACHE_UPSTREAM = ARGOCD / "resource_customizations" / "nimop.dev" / "NimCache"
KEY = "resource.customizations.health.nimop.dev_NimService"
CACHE_KEY = "resource.customizations.health.nimop.dev_NimCache"
KEYS = (KEY, CACHE_KEY)
KSTATUS_BUILD = REPO / "hack" / "kstatus" / "build.sh"

# A cold kstatus build (module download and compile) can take a few minutes on a small machine;
# it happens once, in whichever test first needs the binary.
pytestmark = pytest.mark.timeout(600)

# What each Argo CD health means in kstatus terms.
MEANING = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}

NAME, NAMESPACE = "llama", "ai"
MODEL = "meta/llama-3.1-8b-instruct"
SPEC = models.NimServiceSpec(
    image=models.ImageSpec(repository="nvcr.io/nim/meta/llama-3.1-8b-instruct", tag="1.3.3"),
    model=MODEL,
    auth_secret="ngc-api",
    image_pull_secrets=["ngc-registry"],
    replicas=2,
)
# Generation 2 in Git: a new image tag, which starts a rollout.
SPEC2 = SPEC.model_copy(update={"image": SPEC.image.model_copy(update={"tag": "1.3.4"})})
# Generation 3: passes the CRD schema, but the operator's own checks reject it.
SPEC3 = SPEC2.model_copy(
    update={
        "gpu": models.GPUSpec(product="NVIDIA-H100-80GB-HBM3"),
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    }
)
# Another generation 2: an edit that leaves the pod template alone, so no rollout.
ANNOTATED = SPEC.model_copy(
    update={"service": models.ServiceSpec(annotations={"example.com/team": "inference"})}
)
START = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


# -- running the Lua the way Argo CD does ----------------------------------------------------------


@pytest.fixture(scope="module")
def argo() -> Callable[[Obj], tuple[str, str]]:
    """Run health.lua on an object; returns (status, message)."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=False)
    # Argo CD opens only base, table, string, math and a safe part of os: leave out the rest so
    # the script cannot come to depend on them.
    lua.execute(
        "io, debug, package, require, dofile, loadfile, load, loadstring, module = "
        "nil, nil, nil, nil, nil, nil, nil, nil, nil"
    )
    script = lua.compile(HEALTH_LUA.read_text())

    def run(obj: Obj) -> tuple[str, str]:
        lua.globals().obj = lua.table_from(obj, recursive=True)
        result = script()
        lua.globals().obj = None
        assert lupa.lua51.lua_type(result) == "table"
        assert set(result.keys()) == {"status", "message"}
        health, message = result["status"], result["message"]
        assert isinstance(health, str)
        assert isinstance(message, str)
        return health, message

    return run


# -- running kstatus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kstatus_bin() -> Path:
    # Cold: downloads the module graph and compiles (about a minute on two cores); warm: instant.
    built = subprocess.run(
        [str(KSTATUS_BUILD)], check=False, capture_output=True, text=True, timeout=560
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


@pytest.fixture(scope="module")
def kstatus(kstatus_bin: Path) -> Callable[[list[Obj]], list[tuple[str, str]]]:
    """kstatus Compute for each object; returns (status, message) per object, in order."""

    def run(objects: list[Obj]) -> list[tuple[str, str]]:
        done = subprocess.run(
            [str(kstatus_bin)],
            input=json.dumps(objects),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert [(x["kind"], x["name"]) for x in lines] == [
            (o["kind"], o["metadata"]["name"]) for o in objects
        ]
        return [(x["status"], x["message"]) for x in lines]

    return run


# -- operator-produced fixtures ----------------------------------------------------------------


def nimservice(
    generation: int,
    status_: Obj | None,
    spec: models.NimServiceSpec = SPEC,
    name: str = NAME,
) -> Obj:
    obj: Obj = {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "generation": generation,
            "uid": "0b6f5a9e-4a8e-4d59-9d3c-3f1e9c1f2a10",
            "creationTimestamp": "2026-01-05T09:00:00Z",
        },
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_defaults=True),
    }
    if status_ is not None:
        obj["status"] = status_
    return obj


def deployment(
    replicas: int,
    *,
    updated: int,
    available: int,
    total: int | None = None,
    progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
) -> DeploymentFacts:
    available_status = "True" if available >= replicas else "False"
    return children.deployment(
        {
            "metadata": {"name": NAME, "namespace": NAMESPACE, "generation": 4},
            "spec": {"replicas": replicas},
            "status": {
                "observedGeneration": 4,
                "replicas": replicas if total is None else total,
                "updatedReplicas": updated,
                "readyReplicas": available,
                "availableReplicas": available,
                "conditions": [
                    {
                        "type": "Available",
                        "status": available_status,
                        "reason": "MinimumReplicasAvailable"
                        if available_status == "True"
                        else "MinimumReplicasUnavailable",
                        "message": "Deployment has minimum availability."
                        if available_status == "True"
                        else "Deployment does not have minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": progressing[0],
                        "reason": progressing[1],
                        "message": f'ReplicaSet "{NAME}-7c9d" {progressing[1]}',
                    },
                ],
            },
        }
    )


def pod(
    name: str,
    revision: str,
    *,
    running: bool = True,
    waiting: str | None = None,
    unschedulable: str | None = None,
) -> PodFacts:
    """What the operator reads from a Pod of the NimService, given the Pod as the API has it."""
    if unschedulable:
        scheduled = {"status": "False", "reason": "Unschedulable", "message": unschedulable}
    else:
        scheduled = {"status": "True"}
    state: Obj = {"running": {"startedAt": "2026-01-05T09:01:00Z"}} if running else {}
    if waiting:
        state = {"waiting": {"reason": waiting}}
    obj: Obj = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {names.LABEL_REVISION: revision},
            "annotations": {names.ANNOTATION_MODEL: MODEL},
        },
        "spec": {} if unschedulable else {"nodeName": "gpu-node-1"},
        "status": {
            "phase": "Running" if running else "Pending",
            "conditions": [
                {"type": "PodScheduled", **scheduled},
                {"type": "Ready", "status": "True" if running else "False"},
            ],
        },
    }
    if running:
        obj["status"]["podIP"] = "127.1.0.7"
    if state:
        obj["status"]["containerStatuses"] = [{"name": "nim", "state": state, "restartCount": 0}]
    return pods.facts(obj)


def probe(name: str, verdict: Verdict) -> ProbeResult:
    serving = verdict == "Serving"
    return ProbeResult(pod=name, verdict=verdict, models=(MODEL,) if serving else ())


def rollout(phase: str, target: str, **fields: Any) -> models.RolloutStatus:
    return models.RolloutStatus.model_validate(
        {
            "phase": phase,
            "targetRevision": target,
            "currentRevision": fields.pop("current", target),
            "strategy": "Surge",
            "startTime": "2026-01-05T09:00:00Z",
            "observedGeneration": fields.pop("generation", 1),
            **fields,
        }
    )


def computed(
    generation: int,
    prev: Obj | None = None,
    minutes: int = 5,
    **snapshot: Any,
) -> Obj:
    """The status the operator writes for this snapshot, as the API returns it."""
    snapshot.setdefault("spec", SPEC)
    snapshot.setdefault("desired_replicas", SPEC.replicas)
    snap = status.Snapshot(
        name=NAME,
        namespace=NAMESPACE,
        generation=generation,
        now=START.replace(minute=minutes),
        **snapshot,
    )
    return status.to_api(status.compute(snap, apitypes.parse_status(models.NimServiceStatus, prev)))


def serving_status(generation: int = 1, prev: Obj | None = None, minutes: int = 20) -> Obj:
    revision = "r1"
    replicas = [pod(f"{NAME}-{revision}-{i}", revision) for i in range(2)]
    return computed(
        generation,
        prev,
        minutes=minutes,
        deployment=deployment(2, updated=2, available=2),
        facts=replicas,
        probes={p.name: probe(p.name, "Serving") for p in replicas},
        rollout=rollout(
            "Complete",
            revision,
            lastGoodRevision=revision,
            message=f"revision {revision} serves on all replicas",
        ),
        live_revision=revision,
    )


@dataclass(frozen=True)
class Case:
    obj: Obj
    argo: str
    """Argo CD health the script must report."""
    message: str
    """A part of the message the script must report."""


def operator_cases() -> dict[str, Case]:
    # The two replicas of revision r1: loading, serving, or old ones during a later rollout.
    loading = old = [pod(f"{NAME}-r1-{i}", "r1") for i in range(2)]
    surge = pod(f"{NAME}-r2-0", "r2")
    unplaced = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    ready = serving_status()
    return {
        "serving": Case(nimservice(1, ready), "Healthy", f"Serving: 2/2 replicas serve {MODEL}"),
        "scaled-to-zero": Case(
            nimservice(
                2,
                computed(
                    2,
                    ready,
                    deployment=deployment(0, updated=0, available=0),
                    desired_replicas=0,
                    rollout=rollout("Complete", "r1", lastGoodRevision="r1"),
                    live_revision="r1",
                ),
            ),
            "Healthy",
            "ScaledToZero",
        ),
        "creating": Case(
            nimservice(
                1,
                computed(1, rollout=rollout("Progressing", "r1", message="deploying revision r1")),
            ),
            "Progressing",
            "Creating: creating the Deployment",
        ),
        "pods-pending": Case(
            nimservice(
                1,
                computed(
                    1,
                    deployment=deployment(2, updated=2, available=0),
                    facts=[
                        pod(f"{NAME}-r1-{i}", "r1", running=False, waiting="ContainerCreating")
                        for i in range(2)
                    ],
                    rollout=rollout("Progressing", "r1", message="deploying revision r1"),
                    live_revision="r1",
                ),
            ),
            "Progressing",
            "Pending: 0/2 replicas serve",
        ),
        "model-loading": Case(
            nimservice(
                1,
                computed(
                    1,
                    deployment=deployment(2, updated=2, available=0),
                    facts=loading,
                    probes={p.name: probe(p.name, "Loading") for p in loading},
                    rollout=rollout("Progressing", "r1", message="deploying revision r1"),
                    live_revision="r1",
                ),
            ),
            "Progressing",
            "ModelLoading: 0/2 replicas serve",
        ),
        "rollout-progressing": Case(
            nimservice(
                2,
                computed(
                    2,
                    ready,
                    minutes=30,
                    spec=SPEC2,
                    deployment=deployment(2, updated=1, available=2, total=3),
                    facts=[*old, surge],
                    probes={
                        **{p.name: probe(p.name, "Serving") for p in old},
                        surge.name: probe(surge.name, "Loading"),
                    },
                    rollout=rollout(
                        "Progressing",
                        "r2",
                        generation=2,
                        lastGoodRevision="r1",
                        message="rolling out revision r2 with strategy Surge",
                    ),
                    live_revision="r2",
                ),
                SPEC2,
            ),
            "Progressing",
            "ModelLoading",
        ),
        "deadline-mirror-while-reconciling": Case(
            # The Deployment already says ProgressDeadlineExceeded; the operator has not yet
            # given up on the rollout, so it still reconciles: Progressing, not Degraded.
            nimservice(
                1,
                computed(
                    1,
                    deployment=deployment(
                        2,
                        updated=2,
                        available=0,
                        progressing=("False", "ProgressDeadlineExceeded"),
                    ),
                    facts=loading,
                    probes={p.name: probe(p.name, "Loading") for p in loading},
                    rollout=rollout("Progressing", "r1", message="deploying revision r1"),
                    live_revision="r1",
                ),
            ),
            "Progressing",
            "ModelLoading",
        ),
        "rolled-back": Case(
            nimservice(
                2,
                computed(
                    2,
                    ready,
                    minutes=40,
                    spec=SPEC2,
                    deployment=deployment(2, updated=2, available=2),
                    facts=old,
                    probes={p.name: probe(p.name, "Serving") for p in old},
                    rollout=rollout(
                        "RolledBack",
                        "r2",
                        current="r1",
                        generation=2,
                        lastGoodRevision="r1",
                        failedRevision="r2",
                        failedGeneration=2,
                        failureReason="ImagePullBackOff",
                        message="revision r2 failed (ImagePullBackOff: pod llama-r2-0: Back-off "
                        'pulling image "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.4"); '
                        "rolled back to r1",
                    ),
                    live_revision="r1",
                ),
                SPEC2,
            ),
            "Degraded",
            "RolledBack: revision r2 failed (ImagePullBackOff",
        ),
        "invalid-spec": Case(
            # The live Deployment keeps serving generation 1 while the operator refuses 3.
            nimservice(
                3,
                computed(
                    3,
                    ready,
                    minutes=45,
                    spec=SPEC3,
                    invalid="; ".join(validate.problems(SPEC3)),
                    deployment=deployment(2, updated=2, available=2),
                    facts=old,
                    probes={p.name: probe(p.name, "Serving") for p in old},
                    rollout=rollout("Complete", "r1", lastGoodRevision="r1"),
                    live_revision="r1",
                ),
                SPEC3,
            ),
            "Degraded",
            "InvalidSpec: gpu.product NVIDIA-H100-80GB-HBM3 contradicts nodeSelector",
        ),
        "secret-not-found": Case(
            nimservice(1, computed(1, missing=("Secret ngc-api",))),
            "Degraded",
            "SecretNotFound: Secret ngc-api not found in namespace ai",
        ),
        "insufficient-gpu": Case(
            nimservice(
                1,
                computed(
                    1,
                    minutes=12,
                    deployment=deployment(2, updated=2, available=0),
                    facts=[
                        pod(f"{NAME}-r1-{i}", "r1", running=False, unschedulable=unplaced)
                        for i in range(2)
                    ],
                    rollout=rollout(
                        "Failed",
                        "r1",
                        failedRevision="r1",
                        failedGeneration=1,
                        failureReason="InsufficientGPU",
                        message=f"revision r1 failed (InsufficientGPU: pod {NAME}-r1-0: "
                        f"{unplaced}); no earlier revision ever served",
                    ),
                    live_revision="r1",
                ),
            ),
            "Degraded",
            "InsufficientGPU: revision r1 failed",
        ),
        "progress-deadline-exceeded": Case(
            nimservice(
                1,
                computed(
                    1,
                    minutes=55,
                    deployment=deployment(
                        2,
                        updated=2,
                        available=0,
                        progressing=("False", "ProgressDeadlineExceeded"),
                    ),
                    facts=loading,
                    probes={p.name: probe(p.name, "Loading") for p in loading},
                    rollout=rollout(
                        "Failed",
                        "r1",
                        failedRevision="r1",
                        failedGeneration=1,
                        failureReason="ProgressDeadlineExceeded",
                        message="revision r1 failed (ProgressDeadlineExceeded: revision r1 did "
                        "not serve 2 replica(s) within 2400s (0 serving)); "
                        "no earlier revision ever served",
                    ),
                    live_revision="r1",
                ),
            ),
            "Degraded",
            "ProgressDeadlineExceeded: revision r1 failed",
        ),
        "generation-ahead": Case(
            # Edited in Git and applied; the operator has not looked at generation 2 yet, so
            # its Ready=True is about generation 1.
            nimservice(2, ready, SPEC2),
            "Progressing",
            "Waiting for the operator to observe generation 2 (status is for generation 1)",
        ),
        "edit-without-rollout": Case(
            # E.g. a new Service annotation: generation 2, same pod template, still serving.
            nimservice(2, serving_status(2, prev=ready, minutes=50), ANNOTATED),
            "Healthy",
            "Serving: 2/2",
        ),
    }


OPERATOR = operator_cases()
NEW_OBJECT = nimservice(1, None)


def named(cases: dict[str, Case]) -> list[Any]:
    return [pytest.param(case, id=name) for name, case in cases.items()]


def test_fixtures_are_what_the_operator_writes() -> None:
    """Guard the fixtures themselves: real conditions, in the operator's order and shape."""
    for name, case in OPERATOR.items():
        types = [c["type"] for c in case.obj["status"]["conditions"]]
        assert types[:6] == list(status.ORDER[:6]), name
        for cond in case.obj["status"]["conditions"]:
            assert set(cond) == {
                "type",
                "status",
                "reason",
                "message",
                "lastTransitionTime",
                "observedGeneration",
            }, name
    ready = OPERATOR["edit-without-rollout"].obj["status"]["conditions"][0]
    # Ready stayed True through the edit, so it kept its transition time.
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "2026-01-05T09:20:00Z")


@pytest.mark.parametrize("case", named(OPERATOR))
def test_argo_health_of_operator_states(argo: Callable[[Obj], tuple[str, str]], case: Case) -> None:
    health, message = argo(case.obj)
    assert health == case.argo
    assert case.message in message


def test_argo_health_of_a_new_object(argo: Callable[[Obj], tuple[str, str]]) -> None:
    assert argo(NEW_OBJECT) == ("Progressing", "Waiting for the operator to report status")


def test_kstatus_reads_operator_states(
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    results = dict(zip(OPERATOR, kstatus([c.obj for c in OPERATOR.values()]), strict=True))
    expected = {
        "serving": "Current",
        "scaled-to-zero": "Current",
        "creating": "InProgress",
        "pods-pending": "InProgress",
        "model-loading": "InProgress",
        "rollout-progressing": "InProgress",
        "deadline-mirror-while-reconciling": "InProgress",
        "rolled-back": "Failed",
        "invalid-spec": "Failed",
        "secret-not-found": "Failed",
        "insufficient-gpu": "Failed",
        "progress-deadline-exceeded": "Failed",
        "generation-ahead": "InProgress",
        "edit-without-rollout": "Current",
    }
    assert {name: r[0] for name, r in results.items()} == expected
    assert "generation is 2, but latest observed generation is 1" in results["generation-ahead"][1]
    assert "Secret ngc-api not found" in results["secret-not-found"][1]


def test_argo_and_kstatus_agree_on_operator_states(
    argo: Callable[[Obj], tuple[str, str]],
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    objects = [c.obj for c in OPERATOR.values()]
    disagree = {
        name: (argo(obj)[0], ks[0])
        for name, obj, ks in zip(OPERATOR, objects, kstatus(objects), strict=True)
        if MEANING[argo(obj)[0]] != ks[0]
    }
    assert disagree == {}


def test_kstatus_calls_a_new_object_current(
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    # A known kstatus rule, not ours: no status at all reads as Current. Until the operator's
    # first status write (which sets Reconciling=True), Flux may count a new NimService as ready.
    assert kstatus([NEW_OBJECT])[0][0] == "Current"


# -- every branch of the script, with hand-made objects ----------------------------------------


def cond(type_: str, status_: str, reason: str = "", message: str = "") -> Obj:
    out: Obj = {"type": type_, "status": status_}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def hand(conditions: Any, generation: Any = 1, observed: Any = 1, **extra: Any) -> Obj:
    status_: Obj = {"conditions": conditions, **extra}
    if observed is not None:
        status_["observedGeneration"] = observed
    obj = nimservice(1, status_, name="hand")
    if generation is None:
        del obj["metadata"]["generation"]
    else:
        obj["metadata"]["generation"] = generation
    return obj


WAITING = "Waiting for the operator to report status"
BRANCHES: dict[str, tuple[Any, str, str]] = {
    "no-status": (nimservice(1, None), "Progressing", WAITING),
    "status-not-a-table": ({**nimservice(1, None), "status": "pending"}, "Progressing", WAITING),
    "no-conditions": (
        {**nimservice(1, None), "status": {"observedGeneration": 1}},
        "Progressing",
        WAITING,
    ),
    "empty-conditions": (hand([]), "Progressing", WAITING),
    "conditions-a-string": (hand("Ready"), "Progressing", WAITING),
    "conditions-a-map": (hand({"Ready": "True"}), "Progressing", WAITING),
    "conditions-not-conditions": (
        hand(["Ready", 7, {"status": "True"}, {"type": 3, "status": "True"}]),
        "Progressing",
        WAITING,
    ),
    "no-metadata": (
        {"status": {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Serving")]}},
        "Healthy",
        "Serving",
    ),
    "generation-ahead": (
        hand([cond("Ready", "True", "Serving")], generation=5, observed=4),
        "Progressing",
        "Waiting for the operator to observe generation 5 (status is for generation 4)",
    ),
    "observed-generation-missing": (
        hand([cond("Ready", "True", "Serving")], observed=None),
        "Progressing",
        "Waiting for the operator to observe generation 1",
    ),
    "generation-float": (
        hand([cond("Ready", "True", "Serving", "ok")], generation=2.0, observed=2),
        "Healthy",
        "Serving: ok",
    ),
    "stalled": (
        hand([cond("Ready", "False", "RolledBack"), cond("Stalled", "True", "RolledBack", "r2")]),
        "Degraded",
        "RolledBack: r2",
    ),
    "stalled-wins-over-ready": (
        hand([cond("Ready", "True", "Serving"), cond("Stalled", "True", "InvalidSpec", "bad")]),
        "Degraded",
        "InvalidSpec: bad",
    ),
    "stalled-without-reason": (
        hand([cond("Stalled", "True")]),
        "Degraded",
        "Stalled: the operator needs a change to go on",
    ),
    "ready": (hand([cond("Ready", "True", "Serving", "2/2")]), "Healthy", "Serving: 2/2"),
    "ready-message-only": (
        hand([cond("Ready", "True", message="all good")]),
        "Healthy",
        "all good",
    ),
    "ready-bare": (hand([cond("Ready", "True")]), "Healthy", "Ready"),
    "ready-wins-over-reconciling": (
        hand([cond("Reconciling", "True", "Scaling"), cond("Ready", "True", "Serving")]),
        "Healthy",
        "Serving",
    ),
    "reconciling": (
        hand([cond("Ready", "False", "ModelLoading"), cond("Reconciling", "True", "A", "b")]),
        "Progressing",
        "A: b",
    ),
    "reconciling-bare": (hand([cond("Reconciling", "True")]), "Progressing", "Reconciling"),
    "not-ready": (
        hand([cond("Ready", "False", "Unreachable", "pod x"), cond("Reconciling", "False")]),
        "Degraded",
        "Unreachable: pod x",
    ),
    "not-ready-bare": (hand([cond("Ready", "False")]), "Degraded", "Not ready"),
    "ready-unknown": (
        hand([cond("Ready", "Unknown", "Starting", "soon")]),
        "Progressing",
        "Starting: soon",
    ),
    "ready-unknown-bare": (hand([cond("Ready", "Unknown")]), "Progressing", WAITING),
    "only-other-conditions": (hand([cond("Available", "True")]), "Progressing", WAITING),
    "first-of-duplicates": (
        hand([cond("Ready", "True", "First"), cond("Ready", "False", "Second")]),
        "Healthy",
        "First",
    ),
}


@pytest.mark.parametrize(("obj", "health", "message"), BRANCHES.values(), ids=BRANCHES.keys())
def test_argo_branches(
    argo: Callable[[Obj], tuple[str, str]], obj: Obj, health: str, message: str
) -> None:
    assert argo(obj) == (health, message)


def test_script_leaves_no_globals_and_does_not_modify_the_object(
    argo: Callable[[Obj], tuple[str, str]],
) -> None:
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=False)
    before = set(lua.globals().keys())
    obj = OPERATOR["rolled-back"].obj
    snapshot = json.dumps(obj, sort_keys=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    lua.execute(HEALTH_LUA.read_text())
    assert set(lua.globals().keys()) - before == {"obj"}
    assert json.dumps(obj, sort_keys=True) == snapshot


# kstatus cannot read these at all (it reports an error): they are for the script's defences.
MALFORMED = {
    "status-not-a-table",
    "conditions-a-string",
    "conditions-a-map",
    "conditions-not-conditions",
    "no-metadata",
    "generation-float",
}


def test_where_argo_and_kstatus_differ_the_operator_never_goes(
    argo: Callable[[Obj], tuple[str, str]],
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    """The two tools differ only on states the operator never writes (see docs/gitops.md)."""
    objects = {name: b[0] for name, b in BRANCHES.items() if name not in MALFORMED}
    results = kstatus(list(objects.values()))
    differ = {
        name: (argo(obj)[0], ks[0])
        for (name, obj), ks in zip(objects.items(), results, strict=True)
        if MEANING[argo(obj)[0]] != ks[0]
    }
    assert differ == {
        # No conditions: kstatus assumes Current; Argo waits for the operator.
        "no-status": ("Progressing", "Current"),
        "no-conditions": ("Progressing", "Current"),
        "empty-conditions": ("Progressing", "Current"),
        "only-other-conditions": ("Progressing", "Current"),
        # kstatus compares generations only when status.observedGeneration is present.
        "observed-generation-missing": ("Progressing", "Current"),
        # kstatus checks Reconciling before Ready; the operator never sets both True.
        "ready-wins-over-reconciling": ("Healthy", "InProgress"),
        # kstatus reads Ready=False as InProgress; the operator sets Reconciling or Stalled
        # whenever Ready is False, so a bare Ready=False never comes from it.
        "not-ready": ("Degraded", "InProgress"),
        "not-ready-bare": ("Degraded", "InProgress"),
    }


# -- the copies of the script and the Argo CD repository layout --------------------------------


def test_copies_match_health_lua() -> None:
    script = HEALTH_LUA.read_text()
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert (patch["apiVersion"], patch["kind"]) == ("v1", "ConfigMap")
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    assert patch["data"] == dict.fromkeys(KEYS, script)
    values = yaml.safe_load((ARGOCD / "argo-cd-values.yaml").read_text())
    assert values == {"configs": {"cm": dict.fromkeys(KEYS, script)}}
    assert (UPSTREAM / "health.lua").read_text() == script
    assert (CACHE_UPSTREAM / "health.lua").read_text() == script
    check = subprocess.run(
        [sys.executable, str(ARGOCD / "generate.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def upstream_tests() -> list[Obj]:
    tests: list[Obj] = yaml.safe_load((UPSTREAM / "health_test.yaml").read_text())["tests"]
    return tests


def test_argo_layout_covers_every_testdata_file() -> None:
    referenced = {t["inputPath"] for t in upstream_tests()}
    on_disk = {f"testdata/{p.name}" for p in (UPSTREAM / "testdata").iterdir()}
    assert referenced == on_disk
    assert {t["healthStatus"]["status"] for t in upstream_tests()} == set(MEANING)


@pytest.mark.parametrize("test", upstream_tests(), ids=lambda t: t["inputPath"])
def test_argo_layout_health_tests(argo: Callable[[Obj], tuple[str, str]], test: Obj) -> None:
    """What Argo CD's own resource_customizations test runs: the exact status and message."""
    obj = yaml.safe_load((UPSTREAM / test["inputPath"]).read_text())
    assert argo(obj) == (test["healthStatus"]["status"], test["healthStatus"]["message"])


def test_argo_layout_testdata_through_kstatus(
    argo: Callable[[Obj], tuple[str, str]],
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    tests = upstream_tests()
    objects = [yaml.safe_load((UPSTREAM / t["inputPath"]).read_text()) for t in tests]
    differ = {
        t["inputPath"]: (argo(obj)[0], ks[0])
        for t, obj, ks in zip(tests, objects, kstatus(objects), strict=True)
        if MEANING[argo(obj)[0]] != ks[0]
    }
    # The only testdata not written by the operator: a NimService it has not seen yet.
    assert differ == {"testdata/progressing_nostatus.yaml": ("Progressing", "Current")}


def test_kstatus_reads_yaml_streams_and_lists(kstatus_bin: Path) -> None:
    """The same verdicts from a YAML stream (testdata as on disk) and a List (kubectl get -o)."""
    files = sorted((UPSTREAM / "testdata").iterdir())
    stream = "---\n".join(p.read_text() for p in files)
    items = [yaml.safe_load(p.read_text()) for p in files]
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    outputs = [
        subprocess.run(
            [str(kstatus_bin)], input=text, check=True, capture_output=True, text=True, timeout=60
        ).stdout.splitlines()
        for text in (stream, listed, json.dumps(items))
    ]
    assert len(outputs[0]) == len(files)
    assert outputs[0] == outputs[1] == outputs[2]


# -- NimCache ------------------------------------------------------------------------------------

CACHE_STATES = nimcache_cases.operator_states()


@pytest.mark.parametrize("case", [pytest.param(c, id=n) for n, c in CACHE_STATES.items()])
def test_argo_health_of_nimcache_states(
    argo: Callable[[Obj], tuple[str, str]], case: nimcache_cases.Case
) -> None:
    health, message = argo(case.obj)
    assert health == case.argo
    assert case.message in message


def test_argo_and_kstatus_agree_on_every_nimcache_state(
    argo: Callable[[Obj], tuple[str, str]],
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    objects = [c.obj for c in CACHE_STATES.values()]
    results = dict(zip(CACHE_STATES, kstatus(objects), strict=True))
    assert {name: r[0] for name, r in results.items()} == {
        name: c.kstatus for name, c in CACHE_STATES.items()
    }
    disagree = {
        name: (argo(c.obj)[0], results[name][0])
        for name, c in CACHE_STATES.items()
        if MEANING[argo(c.obj)[0]] != results[name][0]
    }
    assert disagree == {}
    assert "ConfigMap proxy-ca not found" in results["configmap-not-found"][1]


def cache_tests() -> list[Obj]:
    tests: list[Obj] = yaml.safe_load((CACHE_UPSTREAM / "health_test.yaml").read_text())["tests"]
    return tests


def test_nimcache_argo_layout_covers_every_testdata_file() -> None:
    referenced = {t["inputPath"] for t in cache_tests()}
    on_disk = {f"testdata/{p.name}" for p in (CACHE_UPSTREAM / "testdata").iterdir()}
    assert referenced == on_disk
    assert {t["healthStatus"]["status"] for t in cache_tests()} == set(MEANING)


@pytest.mark.parametrize("test", cache_tests(), ids=lambda t: t["inputPath"])
def test_nimcache_argo_layout_health_tests(
    argo: Callable[[Obj], tuple[str, str]], test: Obj
) -> None:
    obj = yaml.safe_load((CACHE_UPSTREAM / test["inputPath"]).read_text())
    assert obj["kind"] == "NimCache"
    assert argo(obj) == (test["healthStatus"]["status"], test["healthStatus"]["message"])


def test_nimcache_testdata_through_kstatus(
    argo: Callable[[Obj], tuple[str, str]],
    kstatus: Callable[[list[Obj]], list[tuple[str, str]]],
) -> None:
    tests = cache_tests()
    objects = [yaml.safe_load((CACHE_UPSTREAM / t["inputPath"]).read_text()) for t in tests]
    differ = {
        t["inputPath"]: (argo(obj)[0], ks[0])
        for t, obj, ks in zip(tests, objects, kstatus(objects), strict=True)
        if MEANING[argo(obj)[0]] != ks[0]
    }
    # As for NimService: only an object the operator has not seen yet.
    assert differ == {"testdata/progressing_nostatus.yaml": ("Progressing", "Current")}
