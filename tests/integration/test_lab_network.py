"""Services and volumes: the lab's kube-proxy and provisioner stand-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from nimlab.cluster import Cluster
from nimlab.control import RunnerControl
from nimlab.testing import deployment, nim_container, pod_spec, service, wait_for


def ready_pods(core: Any, namespace: str) -> int:
    pods = core.list_namespaced_pod(namespace).items
    return sum(
        1
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def test_service_proxy_forwards_chat_to_ready_pods(
    namespace: str, core: Any, apps: Any, control: RunnerControl
) -> None:
    spec = pod_spec(nim_container("1.0-load-0s"))
    apps.create_namespaced_deployment(namespace, deployment("llama", spec, 2))
    core.create_namespaced_service(namespace, service("llama", {"app": "llama"}))
    core.create_namespaced_service(namespace, service("nobody", {"app": "nobody"}))
    url = wait_for("proxy address", lambda: control.service_url(namespace, "llama"))
    assert url.startswith("http://127.2.")
    assert url.endswith(":8000")
    wait_for("2 Ready pods", lambda: ready_pods(core, namespace) == 2)

    body = {
        "model": "meta/llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 16,
    }

    def chat() -> dict[str, Any] | None:
        resp = httpx.post(f"{url}/v1/chat/completions", json=body, trust_env=False, timeout=5)
        return resp.json() if resp.status_code == 200 else None

    # The proxy learns readiness from the pod watch, a moment after the test's own read.
    answer = wait_for("chat completion through the Service", chat, timeout=10)
    assert answer["model"] == "meta/llama-3.1-8b-instruct"
    assert answer["choices"][0]["message"]["content"]
    for _ in range(4):
        assert chat() is not None

    nobody = wait_for("proxy address", lambda: control.service_url(namespace, "nobody"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{nobody}/v1/models", trust_env=False, timeout=5)


def test_load_balancer_gets_its_loopback_address_as_ingress(
    lab: Cluster, namespace: str, core: Any, control: RunnerControl
) -> None:
    core.create_namespaced_service(namespace, service("public", {"app": "x"}, 8000, "LoadBalancer"))
    jsonpath = "jsonpath={.status.loadBalancer.ingress[0].ip}"
    ip = wait_for(
        "ingress IP",
        lambda: lab.kubectl("get", "svc", "public", "-n", namespace, "-o", jsonpath).strip(),
    )
    assert ip.startswith("127.2.")
    assert control.service_url(namespace, "public") == f"http://{ip}:8000"


def test_claims_of_the_default_class_are_provisioned_and_cleaned_up(
    lab: Cluster, namespace: str, core: Any
) -> None:
    claim = {
        "metadata": {"name": "model-cache"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}},
    }
    created = core.create_namespaced_persistent_volume_claim(namespace, claim)
    assert created.spec.storage_class_name == "standard"
    bound = wait_for(
        "claim Bound",
        lambda: (
            (
                c := core.read_namespaced_persistent_volume_claim("model-cache", namespace)
            ).status.phase
            == "Bound"
            and c
        ),
    )
    assert bound.status.capacity["storage"] == "50Gi"
    volume = core.read_persistent_volume(bound.spec.volume_name)
    host_path = Path(volume.spec.host_path.path)
    assert host_path.is_dir()
    assert lab.workdir.resolve() in host_path.resolve().parents

    core.delete_namespaced_persistent_volume_claim("model-cache", namespace)
    wait_for(
        "volume deleted",
        lambda: (
            bound.spec.volume_name
            not in {v.metadata.name for v in core.list_persistent_volume().items}
        ),
    )
    assert not host_path.exists()
