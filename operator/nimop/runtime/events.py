"""Kubernetes Events on the operator's objects, for `kubectl describe` and `kubectl get events`.

Posting is best effort: an Event that cannot be written is logged, never a reason to fail a
reconcile (the status already says what the Event would).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nimop import names
from nimop.core.conditions import MESSAGE_LIMIT, Event, timestamp
from nimop.core.meta import ObjectRef
from nimop.runtime import kube

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
            )
            written += 1
        except kube.ApiError as err:
            log.warning(
                "could not post event %s on %s/%s: %s", event.reason, ref.namespace, ref.name, err
            )
    return written
