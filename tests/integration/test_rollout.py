"""Rollouts on the real control plane: surge when GPUs allow, one at a time when they don't,
automatic rollback when the new version is broken, and restarts in the middle.

Each test gets private GPU nodes (a kwok pool selected by nodeSelector), so free-GPU arithmetic
is exact, and a sampler that keeps sending chat completions through the Service (the lab's
loopback service proxy) and reading the NimService's serving count while the rollout runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nimlab.cluster import Cluster

from .helpers import (
    Kubectl,
    OperatorProcess,
    Sampler,
    delete_pool,
    gpu_pool,
    nimservice,
    service_url,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(lab: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    marker = request.node.get_closest_marker("pool")
    nodes, gpus = marker.args if marker else (2, 2)
    name = f"p{uuid.uuid4().hex[:6]}"
    gpu_pool(lab, name, nodes, gpus)
    yield name
    delete_pool(lab, name)


def pinned(name: str, pool: str, **kw: Any) -> dict[str, Any]:
    obj = nimservice(name, nodeSelector={"nimlab.dev/pool": pool}, **kw)
    return obj


def rollout(k: Kubectl, name: str) -> dict[str, Any]:
    result: dict[str, Any] = k.nim(name)["status"]["rollout"]
    return result


def live_tag(k: Kubectl, name: str) -> str:
    dep = k.get("deployment", name)
    assert dep is not None
    image: str = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    return image.rsplit(":", 1)[1]


def test_surge_rollout_keeps_serving(
    operator: OperatorProcess, k: Kubectl, lab: Cluster, pool: str
) -> None:
    k.apply(pinned("surge", pool, replicas=2))
    k.wait_condition("surge", "Ready", "True", timeout=90)
    url = service_url(lab, k, "surge")
    with Sampler(k, "surge", url) as sampler:
        k.apply(pinned("surge", pool, replicas=2, tag="1.3.4-load-2s"))
        k.wait_condition("surge", "Ready", "True", timeout=120)
    assert rollout(k, "surge")["strategy"] == "Surge"
    assert k.condition("surge", "ZeroDowntimeRollout")["status"] == "True"  # type: ignore[index]
    assert live_tag(k, "surge") == "1.3.4-load-2s"
    assert sampler.requests > 10
    assert sampler.failures == []
    assert min(sampler.serving) >= 1, sampler.serving


@pytest.mark.pool(1, 2)
def test_full_gpus_replace_one_at_a_time(operator: OperatorProcess, k: Kubectl, pool: str) -> None:
    k.apply(pinned("packed", pool, replicas=2))
    k.wait_condition("packed", "Ready", "True", timeout=90)
    k.apply(pinned("packed", pool, replicas=2, tag="1.3.4-load-1s"))
    cond = k.wait_condition("packed", "ZeroDowntimeRollout", "False", "NoSpareGPU", timeout=30)
    assert "one replica at a time" in cond["message"]
    warning = wait_for(
        "NoSpareGPU event",
        lambda: next((e for e in k.events("packed") if e["reason"] == "NoSpareGPU"), None),
        timeout=10,
    )
    assert warning["type"] == "Warning"
    assert "1 of 2 replicas keep serving" in warning["message"]
    k.wait_condition("packed", "Ready", "True", timeout=120)
    assert rollout(k, "packed")["strategy"] == "OneAtATime"
    assert live_tag(k, "packed") == "1.3.4-load-1s"


@pytest.mark.pool(1, 1)
def test_single_replica_without_spare_gpu_says_it_is_down(
    operator: OperatorProcess, k: Kubectl, pool: str
) -> None:
    k.apply(pinned("solo", pool))
    k.wait_condition("solo", "Ready", "True", timeout=90)
    k.apply(pinned("solo", pool, tag="1.3.4-load-1s"))
    warning = wait_for(
        "NoSpareGPU event",
        lambda: next((e for e in k.events("solo") if e["reason"] == "NoSpareGPU"), None),
        timeout=30,
    )
    assert "DOWN until the new replica is ready" in warning["message"]
    k.wait_condition("solo", "Ready", "True", timeout=120)


@pytest.mark.parametrize(
    ("tag", "extra", "cause"),
    [
        ("1.3.4-wrong-model", {}, "ModelMismatch"),
        ("1.3.4-pull-error", {}, "ImagePullBackOff"),
        ("1.3.4-crash-after-1", {}, "CrashLoopBackOff"),
        ("1.3.4-never-ready", {"progressDeadlineSeconds": 12}, "ProgressDeadlineExceeded"),
    ],
)
def test_broken_version_rolls_back_while_the_old_one_serves(
    operator: OperatorProcess,
    k: Kubectl,
    lab: Cluster,
    pool: str,
    tag: str,
    extra: dict[str, Any],
    cause: str,
) -> None:
    good = pinned("canary", pool, rollout={"strategy": "Auto", **extra})
    k.apply(good)
    k.wait_condition("canary", "Ready", "True", timeout=90)
    good_revision = rollout(k, "canary")["targetRevision"]
    url = service_url(lab, k, "canary")
    with Sampler(k, "canary", url) as sampler:
        k.apply(pinned("canary", pool, tag=tag, rollout={"strategy": "Auto", **extra}))
        stalled = k.wait_condition("canary", "Stalled", "True", "RolledBack", timeout=90)
        wait_for(
            "old revision alone",
            lambda: all(
                p["metadata"]["labels"]["nimop.dev/revision"] == good_revision
                for p in k.items("pods", "nimop.dev/nimservice=canary")
            ),
            timeout=60,
        )
    assert cause in stalled["message"]
    status = k.nim("canary")["status"]
    assert status["rollout"]["phase"] == "RolledBack"
    assert status["rollout"]["failureReason"] == cause
    assert status["rollout"]["currentRevision"] == good_revision
    assert k.condition("canary", "Ready")["status"] == "False"  # type: ignore[index]
    assert k.nim("canary")["spec"]["image"]["tag"] == tag  # Git stays the source of truth
    assert live_tag(k, "canary") == "1.3.3-load-1s"
    assert sampler.failures == []
    assert min(sampler.serving) >= 1, sampler.serving
    assert any(e["reason"] == "RolledBack" and e["type"] == "Warning" for e in k.events("canary"))

    # The broken spec is not retried in a loop.
    time.sleep(4)
    assert live_tag(k, "canary") == "1.3.3-load-1s"
    assert k.nim("canary")["status"]["rollout"]["phase"] == "RolledBack"

    # A new edit is a fresh attempt.
    k.apply(pinned("canary", pool, tag="1.3.5-load-1s", rollout={"strategy": "Auto", **extra}))
    k.wait_condition("canary", "Ready", "True", timeout=120)
    assert k.condition("canary", "Stalled")["status"] == "False"  # type: ignore[index]


def test_operator_killed_mid_rollout_completes_it(
    operator: OperatorProcess, k: Kubectl, pool: str
) -> None:
    k.apply(pinned("phoenix", pool, replicas=2))
    k.wait_condition("phoenix", "Ready", "True", timeout=90)
    k.apply(pinned("phoenix", pool, replicas=2, tag="1.3.4-load-3s"))
    wait_for(
        "rollout started",
        lambda: (
            rollout(k, "phoenix")["phase"] == "Progressing"
            and live_tag(k, "phoenix") == "1.3.4-load-3s"
        ),
        timeout=30,
    )
    operator.kill()
    time.sleep(2)
    operator.start()
    k.wait_condition("phoenix", "Ready", "True", timeout=120)
    assert rollout(k, "phoenix")["phase"] == "Complete"
    assert len(k.items("deployments", "nimop.dev/nimservice=phoenix")) == 1
    assert len(k.items("pods", "nimop.dev/nimservice=phoenix")) == 2


def test_operator_killed_mid_broken_rollout_rolls_back(
    operator: OperatorProcess, k: Kubectl, pool: str
) -> None:
    k.apply(pinned("lazarus", pool))
    k.wait_condition("lazarus", "Ready", "True", timeout=90)
    k.apply(pinned("lazarus", pool, tag="1.3.4-wrong-model-load-2s"))
    wait_for(
        "rollout started",
        lambda: (
            rollout(k, "lazarus")["phase"] == "Progressing"
            and live_tag(k, "lazarus").startswith("1.3.4")
        ),
        timeout=30,
    )
    operator.kill()
    time.sleep(3)
    operator.start()
    k.wait_condition("lazarus", "Stalled", "True", "RolledBack", timeout=90)
    assert live_tag(k, "lazarus") == "1.3.3-load-1s"
    assert len(k.items("deployments", "nimop.dev/nimservice=lazarus")) == 1
