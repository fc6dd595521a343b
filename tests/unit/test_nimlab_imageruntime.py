"""The kubelet's half of running a lab-built image: from a pod to runc's settings, and volume
permissions as the kubelet leaves them (nimlab.imageruntime, nimlab.labimages)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nimlab import imageruntime as ir
from nimlab import labimages
from nimlab.entrypoint import Plan
from nimlab.volumes import Mount, Volume

SERVER = "https://127.0.0.1:6443"


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "nimop-5d8f-abcde", "namespace": "ops", "uid": "u-1"},
        "spec": {"containers": [{"name": "operator"}], **spec},
        "status": {"podIP": "127.1.0.7"},
    }


def test_lab_images_are_named_as_builders_tag_them() -> None:
    for reference in (
        "nimop:0.1.0",
        "localhost/nimop:0.1.0",
        "docker.io/library/nimop:0.1.0",
        "docker.io/nimop:0.1.0",
        "library/nimop:0.1.0",
    ):
        assert labimages.lab_image(reference) == labimages.LabImage("nimop", "0.1.0"), reference
    assert labimages.lab_image("nimsim") == labimages.LabImage("nimsim", "latest")
    for other in (
        "registry.example.com/nimop:0.1.0",
        "localhost:5000/nimop:0.1.0",
        "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3",
        "nimop@sha256:" + "0" * 64,
        "nimop-tools:1",
    ):
        assert labimages.lab_image(other) is None, other


def test_a_missing_image_says_what_is_built_and_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMOP_IMAGE_DIR", str(tmp_path))
    (tmp_path / "nimop-0.1.0.tar").write_text("")
    image = labimages.LabImage("nimop", "0.2.0")
    assert image.archive() == tmp_path / "nimop-0.2.0.tar"
    message = labimages.missing_message(image)
    assert message.startswith("image nimop:0.2.0 is not built in this lab")
    assert "built here: nimop:0.1.0" in message
    assert message.endswith("run `make image`")
    standing = labimages.missing_message(labimages.LabImage("nimsim", "0.1.0"), "`sh` of x")
    assert "(the lab runs `sh` of x in it)" in standing


def test_the_containers_settings_win_over_the_pods() -> None:
    spec = pod(
        securityContext={
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "runAsNonRoot": True,
            "fsGroup": 2000,
            "supplementalGroups": [3000, 2000],
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    )["spec"]
    container = {
        "name": "c",
        "securityContext": {
            "runAsUser": 65532,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        },
    }
    sec = ir.security(spec, container)
    assert (sec.run_as_user, sec.run_as_group, sec.run_as_non_root) == (65532, 1000, True)
    assert sec.groups == (2000, 3000)  # fsGroup first, then supplementalGroups, once each
    assert (sec.fs_group, sec.fs_group_policy) == (2000, "OnRootMismatch")
    assert sec.read_only_root
    assert sec.add_capabilities == ("NET_BIND_SERVICE",)
    assert ir.security({}, {"securityContext": {"privileged": True}}).add_capabilities == ("ALL",)
    assert ir.security({}, {}) == ir.Security()
    with pytest.raises(ir.StartError, match="runAsUser must be an integer"):
        ir.security({}, {"securityContext": {"runAsUser": "1000"}})


def test_run_as_non_root_refuses_as_the_kubelet_does() -> None:
    where = '(pod: "p_ns(u)", container: c)'
    strict = ir.Security(run_as_non_root=True)
    assert ir.non_root_violation(strict, "65532:65532", "p_ns(u)", "c") is None
    assert ir.non_root_violation(strict, "", "p_ns(u)", "c") == (
        f"container has runAsNonRoot and image will run as root {where}"
    )
    assert ir.non_root_violation(strict, "0", "p_ns(u)", "c") is not None
    assert "image has non-numeric user (nimop), cannot verify user is non-root" in str(
        ir.non_root_violation(strict, "nimop", "p_ns(u)", "c")
    )
    root = ir.Security(run_as_non_root=True, run_as_user=0)
    assert ir.non_root_violation(root, "65532", "p_ns(u)", "c") == (
        f"container's runAsUser breaks non-root policy {where}"
    )
    assert ir.non_root_violation(ir.Security(), "", "p", "c") is None


def test_the_kubernetes_service_variables_point_at_the_api_server() -> None:
    env = ir.service_env(SERVER)
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:6443"
    assert ir.service_env("https://[::1]:8443")["KUBERNETES_PORT"] == "tcp://[::1]:8443"


def test_hostname_and_hosts_file() -> None:
    assert ir.hostname(pod()) == "nimop-5d8f-abcde"
    assert ir.hostname(pod(hostname="db-0")) == "db-0"
    long = pod()
    long["metadata"]["name"] = "a" * 62 + "-bcd"
    assert ir.hostname(long) == "a" * 62
    aliases = [{"ip": "127.0.0.9", "hostnames": ["foo.local", "bar"]}]
    text = ir.hosts_file(pod(hostAliases=aliases), "nimop-5d8f-abcde", api_service=True)
    lines = text.splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert "127.0.0.1\tlocalhost" in lines
    assert "127.1.0.7\tnimop-5d8f-abcde" in lines
    assert (
        "127.1.0.7\tkubernetes kubernetes.default kubernetes.default.svc "
        "kubernetes.default.svc.cluster.local"
    ) in lines
    assert "127.0.0.9\tfoo.local\tbar" in lines
    assert "kubernetes.default.svc" not in ir.hosts_file(pod(), "h")


def test_command_and_args_by_kind_of_image() -> None:
    env = {"MODE": "all"}
    lab = Plan("image", image="nimop:0.1.0")
    container = {"command": ["nimop"], "args": ["run", "--mode=$(MODE)", "$$(MODE)"]}
    assert ir.command_and_args(lab, container, env) == (
        ("nimop",),
        ("run", "--mode=all", "$(MODE)"),
    )
    assert ir.command_and_args(lab, {"args": ["run"]}, env) == (None, ("run",))
    assert ir.command_and_args(lab, {}, env) == (None, None)
    stand_in = Plan("image", argv=("/bin/sh", "-ec", "script", "nimcache", "all"))
    assert ir.command_and_args(stand_in, container, env) == (stand_in.argv, None)


def test_environment_the_kubelet_adds() -> None:
    lab = Plan("image", image="nimop:0.1.0")
    env = ir.container_env(lab, {}, pod(), {"KUBERNETES_SERVICE_PORT": "1"}, {}, SERVER)
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "1"  # the container's own value wins
    assert "NIMSIM_IMAGE" not in env
    nim = {
        "name": "nim-cache",
        "image": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3",
        "resources": {"limits": {"nvidia.com/gpu": 2}},
    }
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    stand_in = ir.container_env(Plan("image", argv=("sh",)), nim, pod(), {}, labels, SERVER)
    assert stand_in["NIMSIM_IMAGE"] == nim["image"]
    assert stand_in["NIMSIM_GPU_PRODUCT"] == "A100"
    assert len(stand_in["NVIDIA_VISIBLE_DEVICES"].split(",")) == 2


def test_mounts_hosts_and_the_termination_message_file(tmp_path: Path) -> None:
    log_file, hosts = tmp_path / "termination-log", tmp_path / "hosts"
    mounts = [Mount("/tmp", tmp_path / "tmp", False, "tmp"), Mount("/c", tmp_path, True, "c")]
    binds, default = ir.bind_mounts(mounts, log_file, "/dev/termination-log", hosts)
    assert default == log_file  # oci binds /dev/termination-log itself
    assert [(str(b.source), b.destination, b.read_only) for b in binds] == [
        (str(tmp_path / "tmp"), "/tmp", False),
        (str(tmp_path), "/c", True),
        (str(hosts), "/etc/hosts", False),
    ]
    own_hosts = [Mount("/etc/hosts", tmp_path / "h", True, "h")]
    binds, default = ir.bind_mounts(own_hosts, log_file, "/var/log/report", hosts)
    assert default is None
    assert [b.destination for b in binds] == ["/etc/hosts", "/var/log/report"]
    assert binds[1].source == log_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_volume_permissions_as_the_kubelet_leaves_them(tmp_path: Path) -> None:
    scratch, claim, config, node = (tmp_path / n for n in ("scratch", "claim", "config", "node"))
    for directory in (scratch, claim / "models", config, node):
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    (claim / "models" / "weights").write_text("w")
    (claim / "models" / "weights").chmod(0o644)
    (config / "key").write_text("k")
    (config / "key").chmod(0o400)
    volumes = {
        "scratch": Volume("scratch", scratch),
        "claim": Volume("claim", claim, persistent_volume="pv-1"),
        "config": Volume("config", config, read_only=True),
        "node": Volume("node", node),
    }
    spec = {
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "c"}},
            {"name": "config", "secret": {"secretName": "s"}},
            {"name": "node", "hostPath": {"path": "/srv"}},
        ]
    }
    mounts = [
        Mount("/scratch", scratch, False, "scratch"),
        Mount("/cache", claim / "sub" / "dir", False, "claim"),
        Mount("/etc/cfg", config, True, "config"),
        Mount("/srv", node, False, "node"),
    ]
    ir.prepare_volumes(spec, volumes, mounts, ir.Security())
    assert mode(scratch) == 0o777  # emptyDir, whatever the umask
    assert mode(claim / "sub" / "dir") == mode(claim) == 0o755  # subPath: the volume's mode
    assert mode(node) == 0o755

    ir.prepare_volumes(spec, volumes, mounts, ir.Security(fs_group=1234))
    for path in (claim, claim / "models", claim / "sub"):
        assert path.stat().st_gid == 1234
        assert mode(path) == 0o755 | 0o070 | stat.S_ISGID
    assert (claim / "models" / "weights").stat().st_gid == 1234
    assert mode(claim / "models" / "weights") == 0o664
    assert mode(config / "key") == 0o440  # read-only volumes get g+r only
    assert node.stat().st_gid != 1234  # hostPath: left alone

    assert not ir.needs_ownership_change(claim, 1234, read_only=False)
    assert ir.needs_ownership_change(claim, 99, read_only=False)
    (claim / "models" / "weights").chmod(0o600)
    policy = ir.Security(fs_group=1234, fs_group_policy="OnRootMismatch")
    ir.prepare_volumes(spec, volumes, mounts, policy)
    assert mode(claim / "models" / "weights") == 0o600  # the root matched: nothing walked


def test_grace_period_from_the_deletion_else_the_spec() -> None:
    assert ir.grace_seconds(pod()) == ir.DEFAULT_GRACE_SECONDS
    assert ir.grace_seconds(pod(terminationGracePeriodSeconds=5)) == 5.0
    deleted = pod(terminationGracePeriodSeconds=5)
    deleted["metadata"]["deletionGracePeriodSeconds"] = 0
    assert ir.grace_seconds(deleted) == 0.0


def test_exec_requests_are_checked() -> None:
    async def ask(body: object, containers: tuple[str, ...] = ("operator",)) -> object:
        return await ir.exec_request("u-1", containers, body)

    for body, message in (
        ([], "expected a JSON object"),
        ({"command": "id"}, "command must be a non-empty list of strings"),
        ({"command": []}, "command must be a non-empty list of strings"),
        ({"command": ["id"], "container": "other"}, "container 'other' is not in the pod"),
    ):
        with pytest.raises(ValueError, match=message):
            asyncio.run(ask(body))
    with pytest.raises(ValueError, match="a container name must be specified"):
        asyncio.run(ask({"command": ["id"]}, ("a", "b")))
    with pytest.raises(LookupError, match="not running under runc"):
        asyncio.run(ask({"command": ["id"]}))


def test_pulling_an_image_that_is_not_built_says_run_make_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMOP_IMAGE_DIR", str(tmp_path))
    nim = "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"
    script = asyncio.run(ir.pull({"name": "c", "image": nim, "command": ["sh", "-c", "true"]}))
    assert script is not None
    assert script.startswith(f"image nimsim:{labimages.version()} (the lab runs `sh` of a NIM")
    assert script.endswith("run `make image`")
    operator = asyncio.run(ir.pull({"name": "c", "image": "localhost/nimop:9.9.9"}))
    assert operator is not None
    assert operator.startswith("image nimop:9.9.9 is not built in this lab")
    # The containers the runner simulates pull nothing.
    served = {"name": "c", "image": nim, "ports": [{"containerPort": 8000}]}
    assert asyncio.run(ir.pull(served)) is None
    assert (
        asyncio.run(ir.pull({"name": "c", "image": nim, "command": ["download-to-cache"]})) is None
    )
