"""The operator's view of the cluster: one watch-fed cache per kind, shared by every object.

Children (Deployments, ReplicaSets, Pods, Services, PodDisruptionBudgets, PersistentVolumeClaims,
Jobs) are watched by the operator's `managed-by` label, in the watched namespaces, and indexed by
the owner label each carries (`nimop.dev/nimservice: NAME`, `nimop.dev/nimcache: NAME`), so a
change to a child wakes exactly the object it belongs to. NimCaches are watched too, as compact
views their consumers read (`nimcaches`, `on_nimcache_change`). Nodes and the GPU requests of
bound pods are watched cluster-wide for placement decisions, when RBAC allows; without it the
operator does without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nimop import names
from nimop.core import autoscale, capacity, children, pods
from nimop.runtime import apply
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
        self.on_delete: Callable[[Key], None] | None = None
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
        if new is None and self.on_delete is not None:
            self.on_delete(key)

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
        self.claims: OwnedCache[children.ClaimFacts] = owned(
            "persistentvolumeclaims", "/api/v1", children.claim
        )
        self.jobs: OwnedCache[children.JobFacts] = owned("jobs", "/apis/batch/v1", children.job)
        self._children: dict[tuple[str, str], OwnedCache[Any]] = {
            ("apps/v1", "Deployment"): self.deployments,
            ("v1", "Service"): self.services,
            ("policy/v1", "PodDisruptionBudget"): self.disruption_budgets,
            ("v1", "PersistentVolumeClaim"): self.claims,
            ("batch/v1", "Job"): self.jobs,
        }
        # NimCaches themselves, as their consumers read them (the NimService pipeline).
        self._nimcache_listeners: list[Waker] = []
        self.nimcaches: Informer[children.NimCacheFacts] = Informer(
            api,
            Source(names.NIMCACHE_PLURAL, f"/apis/{names.API_VERSION}", names.NIMCACHE_PLURAL),
            children.nimcache,
            self.namespaces,
            self._nimcache_changed,
            self.connectivity,
        )
        self.gpu_used: dict[str, int] = defaultdict(int)
        self.nodes: Informer[capacity.NodeFacts] | None = None
        self.gpu_pods: Informer[tuple[str, int]] | None = None
        self.node_pools: Informer[autoscale.NodePoolFacts] | None = None
        self.node_claims: Informer[autoscale.NodeClaimFacts] | None = None
        self.pod_events: list[Informer[tuple[str, autoscale.PodEvent] | None]] = []
        self._events_by_pod: dict[tuple[str, str], dict[str, autoscale.PodEvent]] = {}
        self.cluster_autoscaler_seen = False
        """A cluster autoscaler's Event has been seen: one runs in this cluster."""
        self.pods.on_delete = self._pod_gone
        if capacity_watch:
            karpenter = "/apis/karpenter.sh/v1"
            self.node_pools = Informer(
                api,
                Source("nodepools", karpenter, "nodepools"),
                autoscale.node_pool,
                connectivity=self.connectivity,
            )
            self.node_claims = Informer(
                api,
                Source("nodeclaims", karpenter, "nodeclaims"),
                autoscale.node_claim,
                connectivity=self.connectivity,
            )
            # One watch per reason: the API server filters, so the operator never sees the
            # flood of ordinary pod Events.
            self.pod_events = [
                Informer(
                    api,
                    Source(
                        f"events-{reason}",
                        "/api/v1",
                        "events",
                        field_selector=f"involvedObject.kind=Pod,reason={reason}",
                    ),
                    autoscale.pod_event,
                    self.namespaces,
                    self._event_changed,
                    self.connectivity,
                )
                for reason in autoscale.AUTOSCALER_REASONS
            ]
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

    def lookup(self, namespace: str) -> apply.Lookup:
        """The applier's view of live children in `namespace`, from the watch caches: a kind
        no cache holds is UNCACHED (the applier then writes without comparing)."""

        def find(k: apply.ChildKey) -> apply.Live:
            cache = self._children.get((k[0], k[1]))
            if cache is None:
                return apply.UNCACHED
            found: children.ChildFacts | None = cache.get(namespace, k[2])
            return found

        return find

    # -- wiring --------------------------------------------------------------------------------

    def on_owner_change(self, label: str, waker: Waker) -> None:
        """Call `waker(namespace, label value)` whenever a child with this owner label changes."""
        self._wakers[label] = waker

    def on_nimcache_change(self, listener: Waker) -> None:
        """Call `listener(namespace, name)` whenever a NimCache appears, changes or goes away, so
        the objects that depend on it can be woken."""
        self._nimcache_listeners.append(listener)

    def _nimcache_changed(
        self, key: Key, _: children.NimCacheFacts | None, __: children.NimCacheFacts | None
    ) -> None:
        for listener in self._nimcache_listeners:
            listener(*key)

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

    def _pod_gone(self, key: Key) -> None:
        self._events_by_pod.pop(key, None)

    def _event_changed(
        self,
        key: Key,
        old: tuple[str, autoscale.PodEvent] | None,
        new: tuple[str, autoscale.PodEvent] | None,
    ) -> None:
        if new is None:
            return  # Events expire after an hour; the latest one seen is still the latest word
        pod, event = new
        if autoscale.CLUSTER_AUTOSCALER in event.component:
            self.cluster_autoscaler_seen = True
        latest = self._events_by_pod.setdefault((key[0], pod), {})
        latest[event.reason] = event
        facts = self.pods.informer.get(key[0], pod)
        if facts is not None and facts.owner is not None:
            self._wake(key[0], facts.owner)

    def autoscalers(
        self, namespace: str, pods_: Iterable[str], mode: str = "auto"
    ) -> autoscale.Autoscalers:
        """What the node autoscalers say, for some pods of one namespace. `mode` is the
        node_autoscaler setting: it can declare the cluster autoscaler, or rule both out."""
        if mode == "none":
            return autoscale.Autoscalers()
        pools = tuple(p for _, p in self.node_pools.items()) if self.node_pools else ()
        claims = tuple(c for _, c in self.node_claims.items()) if self.node_claims else ()
        events = {
            pod: tuple(self._events_by_pod[(namespace, pod)].values())
            for pod in pods_
            if (namespace, pod) in self._events_by_pod
        }
        if mode == "cluster-autoscaler":
            pools, claims = (), ()
        declared = mode == "cluster-autoscaler" or (mode == "auto" and self.cluster_autoscaler_seen)
        return autoscale.Autoscalers(pools, claims, events, declared)

    @property
    def informers(self) -> list[Informer[Any]]:
        owned: list[OwnedCache[Any]] = [
            self.deployments,
            self.replica_sets,
            self.pods,
            self.services,
            self.disruption_budgets,
            self.claims,
            self.jobs,
        ]
        extra = [
            i
            for i in (self.nodes, self.gpu_pods, self.node_pools, self.node_claims)
            if i is not None
        ]
        return [c.informer for c in owned] + [self.nimcaches] + extra + list(self.pod_events)

    async def start(self) -> None:
        """Start every watch and return once each has listed what exists."""
        self._tasks = [
            asyncio.create_task(i.run(), name=f"watch {i.source.name}") for i in self.informers
        ]
        heartbeat = self.connectivity.watch_server(self.api)
        self._tasks.append(asyncio.create_task(heartbeat, name="api-server heartbeat"))
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
