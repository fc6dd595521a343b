"""Conditions and Events in the Kubernetes and kstatus conventions, shared by every resource.

`Ready`, `Reconciling` and `Stalled` are derived together by `kstatus()`, so no resource can set
them inconsistently: Reconciling is True exactly while the operator is still working towards
Ready, Stalled exactly when a person must act. `lastTransitionTime` moves only when a
condition's status changes, and every condition carries the generation it was computed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

CondStatus = Literal["True", "False", "Unknown"]
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the object: `type` is Normal or Warning."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Cond:
    """A condition as computed, before it is merged with the previous status."""

    type: str
    status: CondStatus
    reason: str
    message: str = ""


class StoredCondition(Protocol):
    """What merging needs from a condition read back from the API (models.Condition)."""

    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def last_transition_time(self) -> str: ...


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """A Kubernetes timestamp as a naive UTC datetime; None when absent or malformed."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=None)
    except ValueError:
        return None


def seconds_since(value: str | None, now: datetime) -> float | None:
    started = parse_time(value)
    if started is None:
        return None
    return (now.replace(tzinfo=None) - started).total_seconds()


def kstatus(ready: Cond, stalled: Cond | None) -> list[Cond]:
    """Ready, Reconciling and Stalled, consistent with each other.

    `ready` is the Ready condition the resource computed; `stalled` the reason a person must
    act, if any (Ready is then False with the same reason and message).
    """
    if stalled is not None:
        ready = Cond("Ready", "False", stalled.reason, stalled.message)
        reconciling = Cond(
            "Reconciling", "False", stalled.reason, "needs a change to the spec or cluster"
        )
        return [ready, reconciling, stalled]
    if ready.status == "True":
        reconciling = Cond("Reconciling", "False", ready.reason, ready.message)
    else:
        reconciling = Cond("Reconciling", "True", ready.reason, ready.message)
    return [ready, reconciling, Cond("Stalled", "False", "NotStalled", "")]


def stalled(reason: str, message: str) -> Cond:
    return Cond("Stalled", "True", reason, message)


@dataclass(frozen=True)
class MergedCondition:
    type: str
    status: CondStatus
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }


def merge(
    prev: Iterable[StoredCondition], new: Sequence[Cond], generation: int, now: datetime
) -> list[MergedCondition]:
    """The new conditions, keeping each one's lastTransitionTime while its status holds."""
    old = {c.type: c for c in prev}
    out = []
    for c in new:
        before = old.get(c.type)
        since = (
            before.last_transition_time if before and before.status == c.status else timestamp(now)
        )
        out.append(
            MergedCondition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message[:MESSAGE_LIMIT],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def changed(before: StoredCondition | None, after: StoredCondition | None) -> bool:
    """Whether a condition's status or reason differs: what an Event is posted for."""
    if after is None:
        return False
    return before is None or (before.status, before.reason) != (after.status, after.reason)


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 patch turning `old` into `new`: nulls remove keys no longer reported."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch
