"""The kubelet stand-in: one worker per pod on the simulated nodes, fed by the pod watch.

kwok gives each scheduled pod a loopback podIP and leaves it Pending; from then on the worker
here owns the pod's containers and reports their status, the way a kubelet would: it writes
only what it owns and only when something changed, through the runner's one bounded pool of
status writers (nimlab.statuswriter). Nothing here runs per pod unless the pod has something
to do: no polling, no write loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path

from nimlab.informer import newer_or_same, slim
from nimlab.kubeapi import KubeAPI, Obj
from nimlab.podruntime import NodeServices, PodRuntime
from nimlab.podstatus import status_patch
from nimlab.probes import Prober
from nimlab.statuswriter import StatusWriter
from nimlab.timing import TimeScale

log = logging.getLogger("nimlab.kubelet")

MAX_READY_WRITES = 32
# A new pod's first status (ContainerCreating) waits this long; when a container starts sooner,
# its status goes out at once instead, and covers both: one write per pod fewer.
FIRST_WRITE_DELAY = 0.5


def ready_condition(pod: Obj) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


class PodWorker:
    def __init__(
        self,
        api: KubeAPI,
        prober: Prober,
        scale: TimeScale,
        pod: Obj,
        services: NodeServices,
        writer: StatusWriter,
    ) -> None:
        self.api = api
        self.prober = prober
        self.scale = scale
        self.writer = writer
        self._pod = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.label = f"{self.namespace}/{self.name}"
        self.status_path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        self.writes = 0
        # When the API server accepted a write that flipped the pod's Ready condition, as
        # (ready, Unix time): what the control API reports for benchmarks.
        self.ready_written: deque[tuple[bool, float]] = deque(maxlen=MAX_READY_WRITES)
        self.runtime = PodRuntime(self, services)
        self.containers = self.runtime.containers
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._gone = False
        self._flips_ready: str | None = None  # the Ready the write being sent changes to

    @property
    def pod(self) -> Obj:
        return self._pod

    @property
    def ip(self) -> str:
        return str((self._pod.get("status") or {}).get("podIP", ""))

    def start(self) -> None:
        self._task = asyncio.create_task(self.runtime.run())
        self.writer.mark(self, delay=FIRST_WRITE_DELAY)

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def remove(self) -> None:
        """The pod was deleted: stop it and remove what the node kept for it."""
        await self.stop()
        await self.runtime.remove()

    def update(self, pod: Obj) -> None:
        """The watch delivered the pod; our own writes come back this way too."""
        version = pod["metadata"].get("resourceVersion")
        if version is not None and version == self._pod["metadata"].get("resourceVersion"):
            self._pod = pod  # the informer's copy of what our write returned: keep one
            return
        if newer_or_same(pod, self._pod):
            self._pod = pod
            self.changed()

    def changed(self) -> None:
        if self.writable:
            self.writer.mark(self)

    def kill(self, hold: bool) -> None:
        for container in self.containers:
            container.kill(hold)

    def release(self) -> None:
        for container in self.containers:
            container.release()

    # -- the status writer's side ---------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return not self._stopped and not self._gone

    def status_patch(self) -> tuple[str, Obj] | None:
        patch = status_patch(self._pod, self.runtime.views(), init_views=self.runtime.init_views())
        if patch is None:
            return None
        # The uid makes the patch conditional: never write to a namesake pod.
        patch["metadata"] = {"uid": self.uid}
        ready = ready_condition(patch)
        self._flips_ready = ready if ready != ready_condition(self._pod) else None
        return self.status_path, patch

    def written(self, updated: Obj) -> None:
        self.writes += 1
        if self._flips_ready is not None:
            self.ready_written.append((self._flips_ready == "True", time.time()))
            self._flips_ready = None
        if newer_or_same(updated, self._pod):
            self._pod = slim(updated, self._pod)
            # The patch was computed from an older copy: a readiness gate set meanwhile (the
            # operator's) changes what Ready must be, and the kubelet recomputes it then
            # (kubelet.go HandlePodReconcile, status_manager NeedToReconcilePodReadiness).
            views = self.runtime.views()
            if status_patch(self._pod, views, init_views=self.runtime.init_views()) is not None:
                self.changed()

    def gone(self) -> None:
        """The pod was deleted or replaced by a namesake: write nothing more."""
        self._gone = True


class Kubelet:
    """Starts, updates and stops pod workers from the pod informer's events."""

    def __init__(self, api: KubeAPI, scale: TimeScale, volume_root: Path) -> None:
        self.api = api
        self.scale = scale
        self.prober = Prober()
        self.services = NodeServices(api, volume_root)
        self.writer = StatusWriter(api)
        self.workers: dict[str, PodWorker] = {}
        self._by_name: dict[tuple[str, str], PodWorker] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        worker = self.workers.get(meta["uid"])
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if worker is not None:
                del self.workers[meta["uid"]]
                if self._by_name.get((worker.namespace, worker.name)) is worker:
                    del self._by_name[(worker.namespace, worker.name)]
                log.info("%s: deleted; stopping its containers", worker.label)
                task = asyncio.create_task(worker.remove())
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
            return
        if worker is not None:
            worker.update(pod)
            return
        status = pod.get("status") or {}
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self.api, self.prober, self.scale, pod, self.services, self.writer)
        self.workers[worker.uid] = worker
        self._by_name[(worker.namespace, worker.name)] = worker
        worker.start()

    def find(self, namespace: str, name: str) -> PodWorker | None:
        return self._by_name.get((namespace, name))

    async def close(self) -> None:
        workers, self.workers = list(self.workers.values()), {}
        self._by_name.clear()
        await asyncio.gather(*(w.stop() for w in workers), *self._stopping)
        await self.prober.aclose()
