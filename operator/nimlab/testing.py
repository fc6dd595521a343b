"""Helpers for tests that run against a lab: polling with a deadline, and NIM-shaped manifests.

Tests against a real control plane must wait for controllers, never sleep a fixed time; `wait_for`
polls briefly and fails with the last thing it saw, which is what one needs to debug a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from nimlab.cluster import Cluster

T = TypeVar("T")

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
NIM_IMAGE = "nvcr.io/nim/meta/llama-3.1-8b-instruct"


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll until `check` returns something truthy and return it.

    Exceptions count as "not yet" (the API may briefly refuse), except AssertionError: a check
    that asserts has reached a verdict, and waiting longer would only hide it.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except AssertionError:
            raise
        except Exception as err:
            result, last = None, err
        else:
            last = result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def api_client(cluster: Cluster) -> Any:
    """An official-client ApiClient for the lab (imported lazily: the runner never needs it)."""
    from kubernetes import config

    factory: Callable[..., Any] = config.new_client_from_config  # the client is untyped
    return factory(config_file=str(cluster.kubeconfig))


def http_probe(
    path: str, port: int | str = "http", period: int = 1, **extra: int
) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, **extra}


def nim_container(
    tag: str = "1.0",
    *,
    name: str = "nim",
    gpus: int = 1,
    readiness: bool = True,
    startup: bool = False,
    liveness: dict[str, Any] | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A container shaped like a NIM's: port 8000 named http, health probes, GPU limits, and an
    NGC_API_KEY (unless `env` names one), which a NIM needs to download its model when it starts
    without a cache."""
    env = list(env or [])
    if not any(var.get("name") == "NGC_API_KEY" for var in env):
        env.insert(0, {"name": "NGC_API_KEY", "value": "nvapi-lab-test"})
    container: dict[str, Any] = {
        "name": name,
        "image": f"{NIM_IMAGE}:{tag}",
        "ports": [{"name": "http", "containerPort": 8000}],
        "env": env,
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    if readiness:
        container["readinessProbe"] = http_probe("/v1/health/ready")
    if startup:
        container["startupProbe"] = http_probe("/v1/health/ready", failureThreshold=100)
    if liveness is not None:
        container["livenessProbe"] = liveness
    return container


def pod_spec(*containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "tolerations": [GPU_TOLERATION],
        "terminationGracePeriodSeconds": 0,
        "containers": list(containers),
        **extra,
    }


def pod(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def deployment(name: str, spec: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def service(
    name: str, selector: dict[str, str], port: int = 8000, type_: str = "ClusterIP"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": type_,
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
