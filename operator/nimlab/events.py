"""The few Events the simulated node posts: why a pod's volumes cannot be mounted.

A pod stuck in ContainerCreating says nothing in its status; `kubectl describe pod` shows the
kubelet's FailedMount (or the attach/detach controller's FailedAttachVolume) Event instead, and
that is where people look. Each distinct message is posted once per pod; the lab makes no other
kubelet Events, so a busy lab does not flood the API server.
"""

from __future__ import annotations

import logging

import httpx

from nimlab.kubeapi import ApiError, KubeAPI, Obj
from nimlab.podstatus import timestamp

log = logging.getLogger("nimlab.kubelet")


def event_for(pod: Obj, reason: str, message: str, component: str, kind: str = "Warning") -> Obj:
    meta = pod["metadata"]
    node = pod["spec"].get("nodeName") or ""
    now = timestamp()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component, **({"host": node} if component == "kubelet" else {})},
        "reportingComponent": component,
        "reportingInstance": node if component == "kubelet" else "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class PodEvents:
    """Posts an Event for a pod once per distinct (reason, message)."""

    def __init__(self, api: KubeAPI, pod: Obj) -> None:
        self.api = api
        self.pod = pod
        self._posted: set[tuple[str, str]] = set()

    async def warn(self, reason: str, message: str, component: str = "kubelet") -> None:
        if (reason, message) in self._posted:
            return
        self._posted.add((reason, message))
        namespace = self.pod["metadata"]["namespace"]
        body = event_for(self.pod, reason, message, component)
        try:
            await self.api.create(f"/api/v1/namespaces/{namespace}/events", body)
        except (ApiError, httpx.HTTPError) as err:
            name = self.pod["metadata"]["name"]
            log.warning("%s/%s: posting event %s failed: %s", namespace, name, reason, err)
