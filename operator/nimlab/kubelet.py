"""The kubelet stand-in: one worker per pod on the simulated nodes.

kwok gives each scheduled pod a loopback podIP and leaves it Pending; from then on the worker
here owns the pod's containers and reports their status, the way a kubelet would: it writes
only what it owns and only when something changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from nimlab.container import ContainerWorker
from nimlab.informer import newer_or_same
from nimlab.kubeapi import ApiError, KubeAPI, Obj
from nimlab.podstatus import status_patch
from nimlab.probes import Prober
from nimlab.timing import TimeScale

log = logging.getLogger("nimlab.kubelet")

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
COALESCE_SECONDS = 0.02  # changes that happen together (started + ready) go out as one write


class PodWorker:
    def __init__(self, api: KubeAPI, prober: Prober, scale: TimeScale, pod: Obj) -> None:
        self.api = api
        self.prober = prober
        self.scale = scale
        self._pod = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.label = f"{self.namespace}/{self.name}"
        self.writes = 0
        policy = pod["spec"].get("restartPolicy", "Always")
        self.containers = [ContainerWorker(self, c, policy) for c in pod["spec"]["containers"]]
        self._adopt(pod)
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pod(self) -> Obj:
        return self._pod

    @property
    def ip(self) -> str:
        return str((self._pod.get("status") or {}).get("podIP", ""))

    def _adopt(self, pod: Obj) -> None:
        """Carry restart counts over from a previous runner, so a runner restart reads as a
        container restart rather than a brand-new pod."""
        previous = {c["name"]: c for c in (pod.get("status") or {}).get("containerStatuses") or []}
        for container in self.containers:
            status = previous.get(container.name) or {}
            state = status.get("state") or {}
            if status.get("restartCount") or "running" in state or "terminated" in state:
                container.view.restart_count = int(status.get("restartCount") or 0)
                container.view.ever_started = True

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_loop())]
        self._tasks += [asyncio.create_task(c.run()) for c in self.containers]
        self._dirty.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def update(self, pod: Obj) -> None:
        if newer_or_same(pod, self._pod):
            self._pod = pod
            self._dirty.set()

    def changed(self) -> None:
        self._dirty.set()

    def kill(self, hold: bool) -> None:
        for container in self.containers:
            container.kill(hold)

    def release(self) -> None:
        for container in self.containers:
            container.release()

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            try:
                if not await self._write():
                    return
            except Exception:
                log.exception("%s: computing the status failed", self.label)

    async def _write(self) -> bool:
        """Write the status if it changed; False once the pod is gone or replaced."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        patch = status_patch(self._pod, [c.view for c in self.containers])
        if patch is None:
            return True
        # The uid makes the patch conditional: never write to a namesake pod.
        patch["metadata"] = {"uid": self.uid}
        try:
            updated = await self.api.patch(path, patch, content_type=STRATEGIC_MERGE)
        except ApiError as err:
            if err.status in (404, 409):
                return False
            log.warning("%s: status write failed: %s", self.label, err)
        except httpx.HTTPError as err:
            log.warning("%s: status write failed: %s", self.label, err)
        else:
            self.writes += 1
            self.update(updated)
            return True
        await asyncio.sleep(0.5)
        self._dirty.set()
        return True


class Kubelet:
    """Starts, updates and stops pod workers from the pod informer's events."""

    def __init__(self, api: KubeAPI, scale: TimeScale) -> None:
        self.api = api
        self.scale = scale
        self.prober = Prober()
        self.workers: dict[str, PodWorker] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        worker = self.workers.get(meta["uid"])
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if worker is not None:
                del self.workers[meta["uid"]]
                log.info("%s: deleted; stopping its containers", worker.label)
                task = asyncio.create_task(worker.stop())
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
            return
        if worker is not None:
            worker.update(pod)
            return
        status = pod.get("status") or {}
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self.api, self.prober, self.scale, pod)
        self.workers[worker.uid] = worker
        worker.start()

    def find(self, namespace: str, name: str) -> PodWorker | None:
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == name:
                return worker
        return None

    async def close(self) -> None:
        workers, self.workers = list(self.workers.values()), {}
        await asyncio.gather(*(w.stop() for w in workers), *self._stopping)
        await self.prober.aclose()
