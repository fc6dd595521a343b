"""A pod's volumes, set up as the kubelet sets them up, as real directories on this machine.

The simulated containers run inside the runner, on the host, so a volume is a directory here
and a container sees it through a path map (container path -> host path) that the simulator
applies to every file it touches. What the kubelet would mount is what lands in the directory:

- persistentVolumeClaim: the bound PV's hostPath directory (the lab's provisioner makes them), so
  whatever a Job writes into a claim is what a later pod on the same claim reads; a claim that is
  not bound yet keeps the pod's containers waiting;
- emptyDir: a directory per pod, kept across container restarts, removed with the pod;
- configMap, secret, downwardAPI and projected (the ServiceAccount token volume every pod gets):
  one file per key, with `items` and `defaultMode`/`mode` honoured, written once when the pod
  starts; a missing object or key that is not optional keeps the containers waiting;
- hostPath: a directory of the pod's node, under `nodes/<node>/` in the lab's volume directory,
  never the machine's own path.

Layout under the lab's volume directory (the kubelet's own under /var/lib/kubelet/pods/<uid>):
`<claim uid>/` (provisioned PVs), `pods/<pod uid>/volumes/<plugin>/<name>/`,
`pods/<pod uid>/containers/<name>/<restart>/` (rootfs and termination-log of one instance),
`nodes/<node>/...` (hostPath).

Error wording follows the kubelet (pkg/volume/configmap, pkg/volume/secret, the volume manager's
desired-state populator) and the attach/detach controller's Multi-Attach error
(pkg/controller/volume/attachdetach/reconciler/reconciler.go), since people search for them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import posixpath
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nimlab.containerenv import ConfigError, expand, field_value
from nimlab.kubeapi import ApiError, KubeAPI, Obj

log = logging.getLogger("nimlab.kubelet")

DEFAULT_MODE = 0o644
SUBPATH_MODE = 0o750


class MountError(Exception):
    """A volume cannot be set up yet; the pod's containers wait, as on a real node."""

    def __init__(
        self,
        volume: str,
        message: str,
        reason: str = "FailedMount",
        component: str = "kubelet",
    ) -> None:
        super().__init__(message)
        self.volume = volume
        self.message = message
        self.reason = reason
        self.component = component


@dataclass(frozen=True)
class Volume:
    """One pod volume, set up: where it is on the host and whether it may be written."""

    name: str
    host_path: Path
    read_only: bool = False
    persistent_volume: str = ""


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: Path
    read_only: bool
    volume: str


# -- pure rules ---------------------------------------------------------------------------------


def key_payload(
    data: Mapping[str, bytes],
    items: Iterable[Mapping[str, Any]] | None,
    default_mode: int | None,
    optional: bool,
    missing_key: str,
) -> dict[str, tuple[bytes, int]]:
    """Relative file path -> (content, mode) for a configMap or secret volume (or projection).

    `missing_key` is the kubelet's wording with a `{key}` slot, e.g.
    "configmap references non-existent config key: {key}".
    """
    mode = DEFAULT_MODE if default_mode is None else default_mode
    files: dict[str, tuple[bytes, int]] = {}
    wanted = list(items or [])
    if not wanted:
        return {key: (value, mode) for key, value in data.items()}
    for item in wanted:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise ValueError(missing_key.format(key=key))
        item_mode = item.get("mode")
        files[item.get("path") or key] = (data[key], mode if item_mode is None else item_mode)
    return files


def object_bytes(obj: Obj, kind: str) -> dict[str, bytes]:
    """A ConfigMap's data and binaryData, or a Secret's data, as the bytes a file would hold."""
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    result = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    result |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return result


def clean_subpath(sub: str, mount: Mapping[str, Any], container: str) -> str:
    """The kubelet refuses absolute sub-paths and any `..` step (ValidatePathNoBacksteps)."""
    if posixpath.isabs(sub) or ".." in sub.split("/"):
        raise ConfigError(
            f'failed to prepare subPath for volumeMount "{mount["name"]}" of container '
            f'"{container}": subPath "{sub}" must be a relative path without ".."'
        )
    return sub


def mount_table(
    container: Mapping[str, Any], volumes: Mapping[str, Volume], env: Mapping[str, str]
) -> list[Mount]:
    """The container's volumeMounts resolved to host paths (subPath and subPathExpr included)."""
    mounts = []
    for item in container.get("volumeMounts") or []:
        volume = volumes.get(item["name"])
        if volume is None:
            raise ConfigError(f'volume "{item["name"]}" is not defined in the pod')
        sub = item.get("subPath") or ""
        if item.get("subPathExpr"):
            sub = expand(item["subPathExpr"], dict(env))
        sub = clean_subpath(sub, item, str(container.get("name", ""))) if sub else ""
        host = volume.host_path / sub if sub else volume.host_path
        mounts.append(
            Mount(
                container_path=posixpath.normpath(item["mountPath"]),
                host_path=host,
                read_only=bool(item.get("readOnly")) or volume.read_only,
                volume=volume.name,
            )
        )
    return mounts


def path_map(rootfs: Path, mounts: Iterable[Mount], files: Mapping[str, Path]) -> dict[str, str]:
    """NIMSIM_PATH_MAP: everything the container sees, its root filesystem included.

    "/" maps to the instance's own rootfs directory, so a path that no volume covers (a NIM
    cache without a volume) lands in the container's writable layer, never on the host's own
    filesystem; volume mounts and single files (the termination log) take precedence by the
    simulator's longest-prefix rule.
    """
    table = {"/": str(rootfs)}
    table |= {m.container_path: str(m.host_path) for m in mounts}
    table |= {posixpath.normpath(p): str(host) for p, host in files.items()}
    return table


def read_only_paths(mounts: Iterable[Mount]) -> Callable[[str], bool]:
    """Whether a container path falls in a read-only mount (the deepest mount decides)."""
    table = sorted(((m.container_path, m.read_only) for m in mounts), key=lambda e: -len(e[0]))

    def check(path: str) -> bool:
        path = posixpath.normpath(path)
        for prefix, read_only in table:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return read_only
        return False

    return check


def exclusive_claim(pv: Obj) -> bool:
    """A volume only one node may attach: ReadWriteOnce without a shared mode."""
    modes = set(pv["spec"].get("accessModes") or [])
    return "ReadWriteOnce" in modes and not modes & {"ReadWriteMany", "ReadOnlyMany"}


def multi_attach_message(pv_name: str, namespace: str, holders: Iterable[tuple[str, str]]) -> str:
    local = [name for ns, name in holders if ns == namespace]
    others = sum(1 for ns, _ in holders if ns != namespace)
    if local:
        detail = f"Volume is already used by pod(s) {', '.join(local)}"
        if others:
            detail += f" and {others} pod(s) in different namespaces"
    else:
        detail = f"Volume is already used by {others} pod(s) in different namespaces"
    return f'Multi-Attach error for volume "{pv_name}" {detail}'


# -- node state -----------------------------------------------------------------------------------


@dataclass
class Attachments:
    """Which node each exclusive (ReadWriteOnce) volume is attached to, through which pods.

    The lab's provisioned volumes stand for cloud block volumes (EBS, OCI Block Volume, PD),
    which attach to one node at a time: a second node's pod waits with the attach/detach
    controller's Multi-Attach error until every pod using the volume elsewhere is gone. Pods on
    the same node share it, as they do on a real cluster.
    """

    holders: dict[str, dict[str, tuple[str, str, str]]] = field(default_factory=dict)

    def attach(self, pv: str, pod_uid: str, namespace: str, name: str, node: str) -> str | None:
        """None once attached for this pod, else the Multi-Attach message."""
        users = self.holders.setdefault(pv, {})
        elsewhere = [(ns, n) for uid, (ns, n, where) in users.items() if where != node]
        if elsewhere and pod_uid not in users:
            return multi_attach_message(pv, namespace, elsewhere)
        users[pod_uid] = (namespace, name, node)
        return None

    def detach(self, pod_uid: str) -> None:
        for pv in list(self.holders):
            self.holders[pv].pop(pod_uid, None)
            if not self.holders[pv]:
                del self.holders[pv]


# -- setting a pod's volumes up -------------------------------------------------------------------


def write_files(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Replace the directory's content with these files (a fresh projection, no leftovers)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    for relative, (content, mode) in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode & 0o777)


class PodVolumes:
    """Sets up, and at the end removes, the volumes of one pod."""

    def __init__(self, api: KubeAPI, pod: Obj, root: Path, attachments: Attachments) -> None:
        self.api = api
        self.pod = pod
        self.root = root
        self.attachments = attachments
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.pod_dir: Path = root / "pods" / self.uid
        self.node: str = pod["spec"].get("nodeName") or ""
        self.volumes: dict[str, Volume] = {}

    def instance_dir(self, container: str, restart: int) -> Path:
        return self.pod_dir / "containers" / container / str(restart)

    async def mount(self) -> dict[str, Volume]:
        """Set up every volume not set up yet; raise the first MountError, if any."""
        for spec in self.pod["spec"].get("volumes") or []:
            if spec["name"] not in self.volumes:
                self.volumes[spec["name"]] = await self._set_up(spec)
        return self.volumes

    def release(self) -> None:
        """The pod no longer uses its volumes (it finished or went away): detach them."""
        self.attachments.detach(self.uid)

    async def remove(self) -> None:
        """The pod is gone: its emptyDirs, projections and container layers go with it."""
        self.release()
        await asyncio.to_thread(shutil.rmtree, self.pod_dir, ignore_errors=True)

    def _plugin_dir(self, plugin: str, name: str) -> Path:
        return self.pod_dir / "volumes" / f"kubernetes.io~{plugin}" / name

    async def _set_up(self, spec: Obj) -> Volume:
        name = spec["name"]
        try:
            if "emptyDir" in spec:
                directory = self._plugin_dir("empty-dir", name)
                await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
                return Volume(name, directory)
            if "persistentVolumeClaim" in spec:
                source = spec["persistentVolumeClaim"]
                return await self._claim(name, source["claimName"], bool(source.get("readOnly")))
            if "ephemeral" in spec:
                # The ephemeral volume controller names the claim <pod>-<volume>.
                claim = f"{self.pod['metadata']['name']}-{name}"
                return await self._claim(name, claim, False)
            if "hostPath" in spec:
                return await self._host_path(name, spec["hostPath"])
            if "configMap" in spec or "secret" in spec or "downwardAPI" in spec:
                files = await self._projection_files(name, [spec], spec)
                plugin = next(k for k in ("configMap", "secret", "downwardAPI") if k in spec)
                directory = self._plugin_dir(_PLUGINS[plugin], name)
            elif "projected" in spec:
                sources = spec["projected"].get("sources") or []
                files = await self._projection_files(name, sources, spec["projected"])
                directory = self._plugin_dir("projected", name)
            else:
                kind = next((k for k in spec if k != "name"), "unknown")
                raise MountError(
                    name,
                    f'MountVolume.SetUp failed for volume "{name}" : the nimlab pod runner '
                    f"cannot mount {kind} volumes (supported: persistentVolumeClaim, ephemeral, "
                    "emptyDir, configMap, secret, downwardAPI, projected, hostPath)",
                )
            await asyncio.to_thread(write_files, directory, files)
            return Volume(name, directory, read_only=True)
        except ValueError as err:
            raise MountError(name, f'MountVolume.SetUp failed for volume "{name}" : {err}') from err
        except (ApiError, httpx.HTTPError, OSError) as err:
            raise MountError(name, f'MountVolume.SetUp failed for volume "{name}" : {err}') from err

    async def _claim(self, name: str, claim_name: str, read_only: bool) -> Volume:
        path = f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim_name}"
        claim = await self.api.get(path)
        if claim is None:
            raise MountError(
                name,
                f"Unable to attach or mount volumes: unmounted volumes=[{name}]: error processing "
                f"PVC {self.namespace}/{claim_name}: "
                f'persistentvolumeclaim "{claim_name}" not found',
            )
        phase = (claim.get("status") or {}).get("phase", "")
        pv_name = claim["spec"].get("volumeName") or ""
        if phase != "Bound" or not pv_name:
            raise MountError(
                name,
                f"Unable to attach or mount volumes: unmounted volumes=[{name}]: error processing "
                f"PVC {self.namespace}/{claim_name}: PVC is not bound",
            )
        pv = await self.api.get(f"/api/v1/persistentvolumes/{pv_name}")
        if pv is None:
            raise MountError(
                name,
                f"Unable to attach or mount volumes: unmounted volumes=[{name}]: error processing "
                f'PVC {self.namespace}/{claim_name}: persistentvolume "{pv_name}" not found',
            )
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise MountError(
                name,
                f'MountVolume.SetUp failed for volume "{pv_name}" : the nimlab pod runner can '
                "only mount hostPath and local persistent volumes",
            )
        if exclusive_claim(pv):
            blocked = self.attachments.attach(
                pv_name, self.uid, self.namespace, self.pod["metadata"]["name"], self.node
            )
            if blocked is not None:
                raise MountError(
                    name, blocked, reason="FailedAttachVolume", component="attachdetach-controller"
                )
        directory = self._on_node(source["path"])
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        return Volume(name, directory, read_only=read_only, persistent_volume=pv_name)

    def _on_node(self, path: str) -> Path:
        """A node-local path: the provisioner's own directories as they are, any other path
        under the node's directory here, so a pod can never touch the machine's own files."""
        host = Path(path)
        if host.is_relative_to(self.root):
            return host
        return self.root / "nodes" / (self.node or "unknown") / path.lstrip("/")

    async def _host_path(self, name: str, source: Obj) -> Volume:
        target = self._on_node(source["path"])
        kind = source.get("type") or ""
        exists = await asyncio.to_thread(target.exists)
        if kind in ("Directory", "File", "Socket", "CharDevice", "BlockDevice") and not exists:
            raise MountError(
                name,
                f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: '
                f"{source['path']} is not a {kind.lower()}",
            )
        if kind == "FileOrCreate":
            await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(target.touch, exist_ok=True)
        elif not exists:
            await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        return Volume(name, target)

    async def _projection_files(
        self, name: str, sources: list[Obj], spec: Obj
    ) -> dict[str, tuple[bytes, int]]:
        default_mode = spec.get("defaultMode")
        files: dict[str, tuple[bytes, int]] = {}
        for source in sources:
            if "configMap" in source:
                ref = source["configMap"]
                files |= await self._object_files(
                    "ConfigMap", ref.get("name", ""), ref, default_mode
                )
            elif "secret" in source:
                ref = source["secret"]
                secret = ref.get("secretName") or ref.get("name", "")
                files |= await self._object_files("Secret", secret, ref, default_mode)
            elif "downwardAPI" in source:
                files |= self._downward_files(source["downwardAPI"], default_mode)
            elif "serviceAccountToken" in source:
                token = await self._token(source["serviceAccountToken"])
                mode = DEFAULT_MODE if default_mode is None else default_mode
                files[source["serviceAccountToken"]["path"]] = (token.encode(), mode)
        return files

    async def _object_files(
        self, kind: str, obj_name: str, ref: Obj, default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        plural = "secrets" if kind == "Secret" else "configmaps"
        optional = bool(ref.get("optional"))
        obj = await self.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{obj_name}")
        if obj is None:
            if optional:
                return {}
            raise ValueError(f'{kind.lower()} "{obj_name}" not found')
        wording = (
            "secret references non-existent secret key: {key}"
            if kind == "Secret"
            else "configmap references non-existent config key: {key}"
        )
        mode = ref.get("defaultMode", default_mode)
        return key_payload(object_bytes(obj, kind), ref.get("items"), mode, optional, wording)

    def _downward_files(
        self, source: Obj, default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        mode_default = source.get("defaultMode", default_mode)
        mode = DEFAULT_MODE if mode_default is None else mode_default
        files = {}
        for item in source.get("items") or []:
            value = ""
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            item_mode = item.get("mode")
            files[item["path"]] = (value.encode(), mode if item_mode is None else item_mode)
        return files

    async def _token(self, source: Obj) -> str:
        """A real, pod-bound ServiceAccount token from the TokenRequest API, as the kubelet gets."""
        account = self.pod["spec"].get("serviceAccountName") or "default"
        request: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds") or 3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod["metadata"]["name"],
                    "uid": self.uid,
                },
            },
        }
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token"
        try:
            response = await self.api.create(path, request)
        except ApiError as err:
            raise ValueError(f"failed to fetch token: {err}") from err
        return str(response["status"]["token"])


_PLUGINS = {"configMap": "configmap", "secret": "secret", "downwardAPI": "downward-api"}
