"""How pod volumes become files and path maps: keys to files, mounts, sub-paths, attachments."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from nimlab.containerenv import ConfigError
from nimlab.volumes import (
    Attachments,
    Volume,
    exclusive_claim,
    key_payload,
    mount_table,
    multi_attach_message,
    object_bytes,
    path_map,
    read_only_paths,
)

MISSING = "configmap references non-existent config key: {key}"


def test_every_key_becomes_a_file_with_the_default_mode() -> None:
    files = key_payload({"a": b"1", "b": b"2"}, None, None, False, MISSING)
    assert files == {"a": (b"1", 0o644), "b": (b"2", 0o644)}
    assert key_payload({"a": b"1"}, [], 0o400, False, MISSING) == {"a": (b"1", 0o400)}


def test_items_pick_keys_paths_and_modes() -> None:
    items: list[dict[str, object]] = [
        {"key": "a", "path": "dir/renamed"},
        {"key": "b", "mode": 0o600},
    ]
    files = key_payload({"a": b"1", "b": b"2", "c": b"3"}, items, 0o444, False, MISSING)
    assert files == {"dir/renamed": (b"1", 0o444), "b": (b"2", 0o600)}


def test_a_missing_key_is_the_kubelets_error_unless_optional() -> None:
    with pytest.raises(ValueError, match=r"^configmap references non-existent config key: x$"):
        key_payload({"a": b"1"}, [{"key": "x"}], None, False, MISSING)
    assert key_payload({"a": b"1"}, [{"key": "x"}], None, True, MISSING) == {}


def test_object_bytes_decode_secret_and_binary_data() -> None:
    secret = {"data": {"k": base64.b64encode(b"nvapi-123").decode()}}
    assert object_bytes(secret, "Secret") == {"k": b"nvapi-123"}
    config = {"data": {"t": "text"}, "binaryData": {"b": base64.b64encode(b"\x00\x01").decode()}}
    assert object_bytes(config, "ConfigMap") == {"t": b"text", "b": b"\x00\x01"}


def test_mounts_resolve_sub_paths_and_read_only(tmp_path: Path) -> None:
    volumes = {
        "cache": Volume("cache", tmp_path / "pvc"),
        "config": Volume("config", tmp_path / "cm", read_only=True),
    }
    container = {
        "name": "nim",
        "volumeMounts": [
            {"name": "cache", "mountPath": "/opt/nim/.cache/", "subPath": "llama"},
            {"name": "cache", "mountPath": "/per-pod", "subPathExpr": "pods/$(POD)"},
            {"name": "cache", "mountPath": "/ro", "readOnly": True},
            {"name": "config", "mountPath": "/etc/nim/config.yaml", "subPath": "config.yaml"},
        ],
    }
    mounts = mount_table(container, volumes, {"POD": "p-1"})
    assert [(m.container_path, m.host_path, m.read_only) for m in mounts] == [
        ("/opt/nim/.cache", tmp_path / "pvc" / "llama", False),
        ("/per-pod", tmp_path / "pvc" / "pods" / "p-1", False),
        ("/ro", tmp_path / "pvc", True),
        ("/etc/nim/config.yaml", tmp_path / "cm" / "config.yaml", True),
    ]


@pytest.mark.parametrize("sub", ["/etc", "../other", "a/../../b"])
def test_sub_paths_cannot_escape_the_volume(tmp_path: Path, sub: str) -> None:
    container = {"name": "nim", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": sub}]}
    with pytest.raises(ConfigError, match='volumeMount "v" of container "nim"'):
        mount_table(container, {"v": Volume("v", tmp_path)}, {})


def test_an_undefined_volume_is_named(tmp_path: Path) -> None:
    container = {"name": "nim", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}
    with pytest.raises(ConfigError, match='volume "nope"'):
        mount_table(container, {}, {})


def test_the_path_map_covers_the_whole_filesystem(tmp_path: Path) -> None:
    volumes = {"cache": Volume("cache", tmp_path / "pvc")}
    mounts = mount_table(
        {"name": "nim", "volumeMounts": [{"name": "cache", "mountPath": "/opt/nim/.cache"}]},
        volumes,
        {},
    )
    table = path_map(tmp_path / "rootfs", mounts, {"/dev/termination-log": tmp_path / "tlog"})
    assert table == {
        "/": str(tmp_path / "rootfs"),
        "/opt/nim/.cache": str(tmp_path / "pvc"),
        "/dev/termination-log": str(tmp_path / "tlog"),
    }


def test_only_read_write_once_volumes_are_exclusive() -> None:
    def pv(*modes: str) -> dict[str, object]:
        return {"spec": {"accessModes": list(modes)}}

    assert exclusive_claim(pv("ReadWriteOnce"))
    assert not exclusive_claim(pv("ReadWriteMany"))
    assert not exclusive_claim(pv("ReadWriteOnce", "ReadOnlyMany"))
    assert not exclusive_claim(pv("ReadWriteOncePod"))  # the scheduler enforces that one


def test_an_exclusive_volume_stays_on_its_node_until_its_pods_are_gone() -> None:
    attachments = Attachments()
    assert attachments.attach("pvc-1", "u1", "ns", "first", "node-a") is None
    assert attachments.attach("pvc-1", "u2", "ns", "neighbour", "node-a") is None
    blocked = attachments.attach("pvc-1", "u3", "ns", "elsewhere", "node-b")
    assert blocked == (
        'Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) first, neighbour'
    )
    attachments.detach("u1")
    attachments.detach("u2")
    assert attachments.attach("pvc-1", "u3", "ns", "elsewhere", "node-b") is None


def test_multi_attach_counts_pods_of_other_namespaces() -> None:
    holders = [("a", "p1"), ("b", "p2")]
    assert multi_attach_message("pv", "a", holders) == (
        'Multi-Attach error for volume "pv" Volume is already used by pod(s) p1 '
        "and 1 pod(s) in different namespaces"
    )
    assert multi_attach_message("pv", "c", holders).endswith(
        "Volume is already used by 2 pod(s) in different namespaces"
    )


def test_the_deepest_mount_decides_whether_a_path_is_read_only(tmp_path: Path) -> None:
    volumes = {"v": Volume("v", tmp_path), "cm": Volume("cm", tmp_path / "cm", read_only=True)}
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "v", "mountPath": "/data", "readOnly": True},
            {"name": "v", "mountPath": "/data/scratch"},
            {"name": "cm", "mountPath": "/etc/nim"},
        ],
    }
    read_only = read_only_paths(mount_table(container, volumes, {}))
    assert read_only("/data/model.bin")
    assert not read_only("/data/scratch/tmp")
    assert read_only("/etc/nim/config.yaml")
    assert not read_only("/tmp/x")
    assert not read_only("/database")
