"""Leader election on a real Lease: one leader at a time, fast hand-over on release, takeover
after a silent leader's Lease expires, and a standby operator that reconciles nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from nimlab.cluster import Cluster
from nimop.runtime import credentials, kube, leader

from .helpers import Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def kube_api(lab: Cluster) -> AsyncIterator[kube.Kube]:
    client = kube.Kube(credentials.source(str(lab.kubeconfig)))
    yield client
    await client.close()


async def campaign(elector: leader.LeaseElector, log: list[tuple[str, bool]]) -> None:
    async def record(leading: bool) -> None:
        log.append((elector.identity, leading))

    await elector.run(record)


async def until(check: Callable[[], bool], seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_one_leader_then_hand_over_on_release(kube_api: kube.Kube, namespace: str) -> None:
    a = leader.LeaseElector(kube_api, namespace, "nimop", "a", lease_seconds=2)
    b = leader.LeaseElector(kube_api, namespace, "nimop", "b", lease_seconds=2)
    log: list[tuple[str, bool]] = []
    task_a = asyncio.create_task(campaign(a, log))
    await until(lambda: a.leading, 5)
    task_b = asyncio.create_task(campaign(b, log))
    await asyncio.sleep(1.5)
    assert a.leading
    assert not b.leading
    task_a.cancel()
    await a.release()
    await until(lambda: b.leading, 2)  # released: no need to wait for expiry
    task_b.cancel()
    assert ("a", True) in log
    assert ("b", False) in log
    assert ("b", True) in log


async def test_silent_leader_is_replaced_after_the_lease(
    kube_api: kube.Kube, namespace: str
) -> None:
    a = leader.LeaseElector(kube_api, namespace, "nimop", "a", lease_seconds=2)
    b = leader.LeaseElector(kube_api, namespace, "nimop", "b", lease_seconds=2)
    task_a = asyncio.create_task(campaign(a, []))
    await until(lambda: a.leading, 5)
    task_b = asyncio.create_task(campaign(b, []))
    task_a.cancel()  # dies without releasing
    await asyncio.sleep(1.0)
    assert not b.leading  # the Lease has not expired yet
    await until(lambda: b.leading, 4)
    task_b.cancel()


async def test_racing_candidates_elect_exactly_one(kube_api: kube.Kube, namespace: str) -> None:
    electors = [
        leader.LeaseElector(kube_api, namespace, "race", f"c{i}", lease_seconds=3) for i in range(4)
    ]
    results = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
    assert sum(results) == 1


def test_standby_operator_reconciles_nothing(
    lab: Cluster, crd: object, k: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        "NIMOP_LEADER_ELECTION": "true",
        "NIMOP_LEASE_NAMESPACE": k.ns,
        "NIMOP_LEASE_SECONDS": "3",
    }
    first = OperatorProcess(lab, tmp_path_factory.mktemp("first"), env={**env, "POD_NAME": "first"})
    second = OperatorProcess(
        lab, tmp_path_factory.mktemp("second"), env={**env, "POD_NAME": "second"}
    )
    first.start()
    wait_for("first leads", lambda: first.metric("nimop_leader") == 1, timeout=15)
    second.start()
    try:
        wait_for("second stands by", lambda: "standing by" in second.logs(), timeout=15)
        assert second.metric("nimop_leader") == 0
        idle = second.metric("nimop_reconcile_total")
        k.apply(nimservice("elected"))
        k.wait_condition("elected", "Ready", "True", timeout=90)
        assert second.metric("nimop_reconcile_total") == idle
        first.stop()  # releases the Lease on the way out
        wait_for("second leads", lambda: second.metric("nimop_leader") == 1, timeout=5)
        k.apply(nimservice("elected", replicas=2))
        k.wait_condition("elected", "Ready", "True", timeout=90)
        assert second.metric("nimop_reconcile_total") > idle
    finally:
        first.stop()
        second.stop()
