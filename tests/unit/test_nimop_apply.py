"""The order children are applied in: the Service waits for nothing when no pod runs yet."""

from __future__ import annotations

from typing import Any

from nimop.core import children
from nimop.runtime import apply

Obj = dict[str, Any]


def obj(kind: str, api_version: str = "v1") -> Obj:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "llama"}}


RENDERED = [obj("Deployment", "apps/v1"), obj("Service"), obj("PersistentVolumeClaim")]


def live_deployment(key: apply.ChildKey) -> apply.Live:
    if key[1] != "Deployment":
        return None
    return children.child(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llama"}}
    )


def test_a_first_deployment_starts_its_pods_before_its_service() -> None:
    order = [o["kind"] for o in apply.apply_order(RENDERED, lambda _: None)]
    assert order == ["PersistentVolumeClaim", "Deployment", "Service"]


def test_an_update_reaches_the_pods_last() -> None:
    order = [o["kind"] for o in apply.apply_order(RENDERED, live_deployment)]
    assert order == ["PersistentVolumeClaim", "Service", "Deployment"]
