"""Kubernetes Events on the operator's objects, for `kubectl describe` and `kubectl get events`.

Posting is best effort: an Event that cannot be written is logged, never a reason to fail a
reconcile (the status already says what the Event would). So nothing waits for it either:
`post_later` sends Events in the API client's background lane while the pass goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nimop import names
from nimop.core.conditions import MESSAGE_LIMIT, Event, timestamp
from nimop.core.meta import ObjectRef
from nimop.runtime import kube, metrics

log = logging.getLogger(__name__)
INSTANCE = os.environ.get("POD_NAME") or os.uname().nodename


def event_object(ref: ObjectRef, event: Event, now: datetime) -> dict[str, Any]:
    when = timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{ref.name[:200]}.", "namespace": ref.namespace},
        "involvedObject": ref.involved_object(),
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:MESSAGE_LIMIT],
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "source": {"component": names.COMPONENT},
        "reportingComponent": names.COMPONENT,
        "reportingInstance": INSTANCE,
    }


async def post(api: kube.Kube, ref: ObjectRef, events: Sequence[Event], now: datetime) -> int:
    written = 0
    for event in events:
        try:
            await api.request(
                "POST",
                f"/api/v1/namespaces/{ref.namespace}/events",
                body=event_object(ref, event, now),
                lane="background",
            )
            written += 1
        except kube.ApiError as err:
            log.warning(
                "could not post event %s on %s/%s: %s", event.reason, ref.namespace, ref.name, err
            )
    return written


_POSTING: set[asyncio.Task[None]] = set()


def post_later(api: kube.Kube, ref: ObjectRef, events: Sequence[Event], now: datetime) -> None:
    """Post in a task of its own; the task is kept until it ends (the loop holds tasks weakly)."""

    async def run() -> None:
        metrics.WRITES.labels("event").inc(await post(api, ref, events, now))

    task = asyncio.get_running_loop().create_task(run(), name=f"events {ref.namespace}/{ref.name}")
    _POSTING.add(task)
    task.add_done_callback(_POSTING.discard)
