"""runtime/workers.py: one task per object, which keeps nothing of the event that started it."""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any

from nimop.core.meta import ObjectRef, object_ref
from nimop.runtime.workers import Outcome, Workers

EVENT = contextvars.ContextVar[str]("event")


@dataclass(frozen=True)
class Obj:
    ref: ObjectRef


def body(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": "u", "resourceVersion": "1"}}


async def test_a_worker_does_not_keep_the_context_of_the_event_that_started_it() -> None:
    seen: list[str | None] = []
    done = asyncio.Event()

    async def reconcile(obj: Obj) -> Outcome:
        seen.append(EVENT.get(None))
        done.set()
        return Outcome(requeue_after=60)

    workers = Workers(lambda b: Obj(object_ref(b)), reconcile)
    EVENT.set("the watch event, with its whole body")
    workers.update(body("nim"))
    await asyncio.wait_for(done.wait(), 5)
    await workers.shutdown()
    assert seen == [None]
