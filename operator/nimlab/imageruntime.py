"""A pod's container run for real from a lab-built image, as a kubelet and containerd run it.

The pod runner plays the container runtime for most containers itself (an in-process NIM
simulator, which is what lets the lab hold a thousand NIM pods). Two kinds of container run for
real instead, under runc through nimlab.oci (entrypoint.plan decides): a container whose image
the lab builds (`nimop:<version>`, `nimsim:<version>`, nimlab.labimages), and a container of a
NIM image (`nvcr.io/nim/...`) that runs a command of its own, a shell script say, which runs in
the simulator image (a real /bin/sh and coreutils; NIM's utilities on PATH).

This module is the kubelet's half of that: from the pod and its container spec to an
`oci.RunSpec`, and the container's life from start to exit code. What the kubelet adds to
every container is added here too:

- Security. The user: the container's `runAsUser`/`runAsGroup`, else the pod's, else the
  image's USER; extra groups: the pod's `fsGroup`, then its `supplementalGroups`
  (pkg/kubelet/kuberuntime/security_context.go, `determineEffectiveSecurityContext`).
  `runAsNonRoot` refuses a container that would run as uid 0 or whose image names its user by
  name, with the kubelet's words (security_context_others.go, `verifyRunAsNonRoot`). No
  capabilities unless `capabilities.add` (or `privileged`) asks, no new privileges, a read-only
  root filesystem for `readOnlyRootFilesystem`.
- Volumes: the runner's volume directories (nimlab.volumes) become bind mounts, with the
  kubelet's permissions: an emptyDir is mode 0777 (pkg/volume/emptydir/empty_dir.go, `perm`);
  with `fsGroup`, every file of an emptyDir, claim or projection gets that group, g+rw (g+r when
  read-only), and directories g+x and setgid (pkg/volume/volume_linux.go, `SetVolumeOwnership`,
  honouring `fsGroupChangePolicy: OnRootMismatch`); a missing subPath directory is made with
  its volume's mode (pkg/kubelet/kubelet_pods.go, `makeMounts`). hostPath volumes are left as
  they are, as the hostPath plugin leaves them.
- The ServiceAccount: the API server's admission adds the `kube-api-access-*` projected volume
  at /var/run/secrets/kubernetes.io/serviceaccount (a real token from the TokenRequest API, the
  namespace, and ca.crt from the kube-root-ca.crt ConfigMap, which the controller-manager fills
  with the lab API server's CA); here it is one more bind mount. `KUBERNETES_SERVICE_HOST` and
  `KUBERNETES_SERVICE_PORT` point at the lab's API server (127.0.0.1 and its port), so
  in-cluster configuration (client-go's `rest.InClusterConfig`, the Python client's
  `load_incluster_config`, kopf's service-account login) works unchanged. The kubelet sets
  them whatever `enableServiceLinks` says.
- /etc/hosts as the kubelet writes it (localhost, the pod's IP and hostname, `hostAliases`),
  the hostname (`spec.hostname` or the pod's name, at most 63 characters), and the termination
  message file: a host file of the instance, mode 0666 (kuberuntime_container.go, `makeMounts`),
  bound at `terminationMessagePath`; the runner reads it after the exit.
- The network: the host's. The lab's pod IPs are loopback addresses of this machine, so each
  process must bind its own pod IP rather than 0.0.0.0 (the Helm chart's `metrics.bindPodIP`,
  the kustomize component `bind-pod-ip`); probes dial podIP:port as for any other container.

Stopping: a cancelled run (the pod was deleted, a probe failed, the control API killed it)
sends SIGTERM and waits `deletionGracePeriodSeconds` (else `terminationGracePeriodSeconds`,
else 30 s; the application's time, not scaled by the lab's time scale) before SIGKILL.

The image is "pulled" (`pull`: unpacked once per digest) before the container is created, so
the unpacking is no probe's time; an image that is not built is an ErrImagePull whose message
ends with run `make image`. A container that cannot start (runc refuses the spec,
runAsNonRoot) exits at once with code 128, the runtime's StartError code, and a message that
says why, in its log and its termination message; never a traceback.

`exec_in(pod_uid, container, argv)` runs a command in a running container, as `kubectl exec`
would (the runner's control API serves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from nimlab import apiservice, labimages, oci
from nimlab.containerenv import expand
from nimlab.devices import device_env
from nimlab.entrypoint import Plan, plan
from nimlab.kubeapi import Obj
from nimlab.termination import DEFAULT_PATH
from nimlab.volumes import Mount, Volume
from nimsim import utilities

log = logging.getLogger("nimlab.kubelet")

Output = Callable[[str], None]

START_ERROR_EXIT_CODE = 128
DEFAULT_GRACE_SECONDS = 30.0
EXEC_TIMEOUT_SECONDS = 60.0
EMPTY_DIR_MODE = 0o777
TERMINATION_LOG_MODE = 0o666
RW_MASK = 0o660
RO_MASK = 0o440
EXEC_MASK = 0o110
MAX_HOSTNAME = 63
ON_ROOT_MISMATCH = "OnRootMismatch"
# Volume kinds whose plugin manages ownership (fsGroup); hostPath does not.
OWNED_KINDS = frozenset(
    {
        "emptyDir",
        "configMap",
        "secret",
        "downwardAPI",
        "projected",
        "persistentVolumeClaim",
        "ephemeral",
    }
)


class StartError(Exception):
    """The container cannot start; the message says why (and what to do)."""


class ApiSide(Protocol):
    @property
    def server(self) -> str: ...


class PodSide(Protocol):
    """What a container needs from its pod (the runner's pod context)."""

    node_labels: Mapping[str, str]

    @property
    def api(self) -> ApiSide: ...

    @property
    def pod(self) -> Obj: ...

    @property
    def volumes(self) -> Mapping[str, Volume]: ...


class InstanceSide(Protocol):
    """One start of the container, as the runner prepared it."""

    @property
    def plan(self) -> Plan: ...

    @property
    def directory(self) -> Path: ...

    @property
    def mounts(self) -> Sequence[Mount]: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def termination_log(self) -> Path: ...


# -- the pure part: from a pod and a container spec to what runc runs -----------------------------


@dataclass(frozen=True)
class Security:
    """A container's effective security settings: the container's own over the pod's."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    groups: tuple[int, ...] = ()
    fs_group: int | None = None
    fs_group_policy: str = ""
    read_only_root: bool = False
    add_capabilities: tuple[str, ...] = ()


def _id(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StartError(f"{what} must be an integer, got {value!r}")
    return value


def security(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> Security:
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return sc[key] if sc.get(key) is not None else pod_sc.get(key)

    fs_group = _id(pod_sc.get("fsGroup"), "securityContext.fsGroup")
    supplemental = [
        _id(g, "securityContext.supplementalGroups[]")
        for g in pod_sc.get("supplementalGroups") or []
    ]
    groups = [g for g in (fs_group, *supplemental) if g is not None]
    capabilities = sc.get("capabilities") or {}
    add = [str(c) for c in capabilities.get("add") or []]
    if sc.get("privileged"):
        add = ["ALL"]
    return Security(
        run_as_user=_id(pick("runAsUser"), "securityContext.runAsUser"),
        run_as_group=_id(pick("runAsGroup"), "securityContext.runAsGroup"),
        run_as_non_root=bool(pick("runAsNonRoot")),
        groups=tuple(dict.fromkeys(groups)),
        fs_group=fs_group,
        fs_group_policy=str(pod_sc.get("fsGroupChangePolicy") or ""),
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        add_capabilities=tuple(add),
    )


def non_root_violation(sec: Security, image_user: str, pod: str, container: str) -> str | None:
    """The kubelet's refusal when runAsNonRoot cannot hold, else None."""
    if not sec.run_as_non_root:
        return None
    where = f'(pod: "{pod}", container: {container})'
    if sec.run_as_user is not None:
        if sec.run_as_user == 0:
            return f"container's runAsUser breaks non-root policy {where}"
        return None
    user = image_user.split(":", 1)[0]
    if user and not user.isdigit():
        return (
            f"container has runAsNonRoot and image has non-numeric user ({user}), "
            f"cannot verify user is non-root {where}"
        )
    if not user or int(user) == 0:
        return f"container has runAsNonRoot and image will run as root {where}"
    return None


def service_env(server: str) -> dict[str, str]:
    """The `kubernetes` Service's variables, pointing at the lab's API server itself."""
    parts = urlsplit(server)
    host = parts.hostname or "127.0.0.1"
    port = str(parts.port or 443)
    address = f"[{host}]" if ":" in host else host
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{address}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{address}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def hostname(pod: Obj) -> str:
    """`spec.hostname`, else the pod's name, cut to 63 characters as the kubelet does."""
    name = str(pod["spec"].get("hostname") or pod["metadata"]["name"])
    return name[:MAX_HOSTNAME].rstrip("-.") or "pod"


def hosts_file(pod: Obj, host: str, api_service: bool = False) -> str:
    """/etc/hosts as the kubelet writes it for a pod (pkg/kubelet/kubelet_pods.go), and, with
    api_service, the `kubernetes` Service's names at the pod's IP, where nimlab.apiservice
    forwards port 443 to the API server (the lab has no cluster DNS)."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    ip = (pod.get("status") or {}).get("podIP")
    if ip:
        lines.append(f"{ip}\t{host}")
    if ip and api_service:
        lines.append("")
        lines.append("# The lab's stand-in for cluster DNS: the API server's Service.")
        lines.append(f"{ip}\t{' '.join(apiservice.NAMES)}")
    aliases = pod["spec"].get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in aliases:
            names = "\t".join(str(h) for h in alias.get("hostnames") or [])
            lines.append(f"{alias.get('ip', '')}\t{names}")
    return "\n".join(lines) + "\n"


def command_and_args(
    plan: Plan, container: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """What replaces the image's ENTRYPOINT and CMD: for a lab image the container's own
    command and args ($(VAR)-expanded); under the simulator image the NIM container's whole
    command line, since a NIM image's entrypoint runs its arguments."""
    if not plan.image:
        return plan.argv, None
    values = dict(env)
    command = tuple(expand(str(p), values) for p in container.get("command") or [])
    args = tuple(expand(str(p), values) for p in container.get("args") or [])
    return command or None, args or None


def container_env(
    plan: Plan,
    container: Mapping[str, Any],
    pod: Obj,
    env: Mapping[str, str],
    node_labels: Mapping[str, str],
    server: str,
) -> dict[str, str]:
    """The kubelet's variables, then the container's own (which win). Under the simulator
    image, the simulator's utilities also learn which NIM image and GPUs they stand for."""
    result = {**service_env(server), **env}
    if not plan.image:
        uid = str(pod["metadata"].get("uid", ""))
        result.setdefault("NIMSIM_IMAGE", str(container.get("image", "")))
        for key, value in device_env(container, node_labels, uid).items():
            result.setdefault(key, value)
    return result


def bind_mounts(
    mounts: Sequence[Mount], termination_log: Path, message_path: str, hosts: Path | None
) -> tuple[tuple[oci.Mount, ...], Path | None]:
    """The container's volume mounts, /etc/hosts and the termination-message file as runc
    mounts; the second value is what oci binds at /dev/termination-log itself."""
    result = [oci.Mount(m.host_path, m.container_path, m.read_only) for m in mounts]
    taken = {m.container_path for m in mounts}
    if hosts is not None and "/etc/hosts" not in taken:
        result.append(oci.Mount(hosts, "/etc/hosts"))
    path = posixpath.normpath(message_path)
    if path == DEFAULT_PATH:
        return tuple(result), termination_log
    if path not in taken:
        result.append(oci.Mount(termination_log, path))
    return tuple(result), None


# -- volume permissions, as the kubelet leaves them ------------------------------------------------


def volume_kinds(pod_spec: Mapping[str, Any]) -> dict[str, str]:
    kinds = {}
    for volume in pod_spec.get("volumes") or []:
        kinds[volume["name"]] = next((k for k in volume if k != "name"), "")
    return kinds


def needs_ownership_change(root: Path, fs_group: int, read_only: bool) -> bool:
    """`OnRootMismatch`: only when the root's group or permission bits are not what they
    would be after a change (pkg/volume/volume_linux.go, `requiresPermissionChange`)."""
    try:
        info = root.stat()
    except OSError:
        return True
    if info.st_gid != fs_group or not stat.S_ISDIR(info.st_mode):
        return True
    wanted = (RO_MASK if read_only else RW_MASK) | EXEC_MASK
    return info.st_mode & wanted != wanted or not info.st_mode & stat.S_ISGID


def set_ownership(root: Path, fs_group: int, read_only: bool) -> None:
    """Group fs_group, g+rw (g+r read-only), directories also g+x and setgid; symlinks are left
    alone (pkg/volume/volume_linux.go, `changeFilePermission`)."""
    mask = RO_MASK if read_only else RW_MASK
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            _own(Path(directory) / name, fs_group, mask)
    _own(root, fs_group, mask)


def _own(path: Path, fs_group: int, mask: int) -> None:
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return
        os.chown(path, -1, fs_group)
        extra = mask | EXEC_MASK | stat.S_ISGID if stat.S_ISDIR(info.st_mode) else mask
        path.chmod(stat.S_IMODE(info.st_mode) | extra)
    except OSError as err:
        log.warning("setting the ownership of %s failed: %s", path, err)


def make_sub_path(target: Path, root: Path) -> None:
    """Each missing directory down to target, with the volume root's mode."""
    mode = stat.S_IMODE(root.stat().st_mode)
    missing = []
    current = target
    while not current.exists() and current != root and root in current.parents:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir()
        directory.chmod(mode)


def prepare_volumes(
    pod_spec: Mapping[str, Any],
    volumes: Mapping[str, Volume],
    mounts: Sequence[Mount],
    sec: Security,
) -> None:
    """Blocking: the permissions a kubelet gives the volumes this container mounts."""
    kinds = volume_kinds(pod_spec)
    for name in dict.fromkeys(m.volume for m in mounts):
        volume = volumes.get(name)
        if volume is None:
            continue
        kind = kinds.get(name, "")
        if kind == "emptyDir" and stat.S_IMODE(volume.host_path.stat().st_mode) != EMPTY_DIR_MODE:
            volume.host_path.chmod(EMPTY_DIR_MODE)
        if sec.fs_group is None or kind not in OWNED_KINDS:
            continue
        if sec.fs_group_policy == ON_ROOT_MISMATCH and not needs_ownership_change(
            volume.host_path, sec.fs_group, volume.read_only
        ):
            continue
        set_ownership(volume.host_path, sec.fs_group, volume.read_only)
    for mount in mounts:
        volume = volumes.get(mount.volume)
        if volume is not None and not mount.host_path.exists():
            make_sub_path(mount.host_path, volume.host_path)


def grace_seconds(pod: Obj) -> float:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    for value in (
        meta.get("deletionGracePeriodSeconds"),
        spec.get("terminationGracePeriodSeconds"),
    ):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return max(0.0, float(value))
    return DEFAULT_GRACE_SECONDS


# -- running it ----------------------------------------------------------------------------------

_store: oci.ImageStore | None = None
_runtime: oci.Runtime | None = None
_api_service: apiservice.ApiService | None = None
RUNNING: dict[tuple[str, str], oci.Container] = {}
"""The containers this runner runs, by (pod uid, container name), for exec."""
_cleanups: set[asyncio.Task[None]] = set()


def image_store() -> oci.ImageStore:
    global _store
    if _store is None:
        _store = oci.ImageStore()
    return _store


def api_service(server: str) -> apiservice.ApiService:
    global _api_service
    if _api_service is None:
        _api_service = apiservice.ApiService(server)
    return _api_service


def runtime() -> oci.Runtime:
    global _runtime
    if _runtime is None:
        _runtime = oci.Runtime()
    return _runtime


def chosen_image(plan: Plan) -> tuple[labimages.LabImage, str | None]:
    """The image to run, and what it stands for when it is the simulator standing in."""
    if plan.image:
        image = labimages.lab_image(plan.image)
        if image is None:
            raise StartError(f"{plan.image} is not an image the lab builds")
        return image, None
    return labimages.simulator(), f"`{posixpath.basename(plan.argv[0])}` of a NIM image"


async def pull(container: Mapping[str, Any]) -> str | None:
    """The kubelet's image pull for a container that will run under runc: the image unpacked
    (once per digest, shared by every container of it), or the ErrImagePull message saying why
    not. None, at once, for the containers the runner simulates."""
    chosen = plan(container, {}, utilities.ENTRYPOINTS)
    if chosen.kind != "image":
        return None
    try:
        image, stands_for = chosen_image(chosen)
        archive = image.archive()
        if not await asyncio.to_thread(archive.is_file):
            return labimages.missing_message(image, stands_for)
        await image_store().unpack(archive)
    except (StartError, oci.OCIError, OSError) as err:
        return f"failed to unpack the lab-built image: {err}"
    return None


async def prepare(
    ctx: PodSide,
    container: Mapping[str, Any],
    instance: InstanceSide,
    server: str,
    serves_api: bool = False,
) -> tuple[oci.UnpackedImage, oci.RunSpec]:
    """The unpacked image and runc's settings, or StartError saying why not. With serves_api,
    /etc/hosts maps kubernetes.default.svc to the pod's IP (nimlab.apiservice listens there)."""
    pod = ctx.pod
    plan = instance.plan
    image, stands_for = chosen_image(plan)
    archive = image.archive()
    if not await asyncio.to_thread(archive.is_file):
        raise StartError(labimages.missing_message(image, stands_for))
    unpacked = await image_store().unpack(archive)
    sec = security(pod["spec"], container)
    meta = pod["metadata"]
    refusal = non_root_violation(
        sec,
        unpacked.config.user,
        f"{meta['name']}_{meta['namespace']}({meta.get('uid', '')})",
        str(container.get("name", "")),
    )
    if refusal is not None:
        raise StartError(refusal)
    host = hostname(pod)
    hosts = instance.directory / "hosts"
    await asyncio.to_thread(hosts.write_text, hosts_file(pod, host, serves_api))
    await asyncio.to_thread(instance.termination_log.touch)
    await asyncio.to_thread(instance.termination_log.chmod, TERMINATION_LOG_MODE)
    await asyncio.to_thread(prepare_volumes, pod["spec"], ctx.volumes, instance.mounts, sec)
    mounts, termination_log = bind_mounts(
        instance.mounts,
        instance.termination_log,
        str(container.get("terminationMessagePath") or DEFAULT_PATH),
        hosts,
    )
    env = container_env(plan, container, pod, instance.env, ctx.node_labels, server)
    command, args = command_and_args(plan, container, env)
    run = oci.RunSpec(
        command=command,
        args=args,
        env=env,
        working_dir=str(container.get("workingDir") or "") or None,
        run_as_user=sec.run_as_user,
        run_as_group=sec.run_as_group,
        supplemental_groups=sec.groups,
        read_only_root=sec.read_only_root,
        add_capabilities=sec.add_capabilities,
        mounts=mounts,
        termination_log=termination_log,
        hostname=host,
    )
    return unpacked, run


async def run(
    ctx: PodSide, container: Mapping[str, Any], instance: InstanceSide, output: Output
) -> int:
    """Run one instance of the container to its exit; its exit code (128 when it never
    started). Cancelling stops it as a kubelet does: SIGTERM, the grace period, SIGKILL."""
    pod = ctx.pod
    ip = str((pod.get("status") or {}).get("podIP") or "")
    service = api_service(ctx.api.server)
    served = bool(ip) and await service.acquire(ip)
    try:
        return await _run(ctx, container, instance, output, served)
    finally:
        if served:
            await service.release(ip)


async def _run(
    ctx: PodSide,
    container: Mapping[str, Any],
    instance: InstanceSide,
    output: Output,
    serves_api: bool,
) -> int:
    name = str(container.get("name", ""))
    pod = ctx.pod
    try:
        unpacked, spec = await prepare(ctx, container, instance, ctx.api.server, serves_api)
        started = await runtime().start(
            unpacked,
            spec,
            name=f"{pod['metadata']['name']}-{name}",
            log=lambda _stream, line: output(line),
        )
    except (StartError, oci.OCIError, OSError) as err:
        return await _failed(instance, f"failed to start container {name!r}: {err}", output)
    key = (str(pod["metadata"].get("uid", "")), name)
    RUNNING[key] = started
    try:
        code = await started.wait()
    except asyncio.CancelledError:
        cleanup = asyncio.create_task(_stop(started, grace_seconds(ctx.pod)))
        _cleanups.add(cleanup)
        cleanup.add_done_callback(_cleanups.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(cleanup)
        raise
    finally:
        if RUNNING.get(key) is started:
            del RUNNING[key]
    await started.remove()
    return code


async def _stop(container: oci.Container, grace: float) -> None:
    try:
        await container.stop(grace)
    finally:
        await container.remove()


async def _failed(instance: InstanceSide, message: str, output: Output) -> int:
    """A container that never ran: the runtime's message in its log and termination message."""
    log.info("%s", message)
    output(f"Error: {message}")
    with contextlib.suppress(OSError):
        await asyncio.to_thread(instance.termination_log.write_text, message)
    return START_ERROR_EXIT_CODE


async def exec_in(pod_uid: str, container: str, argv: Sequence[str]) -> oci.ExecResult:
    """Run argv in a running container, as its main process runs; LookupError if none runs.
    Bound it with asyncio.timeout, as `kubectl exec` callers do."""
    target = RUNNING.get((pod_uid, container))
    if target is None:
        raise LookupError(f"container {container} of pod {pod_uid} is not running under runc")
    return await target.exec(argv)


async def exec_request(pod_uid: str, containers: Sequence[str], body: object) -> dict[str, Any]:
    """The control API's exec: body {"command": [...], "container": NAME (needed when the pod
    has several)} -> {"exitCode", "stdout", "stderr"}. ValueError names what is wrong with the
    request; LookupError when that container does not run under runc now."""
    if not isinstance(body, dict):
        raise ValueError('expected a JSON object: {"command": [...], "container": "name"}')
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise ValueError("command must be a non-empty list of strings")
    name = body.get("container") or ""
    if not name:
        if len(containers) != 1:
            raise ValueError(f"a container name must be specified, choose one of: {containers}")
        name = containers[0]
    if name not in containers:
        raise ValueError(f"container {name!r} is not in the pod (it has {list(containers)})")
    async with asyncio.timeout(EXEC_TIMEOUT_SECONDS):
        result = await exec_in(pod_uid, str(name), command)
    return {"exitCode": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
