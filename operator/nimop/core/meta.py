"""The metadata of a watched object, parsed once at the door.

Every resource's pipeline starts from an `ObjectRef` instead of the raw body, so nothing deeper
indexes into dictionaries that might hold anything a tenant wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    deleting: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def owner_reference(self) -> dict[str, Any]:
        """The controlling ownerReference children carry, so garbage collection removes them
        with this object and the operator can tell its children from a namesake's."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def involved_object(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }


def object_ref(body: dict[str, Any]) -> ObjectRef:
    """Raises KeyError or ValueError only for bodies no API server would send."""
    meta = body["metadata"]
    return ObjectRef(
        api_version=str(body.get("apiVersion", "")),
        kind=str(body.get("kind", "")),
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 1) or 1),
        resource_version=str(meta.get("resourceVersion", "")),
        deleting=bool(meta.get("deletionTimestamp")),
    )
