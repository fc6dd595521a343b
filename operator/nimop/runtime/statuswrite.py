"""The end of every pass, for both kinds: one status patch when something changed (none when
nothing did), then the Events of the transitions it made."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nimop import names
from nimop.core.conditions import Event, merge_patch
from nimop.core.meta import ObjectRef
from nimop.runtime import events, kube, metrics


async def write(
    api: kube.Kube,
    ref: ObjectRef,
    plural: str,
    stored: dict[str, Any],
    wanted: dict[str, Any],
    transitions: Sequence[Event],
    now: datetime,
    lane: kube.Lane = "default",
) -> dict[str, Any] | None:
    """The object as the status patch returned it, or None when nothing was written. `lane`:
    which connections the status patch queues for (kube.LANE_SIZES); Events always go in the
    background lane."""
    patch = merge_patch(stored, wanted)
    fresh: dict[str, Any] | None = None
    if patch:
        path = f"/apis/{names.API_VERSION}/namespaces/{ref.namespace}/{plural}/{ref.name}/status"
        fresh = await api.request(
            "PATCH", path, body={"status": patch}, content_type=kube.MERGE_PATCH, lane=lane
        )
        metrics.WRITES.labels("status").inc()
    if transitions:
        events.post_later(api, ref, transitions, now)
    return fresh
