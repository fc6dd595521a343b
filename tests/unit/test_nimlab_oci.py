"""runc's config.json from an image config and a pod container's settings (nimlab.oci)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nimlab.oci import (
    ImageConfig,
    Mount,
    OCIError,
    RunSpec,
    Tmpfs,
    UserDb,
    capability_names,
    merge_env,
    process_args,
    resolve_user,
    runtime_spec,
)

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
nimop:x:65532:65532::/nonexistent:/usr/sbin/nologin
nimsim:x:1000:1000::/home/nimsim:/usr/sbin/nologin
broken line
"""
GROUP = """\
root:x:0:
nogroup:x:65534:
nimop:x:65532:
nimsim:x:1000:
video:x:44:nimsim,other
metrics:x:2000:nimsim
"""
USERS = UserDb.from_text(PASSWD, GROUP)
OPERATOR = ImageConfig(
    entrypoint=("nimop",),
    cmd=("run",),
    env=("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "NIMOP_LOG_LEVEL=INFO"),
    working_dir="/tmp",
    user="65532:65532",
)


def spec(run: RunSpec, image: ImageConfig = OPERATOR, **kwargs: Any) -> dict[str, Any]:
    return runtime_spec(image, run, rootfs="/bundle/rootfs", users=USERS, **kwargs)


# -- command and args, with Kubernetes' rules ----------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, ["nimop", "run"]),  # the image's ENTRYPOINT and CMD
        (None, ("--help",), ["nimop", "--help"]),  # args replace CMD
        (("python", "-V"), None, ["python", "-V"]),  # command replaces both
        (("sh", "-c"), ("echo hi",), ["sh", "-c", "echo hi"]),
        ((), (), ["nimop", "run"]),  # empty lists are "not set", as in the kubelet
    ],
)
def test_command_replaces_entrypoint_and_args_replace_cmd(
    command: tuple[str, ...] | None, args: tuple[str, ...] | None, expected: list[str]
) -> None:
    assert process_args(OPERATOR, RunSpec(command=command, args=args)) == expected
    assert spec(RunSpec(command=command, args=args))["process"]["args"] == expected


def test_an_image_without_entrypoint_or_cmd_needs_a_command() -> None:
    with pytest.raises(OCIError, match="no command"):
        process_args(ImageConfig(), RunSpec())
    assert process_args(ImageConfig(), RunSpec(args=("sleep", "1"))) == ["sleep", "1"]


def test_image_config_is_read_from_the_oci_document() -> None:
    config = ImageConfig.from_oci(
        {
            "architecture": "amd64",
            "config": {
                "Entrypoint": ["nimsim"],
                "Env": ["A=1"],
                "WorkingDir": "/home/nimsim",
                "User": "1000:1000",
            },
        }
    )
    assert config == ImageConfig(("nimsim",), (), ("A=1",), "/home/nimsim", "1000:1000")
    assert ImageConfig.from_oci({}) == ImageConfig()


# -- the user --------------------------------------------------------------------------------------


def test_the_image_user_runs_with_its_passwd_group() -> None:
    user = resolve_user("65532:65532", RunSpec(), USERS)
    assert (user.uid, user.gid, user.additional_gids, user.name) == (
        65532,
        65532,
        (65532,),
        "nimop",
    )
    process = spec(RunSpec())["process"]
    assert process["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}


def test_the_group_in_image_user_is_not_used_as_the_kubelet_passes_only_the_uid() -> None:
    # USER 1000:44: the kubelet hands containerd the uid alone; the group comes from /etc/passwd.
    assert resolve_user("1000:44", RunSpec(), USERS).gid == 1000


def test_run_as_user_overrides_the_image_and_takes_its_passwd_group() -> None:
    user = resolve_user("65532:65532", RunSpec(run_as_user=1000), USERS)
    assert (user.uid, user.gid) == (1000, 1000)
    # memberships in /etc/group follow the user, after its primary group
    assert user.additional_gids == (1000, 44, 2000)


def test_a_uid_without_passwd_entry_gets_group_0() -> None:
    user = resolve_user("", RunSpec(run_as_user=4242), USERS)
    assert (user.uid, user.gid, user.name) == (4242, 0, None)
    assert resolve_user("4242", RunSpec(), USERS).gid == 0


def test_run_as_group_and_supplemental_groups() -> None:
    user = resolve_user("nimsim", RunSpec(run_as_group=3000, supplemental_groups=(44, 5000)), USERS)
    assert (user.uid, user.gid) == (1000, 3000)
    assert user.additional_gids == (3000, 44, 2000, 5000)


def test_no_image_user_is_root() -> None:
    user = resolve_user("", RunSpec(), USERS)
    assert (user.uid, user.gid) == (0, 0)


def test_a_named_user_must_exist_in_the_image() -> None:
    assert resolve_user("nimsim", RunSpec(), USERS).uid == 1000
    with pytest.raises(OCIError, match="'ghost' is not in the image's /etc/passwd"):
        resolve_user("ghost", RunSpec(), USERS)


def test_ids_out_of_range_are_refused() -> None:
    with pytest.raises(OCIError, match="runAsUser -1 is out of range"):
        resolve_user("", RunSpec(run_as_user=-1), USERS)
    with pytest.raises(OCIError, match="supplementalGroups 4294967296"):
        resolve_user("", RunSpec(supplemental_groups=(2**32,)), USERS)


def test_malformed_passwd_lines_are_skipped() -> None:
    assert [u.name for u in USERS.users] == ["root", "nobody", "nimop", "nimsim"]


# -- environment -----------------------------------------------------------------------------------


def test_container_env_overrides_the_image_in_place_and_adds_the_rest() -> None:
    env = spec(RunSpec(env={"NIMOP_LOG_LEVEL": "DEBUG", "KUBERNETES_SERVICE_HOST": "127.0.0.1"}))[
        "process"
    ]["env"]
    assert env == [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "LANG=C.UTF-8",
        "NIMOP_LOG_LEVEL=DEBUG",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
    ]


def test_path_has_a_default_and_hostname_is_exported() -> None:
    env = merge_env([], {}, "nimop-7d9c")
    assert env == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=nimop-7d9c",
    ]


@pytest.mark.parametrize("name", ["", "A=B", "X\0"])
def test_bad_env_names_are_refused(name: str) -> None:
    with pytest.raises(OCIError, match="environment variable"):
        merge_env([], {name: "v"}, None)


# -- privileges ------------------------------------------------------------------------------------


def test_no_capabilities_and_no_new_privileges_by_default() -> None:
    process = spec(RunSpec())["process"]
    assert process["capabilities"] == {
        "bounding": [],
        "effective": [],
        "permitted": [],
        "inheritable": [],
        "ambient": [],
    }
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False


def test_added_capabilities_take_kubernetes_names() -> None:
    caps = spec(RunSpec(add_capabilities=("NET_BIND_SERVICE", "cap_sys_nice", "NET_BIND_SERVICE")))[
        "process"
    ]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    assert caps["bounding"] == ["CAP_NET_BIND_SERVICE", "CAP_SYS_NICE"]
    assert caps["ambient"] == caps["inheritable"] == []
    assert len(capability_names(["ALL"])) == 41


def test_unknown_capability_is_named() -> None:
    with pytest.raises(OCIError, match="unknown capability 'NET_FLY'"):
        spec(RunSpec(add_capabilities=("NET_FLY",)))


# -- filesystem and namespaces ---------------------------------------------------------------------


def test_root_is_read_only_only_when_asked() -> None:
    assert spec(RunSpec())["root"] == {"path": "/bundle/rootfs", "readonly": False}
    assert spec(RunSpec(read_only_root=True))["root"]["readonly"] is True


def test_host_network_and_a_private_pid_mount_ipc_uts() -> None:
    linux = spec(RunSpec(), pid_namespace="/proc/42/ns/pid")["linux"]
    types = [ns["type"] for ns in linux["namespaces"]]
    assert "network" not in types  # pod IPs are loopback addresses on the host
    assert sorted(types) == ["ipc", "mount", "pid", "uts"]
    assert {"type": "pid", "path": "/proc/42/ns/pid"} in linux["namespaces"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "path" not in spec(RunSpec())["linux"]["namespaces"][0]


def test_bind_mounts_tmpfs_and_the_termination_log() -> None:
    run = RunSpec(
        mounts=(
            Mount(Path("/var/lab/sa"), "/var/run/secrets/kubernetes.io/serviceaccount", True),
            Mount(Path("/var/lab/cache"), "/opt/nim/.cache"),
        ),
        tmpfs=(Tmpfs("/tmp"), Tmpfs("/run/x", size_bytes=1 << 20, mode=0o700)),
        termination_log=Path("/var/lab/pod/termination-log"),
    )
    mounts = {m["destination"]: m for m in spec(run)["mounts"]}
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"} <= set(mounts)
    assert mounts["/sys"]["options"][-1] == "ro"
    secret = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert secret["type"] == "bind"
    assert secret["source"] == "/var/lab/sa"
    assert "ro" in secret["options"]
    assert "rw" in mounts["/opt/nim/.cache"]["options"]
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert "mode=1777" in mounts["/tmp"]["options"]
    assert {"mode=700", "size=1048576"} <= set(mounts["/run/x"]["options"])
    log = mounts["/dev/termination-log"]
    assert (log["source"], "rw" in log["options"]) == ("/var/lab/pod/termination-log", True)


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (RunSpec(mounts=(Mount(Path("/a"), "data"),)), "must be an absolute path"),
        (RunSpec(mounts=(Mount(Path("/a"), "/x/../etc"),)), "without '..'"),
        (RunSpec(mounts=(Mount(Path("/a"), "/"),)), "absolute path below /"),
        (RunSpec(mounts=(Mount(Path("relative"), "/data"),)), "absolute host path"),
        (RunSpec(tmpfs=(Tmpfs("/tmp"),), mounts=(Mount(Path("/a"), "/tmp"),)), "mounted twice"),
        (RunSpec(tmpfs=(Tmpfs("/dev/shm"),)), "/dev/shm is mounted twice"),
        (RunSpec(tmpfs=(Tmpfs("/t", size_bytes=0),)), "must be > 0"),
        (RunSpec(termination_log=Path("log")), "must be absolute"),
        (RunSpec(working_dir="work"), "working directory 'work'"),
        (RunSpec(hostname="no spaces"), "not a valid host name"),
    ],
)
def test_bad_specs_are_refused_with_what_is_wrong(run: RunSpec, message: str) -> None:
    with pytest.raises(OCIError, match=message):
        spec(run)


def test_working_dir_and_hostname() -> None:
    assert spec(RunSpec())["process"]["cwd"] == "/tmp"
    assert spec(RunSpec(working_dir="/srv"))["process"]["cwd"] == "/srv"
    assert spec(RunSpec(), image=ImageConfig(cmd=("sh",)))["process"]["cwd"] == "/"
    named = spec(RunSpec(hostname="nimop-0"), cgroups_path="/nimop-oci/x")
    assert named["hostname"] == "nimop-0"
    assert named["linux"]["cgroupsPath"] == "/nimop-oci/x"
    assert "hostname" not in spec(RunSpec())
