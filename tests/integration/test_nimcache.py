"""NimCache on the lab: the operator runs the download Job (the real Job controller retries it),
reads what the Job reported, and says so truthfully.

- NimCache -> Job -> Ready, with the profiles and bytes in status, and the claim's directory
  holding what the Job wrote.
- A bad NGC key (the simulated NGC refuses a key containing `invalid`): the Job retries
  (Reconciling/Retrying), then Stalled/AuthenticationFailed with NGC's words; fixing the Secret
  and editing the NimCache runs a fresh Job that makes it Ready.
- A missing CA ConfigMap stalls it before anything is created, and it goes on once the
  ConfigMap exists.

The Job's container runs `/bin/sh -ec SCRIPT` in the NIM image; the lab runs it in the
simulator image, where the NIM utilities are on PATH.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nimlab.cluster import Cluster
from nimop.nimcache import params
from nimop.runtime import cluster as runtime_cluster
from nimop.runtime import credentials, kube

from .helpers import IMAGE, REPO, Kubectl, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

CACHE_CRD = REPO / "crds" / "nimcaches.nimop.dev.yaml"
Obj = dict[str, Any]


@pytest.fixture(scope="session")
def cache_crd(lab: Cluster) -> Path:
    lab.install_crds(CACHE_CRD)
    return CACHE_CRD


@pytest.fixture(scope="module")
def cache_operator(cache_crd: Path, operator: OperatorProcess) -> OperatorProcess:
    """The operator, started after the NimCache CRD exists (session fixtures come first)."""
    return operator


def nimcache(name: str, **spec: Any) -> Obj:
    body: Obj = {
        "image": {"repository": IMAGE, "tag": "1.3.3"},
        "authSecret": "ngc-api",
        "imagePullSecrets": ["ngc-secret"],
        "storage": {"size": "20Gi"},
        "backoffLimit": 1,
        "tolerations": [],
        **spec,
    }
    return {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimCache",
        "metadata": {"name": name},
        "spec": body,
    }


def get(k: Kubectl, name: str) -> Obj:
    obj = k.get("nimcache", name)
    assert obj is not None, f"NimCache {name} not found"
    return obj


def condition(obj: Obj, type_: str) -> Obj | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            found: Obj = cond
            return found
    return None


def wait_condition(
    k: Kubectl,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 120.0,
) -> Obj:
    def check() -> Obj | None:
        obj = get(k, name)
        if obj.get("status", {}).get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        cond = condition(obj, type_)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return obj
        return None

    try:
        return wait_for(f"NimCache {name} {type_}={status} {reason or ''}", check, timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe(k, name)}") from None


def describe(k: Kubectl, name: str) -> str:
    """What the NimCache, its Jobs and their pods say, for a failure message."""
    obj = k.get("nimcache", name) or {}
    lines = [f"status: {json.dumps(obj.get('status', {}))[:3000]}"]
    for job in jobs(k, name):
        lines.append(f"job {job['metadata']['name']}: {json.dumps(job.get('status', {}))[:1000]}")
    for pod in k.items("pods", f"nimop.dev/nimcache={name}"):
        states = [c.get("state") for c in pod.get("status", {}).get("containerStatuses", [])]
        lines.append(f"pod {pod['metadata']['name']}: {json.dumps(states)[:1000]}")
    return "\n".join(lines)


def events(k: Kubectl, name: str) -> list[Obj]:
    return [
        e
        for e in k.items("events")
        if e["involvedObject"].get("kind") == "NimCache" and e["involvedObject"]["name"] == name
    ]


def jobs(k: Kubectl, name: str) -> list[Obj]:
    return k.items("jobs", f"nimop.dev/nimcache={name}")


def claim_directory(k: Kubectl, claim: str) -> Path:
    """The bound volume's directory on this machine (the lab's provisioner makes hostPath PVs)."""
    pvc = wait_for(
        f"claim {claim} bound",
        lambda: (c := k.get("pvc", claim)) and c.get("status", {}).get("phase") == "Bound" and c,
        timeout=60,
    )
    pv = k.get("pv", pvc["spec"]["volumeName"])
    assert pv is not None
    return Path(pv["spec"]["hostPath"]["path"])


def test_download_then_ready_with_what_the_job_wrote(
    cache_operator: OperatorProcess, k: Kubectl
) -> None:
    k.apply(nimcache("llama", profiles=["tensorrt_llm-h100-fp8-tp1-throughput"]))
    obj = wait_condition(k, "llama", "Ready", "True", "Cached", timeout=180)
    st = obj["status"]
    assert st["phase"] == "Ready"
    assert st["profileCount"] == 1
    assert len(st["profiles"]) == 1
    assert st["bytes"] > 0
    assert st["pvc"] == params.claim_name("llama")
    assert condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]

    # The claim holds what the Job wrote: the simulator's manifest lists the reported profile.
    root = claim_directory(k, st["pvc"])
    manifest = json.loads((root / "nimsim-manifest.json").read_text())
    assert st["profiles"][0] in json.dumps(manifest)
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) > 0

    # The claim and the Job belong to the NimCache.
    (job,) = jobs(k, "llama")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "NimCache"
    pvc = k.get("pvc", st["pvc"])
    assert pvc is not None
    assert pvc["metadata"]["ownerReferences"][0]["kind"] == "NimCache"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    reasons = [e["reason"] for e in events(k, "llama")]
    assert "Ready" in reasons
    assert reasons.count("Ready") == 1

    # At rest nothing is written: the status and the Job stay as they are.
    before = (get(k, "llama")["metadata"]["resourceVersion"], job["metadata"]["resourceVersion"])
    cache_operator.restart()
    wait_for("operator back", lambda: cache_operator.metric("nimop_managed_objects") >= 1, 30)
    (job_after,) = jobs(k, "llama")
    assert job_after["metadata"]["uid"] == job["metadata"]["uid"], "a Ready cache is not re-run"
    assert get(k, "llama")["metadata"]["resourceVersion"] == before[0]


def test_selector_and_existing_claim_with_sub_path(
    cache_operator: OperatorProcess, k: Kubectl
) -> None:
    """The selector runs list-model-profiles in the image; an existing claim is used, not owned."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "shared-models"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "50Gi"}}},
    }
    k.apply(claim)
    selector = {"engine": "vllm", "precision": "fp16", "tensorParallelism": 1, "lora": False}
    k.apply(nimcache("selected", selector=selector))
    k.apply(nimcache("shared", storage={"existingClaim": "shared-models", "subPath": "llama/8b"}))

    selected = wait_condition(k, "selected", "Ready", "True", "Cached", timeout=180)
    assert selected["status"]["profileCount"] == 1, "only vllm-fp16-tp1 matches"
    manifest = claim_directory(k, selected["status"]["pvc"]) / "nimsim-manifest.json"
    assert "vllm-fp16-tp1" in manifest.read_text()

    shared = wait_condition(k, "shared", "Ready", "True", "Cached", timeout=180)
    assert (shared["status"]["pvc"], shared["status"]["subPath"]) == ("shared-models", "llama/8b")
    root = claim_directory(k, "shared-models")
    assert (root / "llama" / "8b" / "nimsim-manifest.json").is_file()
    assert not (root / "nimsim-manifest.json").exists(), "written under subPath only"
    pvc = k.get("pvc", "shared-models")
    assert pvc is not None
    assert not pvc["metadata"].get("ownerReferences"), "an existing claim is never adopted"


def test_spec_change_while_downloading_replaces_the_job(
    cache_operator: OperatorProcess, k: Kubectl
) -> None:
    slow = {"repository": IMAGE, "tag": "1.3.3-slow-download"}
    k.apply(nimcache("edited", image=slow))
    downloading = wait_for(
        "the first download to run",
        lambda: (o := get(k, "edited")).get("status", {}).get("phase") == "Downloading" and o,
        timeout=120,
    )
    first = downloading["status"]["job"]

    k("patch", "nimcache", "edited", "--type=merge", "-p", '{"spec": {"image": {"tag": "1.3.3"}}}')
    ready = wait_condition(k, "edited", "Ready", "True", "Cached", timeout=180)
    second = ready["status"]["job"]
    assert second != first, "a Job's pod template is immutable: a new Job runs"
    wait_for(
        "the old Job to go", lambda: [j["metadata"]["name"] for j in jobs(k, "edited")] == [second]
    )
    (job,) = jobs(k, "edited")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:1.3.3"


def test_bad_key_retries_then_stalls_then_recovers(
    cache_operator: OperatorProcess, k: Kubectl
) -> None:
    k("create", "secret", "generic", "bad-key", "--from-literal=NGC_API_KEY=nvapi-invalid-key")
    k.apply(nimcache("badkey", authSecret="bad-key", backoffLimit=1))

    retrying = wait_condition(k, "badkey", "Reconciling", "True", "Retrying", timeout=120)
    assert retrying["status"]["phase"] == "Retrying"
    assert "Authentication failed" in condition(retrying, "Ready")["message"]  # type: ignore[index]

    stalled = wait_condition(k, "badkey", "Stalled", "True", "AuthenticationFailed", timeout=180)
    message = condition(stalled, "Stalled")["message"]  # type: ignore[index]
    assert "the NGC key in Secret bad-key (key NGC_API_KEY) was refused" in message
    assert "HTTP 401" in message
    assert stalled["status"]["phase"] == "Failed"
    assert stalled["status"]["failedAttempts"] == 2
    reasons = [e["reason"] for e in events(k, "badkey")]
    assert "Retrying" in reasons
    assert "AuthenticationFailed" in reasons

    # Fix the Secret, then edit the NimCache: a fresh Job runs and succeeds.
    k("delete", "secret", "bad-key")
    k("create", "secret", "generic", "bad-key", "--from-literal=NGC_API_KEY=nvapi-fixed")
    k("patch", "nimcache", "badkey", "--type=merge", "-p", '{"spec": {"backoffLimit": 2}}')
    ready = wait_condition(k, "badkey", "Ready", "True", "Cached", timeout=180)
    assert ready["status"]["profileCount"] == 1
    names = [j["metadata"]["name"] for j in jobs(k, "badkey")]
    assert names == [ready["status"]["job"]], "the failed Job was pruned"


def test_missing_ca_config_map_stalls_until_it_exists(
    cache_operator: OperatorProcess, k: Kubectl
) -> None:
    spec = {"proxy": {"httpsProxy": "http://127.0.0.1:9", "caBundle": {"configMapName": "corp-ca"}}}
    k.apply(nimcache("proxied", **spec))
    stalled = wait_condition(k, "proxied", "Stalled", "True", "ConfigMapNotFound", timeout=60)
    assert "ConfigMap corp-ca not found" in condition(stalled, "Stalled")["message"]  # type: ignore[index]
    assert jobs(k, "proxied") == [], "nothing is created while it is missing"
    assert k.get("pvc", params.claim_name("proxied")) is None

    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    k("create", "configmap", "corp-ca", f"--from-literal=ca.crt={pem}")
    wait_for(
        "the Stall to clear",
        lambda: (
            (c := condition(get(k, "proxied"), "Stalled")) and c["reason"] != "ConfigMapNotFound"
        ),
        timeout=30,
    )
    (job,) = wait_for("the Job", lambda: jobs(k, "proxied"), timeout=30)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "proxy-ca", "mountPath": "/etc/nimop/proxy-ca", "readOnly": True} in pod[
        "containers"
    ][0]["volumeMounts"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:9"
    assert env["NIMOP_PROXY_CA"] == "/etc/nimop/proxy-ca/ca.crt"


async def test_consumers_see_a_compact_view_and_are_woken(
    lab: Cluster, cache_operator: OperatorProcess, k: Kubectl
) -> None:
    """What the NimService pipeline reads: Cluster.nimcaches and on_nimcache_change."""
    spec = {"proxy": {"caBundle": {"configMapName": "absent-ca"}}}
    k.apply(nimcache("viewed", **spec))
    wait_condition(k, "viewed", "Stalled", "True", "ConfigMapNotFound", timeout=60)

    api = kube.Kube(credentials.source(str(lab.kubeconfig)))
    view = runtime_cluster.Cluster(api, (k.ns,), capacity_watch=False)
    woken: list[tuple[str, str]] = []
    view.on_nimcache_change(lambda ns, name: woken.append((ns, name)))
    await view.start()
    try:
        facts = view.nimcaches.get(k.ns, "viewed")
        assert facts is not None
        assert (facts.generation, facts.observed_generation) == (1, 1)
        assert facts.stalled_reason == "ConfigMapNotFound"
        assert "ConfigMap absent-ca not found" in facts.stalled_message
        assert facts.pvc == params.claim_name("viewed")
        assert not facts.ready
        assert not facts.usable
        assert (k.ns, "viewed") in woken, "the initial list counts as a change"

        woken.clear()
        k("patch", "nimcache", "viewed", "--type=merge", "-p", '{"spec": {"backoffLimit": 5}}')
        for _ in range(100):
            current = view.nimcaches.get(k.ns, "viewed")
            if current is not None and current.observed_generation == 2 and woken:
                break
            await asyncio.sleep(0.1)
        current = view.nimcaches.get(k.ns, "viewed")
        assert current is not None
        assert (current.generation, current.observed_generation) == (2, 2)
        assert (k.ns, "viewed") in woken
    finally:
        await view.stop()
        await api.close()
