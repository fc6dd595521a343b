"""One asyncio task per object: reconcile, then sleep until something it reads changes or its
next probe is due.

kopf daemons would do this too, but kopf guards daemons with a finalizer, and a finalizer on an
object whose operator is down blocks its deletion. These tasks need none: the watch (kopf's
on.event) feeds them the latest object, a DELETED event cancels them, and garbage collection
removes the children. The watch-fed caches wake a task when one of its children changes, by the
owner label the children carry, so nothing polls the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from nimop import names
from nimop.core.meta import ObjectRef
from nimop.runtime import kube, metrics

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Outcome:
    requeue_after: float
    body: Obj | None = None
    """The object as the status patch returned it (fresher than the watch may be)."""


class Parsed(Protocol):
    """A watched object parsed at the door (a NimService, a NimCache)."""

    @property
    def ref(self) -> ObjectRef: ...


P = TypeVar("P", bound=Parsed)


def version(obj: Parsed) -> int:
    try:
        return int(obj.ref.resource_version)
    except ValueError:
        return 0


def _version_of(body: Obj) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion", ""))


@dataclass
class _Worker(Generic[P]):
    obj: P
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    reconciled_generation: int = -1

    def take(self, body: Obj, parse: Callable[[Obj], P]) -> None:
        """Keep `body`, parsed, if it is newer; our own status writes echo back through the
        watch with the version already kept, and are not parsed twice."""
        if _version_of(body) != self.obj.ref.resource_version:
            obj = parse(body)
            if version(obj) >= version(self.obj):
                self.obj = obj


class Workers(Generic[P]):
    """Tasks run only while `active`: a standby replica keeps the latest objects from the watch,
    ready to take over, but reconciles nothing.

    Each body is parsed once, when it arrives (`parse`), and only the typed object is kept: a
    thousand raw bodies would cost more memory than the rest of what the operator holds, and
    nothing past the door reads them."""

    def __init__(
        self,
        parse: Callable[[Obj], P],
        reconcile: Callable[[P], Awaitable[Outcome]],
        on_forget: Callable[[str, str], None] | None = None,
        active: bool = True,
        kind: str = names.KIND,
    ) -> None:
        self._parse = parse
        self._reconcile = reconcile
        self._on_forget = on_forget
        self._workers: dict[Key, _Worker[P]] = {}
        self._by_label: dict[Key, set[str]] = defaultdict(set)
        self.active = active
        self.kind = kind

    def __len__(self) -> int:
        return len(self._workers)

    def update(self, body: Obj) -> None:
        """Take the latest object from the watch; wake its task when there is work to do."""
        meta = body["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = _Worker(self._parse(body))
            self._by_label[(key[0], names.dns_label(key[1]))].add(key[1])
            metrics.MANAGED.labels(self.kind).set(len(self._workers))
            self._start(key, worker)
            return
        worker.take(body, self._parse)
        if worker.obj.ref.generation != worker.reconciled_generation:
            worker.wake.set()

    def wake(self, namespace: str, name: str) -> None:
        worker = self._workers.get((namespace, name))
        if worker is not None:
            worker.wake.set()

    def wake_label(self, namespace: str, label: str) -> None:
        """A child labelled with this owner value changed: wake every owner it may belong to
        (two names can normalise to one label value; ownership by UID sorts them out)."""
        for name in self._by_label.get((namespace, label), ()):
            self.wake(namespace, name)

    def _start(self, key: Key, worker: _Worker[P]) -> None:
        if self.active and worker.task is None:
            worker.reconciled_generation = -1
            # A task keeps a copy of the context it was created in for its whole life. Created
            # from a kopf handler, that copy holds kopf's variables for the event: its cause,
            # the whole body and a patch, kept as long as the NimService exists (11 KiB each,
            # measured at 300). The worker uses none of them.
            worker.task = asyncio.create_task(
                self._run(key, worker),
                name=f"{self.kind} {key[0]}/{key[1]}",
                context=contextvars.Context(),
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
    async def _stop(worker: _Worker[Any]) -> None:
        if worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task
            worker.task = None

    async def remove(self, namespace: str, name: str) -> None:
        worker = self._workers.pop((namespace, name), None)
        label = (namespace, names.dns_label(name))
        self._by_label[label].discard(name)
        if not self._by_label[label]:
            del self._by_label[label]
        metrics.MANAGED.labels(self.kind).set(len(self._workers))
        if self._on_forget is not None:
            self._on_forget(namespace, name)
        if worker is not None:
            await self._stop(worker)

    async def shutdown(self) -> None:
        for namespace, name in list(self._workers):
            await self.remove(namespace, name)

    async def _run(self, key: Key, worker: _Worker[P]) -> None:
        failures = 0
        while True:
            worker.wake.clear()
            delay, failures = await self._pass(key, worker, failures)
            # A timer that sets the wake event, rather than wait_for: no second task per
            # sleeping worker.
            timer = asyncio.get_running_loop().call_later(delay, worker.wake.set)
            try:
                await worker.wake.wait()
            finally:
                timer.cancel()

    async def _pass(self, key: Key, worker: _Worker[P], failures: int) -> tuple[float, int]:
        """One pass, and how long to sleep after it. A function of its own so that nothing it
        read (the object, the status write's response) stays referenced while a thousand
        tasks sleep."""
        obj = worker.obj
        started = time.perf_counter()
        try:
            outcome = await self._reconcile(obj)
            metrics.RECONCILES.labels("ok").inc()
            delay = outcome.requeue_after
            failures = 0
            worker.reconciled_generation = obj.ref.generation
            if outcome.body is not None:
                worker.take(outcome.body, self._parse)
        except asyncio.CancelledError:
            raise
        except kube.ApiError as err:
            metrics.RECONCILES.labels("error").inc()
            metrics.ERRORS.labels("api" if err.transient else "rejected").inc()
            failures += 1
            delay = min(2.0**failures, MAX_BACKOFF)
            log.warning("%s/%s: API error, retrying in %.0fs: %s", *key, delay, err)
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            metrics.ERRORS.labels("internal").inc()
            failures += 1
            delay = min(2.0**failures, MAX_BACKOFF)
            log.exception("%s/%s: reconcile failed, retrying in %.0fs", *key, delay)
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        metrics.tick()
        return delay, failures
