"""A pod's run on its node, in the kubelet's order: volumes, init containers, then the rest.

The kubelet mounts every volume of a pod before it starts any of its containers, then runs the
init containers one at a time, each to completion, and only then starts the regular containers
together (https://kubernetes.io/docs/concepts/workloads/pods/init-containers/). A failed init
container is retried under back-off, or fails the pod when restartPolicy is Never. While any of
that is pending, the pod is Pending, its containers wait with PodInitializing (or
ContainerCreating) and volume problems are told as Events, as on a real node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import httpx

from nimlab.container import ContainerWorker
from nimlab.events import PodEvents
from nimlab.kubeapi import ApiError, KubeAPI, Obj
from nimlab.podstatus import CONTAINER_CREATING, POD_INITIALIZING, ContainerView
from nimlab.probes import Prober
from nimlab.timing import Backoff, TimeScale
from nimlab.volumes import Attachments, MountError, PodVolumes, Volume

log = logging.getLogger("nimlab.kubelet")

# The volume manager's retry back-off (pkg/util/goroutinemap/exponentialbackoff: 500 ms doubling
# to 2 m 2 s), on the lab's kubelet clock.
MOUNT_RETRY_INITIAL = 0.5
MOUNT_RETRY_MAX = 122.0


class PodHost(Protocol):
    """The pod worker that owns this run: the pod as last seen, and its status writer."""

    api: KubeAPI
    prober: Prober
    scale: TimeScale
    label: str

    @property
    def pod(self) -> Obj: ...

    def changed(self) -> None: ...


class NodeServices:
    """What the simulated nodes share: the lab's volume directory, attachments, node labels."""

    def __init__(self, api: KubeAPI, volume_root: Path) -> None:
        self.api = api
        self.volume_root = volume_root
        self.attachments = Attachments()
        self._labels: dict[str, dict[str, str]] = {}
        self._reading: dict[str, asyncio.Lock] = {}

    async def node_labels(self, node: str) -> dict[str, str]:
        """A node's labels, read once per node (however many of its pods start at once)."""
        if node in self._labels:
            return self._labels[node]
        async with self._reading.setdefault(node, asyncio.Lock()):
            if node not in self._labels:
                try:
                    obj = await self.api.get(f"/api/v1/nodes/{node}") if node else None
                except (ApiError, httpx.HTTPError) as err:
                    log.warning("node %s: reading its labels failed: %s", node, err)
                    return {}
                labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
                self._labels[node] = dict(labels)
        return self._labels[node]


class PodRuntime:
    """Runs one pod's containers; it is also the context each container worker sees."""

    def __init__(self, host: PodHost, services: NodeServices) -> None:
        self.host = host
        self.services = services
        self.api = host.api
        self.prober = host.prober
        self.scale = host.scale
        self.label = host.label
        self.node_labels: Mapping[str, str] = {}
        pod = host.pod
        spec = pod["spec"]
        self.mounts = PodVolumes(host.api, pod, services.volume_root, services.attachments)
        self.events = PodEvents(host.api, pod)
        policy = spec.get("restartPolicy") or "Always"
        waiting = POD_INITIALIZING if spec.get("initContainers") else CONTAINER_CREATING
        self.init_containers = [
            ContainerWorker(self, c, policy, init=True, waiting_reason=waiting)
            for c in spec.get("initContainers") or []
        ]
        self.containers = [
            ContainerWorker(self, c, policy, waiting_reason=waiting) for c in spec["containers"]
        ]
        self._adopt(pod)

    # -- the container workers' context ---------------------------------------------------------

    @property
    def pod(self) -> Obj:
        return self.host.pod

    @property
    def volumes(self) -> Mapping[str, Volume]:
        return self.mounts.volumes

    def instance_dir(self, container: str, instance: int) -> Path:
        return self.mounts.instance_dir(container, instance)

    def changed(self) -> None:
        self.host.changed()

    # -- the run --------------------------------------------------------------------------------

    def views(self) -> list[ContainerView]:
        return [c.view for c in self.containers]

    def init_views(self) -> list[ContainerView]:
        return [c.view for c in self.init_containers]

    def all_workers(self) -> list[ContainerWorker]:
        return [*self.init_containers, *self.containers]

    async def run(self) -> None:
        node = self.pod["spec"].get("nodeName") or ""
        self.node_labels = await self.services.node_labels(node)
        await self._mount()
        for init in self.init_containers:
            if init.succeeded:
                continue
            await init.run()
            if not init.succeeded:
                log.info("%s: init container %s failed; the pod has failed", self.label, init.name)
                self.mounts.release()
                return
        await asyncio.gather(*(c.run() for c in self.containers))
        self.mounts.release()

    async def remove(self) -> None:
        await self.mounts.remove()

    async def _mount(self) -> None:
        backoff = Backoff(self.scale, initial=MOUNT_RETRY_INITIAL, cap=MOUNT_RETRY_MAX)
        while True:
            try:
                await self.mounts.mount()
                return
            except MountError as failure:
                log.info("%s: %s", self.label, failure.message)
                await self.events.warn(failure.reason, failure.message, failure.component)
            await asyncio.sleep(
                max(self.scale(MOUNT_RETRY_INITIAL), backoff.delay(time.monotonic()))
            )

    def _adopt(self, pod: Obj) -> None:
        """Carry state over from a previous runner, so a runner restart reads as what it is on a
        node (the kubelet restarted) rather than as a brand-new pod: restart counts continue,
        init containers that completed are not run again."""
        status = pod.get("status") or {}
        previous = {c["name"]: c for c in status.get("containerStatuses") or []}
        main_started = False
        for container in self.containers:
            before = previous.get(container.name) or {}
            state = before.get("state") or {}
            if before.get("restartCount") or "running" in state or "terminated" in state:
                container.view.restart_count = int(before.get("restartCount") or 0)
                container.view.ever_started = True
                main_started = True
        previous_init = {c["name"]: c for c in status.get("initContainerStatuses") or []}
        for init in self.init_containers:
            before = previous_init.get(init.name) or {}
            terminated = (before.get("state") or {}).get("terminated")
            done = terminated is not None and int(terminated.get("exitCode", 1)) == 0
            if done or main_started:
                init.view.state = {
                    "terminated": terminated or {"exitCode": 0, "reason": "Completed"}
                }
                init.view.ready = init.view.finished = init.view.ever_started = True
                init.view.restart_count = int(before.get("restartCount") or 0)
