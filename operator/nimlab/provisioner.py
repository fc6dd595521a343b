"""A dynamic volume provisioner stand-in for the lab's default StorageClass.

Model caches live on PVCs in a real NIM deployment; here a Pending claim of class `standard` gets
a hostPath PersistentVolume pre-bound to it (a directory under the lab's workdir), and the real
PV controller in kube-controller-manager does the binding, as it would with a CSI provisioner.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import httpx

from nimlab.kubeapi import ApiError, KubeAPI, Obj

log = logging.getLogger("nimlab.provisioner")

STORAGE_CLASS = "standard"
PROVISIONER = "nimlab.dev/hostpath"


def storage_class() -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }


def volume_for(claim: Obj, root: Path) -> Obj:
    meta, spec = claim["metadata"], claim["spec"]
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{meta['uid']}",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "hostPath": {"path": str(root / meta["uid"]), "type": "DirectoryOrCreate"},
        },
    }


class Provisioner:
    def __init__(self, api: KubeAPI, root: Path) -> None:
        self.api = api
        self.root = root
        self._queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()

    def on_claim(self, kind: str, claim: Obj) -> None:
        if claim["spec"].get("storageClassName") == STORAGE_CLASS:
            self._queue.put_nowait((kind, claim))

    async def run(self) -> None:
        while True:
            kind, claim = await self._queue.get()
            try:
                if kind == "DELETED":
                    await self._delete(claim)
                elif (claim.get("status") or {}).get("phase") == "Pending" and not claim[
                    "spec"
                ].get("volumeName"):
                    await self._provision(claim)
            except (ApiError, httpx.HTTPError, OSError) as err:
                log.warning("claim %s: %s", claim["metadata"]["name"], err)

    async def _provision(self, claim: Obj) -> None:
        volume = volume_for(claim, self.root)
        directory = Path(volume["spec"]["hostPath"]["path"])
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        # World-writable, as rancher/local-path-provisioner makes its volumes (`mkdir -m 0777`
        # in its setup script), so a non-root container can write a claim without an fsGroup.
        await asyncio.to_thread(directory.chmod, 0o777)
        try:
            await self.api.create("/api/v1/persistentvolumes", volume)
        except ApiError as err:
            if err.status == 409:
                return
            raise
        meta = claim["metadata"]
        log.info(
            "claim %s/%s: provisioned %s",
            meta["namespace"],
            meta["name"],
            volume["metadata"]["name"],
        )

    async def _delete(self, claim: Obj) -> None:
        """With reclaimPolicy Delete, removing the volume is the provisioner's job."""
        name = f"pvc-{claim['metadata']['uid']}"
        volume = await self.api.get(f"/api/v1/persistentvolumes/{name}")
        if volume is None:
            return
        await self.api.delete(f"/api/v1/persistentvolumes/{name}")
        await asyncio.to_thread(
            shutil.rmtree, self.root / claim["metadata"]["uid"], ignore_errors=True
        )
        log.info("claim %s deleted: removed %s", claim["metadata"]["name"], name)
