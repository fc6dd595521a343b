"""Run one container from a lab-built image with runc: no daemon, no registry.

The lab's pod runner starts the operator and simulator images the way a kubelet and containerd
would, from the OCI archives `make image` writes (build/images/*.tar) or from buildah's storage.
This module is the runtime half: it knows nothing of pods, only of one container at a time.

Using it (from asyncio; nothing here blocks the event loop)::

    store = ImageStore()                                   # ~/.cache/nimop/rootfs/<digest>
    image = await store.unpack("build/images/nimsim-0.1.0.tar")
    runtime = Runtime()                                    # state under /run/nimop-oci
    spec = RunSpec(env={"NIMSIM_HOST": "127.3.0.5"}, read_only_root=True, tmpfs=(Tmpfs("/tmp"),))
    container = await runtime.start(image, spec, name="llama-0", log=lambda s, line: print(s, line))
    ...
    await container.kill(signal.SIGTERM)
    code = await container.wait()                          # 0, or 128+N after signal N
    await container.remove()                               # also: async with container: ...

The API:

- ``ImageStore(cache_dir=None, keep=4)``; ``await store.unpack(source) -> UnpackedImage``,
  where source is an OCI archive path (``x.tar`` or ``oci-archive:x.tar``) or
  ``containers-storage:NAME``. ``umoci unpack`` runs once per manifest digest; every container of
  that image shares the result. ``store.prune()`` keeps the ``keep`` most recently used.
- ``RunSpec``: what a pod's container asks for (command, args, env, workingDir, runAsUser,
  runAsGroup, supplementalGroups, readOnlyRootFilesystem, capabilities to add, bind mounts
  (``Mount``), ``Tmpfs``, the host file behind /dev/termination-log, hostname). Values arrive
  resolved: the kubelet's ``$(VAR)`` expansion, env sources and volume paths are the caller's job.
- ``runtime_spec(image_config, run, rootfs=..., users=..., pid_namespace=..., cgroups_path=...)
  -> dict``: the pure part, the runc ``config.json`` (OCI runtime spec 1.0.2). Bad input raises
  ``OCIError`` naming what is wrong, before anything is started.
- ``Runtime(state_dir=None)`` (default ``$NIMOP_OCI_STATE_DIR`` or /run/nimop-oci);
  ``await runtime.start(image, run, name=..., log=...) -> Container`` returns once the process
  runs, or raises ``ContainerStartError`` with runc's reason (``exec: "x": executable file not
  found in $PATH``); ``runtime.sweep() -> list[str]`` removes containers whose owner died
  (``start`` runs it once first).
- ``Container``: ``id``, ``pid`` (on the host), ``exit_code``; ``await wait() -> int`` (returns
  once every process of the container is gone); ``await kill(sig=SIGTERM)`` (through a pidfd,
  so never a recycled pid); ``await exec(argv) -> ExecResult`` (as the main process runs: user,
  capabilities, env, cwd; bound it with ``asyncio.timeout``, as for an exec probe);
  ``await stop(grace=30) -> int`` (SIGTERM, then SIGKILL); ``await remove()``; ``async with``.
- ``LogSink``: ``(stream, line) -> None``, called for each line the container writes.

Semantics, as Kubernetes and containerd define them:

- ``command`` replaces the image's ENTRYPOINT and drops its CMD; ``args`` replace CMD; an empty
  list counts as unset (https://kubernetes.io/docs/tasks/inject-data-application/
  define-command-argument-container/; containerd internal/cri ``getProcessArgs``).
- The user: ``runAsUser`` or else the user part of the image's USER (the kubelet takes only the
  uid or name from it). A numeric uid takes its group from the image's /etc/passwd, or 0 if it has
  no entry; a name must be in /etc/passwd. ``runAsGroup`` replaces the group. Extra groups: the
  primary one, the user's memberships in /etc/group, then ``supplementalGroups`` (containerd
  pkg/oci/spec_opts.go ``WithUserID``, ``WithUser``, ``WithAdditionalGIDs``).
- Env: the image's, then the container's (same name wins), then HOSTNAME; runc sets HOME from
  /etc/passwd when it is absent.
- No capabilities unless asked, no new privileges, the runc default masked and read-only /proc
  and /sys paths, devices limited to runc's defaults.
- The HOST network namespace: the lab's pod IPs are loopback addresses on this host, and each
  process binds its own. The container gets its own mount, UTS (hostname), IPC and PID
  namespaces.

Process lifetime. ``runc run`` has no option to kill its container when runc dies (libcontainer
sets a parent-death signal on the container's init only when a library caller configures
``ParentDeathSignal``, which the runc CLI never does: opencontainers/runc
libcontainer/container_linux.go), so PR_SET_PDEATHSIG on runc alone would leave containers
running after their caller died (tried: they do). Each container therefore lives in a PID
namespace owned by a holder, ``unshare --pid --kill-child tini -- sleep infinity``: the kernel
kills every process of a PID namespace when its init (tini) dies, tini gets SIGKILL when unshare
dies (``--kill-child``), and unshare and runc get SIGKILL when their caller dies (PR_SET_PDEATHSIG).
What is left on disk after such a death (runc's state, cgroups, the overlay mount, the bundle) is
removed by the next ``sweep``. The container's main process is therefore not PID 1 in its
namespace (as with a pod's ``shareProcessNamespace``): tini is, and it reaps orphans. When the
main process exits, the holder is killed, so nothing the container started outlives it.

Each container costs about 15 MB besides its own process: runc (10 MB, it stays in the
foreground to report the exit status), unshare, tini and the holder's sleep.

Filesystem. Each container gets an overlay over the shared, cached rootfs (its writes and runc's
mount points land in the bundle's ``upper/``, never in the cache), made read-only by runc when
``read_only_root`` is set. Needs root, as runc does.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: call ``start`` from the
thread that runs the event loop for the caller's whole life (the main thread, normally).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

log = logging.getLogger(__name__)

LogSink = Callable[[str, str], None]
"""Called with ("stdout" | "stderr", one line without its newline) for each line of output."""

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS_HINT = "hack/image/tools.sh installs it"
_PR_SET_PDEATHSIG = 1
_MNT_DETACH = 2
_READ_LIMIT = 1 << 20
START_TIMEOUT = 30.0
STALE_SECONDS = 3600.0  # a half-made bundle or unpack this old belongs to no live start

# Linux capability names (include/uapi/linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
CAPABILITIES = frozenset(
    (
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    )
)

# What `runc spec` and containerd's default spec mask and make read-only.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_RUNC_ID = re.compile(r"[^A-Za-z0-9_.-]+")


class OCIError(Exception):
    """Bad input or a missing tool, with what is wrong (and how to fix it) in the message."""


class ContainerStartError(OCIError):
    """runc could not start the container: the message is runc's reason."""


# -- the pure part: from an image config and a run spec to runc's config.json --------------------


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config (config.md, ``config`` object) a runtime uses."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, document: Mapping[str, Any]) -> ImageConfig:
        config = document.get("config") or {}
        return cls(
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=tuple(config.get("Env") or ()),
            working_dir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
        )


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class UserDb:
    """An image's /etc/passwd and /etc/group, parsed (malformed lines are skipped, as libc does)."""

    users: tuple[PasswdEntry, ...] = ()
    groups: tuple[tuple[str, int, tuple[str, ...]], ...] = ()

    @classmethod
    def from_text(cls, passwd: str, group: str) -> UserDb:
        users = []
        for line in passwd.splitlines():
            parts = line.split(":")
            if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
                users.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5]))
        groups = []
        for line in group.splitlines():
            parts = line.split(":")
            if len(parts) >= 4 and parts[2].isdigit():
                members = tuple(m for m in parts[3].split(",") if m)
                groups.append((parts[0], int(parts[2]), members))
        return cls(tuple(users), tuple(groups))

    def by_uid(self, uid: int) -> PasswdEntry | None:
        return next((u for u in self.users if u.uid == uid), None)

    def by_name(self, name: str) -> PasswdEntry | None:
        return next((u for u in self.users if u.name == name), None)

    def gid_of(self, name: str) -> int | None:
        return next((gid for group, gid, _ in self.groups if group == name), None)

    def memberships(self, name: str) -> list[int]:
        return [gid for _, gid, members in self.groups if name in members]


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container (a directory, or a file onto a file)."""

    source: Path
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A memory-backed directory, world-writable with the sticky bit by default, like /tmp."""

    destination: str
    size_bytes: int | None = None
    mode: int = 0o1777


@dataclass(frozen=True)
class RunSpec:
    """One container's settings, in Kubernetes' terms (PodSpec.containers[] and securityContext).

    ``command``/``args`` of None or () mean "not set"; ``env`` is already resolved.
    """

    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    read_only_root: bool = False
    add_capabilities: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[Tmpfs, ...] = ()
    termination_log: Path | None = None
    hostname: str | None = None


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    name: str | None


def process_args(image: ImageConfig, run: RunSpec) -> list[str]:
    """The argv Kubernetes runs: command replaces ENTRYPOINT (and drops CMD), args replace CMD."""
    if run.command:
        argv = [*run.command, *(run.args or ())]
    else:
        argv = [*image.entrypoint, *(run.args or image.cmd)]
    if not argv:
        raise OCIError("no command: the image has no ENTRYPOINT or CMD and the spec gives none")
    return argv


def _id(value: str, what: str) -> int:
    if not value.isdigit():
        raise OCIError(f"{what} {value!r} is not a number")
    number = int(value)
    if number > 0xFFFFFFFF:
        raise OCIError(f"{what} {number} is out of range (0..4294967295)")
    return number


def resolve_user(image_user: str, run: RunSpec, users: UserDb) -> User:
    """uid, gid and extra groups, by the kubelet's and containerd's rules (module docstring)."""
    for what, value in (
        ("runAsUser", run.run_as_user),
        ("runAsGroup", run.run_as_group),
        *(("supplementalGroups", g) for g in run.supplemental_groups),
    ):
        if value is not None and not 0 <= value <= 0xFFFFFFFF:
            raise OCIError(f"{what} {value} is out of range (0..4294967295)")
    user_part = image_user.split(":", 1)[0]
    entry: PasswdEntry | None
    if run.run_as_user is not None:
        uid = run.run_as_user
        entry = users.by_uid(uid)
        gid = entry.gid if entry else 0
    elif not user_part:
        uid, entry = 0, users.by_uid(0)
        gid = entry.gid if entry else 0
    elif user_part.isdigit():
        uid = _id(user_part, "image USER uid")
        entry = users.by_uid(uid)
        gid = entry.gid if entry else 0
    else:
        entry = users.by_name(user_part)
        if entry is None:
            raise OCIError(f"image USER {user_part!r} is not in the image's /etc/passwd")
        uid, gid = entry.uid, entry.gid
    if run.run_as_group is not None:
        gid = run.run_as_group
    extra = [gid, *(users.memberships(entry.name) if entry else []), *run.supplemental_groups]
    return User(uid, gid, tuple(dict.fromkeys(extra)), entry.name if entry else None)


def merge_env(image_env: Sequence[str], env: Mapping[str, str], hostname: str | None) -> list[str]:
    """Image env, then the container's (a name it sets replaces the image's), then HOSTNAME."""
    merged: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        if key:
            merged[key] = value
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise OCIError(f"environment variable {key!r}: a name must be non-empty, without '='")
        merged[key] = value
    merged.setdefault("PATH", DEFAULT_PATH)
    if hostname:
        merged.setdefault("HOSTNAME", hostname)
    return [f"{key}={value}" for key, value in merged.items()]


def capability_names(names: Sequence[str]) -> list[str]:
    """Kubernetes spells capabilities without CAP_ ("NET_BIND_SERVICE"); runc with it."""
    result: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if name == "ALL":
            return sorted(CAPABILITIES)
        name = name if name.startswith("CAP_") else f"CAP_{name}"
        if name not in CAPABILITIES:
            raise OCIError(f"unknown capability {raw!r} (for example NET_BIND_SERVICE)")
        if name not in result:
            result.append(name)
    return result


def _destination(path: str, what: str) -> str:
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or str(pure) == "/":
        raise OCIError(f"{what} {path!r} must be an absolute path below / without '..'")
    return str(pure)


def _mounts(run: RunSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    seen = {m["destination"] for m in mounts}

    def add(entry: dict[str, Any], what: str) -> None:
        if entry["destination"] in seen:
            raise OCIError(f"{what}: {entry['destination']} is mounted twice")
        seen.add(entry["destination"])
        mounts.append(entry)

    for tmpfs in run.tmpfs:
        options = ["nosuid", "nodev", f"mode={tmpfs.mode:o}"]
        if tmpfs.size_bytes is not None:
            if tmpfs.size_bytes <= 0:
                raise OCIError(f"tmpfs {tmpfs.destination}: size {tmpfs.size_bytes} must be > 0")
            options.append(f"size={tmpfs.size_bytes}")
        destination = _destination(tmpfs.destination, "tmpfs destination")
        add(
            {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options},
            "tmpfs",
        )
    for mount in run.mounts:
        if not mount.source.is_absolute():
            raise OCIError(f"mount source {str(mount.source)!r} must be an absolute host path")
        add(
            {
                "destination": _destination(mount.destination, "mount destination"),
                "type": "bind",
                "source": str(mount.source),
                "options": ["rbind", "rprivate", "ro" if mount.read_only else "rw"],
            },
            "mount",
        )
    if run.termination_log is not None:
        if not run.termination_log.is_absolute():
            raise OCIError(f"termination log {str(run.termination_log)!r} must be absolute")
        add(
            {
                "destination": "/dev/termination-log",
                "type": "bind",
                "source": str(run.termination_log),
                "options": ["bind", "rprivate", "rw"],
            },
            "termination log",
        )
    return mounts


def runtime_spec(
    image: ImageConfig,
    run: RunSpec,
    *,
    rootfs: str,
    users: UserDb,
    pid_namespace: str | None = None,
    cgroups_path: str | None = None,
) -> dict[str, Any]:
    """runc's config.json for one container (OCI runtime spec 1.0.2, config.md, config-linux.md).

    ``pid_namespace`` is the path of a PID namespace to join (the holder's), None for a new one.
    """
    user = resolve_user(image.user, run, users)
    caps = capability_names(run.add_capabilities)
    cwd = run.working_dir or image.working_dir or "/"
    if not PurePosixPath(cwd).is_absolute():
        raise OCIError(f"working directory {cwd!r} must be absolute")
    if run.hostname is not None and not re.fullmatch(
        r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})", run.hostname
    ):
        raise OCIError(f"hostname {run.hostname!r} is not a valid host name")
    pid: dict[str, str] = {"type": "pid"}
    if pid_namespace:
        pid["path"] = pid_namespace
    linux: dict[str, Any] = {
        # No "network" entry: the container shares the host's network namespace.
        "namespaces": [pid, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    }
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": list(user.additional_gids),
            },
            "args": process_args(image, run),
            "env": merge_env(image.env, run.env, run.hostname),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": run.read_only_root},
        "mounts": _mounts(run),
        "linux": linux,
    }
    if run.hostname:
        spec["hostname"] = run.hostname
    return spec


# -- images: unpacked once per digest -------------------------------------------------------------


def cache_root() -> Path:
    """~/.cache/nimop, as hack/image/build.sh and hack/k8s/build.sh use it."""
    override = os.environ.get("NIMOP_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nimop"


def _require(tool: str, package: str | None = None) -> str:
    path = shutil.which(tool)
    if path is None:
        raise OCIError(f"{tool} is not installed (Debian package {package or tool}; {TOOLS_HINT})")
    return path


async def _run(*argv: str, what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise OCIError(f"{what} failed (exit {proc.returncode}): {detail}")
    return out.decode(errors="replace")


def _read_plain(path: Path) -> str:
    """A file of the image, never through a symlink (which could point out of the rootfs)."""
    if path.is_symlink() or not path.is_file():
        return ""
    return path.read_text(errors="replace")


@dataclass(frozen=True)
class UnpackedImage:
    """An image's root filesystem in the cache, with its config and users."""

    digest: str
    path: Path
    config: ImageConfig
    users: UserDb

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @classmethod
    def load(cls, digest: str, path: Path) -> UnpackedImage:
        document = json.loads((path / "image.json").read_text())
        rootfs = path / "rootfs"
        users = UserDb.from_text(
            _read_plain(rootfs / "etc" / "passwd"), _read_plain(rootfs / "etc" / "group")
        )
        return cls(digest, path, ImageConfig.from_oci(document), users)


def _archive_path(source: str | Path) -> Path | None:
    if isinstance(source, Path):
        return source
    if source.startswith("oci-archive:"):
        return Path(source.removeprefix("oci-archive:"))
    if source.endswith(".tar") and ":" not in source:
        return Path(source)
    return None


def _is_storage_name(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith("containers-storage:")


def _is_unpacked(target: Path) -> bool:
    return (target / "image.json").is_file()


def _archive_digest(archive: Path) -> str:
    if not archive.is_file():
        raise OCIError(f"image archive {archive} does not exist (make image writes build/images)")
    try:
        with tarfile.open(archive, "r") as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise KeyError("index.json")
            index = json.loads(member.read())
    except (KeyError, tarfile.TarError, json.JSONDecodeError) as err:
        raise OCIError(f"{archive} is not an OCI image archive: {err}") from err
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise OCIError(f"{archive}: expected one image in index.json, found {len(manifests)}")
    digest: str = manifests[0]["digest"]
    return digest


def _digest_dir(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hex_digest):
        raise OCIError(f"unexpected manifest digest {digest!r}")
    return hex_digest


class ImageStore:
    """Root filesystems unpacked by umoci, one per manifest digest.

    Safe for many callers at once, in one process (an asyncio lock per digest) or several (an
    flock per digest): the first unpacks, the others wait and reuse it. Each new unpack prunes
    the cache to the ``keep`` most recently used images (a rebuild makes a new digest, and each
    unpacked image takes hundreds of MB), sparing any that a container still has mounted.
    """

    def __init__(self, cache_dir: Path | None = None, keep: int = 4) -> None:
        self.cache_dir = cache_dir or cache_root() / "rootfs"
        self.keep = keep
        self._locks: dict[str, asyncio.Lock] = {}

    async def unpack(self, source: str | Path) -> UnpackedImage:
        archive = _archive_path(source)
        if archive is not None:
            digest = await asyncio.to_thread(_archive_digest, archive)
        elif _is_storage_name(source):
            digest = (
                await _run(
                    _require("skopeo"),
                    "inspect",
                    "--format",
                    "{{.Digest}}",
                    str(source),
                    what=str(source),
                )
            ).strip()
        else:
            raise OCIError(
                f"image source {source!r}: expected an OCI archive (path.tar or oci-archive:path)"
                " or containers-storage:NAME"
            )
        hex_digest = _digest_dir(digest)
        target = self.cache_dir / hex_digest
        lock = self._locks.setdefault(hex_digest, asyncio.Lock())
        async with lock:
            if not await asyncio.to_thread(_is_unpacked, target):
                await self._unpack_locked(source, archive, hex_digest, target)
                await asyncio.to_thread(self.prune)
            await asyncio.to_thread((target / "image.json").touch)  # last used, for prune
        return await asyncio.to_thread(UnpackedImage.load, digest, target)

    def prune(self) -> list[str]:
        """Remove all but the ``keep`` most recently used images not in use; return their digests.

        Blocking; "in use" means an overlay in this mount namespace has it as its lower layer.
        """
        if not self.cache_dir.is_dir():
            return []
        entries = sorted(
            (p for p in self.cache_dir.iterdir() if _is_unpacked(p)),
            key=lambda p: (p / "image.json").stat().st_mtime,
            reverse=True,
        )
        for stale in self.cache_dir.glob(".unpack-*"):
            if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)  # an unpack that died half-way
        mounts = Path("/proc/self/mounts").read_text()
        removed = []
        for entry in entries[self.keep :]:
            if f"lowerdir={entry / 'rootfs'}" in mounts:
                continue
            (entry / "image.json").unlink()  # first: a half-removed entry never looks complete
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(f"sha256:{entry.name}")
        return removed

    async def _unpack_locked(
        self, source: str | Path, archive: Path | None, hex_digest: str, target: Path
    ) -> None:
        lock_file = await asyncio.to_thread(self._lock_file, hex_digest)
        try:
            await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
            if await asyncio.to_thread(_is_unpacked, target):
                return
            umoci = _require("umoci")
            work = self.cache_dir / f".unpack-{hex_digest[:12]}-{secrets.token_hex(4)}"
            layout = work / "layout"
            await asyncio.to_thread(layout.mkdir, parents=True)
            try:
                started = time.monotonic()
                if archive is not None:
                    await _run("tar", "-xf", str(archive), "-C", str(layout), what=f"tar {archive}")
                else:
                    await _run(
                        _require("skopeo"),
                        "copy",
                        "-q",
                        str(source),
                        f"oci:{layout}:image",
                        what=f"skopeo copy {source}",
                    )
                config = await asyncio.to_thread(_tag_single_image, layout)
                bundle = work / "bundle"
                await _run(
                    umoci, "unpack", "--image", f"{layout}:image", str(bundle), what="umoci unpack"
                )
                await asyncio.to_thread(_publish, bundle, config, target)
                log.info(
                    "unpacked %s (sha256:%s) in %.1fs",
                    source,
                    hex_digest,
                    time.monotonic() - started,
                )
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
        finally:
            lock_file.close()

    def _lock_file(self, hex_digest: str) -> IO[str]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return (self.cache_dir / f".{hex_digest}.lock").open("w")


def _publish(bundle: Path, config: dict[str, Any], target: Path) -> None:
    """Move a finished unpack into place; image.json, written last, marks it complete."""
    if target.exists():
        shutil.rmtree(target)
    bundle.rename(target)
    (target / "image.json").write_text(json.dumps(config))


def _tag_single_image(layout: Path) -> dict[str, Any]:
    """Name the layout's one image "image" for umoci, and return its image config."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise OCIError(f"expected one image in the layout, found {len(manifests)}")
    entry = manifests[0]
    entry.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = "image"
    index_path.write_text(json.dumps(index))
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / _digest_dir(entry["digest"])).read_text())
    config: dict[str, Any] = json.loads(
        (blobs / _digest_dir(manifest["config"]["digest"])).read_text()
    )
    return config


# -- containers: runc in the foreground, in a PID namespace that dies with us ----------------------


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reused its pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    pid, started = owner.get("pid"), owner.get("start_time")
    return isinstance(pid, int) and started is not None and _start_time(pid) == started


def _mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise OCIError(
            f"cannot mount an overlay over {lower} at {target}: {os.strerror(errno)}"
            " (needs root and overlayfs; the rootfs cache must not itself be on overlayfs)"
        )


def _unmount(target: Path) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.umount2(str(target).encode(), _MNT_DETACH)  # EINVAL when not mounted: nothing to do


async def _exited(pidfd: int) -> None:
    """Return once the process behind a pidfd has exited (the fd turns readable)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)


def _first_child(pid: int) -> int | None:
    """The first child of a process (needs CONFIG_PROC_CHILDREN, on in Debian's kernels)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal_pid(pid: int | None, sig: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _runc_errors(log_path: Path) -> str:
    """runc's own error lines from its --log file (JSON lines with level and msg)."""
    messages = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    messages.append(str(entry.get("msg", "")).strip())
    return "; ".join(m for m in messages if m)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class Runtime:
    """The containers this process runs, with runc state under ``state_dir``.

    Several runtimes (processes) may share one state directory: each container records its
    owner, and ``sweep`` removes only those whose owner is gone.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or Path(os.environ.get("NIMOP_OCI_STATE_DIR", "/run/nimop-oci"))
        self.runc_root = self.state_dir / "runc"
        self.bundles = self.state_dir / "bundles"
        self._swept = False

    def sweep(self) -> list[str]:
        """Remove every container whose owner process has died; return their ids.

        Blocking (it runs ``runc delete``): from asyncio, ``await asyncio.to_thread(rt.sweep)``.
        """
        removed: list[str] = []
        runc = shutil.which("runc")
        if self.bundles.is_dir():
            for bundle in sorted(self.bundles.iterdir()):
                if bundle.name.startswith("."):
                    if time.time() - bundle.stat().st_mtime > STALE_SECONDS:
                        shutil.rmtree(bundle, ignore_errors=True)  # a start that died half-way
                    continue
                try:
                    owner = json.loads((bundle / "owner.json").read_text())
                except (OSError, json.JSONDecodeError):
                    owner = {}
                if _owner_alive(owner):
                    continue
                with contextlib.suppress(OSError, json.JSONDecodeError):
                    holder = json.loads((bundle / "holder.json").read_text())
                    if _start_time(holder.get("pid", -1)) == holder.get("start_time"):
                        _signal_pid(holder["pid"], signal.SIGKILL)
                if runc is not None:
                    self._runc_delete(runc, bundle.name)
                _unmount(bundle / "rootfs")
                shutil.rmtree(bundle, ignore_errors=True)
                removed.append(bundle.name)
        if runc is not None and self.runc_root.is_dir():
            for state in self.runc_root.iterdir():
                if state.is_dir() and not (self.bundles / state.name).exists():
                    self._runc_delete(runc, state.name)
                    removed.append(state.name)
        if removed:
            log.info("swept %d stale container(s): %s", len(removed), ", ".join(removed))
        self._swept = True
        return removed

    def _runc_delete(self, runc: str, container_id: str) -> None:
        subprocess.run(
            [runc, "--root", str(self.runc_root), "delete", "--force", container_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=30,
        )

    async def start(
        self,
        image: UnpackedImage,
        run: RunSpec,
        *,
        name: str = "container",
        log: LogSink | None = None,
    ) -> Container:
        """Start the container; return once its process runs (or raise ContainerStartError)."""
        runc = _require("runc")
        unshare = _require("unshare", "util-linux")
        tini = _require("tini")
        # Bad input fails here, before anything exists.
        runtime_spec(image.config, run, rootfs=str(image.rootfs), users=image.users)
        for mount in run.mounts:
            if not await asyncio.to_thread(mount.source.exists):
                raise OCIError(f"mount source {mount.source} does not exist on the host")
        if not self._swept:
            await asyncio.to_thread(self.sweep)
        slug = _RUNC_ID.sub("-", name).strip("-.")[:40] or "container"
        container_id = f"{slug}-{secrets.token_hex(4)}"
        bundle = self.bundles / container_id
        container = Container(self, container_id, bundle, run, log)
        try:
            await asyncio.to_thread(_prepare_bundle, bundle, image.rootfs, run.termination_log)
            await container._start_holder(unshare, tini)
            spec = runtime_spec(
                image.config,
                run,
                rootfs=str(bundle / "rootfs"),
                users=image.users,
                pid_namespace=container.pid_namespace,
                cgroups_path=f"/nimop-oci/{container_id}",
            )
            await asyncio.to_thread((bundle / "config.json").write_text, json.dumps(spec, indent=1))
            await container._start_runc(runc)
        except BaseException:
            await container.remove()
            raise
        return container


def _prepare_bundle(bundle: Path, rootfs: Path, termination_log: Path | None) -> None:
    """The bundle directory, its owner record, and the overlay over the shared rootfs.

    Made under a dot-name and renamed, so another process's sweep never sees it without owner.
    """
    staging = bundle.with_name(f".{bundle.name}")
    for sub in ("rootfs", "upper", "work"):
        (staging / sub).mkdir(parents=True)
    (staging / "owner.json").write_text(
        json.dumps({"pid": os.getpid(), "start_time": _start_time(os.getpid())})
    )
    staging.rename(bundle)
    _mount_overlay(rootfs, bundle / "upper", bundle / "work", bundle / "rootfs")
    if termination_log is not None and not termination_log.exists():
        # The kubelet creates the file before the container starts; any user may write it.
        termination_log.touch()
        termination_log.chmod(0o666)


class Container:
    """One running (or exited) container; made by ``Runtime.start``."""

    def __init__(
        self, runtime: Runtime, container_id: str, bundle: Path, run: RunSpec, log: LogSink | None
    ) -> None:
        self.runtime = runtime
        self.id = container_id
        self.bundle = bundle
        self.run_spec = run
        self._log = log
        self.pid: int | None = None
        self.pid_namespace: str | None = None
        self._pidfd: int | None = None
        self._holder: asyncio.subprocess.Process | None = None
        self._ns_init: int | None = None  # a pidfd of the namespace's init (tini)
        self._runc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._exit_code: int | None = None
        self._removed = False

    async def _start_holder(self, unshare: str, tini: str) -> None:
        self._holder = await asyncio.create_subprocess_exec(
            unshare,
            "--pid",
            "--kill-child=SIGKILL",
            "--",
            tini,
            "--",
            "sleep",
            "infinity",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        holder_pid = self._holder.pid
        (self.bundle / "holder.json").write_text(
            json.dumps({"pid": holder_pid, "start_time": _start_time(holder_pid)})
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            init = _first_child(holder_pid)
            if init is not None:
                with contextlib.suppress(ProcessLookupError):  # died at once: reported below
                    self._ns_init = os.pidfd_open(init)
                    self.pid_namespace = f"/proc/{init}/ns/pid"
                    return
            if self._holder.returncode is not None:
                break
            await asyncio.sleep(0.01)
        raise ContainerStartError(
            f"{self.id}: the PID namespace holder (unshare, tini) did not start"
        )

    async def _start_runc(self, runc: str) -> None:
        pid_file = self.bundle / "pid"
        self._runc = await asyncio.create_subprocess_exec(
            runc,
            "--root",
            str(self.runtime.runc_root),
            "--log",
            str(self.bundle / "runc.log"),
            "--log-format",
            "json",
            "run",
            "--bundle",
            str(self.bundle),
            "--pid-file",
            str(pid_file),
            self.id,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_READ_LIMIT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert self._runc.stdout is not None
        assert self._runc.stderr is not None
        self._readers = [
            asyncio.create_task(self._pump("stdout", self._runc.stdout)),
            asyncio.create_task(self._pump("stderr", self._runc.stderr)),
        ]
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pid = _read_pid_file(pid_file)
            if pid is not None:
                self.pid = pid
                with contextlib.suppress(ProcessLookupError):
                    self._pidfd = os.pidfd_open(pid)
                return
            if self._runc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        if self._runc.returncode is None:
            raise ContainerStartError(f"{self.id}: runc did not start it in {START_TIMEOUT:.0f}s")
        await self.wait()
        reason = _runc_errors(self.bundle / "runc.log") or f"runc exited {self._runc.returncode}"
        raise ContainerStartError(f"{self.id}: {reason}")

    async def _pump(self, stream: str, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the limit: hand it over in pieces
                line = await reader.read(_READ_LIMIT)
            if not line:
                return
            if self._log is not None:
                try:
                    self._log(stream, line.decode(errors="replace").rstrip("\n"))
                except Exception:
                    log.exception("%s: the log callback failed", self.id)

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    async def wait(self) -> int:
        """The exit code: the process's own, or 128+N if signal N killed it (as the kubelet)."""
        if self._exit_code is not None:
            return self._exit_code
        if self._runc is None:
            raise OCIError(f"{self.id} was never started")
        code = await self._runc.wait()
        # The main process is gone: so is everything it left in its PID namespace, which also
        # closes the output pipes that processes it started in the background still held.
        await self._kill_holder()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self._exit_code is None:
            self._exit_code = 128 - code if code < 0 else code
        return self._exit_code

    async def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal the container's main process (no-op once it has exited)."""
        if self._exit_code is not None or self._pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    async def stop(self, grace: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds (terminationGracePeriodSeconds)."""
        await self.kill(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.wait()), grace)
        except TimeoutError:
            await self.kill(signal.SIGKILL)
            return await self.wait()

    async def exec(self, argv: Sequence[str]) -> ExecResult:
        """Run ``argv`` inside the running container as its process runs (user, caps, env, cwd).

        Bound it with ``asyncio.timeout``: a cancelled exec kills its process.
        """
        if not argv:
            raise OCIError("exec needs a command")
        if self._exit_code is not None or self._runc is None:
            raise OCIError(f"{self.id} is not running")
        process_file = await asyncio.to_thread(self._write_process, list(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                _require("runc"),
                "--root",
                str(self.runtime.runc_root),
                "exec",
                "--process",
                str(process_file),
                self.id,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            try:
                out, err = await proc.communicate()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
        finally:
            await asyncio.to_thread(process_file.unlink, True)
        code = proc.returncode if proc.returncode is not None else -1
        return ExecResult(
            128 - code if code < 0 else code,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )

    def _write_process(self, argv: list[str]) -> Path:
        """The container's own process settings (config.json) with another argv."""
        spec = json.loads((self.bundle / "config.json").read_text())
        path = self.bundle / f"exec-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps({**spec["process"], "args": argv}))
        return path

    async def _kill_holder(self) -> None:
        """Kill the PID namespace; return once its init is dead, and with it every process in it.

        (The kernel makes a dying namespace init wait for the rest before it is a zombie.)
        """
        holder = self._holder
        if holder is not None and holder.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                holder.kill()
            await holder.wait()
        pidfd, self._ns_init = self._ns_init, None
        if pidfd is not None:
            try:
                await asyncio.wait_for(_exited(pidfd), START_TIMEOUT)
            finally:
                os.close(pidfd)

    async def remove(self) -> None:
        """Kill what still runs, then delete runc's state, the overlay and the bundle."""
        if self._removed:
            return
        self._removed = True
        if self._runc is not None and self._exit_code is None:
            await self.kill(signal.SIGKILL)
            await self._kill_holder()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.wait(), 30)
        await self._kill_holder()
        for reader in self._readers:
            reader.cancel()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        runc = shutil.which("runc")
        if runc is not None:
            await asyncio.to_thread(self.runtime._runc_delete, runc, self.id)
        await asyncio.to_thread(_unmount, self.bundle / "rootfs")
        await asyncio.to_thread(shutil.rmtree, self.bundle, True)

    async def __aenter__(self) -> Container:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remove()
