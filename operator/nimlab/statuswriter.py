"""Pod status writes for every pod on the simulated nodes, through one bounded pool.

A kubelet's status manager coalesces: whatever changed since the last write goes out as one
patch, computed when it is sent. The runner does the same across all its pods. A pod whose
status changed is queued once however often it changes meanwhile (a container started and
turned ready, several containers at once), a fixed number of writers send the patches, so a
burst of a thousand starting pods becomes a stream the API server absorbs instead of a thousand
simultaneous requests that time out, and a failed write is retried with back-off. A pod is
never written twice at once (the later patch could land first), and a pod whose status did not
change is not written at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import httpx

from nimlab.kubeapi import ApiError, KubeAPI, Obj

log = logging.getLogger("nimlab.kubelet")

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
WRITERS = 8  # concurrent status writes
COALESCE_SECONDS = 0.02  # changes this close together go out as one write
RETRY_INITIAL = 0.5
RETRY_MAX = 10.0
GONE = (404, 409)  # the pod was deleted, or replaced by a namesake (the uid precondition)


class StatusSource(Protocol):
    """A pod whose status the writer keeps up to date (nimlab.kubelet.PodWorker)."""

    label: str

    @property
    def writable(self) -> bool: ...

    def status_patch(self) -> tuple[str, Obj] | None:
        """(path, strategic-merge body) of what changed, or None when the API server knows."""
        ...

    def written(self, updated: Obj) -> None: ...

    def gone(self) -> None: ...


class StatusWriter:
    def __init__(
        self, api: KubeAPI, writers: int = WRITERS, coalesce: float = COALESCE_SECONDS
    ) -> None:
        self.api = api
        self.writers = writers
        self.coalesce = coalesce
        self.writes = 0
        self.retries = 0
        self._queue: asyncio.Queue[StatusSource] = asyncio.Queue()
        self._scheduled: dict[StatusSource, asyncio.TimerHandle] = {}
        self._queued: set[StatusSource] = set()
        self._writing: set[StatusSource] = set()
        self._again: set[StatusSource] = set()
        self._failures: dict[StatusSource, int] = {}
        self._backoff_until: dict[StatusSource, float] = {}

    def mark(self, source: StatusSource, delay: float | None = None) -> None:
        """The source's status may have changed: write it once, after `delay` (default: the
        coalescing window), or sooner if an earlier mark asks for sooner; never before a
        failed write's back-off has passed."""
        if source in self._writing:
            self._again.add(source)
            return
        if source in self._queued:
            return  # a writer takes it soon and computes the patch then
        loop = asyncio.get_running_loop()
        due = loop.time() + (self.coalesce if delay is None else delay)
        due = max(due, self._backoff_until.get(source, 0.0))
        scheduled = self._scheduled.get(source)
        if scheduled is not None:
            if scheduled.when() <= due:
                return
            scheduled.cancel()
        self._scheduled[source] = loop.call_at(due, self._enqueue, source)

    @property
    def backlog(self) -> int:
        return len(self._scheduled) + len(self._queued) + len(self._writing)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._writer()) for _ in range(self.writers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _enqueue(self, source: StatusSource) -> None:
        del self._scheduled[source]
        self._queued.add(source)
        self._queue.put_nowait(source)

    async def _writer(self) -> None:
        while True:
            source = await self._queue.get()
            self._queued.discard(source)
            if not source.writable:
                self._failures.pop(source, None)
                self._backoff_until.pop(source, None)
                continue
            self._writing.add(source)
            try:
                await self._write(source)
            finally:
                self._writing.discard(source)
                if source in self._again:
                    self._again.discard(source)
                    self.mark(source)

    async def _write(self, source: StatusSource) -> None:
        try:
            built = source.status_patch()
        except Exception:
            log.exception("%s: computing the status failed", source.label)
            return
        if built is None:
            return
        path, body = built
        try:
            updated = await self.api.patch(path, body, content_type=STRATEGIC_MERGE)
        except ApiError as err:
            if err.status in GONE:
                source.gone()
                return
            self._retry(source, err)
        except httpx.HTTPError as err:
            self._retry(source, err)
        else:
            self.writes += 1
            self._failures.pop(source, None)
            self._backoff_until.pop(source, None)
            source.written(updated)

    def _retry(self, source: StatusSource, err: Exception) -> None:
        failures = self._failures.get(source, 0) + 1
        self._failures[source] = failures
        self.retries += 1
        delay = min(RETRY_MAX, RETRY_INITIAL * 2 ** (failures - 1))
        level = logging.WARNING if failures == 1 else logging.DEBUG
        reason = f"{type(err).__name__}: {err}"
        log.log(level, "%s: status write failed (%s); retrying in %gs", source.label, reason, delay)
        self._backoff_until[source] = asyncio.get_running_loop().time() + delay
        self.mark(source, delay)
