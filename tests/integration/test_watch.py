"""Observations come from watches: a change to a child wakes its NimService at once, and a
NimService at rest reads nothing from the API server.

The operator here probes slowly (30 s fast, 60 s steady), so any reaction within a few seconds
can only have come through a watch event, not a timer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nimlab.cluster import Cluster

from .helpers import Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration

SLOW = {"NIMOP_PROBE_INTERVAL_FAST": "30", "NIMOP_PROBE_INTERVAL_STEADY": "60"}


@pytest.fixture(scope="module")
def watched_ns(lab: Cluster) -> Iterator[str]:
    name = f"w-{uuid.uuid4().hex[:8]}"
    lab.create_namespace(name)
    yield name
    lab.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def slow_operator(
    lab: Cluster, crd: Path, watched_ns: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        lab,
        Path(tmp_path_factory.mktemp("slow-operator")),
        env={**SLOW, "NIMOP_NAMESPACES": watched_ns},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kw(lab: Cluster, watched_ns: str) -> Kubectl:
    kubectl = Kubectl(lab, watched_ns)
    kubectl.secrets()
    return kubectl


@pytest.fixture(scope="module")
def serving(slow_operator: OperatorProcess, kw: Kubectl) -> str:
    """One NimService, Ready: its first pass probes at once, then it waits a steady minute."""
    kw.apply(nimservice("watched", tag="1.3.3-load-0s"))
    kw.wait_condition("watched", "Ready", "True", timeout=90)
    return "watched"


def requests(op: OperatorProcess, method: str) -> float:
    return op.metric("nimop_api_requests_total", {"method": method})


def test_a_deleted_pod_is_noticed_through_the_watch(
    slow_operator: OperatorProcess, kw: Kubectl, serving: str
) -> None:
    pod = kw.items("pod", f"nimop.dev/nimservice={serving}")[0]["metadata"]["name"]
    deleted = time.monotonic()
    kw("delete", "pod", pod, "--wait=false")
    wait_for(
        "the NimService to report the lost replica",
        lambda: (kw.condition(serving, "Ready") or {}).get("status") == "False",
        timeout=10,
        interval=0.05,
    )
    noticed = time.monotonic() - deleted
    print(f"\npod deleted -> Ready=False after {noticed:.2f}s (probe interval 60s)")
    # The replacement pod becomes Ready through the same events, long before a probe timer.
    kw.wait_condition(serving, "Ready", "True", timeout=25)


def test_a_hand_edited_deployment_is_put_back_through_the_watch(
    slow_operator: OperatorProcess, kw: Kubectl, serving: str
) -> None:
    kw(
        "patch",
        "deployment",
        serving,
        "--type=merge",
        "-p",
        '{"spec": {"progressDeadlineSeconds": 4242}}',
    )
    edited = time.monotonic()

    def restored() -> bool:
        dep = kw.get("deployment", serving)
        return dep is not None and dep["spec"]["progressDeadlineSeconds"] != 4242

    wait_for("the operator to put the Deployment back", restored, timeout=10, interval=0.05)
    print(f"\nhand edit -> re-applied after {time.monotonic() - edited:.2f}s")


def test_at_rest_nothing_is_read_or_written(
    slow_operator: OperatorProcess, kw: Kubectl, serving: str
) -> None:
    kw.wait_condition(serving, "Ready", "True", timeout=60)
    time.sleep(3)  # let the last transition's writes land
    before = {m: requests(slow_operator, m) for m in ("GET", "PATCH", "POST", "DELETE")}
    time.sleep(20)
    after = {m: requests(slow_operator, m) for m in ("GET", "PATCH", "POST", "DELETE")}
    assert after == before, f"requests at rest: before {before}, after {after}"
