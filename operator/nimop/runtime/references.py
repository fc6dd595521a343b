"""Whether the objects a spec references (ConfigMaps, PersistentVolumeClaims it does not own)
exist, checked with metadata-only reads, and only when it can have changed.

A reference is checked when its owner's generation changes, and re-checked on every pass while
it is missing (a pass every fast interval), so a Stalled/ConfigMapNotFound clears within one
interval of the object's creation. Once everything exists nothing is read again until the next
spec change: at rest this costs nothing. Secrets are never read, not even their metadata: the
operator learns of a missing Secret from the pods that wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from nimop.runtime import kube

Key = tuple[str, str]


@dataclass(frozen=True)
class Reference:
    kind: str
    """ConfigMap, PersistentVolumeClaim, ..."""
    path: str
    """Collection path below the namespace, e.g. /api/v1/namespaces/{ns}/configmaps"""
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


CONFIG_MAPS = ("ConfigMap", "/api/v1", "configmaps")
CLAIMS = ("PersistentVolumeClaim", "/api/v1", "persistentvolumeclaims")


def ref(kind: tuple[str, str, str], name: str) -> Reference:
    return Reference(kind[0], f"{kind[1]}/namespaces/{{ns}}/{kind[2]}", name)


class References:
    def __init__(self, api: kube.Kube) -> None:
        self._api = api
        self._checked: dict[Key, tuple[int, tuple[Reference, ...], tuple[str, ...]]] = {}

    def forget(self, namespace: str, owner: str) -> None:
        self._checked.pop((namespace, owner), None)

    async def missing(
        self, namespace: str, owner: str, generation: int, refs: Sequence[Reference]
    ) -> tuple[str, ...]:
        wanted = tuple(dict.fromkeys(refs))
        last = self._checked.get((namespace, owner))
        if last is not None and last[:2] == (generation, wanted) and not last[2]:
            return ()
        found = await asyncio.gather(
            *(
                self._api.get(f"{r.path.format(ns=namespace)}/{r.name}", accept=kube.METADATA_ONLY)
                for r in wanted
            )
        )
        missing = tuple(str(r) for r, obj in zip(wanted, found, strict=True) if obj is None)
        self._checked[(namespace, owner)] = (generation, wanted, missing)
        return missing
