"""The operator on the real control plane: apply, schedule, serve, edit, break, delete, restart.

Every NimService pod here is served by a real simulator process bound to the pod's loopback IP,
and the operator probes it over HTTP exactly as it would a NIM.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimlab.cluster import Cluster
from nimlab.control import RunnerControl

from .helpers import REPO, Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration


def deployment(k: Kubectl, name: str) -> dict[str, Any]:
    obj = k.get("deployment", name)
    assert obj is not None
    return obj


def resource_versions(k: Kubectl, name: str) -> dict[str, str]:
    versions = {"nimservice": k.nim(name)["metadata"]["resourceVersion"]}
    for kind in ("deployment", "service"):
        obj = k.get(kind, name)
        assert obj is not None
        versions[kind] = obj["metadata"]["resourceVersion"]
    for pod in k.items("pods", f"nimop.dev/nimservice={name}"):
        versions[f"pod/{pod['metadata']['name']}"] = pod["metadata"]["resourceVersion"]
    return versions


def test_example_becomes_ready_on_a_gpu_node(operator: OperatorProcess, k: Kubectl) -> None:
    example = (REPO / "examples" / "llama-3.1-8b-instruct.yaml").read_text()
    k.apply(example)
    name = "llama-3-1-8b-instruct"
    k.wait_condition(name, "Ready", "True", "Serving", timeout=90)

    dep = deployment(k, name)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "NimService"
    pods = k.items("pods", f"nimop.dev/nimservice={name}")
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"].startswith("gpu-node")

    nim = k.nim(name)
    assert "finalizers" not in nim["metadata"]
    assert nim["status"]["servedModels"] == ["meta/llama-3.1-8b-instruct"]
    assert nim["status"]["endpoint"] == f"http://{name}.{k.ns}.svc.cluster.local:8000"
    table = k("get", "nims", name)
    row = table.splitlines()[1].split()
    assert row[:5] == [name, "True", "Serving", "meta/llama-3.1-8b-instruct", "1/1"]


def test_conditions_progress_from_loading_to_ready(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("slow", tag="1.3.3-load-4s"))
    loading = k.wait_condition("slow", "ModelReady", "False", "ModelLoading", timeout=60)
    assert "loading" in loading["message"]
    assert k.condition("slow", "Reconciling")["status"] == "True"  # type: ignore[index]
    assert k.condition("slow", "Ready")["status"] == "False"  # type: ignore[index]
    k.wait_condition("slow", "Ready", "True", timeout=60)
    reasons = [e["reason"] for e in k.events("slow")]
    assert "Ready" in reasons
    assert "RolloutStarted" not in reasons, "a first deployment is not a rollout of a change"


def test_steady_state_makes_no_writes(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("steady", replicas=2))
    k.wait_condition("steady", "Ready", "True", timeout=90)
    time.sleep(2)  # let the last transition's writes land
    before = resource_versions(k, "steady")
    events = len(k.events("steady"))
    # Four steady probe intervals. resourceVersions cover every write the operator could make for
    # this NimService: status, server-side apply, readiness gates; Events are counted apart. (The
    # operator-wide write counter would also count other tests' NimServices being torn down.)
    time.sleep(6)
    assert resource_versions(k, "steady") == before
    assert len(k.events("steady")) == events


def test_edit_rerenders_and_rolls_to_a_new_revision(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("edited"))
    k.wait_condition("edited", "Ready", "True", timeout=90)
    first = k.nim("edited")["status"]["rollout"]["targetRevision"]
    k.apply(nimservice("edited", env=[{"name": "NIM_LOG_LEVEL", "value": "DEBUG"}]))
    k.wait_condition("edited", "Ready", "True", timeout=90)
    status = k.nim("edited")["status"]
    assert status["rollout"]["targetRevision"] != first
    assert status["rollout"]["lastGoodRevision"] == status["rollout"]["targetRevision"]
    env = deployment(k, "edited")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "NIM_LOG_LEVEL", "value": "DEBUG"} in env


def test_delete_garbage_collects_children(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("doomed", replicas=2))
    k.wait_condition("doomed", "Ready", "True", timeout=90)
    k("delete", "nimservice", "doomed", "--timeout=30s")
    wait_for(
        "children gone",
        lambda: (
            k.get("deployment", "doomed") is None
            and k.get("service", "doomed") is None
            and not k.items("pods", "nimop.dev/nimservice=doomed")
        ),
        timeout=60,
    )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"replicas": -1}, "spec.replicas"),
        (
            {"image": {"repository": "nvcr.io/x", "tag": "1", "pullPolicy": "Sometimes"}},
            "Unsupported value",
        ),
        ({"env": [{"name": "NGC_API_KEY", "value": "leak"}]}, "set by the operator"),
        ({"resources": {"limits": {"nvidia.com/gpu": 2}}}, "set GPUs with spec.gpu.count"),
        ({"cache": {"existingClaim": "c", "size": "10Gi"}}, "either existingClaim or size"),
        ({"rollout": {"strategy": "Auto", "maxSurge": 1}}, "only to strategy RollingUpdate"),
        ({"resources": {"requests": {"memory": "lots"}}}, "should match"),
    ],
)
def test_bad_manifests_are_rejected_with_clear_messages(
    crd: Path, k: Kubectl, patch: dict[str, Any], message: str
) -> None:
    obj = nimservice("bad")
    obj["spec"].update(patch)
    out = k.run("apply", "-f", "-", input=yaml.safe_dump(obj))
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_semantic_error_stalls_without_touching_what_serves(
    operator: OperatorProcess, k: Kubectl
) -> None:
    k.apply(nimservice("guarded"))
    k.wait_condition("guarded", "Ready", "True", timeout=90)
    before = deployment(k, "guarded")
    bad = nimservice(
        "guarded", rollout={"strategy": "RollingUpdate", "maxSurge": 0, "maxUnavailable": 0}
    )
    k.apply(bad)
    stalled = k.wait_condition("guarded", "Stalled", "True", "InvalidSpec", timeout=30)
    assert "cannot both be 0" in stalled["message"]
    assert k.condition("guarded", "Ready")["status"] == "False"  # type: ignore[index]
    after = deployment(k, "guarded")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"].get("availableReplicas") == 1
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in k.events("guarded"))
    k.apply(nimservice("guarded"))
    k.wait_condition("guarded", "Ready", "True", timeout=60)


def test_missing_secret_stalls_then_recovers(operator: OperatorProcess, k: Kubectl) -> None:
    """The operator may not read Secrets: it learns of a missing one from the pod that waits
    for it (CreateContainerConfigError), and the pod starts as soon as the Secret exists."""
    k.apply(nimservice("nokey", authSecret="not-there"))
    stalled = k.wait_condition("nokey", "Stalled", "True", "SecretNotFound", timeout=30)
    assert "Secret not-there" in stalled["message"]
    assert any(
        e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in k.events("nokey")
    )
    k("create", "secret", "generic", "not-there", "--from-literal=NGC_API_KEY=x")
    k.wait_condition("nokey", "Ready", "True", timeout=90)


def test_scale_subresource_drives_replicas(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("scaled"))
    k.wait_condition("scaled", "Ready", "True", timeout=90)
    k("scale", "nimservice", "scaled", "--replicas=2")
    k.wait_condition("scaled", "Ready", "True", timeout=90)
    assert deployment(k, "scaled")["spec"]["replicas"] == 2
    assert k.nim("scaled")["status"]["replicasSummary"] == "2/2"


def test_operator_yields_replicas_to_an_autoscaler_on_the_deployment(
    operator: OperatorProcess, k: Kubectl
) -> None:
    k.apply(nimservice("hpa"))
    k.wait_condition("hpa", "Ready", "True", timeout=90)
    k.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hpa"},
                "minReplicas": 2,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }
    )
    wait_for(
        "HPA scales to minReplicas",
        lambda: deployment(k, "hpa")["spec"]["replicas"] == 2,
        timeout=60,
    )
    k.wait_condition("hpa", "Ready", "True", timeout=90)
    time.sleep(3)
    assert deployment(k, "hpa")["spec"]["replicas"] == 2
    assert k.nim("hpa")["status"]["desiredReplicas"] == 2


def test_long_dotted_name_gives_valid_children(operator: OperatorProcess, k: Kubectl) -> None:
    name = "llama-3.1-8b-instruct." + "x" * 50
    k.apply(nimservice(name))
    k.wait_condition(name, "Ready", "True", timeout=90)
    endpoint = k.nim(name)["status"]["endpoint"]
    svc = endpoint.split("//")[1].split(".")[0]
    assert len(svc) <= 63
    assert k.get("service", svc) is not None


def test_killed_replica_is_unreachable_then_recovers(
    operator: OperatorProcess, k: Kubectl, lab: Cluster
) -> None:
    k.apply(nimservice("fragile"))
    k.wait_condition("fragile", "Ready", "True", timeout=90)
    pod = k.items("pods", "nimop.dev/nimservice=fragile")[0]["metadata"]["name"]
    control = RunnerControl(lab.runner_control)
    killed = time.monotonic()
    control.kill(k.ns, pod, hold=True)
    k.wait_condition("fragile", "ModelReady", "False", "Unreachable", timeout=10)
    assert time.monotonic() - killed < 2 * 1.5 + 1.0  # two steady probe intervals, plus slack
    assert k.condition("fragile", "Ready")["status"] == "False"  # type: ignore[index]
    assert any(e["reason"] == "Unreachable" for e in k.events("fragile"))
    control.release(k.ns, pod)
    k.wait_condition("fragile", "Ready", "True", timeout=60)


def test_wrong_model_is_reported_and_never_routed(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("impostor", tag="1.3.3-wrong-model"))
    k.wait_condition("impostor", "ModelReady", "False", "ModelMismatch", timeout=60)
    pod = k.items("pods", "nimop.dev/nimservice=impostor")[0]
    gate = next(c for c in pod["status"]["conditions"] if c["type"] == "nimop.dev/model-ready")
    assert gate["status"] == "False"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"  # the Service never routes to it
    assert k.condition("impostor", "Ready")["status"] == "False"  # type: ignore[index]


def test_restart_reconverges_without_duplicates(operator: OperatorProcess, k: Kubectl) -> None:
    k.apply(nimservice("survivor", replicas=2))
    k.wait_condition("survivor", "Ready", "True", timeout=90)
    uid = deployment(k, "survivor")["metadata"]["uid"]
    operator.kill()
    k.apply(nimservice("survivor", replicas=2, env=[{"name": "NIM_LOG_LEVEL", "value": "DEBUG"}]))
    operator.start()
    k.wait_condition("survivor", "Ready", "True", timeout=90)
    assert deployment(k, "survivor")["metadata"]["uid"] == uid
    assert len(k.items("deployments", "nimop.dev/nimservice=survivor")) == 1
    assert len(k.items("services", "nimop.dev/nimservice=survivor")) == 1
    assert len(k.items("pods", "nimop.dev/nimservice=survivor")) == 2
