"""Kubernetes Events on a NimService, for `kubectl describe` and `kubectl get events`.

Posting is best effort: an Event that cannot be written is logged, never a reason to fail a
reconcile (the status already says what the Event would).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from nimop import kube, names
from nimop.rollout import Event, timestamp

log = logging.getLogger(__name__)
INSTANCE = os.environ.get("POD_NAME") or os.uname().nodename


def event_object(owner: dict[str, Any], event: Event, now: datetime) -> dict[str, Any]:
    meta = owner["metadata"]
    when = timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "source": {"component": names.COMPONENT},
        "reportingComponent": names.COMPONENT,
        "reportingInstance": INSTANCE,
    }


async def post(api: kube.Kube, owner: dict[str, Any], events: list[Event], now: datetime) -> int:
    written = 0
    namespace = owner["metadata"]["namespace"]
    for event in events:
        try:
            await api.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                body=event_object(owner, event, now),
            )
            written += 1
        except kube.ApiError as err:
            log.warning(
                "could not post event %s on %s/%s: %s",
                event.reason,
                namespace,
                owner["metadata"]["name"],
                err,
            )
    return written
