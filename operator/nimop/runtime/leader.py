"""Leader election on a coordination.k8s.io Lease, so several operator replicas (or the old and
new pod of the operator's own rolling update) never reconcile at the same time.

kopf's peering pauses kopf's watch streams, but the operator's per-NimService tasks run on their
own; they must stop the moment this replica is not the leader. Hence a Lease, with the rules
Kubernetes' own controllers follow: the holder renews every `renew_seconds`; a candidate takes the
Lease only after its record has not changed for `lease_seconds` as measured by the candidate's
own clock (so clock skew between nodes does not matter); every write is conditional on the
resourceVersion read, so two candidates cannot both win; and a leader that has not managed to
renew within `lease_seconds - renew_seconds` steps down before anyone else may take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nimop.runtime import kube, metrics

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or os.uname().nodename}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api: kube.Kube,
        namespace: str,
        name: str,
        identity: str | None = None,
        lease_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_seconds = lease_seconds
        self.renew_seconds = max(lease_seconds / 3, 0.2)
        self._clock = clock
        self.leading = False
        self._last_renew = -1e9
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._announced = False

    def _record(self, lease: Obj) -> tuple[Any, ...]:
        spec = lease.get("spec") or {}
        return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))

    def _spec(self, previous: Obj | None) -> Obj:
        now = _now()
        old = previous or {}
        mine = old.get("holderIdentity") == self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_seconds)),
            "acquireTime": old.get("acquireTime") if mine else now,
            "renewTime": now,
            "leaseTransitions": int(old.get("leaseTransitions") or 0) + (0 if mine else 1),
        }

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        lease = await self._api.get(self._path, timeout=self.renew_seconds)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            try:
                await self._api.request(
                    "POST", self._collection, body=body, timeout=self.renew_seconds
                )
            except kube.ApiError as err:
                if err.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = self._record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        expired = self._clock() - self._observed_at >= self.lease_seconds
        if holder not in (None, "", self.identity) and not expired:
            return False
        lease["spec"] = self._spec(spec)
        try:
            await self._api.request("PUT", self._path, body=lease, timeout=self.renew_seconds)
        except kube.ApiError as err:
            if err.status == 409:  # someone else wrote first
                return False
            raise
        return True

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown instead of letting it expire."""
        if not self.leading:
            return
        lease = await self._api.get(self._path)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
        with contextlib.suppress(kube.ApiError):
            await self._api.request("PUT", self._path, body=lease)
        self.leading = False

    async def run(self, on_change: Callable[[bool], Awaitable[None]]) -> None:
        """Campaign forever; call on_change(True/False) whenever leadership changes."""
        while True:
            try:
                held = await self.try_acquire_or_renew()
                if held:
                    self._last_renew = self._clock()
            except Exception as err:  # any failed round; the task must never die
                log.warning("lease %s/%s: %s", self.namespace, self.name, err)
                held = self.leading
            deadline = self.lease_seconds - self.renew_seconds
            if held and self._clock() - self._last_renew > deadline:
                held = False  # could not renew in time: step down before others may take over
            if held != self.leading or not self._announced:
                self._announced = True
                self.leading = held
                metrics.LEADER.set(1 if held else 0)
                holder = self._observed[0] if self._observed else None
                if held:
                    log.info(
                        "leading: holding lease %s/%s as %s",
                        self.namespace,
                        self.name,
                        self.identity,
                    )
                else:
                    log.info(
                        "standing by: lease %s/%s held by %s", self.namespace, self.name, holder
                    )
                await on_change(held)
            await asyncio.sleep(self.renew_seconds if held else self.renew_seconds / 2)
