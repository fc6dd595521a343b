"""One asyncio task per NimService: reconcile, then sleep until the spec changes or the next
probe is due.

kopf daemons would do this too, but kopf guards daemons with a finalizer, and a finalizer on an
object whose operator is down blocks its deletion. These tasks need none: the watch (kopf's
on.event) feeds them the latest object, a DELETED event cancels them, and garbage collection
removes the children.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nimop import kube, metrics
from nimop.reconcile import Outcome

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]
MAX_BACKOFF = 60.0


def resource_version(body: Obj | None) -> int:
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


@dataclass
class _Worker:
    body: Obj
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    reconciled_generation: int = -1


class Workers:
    """Tasks run only while `active`: a standby replica keeps the latest objects from the watch,
    ready to take over, but reconciles nothing."""

    def __init__(
        self,
        reconcile: Callable[[Obj], Awaitable[Outcome]],
        on_forget: Callable[[str, str], None] | None = None,
        active: bool = True,
    ) -> None:
        self._reconcile = reconcile
        self._on_forget = on_forget
        self._workers: dict[Key, _Worker] = {}
        self.active = active

    def __len__(self) -> int:
        return len(self._workers)

    def update(self, body: Obj) -> None:
        """Take the latest object from the watch; wake its task when there is work to do."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = _Worker(body)
            metrics.MANAGED.set(len(self._workers))
            self._start(key, worker)
            return
        if resource_version(body) >= resource_version(worker.body):
            worker.body = body
        if int(meta.get("generation", 0)) != worker.reconciled_generation:
            worker.wake.set()

    def _start(self, key: Key, worker: _Worker) -> None:
        if self.active and worker.task is None:
            worker.reconciled_generation = -1
            worker.task = asyncio.create_task(
                self._run(key, worker), name=f"nimservice {key[0]}/{key[1]}"
            )

    async def resume(self) -> None:
        """Leadership gained: reconcile everything the watch delivered meanwhile."""
        self.active = True
        for key, worker in self._workers.items():
            self._start(key, worker)

    async def pause(self) -> None:
        """Leadership lost: stop every task now; a pass in flight is cancelled."""
        self.active = False
        for worker in list(self._workers.values()):
            await self._stop(worker)

    @staticmethod
    async def _stop(worker: _Worker) -> None:
        if worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task
            worker.task = None

    async def remove(self, namespace: str, name: str) -> None:
        worker = self._workers.pop((namespace, name), None)
        metrics.MANAGED.set(len(self._workers))
        if self._on_forget is not None:
            self._on_forget(namespace, name)
        if worker is not None:
            await self._stop(worker)

    async def shutdown(self) -> None:
        for namespace, name in list(self._workers):
            await self.remove(namespace, name)

    async def _run(self, key: Key, worker: _Worker) -> None:
        failures = 0
        while True:
            worker.wake.clear()
            body = worker.body
            try:
                outcome = await self._reconcile(body)
                delay = outcome.requeue_after
                failures = 0
                worker.reconciled_generation = int(body["metadata"].get("generation", 0))
                if outcome.body is not None and resource_version(outcome.body) >= resource_version(
                    worker.body
                ):
                    worker.body = outcome.body
            except asyncio.CancelledError:
                raise
            except kube.ApiError as err:
                failures += 1
                delay = min(2.0**failures, MAX_BACKOFF)
                log.warning("%s/%s: API error, retrying in %.0fs: %s", *key, delay, err)
            except Exception:
                failures += 1
                delay = min(2.0**failures, MAX_BACKOFF)
                log.exception("%s/%s: reconcile failed, retrying in %.0fs", *key, delay)
            metrics.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wake.wait(), timeout=delay)
