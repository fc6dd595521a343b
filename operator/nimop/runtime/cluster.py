"""The operator's view of the cluster: one watch-fed cache per kind, shared by every object.

Children (Deployments, ReplicaSets, Pods, Services, PodDisruptionBudgets, PersistentVolumeClaims)
are watched by the operator's `managed-by` label, in the watched namespaces, and indexed by the
owner label each carries (`nimop.dev/nimservice: NAME`), so a change to a child wakes exactly the
object it belongs to. Nodes and the GPU requests of bound pods are watched cluster-wide for
placement decisions, when RBAC allows; without it the operator does without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nimop import names
from nimop.core import capacity, children, pods
from nimop.runtime.informer import Connectivity, Informer, Key, Source
from nimop.runtime.kube import Kube

T = TypeVar("T")
Obj = dict[str, Any]
OwnerKey = tuple[str, str, str]  # namespace, owner label key, owner label value
Waker = Callable[[str, str], None]  # namespace, owner label value

MANAGED = f"{names.LABEL_MANAGED_BY}={names.COMPONENT}"
OWNER_LABELS = (names.LABEL_NIMSERVICE, names.LABEL_NIMCACHE)


@dataclass(frozen=True)
class Owned(Generic[T]):
    """Facts about a child, with the owner label that ties it to its owner."""

    owner: tuple[str, str] | None
    facts: T


def _owner_of(obj: Obj) -> tuple[str, str] | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for key in OWNER_LABELS:
        if key in labels:
            return key, str(labels[key])
    return None


def _owned(parse: Callable[[Obj], T]) -> Callable[[Obj], Owned[T]]:
    def transform(obj: Obj) -> Owned[T]:
        return Owned(_owner_of(obj), parse(obj))

    return transform


def _gpu_use(pod: Obj) -> tuple[str, int] | None:
    gpus = pods.requested_gpus(pod)
    node = (pod.get("spec") or {}).get("nodeName")
    return (str(node), gpus) if gpus and node else None


class OwnedCache(Generic[T]):
    """An informer of one child kind, indexed by owner."""

    def __init__(
        self,
        api: Kube,
        source: Source,
        parse: Callable[[Obj], T],
        namespaces: Iterable[str],
        wake: Callable[[str, tuple[str, str]], None],
        connectivity: Connectivity,
    ) -> None:
        self._index: dict[OwnerKey, set[str]] = defaultdict(set)
        self._wake = wake
        self.informer: Informer[Owned[T]] = Informer(
            api, source, _owned(parse), namespaces, self._changed, connectivity
        )

    def _changed(self, key: Key, old: Owned[T] | None, new: Owned[T] | None) -> None:
        namespace, name = key
        for item, add in ((old, False), (new, True)):
            if item is None or item.owner is None:
                continue
            index = (namespace, *item.owner)
            if add:
                self._index[index].add(name)
            else:
                self._index[index].discard(name)
                if not self._index[index]:
                    del self._index[index]
        owners = {o.owner for o in (old, new) if o is not None and o.owner is not None}
        for owner in owners:
            self._wake(namespace, owner)

    def owned(self, namespace: str, label: str, value: str) -> list[T]:
        store = self.informer.store
        return [
            store[(namespace, name)].facts
            for name in sorted(self._index.get((namespace, label, value), ()))
            if (namespace, name) in store
        ]

    def get(self, namespace: str, name: str) -> T | None:
        found = self.informer.get(namespace, name)
        return found.facts if found is not None else None


class Cluster:
    def __init__(
        self,
        api: Kube,
        namespaces: tuple[str, ...],
        capacity_watch: bool = True,
    ) -> None:
        self.api = api
        self.namespaces = namespaces or ("",)
        self.connectivity = Connectivity()
        self._wakers: dict[str, Waker] = {}
        self._tasks: list[asyncio.Task[None]] = []

        def owned(plural: str, prefix: str, parse: Callable[[Obj], Any]) -> OwnedCache[Any]:
            return OwnedCache(
                api,
                Source(plural, prefix, plural, label_selector=MANAGED),
                parse,
                self.namespaces,
                self._wake,
                self.connectivity,
            )

        self.deployments: OwnedCache[children.DeploymentFacts] = owned(
            "deployments", "/apis/apps/v1", children.deployment
        )
        self.replica_sets: OwnedCache[children.ReplicaSetFacts] = owned(
            "replicasets", "/apis/apps/v1", children.replica_set
        )
        self.pods: OwnedCache[pods.PodFacts] = owned("pods", "/api/v1", pods.facts)
        self.services: OwnedCache[children.ChildFacts] = owned(
            "services", "/api/v1", children.parser("v1", "Service")
        )
        self.disruption_budgets: OwnedCache[children.ChildFacts] = owned(
            "poddisruptionbudgets",
            "/apis/policy/v1",
            children.parser("policy/v1", "PodDisruptionBudget"),
        )
        self.claims: OwnedCache[children.ChildFacts] = owned(
            "persistentvolumeclaims", "/api/v1", children.parser("v1", "PersistentVolumeClaim")
        )
        self.gpu_used: dict[str, int] = defaultdict(int)
        self.nodes: Informer[capacity.NodeFacts] | None = None
        self.gpu_pods: Informer[tuple[str, int]] | None = None
        if capacity_watch:
            self.nodes = Informer(
                api,
                Source("nodes", "/api/v1", "nodes"),
                capacity.node_facts,
                connectivity=self.connectivity,
            )
            self.gpu_pods = Informer(
                api,
                Source(
                    "gpu-pods",
                    "/api/v1",
                    "pods",
                    field_selector="spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed",
                ),
                _gpu_use,
                on_change=self._gpu_changed,
                connectivity=self.connectivity,
            )

    # -- wiring --------------------------------------------------------------------------------

    def on_owner_change(self, label: str, waker: Waker) -> None:
        """Call `waker(namespace, label value)` whenever a child with this owner label changes."""
        self._wakers[label] = waker

    def _wake(self, namespace: str, owner: tuple[str, str]) -> None:
        waker = self._wakers.get(owner[0])
        if waker is not None:
            waker(namespace, owner[1])

    def _gpu_changed(
        self, _: Key, old: tuple[str, int] | None, new: tuple[str, int] | None
    ) -> None:
        if old is not None:
            self.gpu_used[old[0]] -= old[1]
            if self.gpu_used[old[0]] <= 0:
                del self.gpu_used[old[0]]
        if new is not None:
            self.gpu_used[new[0]] += new[1]

    @property
    def informers(self) -> list[Informer[Any]]:
        owned: list[OwnedCache[Any]] = [
            self.deployments,
            self.replica_sets,
            self.pods,
            self.services,
            self.disruption_budgets,
            self.claims,
        ]
        extra = [i for i in (self.nodes, self.gpu_pods) if i is not None]
        return [c.informer for c in owned] + extra

    async def start(self) -> None:
        """Start every watch and return once each has listed what exists."""
        self._tasks = [
            asyncio.create_task(i.run(), name=f"watch {i.source.name}") for i in self.informers
        ]
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- reads ---------------------------------------------------------------------------------

    def placement(self, request: capacity.PlacementRequest) -> capacity.Placement | None:
        """Free GPUs where the request may land; None when nodes cannot be read (RBAC)."""
        if (
            self.nodes is None
            or self.nodes.forbidden
            or (self.gpu_pods and self.gpu_pods.forbidden)
        ):
            return None
        return capacity.placement((node for _, node in self.nodes.items()), self.gpu_used, request)
