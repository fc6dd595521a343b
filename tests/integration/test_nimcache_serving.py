"""NimServices served from a NimCache: the replicas mount the cache the Job filled and never
download; a NimService waits for its cache, stalls when it failed or is missing, needs no NGC
key on a Ready cache (air-gapped), and a missing proxy CA stalls it until it exists.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimlab.control import RunnerControl

from .helpers import IMAGE, REPO, Kubectl, OperatorProcess, nimservice, wait_for
from .test_nimcache import nimcache, wait_condition

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "nimcache-llama-3.1-8b.yaml"
Obj = dict[str, Any]


def cached(name: str, cache: str, **spec: Any) -> Obj:
    """A NimService on a NimCache, with no NGC key (the cache holds the model)."""
    obj = nimservice(name, cache={"nimCache": {"name": cache}}, **spec)
    del obj["spec"]["authSecret"]
    return obj


def downloads(lab_control: RunnerControl, namespace: str, owner: str) -> list[str]:
    """The simulator phases of a NimService's replicas: 'downloading' if any downloaded."""
    phases: list[str] = []
    for pod in lab_control.pods():
        if pod.namespace == namespace and pod.name.startswith(f"{owner}-"):
            for container in pod.containers:
                phases.extend(container.phases)
    return phases


def test_the_example_serves_two_replicas_from_one_cache_without_downloading(
    operator: OperatorProcess, k: Kubectl, control: RunnerControl
) -> None:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "NimService":
            doc["spec"]["gpu"].pop("product", None)  # the lab's two GPU nodes are H100s anyway
    k.apply(yaml.safe_dump_all(docs))
    cache = wait_condition(k, "llama-3-1-8b-instruct", "Ready", "True", timeout=240)
    print(
        f"\nNimCache: {cache['status']['phase']}, {cache['status']['profileCount']} profiles, "
        f"{cache['status']['bytes']} bytes in {cache['status']['pvc']}"
    )
    print(k("get", "nimcaches"))
    k.wait_condition("llama-3-1-8b-instruct-cached", "Ready", "True", timeout=180)
    phases = downloads(control, k.ns, "llama-3-1-8b-instruct-cached")
    assert phases, "the replicas' simulator phases are reported"
    assert "downloading" not in phases, phases
    pod = k.items("pod", "nimop.dev/nimservice=llama-3-1-8b-instruct-cached")[0]
    mount = next(
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "model-cache"
    )
    assert mount["readOnly"] is True
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert "NGC_API_KEY" not in env


def test_a_second_nimservice_on_the_same_cache_does_not_download_either(
    operator: OperatorProcess, k: Kubectl, control: RunnerControl
) -> None:
    k.apply(nimcache("shared", profiles=["vllm-fp16-tp1"]))
    wait_condition(k, "shared", "Ready", "True", timeout=240)
    for name in ("first", "second"):
        obj = cached(name, "shared")
        obj["spec"]["cache"]["nimCache"]["profile"] = "vllm-fp16-tp1"
        k.apply(obj)
    for name in ("first", "second"):
        k.wait_condition(name, "Ready", "True", timeout=120)
        assert "downloading" not in downloads(control, k.ns, name)


def test_a_nimservice_waits_for_its_cache_and_stalls_when_it_is_missing(
    operator: OperatorProcess, k: Kubectl
) -> None:
    k.apply(cached("early", "later"))
    stalled = k.wait_condition("early", "Stalled", "True", "NimCacheNotFound", timeout=30)
    assert "NimCache later not found" in stalled["message"]
    assert k.get("deployment", "early") is None
    k.apply(nimcache("later", image={"repository": IMAGE, "tag": "1.3.3-download-3s"}))
    waiting = k.wait_condition("early", "Ready", "False", "CacheNotReady", timeout=30)
    assert "waiting for NimCache later" in waiting["message"]
    assert k.get("deployment", "early") is None, "no pod starts before the cache is Ready"
    k.wait_condition("early", "Ready", "True", timeout=240)


def test_a_failed_cache_stalls_its_nimservice(operator: OperatorProcess, k: Kubectl) -> None:
    k("create", "secret", "generic", "bad-key", "--from-literal=NGC_API_KEY=nvapi-invalid")
    k.apply(nimcache("refused", authSecret="bad-key", backoffLimit=0))
    k.apply(cached("consumer", "refused"))
    wait_condition(k, "refused", "Stalled", "True", "AuthenticationFailed", timeout=240)
    stalled = k.wait_condition("consumer", "Stalled", "True", "CacheFailed", timeout=60)
    assert "AuthenticationFailed" in stalled["message"]


def test_without_a_cache_an_auth_secret_is_required_at_apply(k: Kubectl, crd: Path) -> None:
    obj = copy.deepcopy(nimservice("keyless"))
    del obj["spec"]["authSecret"]
    out = k.run("apply", "-f", "-", input=yaml.safe_dump(obj))
    assert out.returncode != 0
    assert "authSecret is required unless the model comes from a NimCache" in out.stderr


def test_a_missing_proxy_ca_stalls_the_nimservice_until_it_exists(
    operator: OperatorProcess, k: Kubectl
) -> None:
    proxy = {"httpsProxy": "http://127.0.0.1:9", "caBundle": {"configMapName": "corp-ca"}}
    k.apply(nimservice("proxied", proxy=proxy))
    stalled = k.wait_condition("proxied", "Stalled", "True", "ConfigMapNotFound", timeout=30)
    assert "ConfigMap corp-ca" in stalled["message"]
    assert k.get("deployment", "proxied") is None
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    k("create", "configmap", "corp-ca", f"--from-literal=ca.crt={pem}")
    wait_for(
        "the Deployment once the ConfigMap exists",
        lambda: k.get("deployment", "proxied"),
        timeout=30,
    )
    dep = k.get("deployment", "proxied")
    assert dep is not None
    template = dep["spec"]["template"]["spec"]
    assert template["initContainers"][0]["name"] == "proxy-ca"
    env = {e["name"]: e.get("value") for e in template["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:9"
    assert env["SSL_CERT_FILE"] == "/etc/nimop/proxy-ca-merged/ca-bundle.crt"
