"""The lab's Karpenter configuration and node addressing, as pure data."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from nimlab import karpenter, nodeaddress
from nimlab.__main__ import build_parser
from nimlab.karpenter import KarpenterConfig, KarpenterConfigError


def _requirement(pool: dict[str, Any], key: str) -> list[str]:
    for req in pool["spec"]["template"]["spec"]["requirements"]:
        if req["key"] == key:
            values: list[str] = req["values"]
            return values
    raise AssertionError(f"no requirement on {key}")


def test_instance_types_file_carries_gpu_capacity_and_gfd_labels_per_offering() -> None:
    doc = json.loads(karpenter.instance_types_file(karpenter.DEFAULT_INSTANCE_TYPES))
    by_name = {t["name"]: t for t in doc}
    h100 = by_name["p5.48xlarge"]
    assert h100["resources"]["nvidia.com/gpu"] == "8"
    assert {o["Requirements"][0]["values"][0] for o in h100["offerings"]} == {"on-demand", "spot"}
    assert {o["Requirements"][1]["values"][0] for o in h100["offerings"]} == set(karpenter.ZONES)
    for offering in h100["offerings"]:
        labels = {r["key"]: r["values"] for r in offering["Requirements"]}
        assert labels["nvidia.com/gpu.product"] == ["NVIDIA-H100-80GB-HBM3"]
        assert labels["nvidia.com/gpu.count"] == ["8"]
        assert labels["nvidia.com/gpu.memory"] == ["81559"]
    assert by_name["g5.12xlarge"]["resources"]["nvidia.com/gpu"] == "4"
    assert by_name["g6e.2xlarge"]["resources"]["nvidia.com/gpu"] == "1"
    cpu = by_name["m7i.xlarge"]
    assert "nvidia.com/gpu" not in cpu["resources"]
    assert all(len(o["Requirements"]) == 2 for o in cpu["offerings"])


def test_gpu_pool_is_tainted_labelled_limited_and_restricted_to_gpu_shapes() -> None:
    pool = karpenter.gpu_node_pool(gpu_limit=16, consolidate_after="15s")
    template = pool["spec"]["template"]
    assert template["metadata"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in template[
        "spec"
    ]["taints"]
    assert template["spec"]["startupTaints"] == [nodeaddress.startup_taint()]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "16"}
    assert pool["spec"]["disruption"]["consolidateAfter"] == "15s"
    assert sorted(_requirement(pool, karpenter.INSTANCE_TYPE_LABEL)) == [
        "g5.12xlarge",
        "g6e.2xlarge",
        "p5.48xlarge",
    ]
    assert template["spec"]["nodeClassRef"] == {
        "group": "karpenter.kwok.sh",
        "kind": "KWOKNodeClass",
        "name": "default",
    }


def test_config_objects_are_node_class_then_pools() -> None:
    objects = KarpenterConfig(gpu_limit=8).objects()
    assert [o["kind"] for o in objects] == ["KWOKNodeClass", "NodePool", "NodePool"]
    assert [o["metadata"]["name"] for o in objects[1:]] == ["gpu", "cpu"]
    assert "taints" not in objects[2]["spec"]["template"]["spec"]
    assert [o["kind"] for o in KarpenterConfig(cpu_pool=False).objects()] == [
        "KWOKNodeClass",
        "NodePool",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consolidate_after": "soon"}, "consolidate-after must be a duration"),
        ({"registration_delay": "Never"}, "node registration delay must be a duration"),
        ({"gpu_limit": -1}, "GPU limit must be 0 or more"),
        ({"log_level": "loud"}, "log level must be debug, info or error"),
    ],
)
def test_bad_config_is_refused_with_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(KarpenterConfigError, match=message):
        KarpenterConfig(**kwargs)


def test_node_pool_refuses_an_unknown_consolidation_policy() -> None:
    with pytest.raises(KarpenterConfigError, match="WhenEmpty or WhenEmptyOrUnderutilized"):
        karpenter.node_pool("x", consolidation_policy="Always")


def test_cli_option_leaves_static_gpu_nodes_out() -> None:
    from nimlab.__main__ import _karpenter, _topology

    args = build_parser().parse_args(
        ["serve", "--state-dir", "/tmp/x", "--karpenter-gpu-pool", "--karpenter-gpu-limit=4"]
    )
    config = _karpenter(args)
    assert config is not None
    assert config.gpu_limit == 4
    assert [p.prefix for p in _topology(args).pools] == ["cpu-node"]
    plain = build_parser().parse_args(["serve", "--state-dir", "/tmp/x"])
    assert _karpenter(plain) is None
    assert [p.prefix for p in _topology(plain).pools] == ["gpu-node", "cpu-node"]


def _node(
    name: str,
    *,
    karpenter_node: bool = True,
    ip: str | None = None,
    annotation: str | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "metadata": {"name": name, "resourceVersion": "7", "annotations": {}},
        "spec": {"taints": taints or []},
        "status": {},
    }
    if karpenter_node:
        node["spec"]["providerID"] = f"kwok://{name}"
    if ip:
        node["status"]["addresses"] = [{"type": "InternalIP", "address": ip}]
    if annotation:
        node["metadata"]["annotations"][nodeaddress.ANNOTATION] = annotation
    return node


def test_addresses_skip_static_nodes_and_ignore_kwoks_default_on_new_nodes() -> None:
    nodes = [
        _node("cpu-node-0", karpenter_node=False, ip="127.0.10.1"),
        # kwok wrote its single --node-ip here before the node got its own address
        _node("kwok-a", ip="127.0.10.1"),
        _node("kwok-b", ip="127.0.10.3", annotation="127.0.10.3"),
    ]
    used = nodeaddress.used_addresses(nodes)
    assert used == {ipaddress.IPv4Address("127.0.10.1"), ipaddress.IPv4Address("127.0.10.3")}
    assert nodeaddress.next_free(used) == ipaddress.IPv4Address("127.0.10.2")


def test_address_range_exhaustion_is_an_error() -> None:
    everything = set(nodeaddress.ADDRESS_RANGE)
    with pytest.raises(RuntimeError, match="no free node address"):
        nodeaddress.next_free(everything)


def test_startup_taint_is_removed_only_once_the_address_is_in_place() -> None:
    startup = nodeaddress.startup_taint()
    gpu_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    waiting = _node("kwok-a", ip="127.0.10.1", taints=[gpu_taint, startup])
    patch = nodeaddress.metadata_patch(waiting, "127.0.10.2")
    assert patch == {
        "metadata": {"resourceVersion": "7", "annotations": {nodeaddress.ANNOTATION: "127.0.10.2"}}
    }
    placed = _node("kwok-a", ip="127.0.10.2", annotation="127.0.10.2", taints=[gpu_taint, startup])
    assert nodeaddress.metadata_patch(placed, "127.0.10.2") == {
        "metadata": {"resourceVersion": "7"},
        "spec": {"taints": [gpu_taint]},
    }
    done = _node("kwok-a", ip="127.0.10.2", annotation="127.0.10.2", taints=[gpu_taint])
    assert nodeaddress.metadata_patch(done, "127.0.10.2") is None


def test_address_patch_replaces_the_whole_list() -> None:
    patch = nodeaddress.address_patch(_node("kwok-a"), "127.0.10.9")
    assert patch["status"]["addresses"] == [
        {"type": "InternalIP", "address": "127.0.10.9"},
        {"type": "Hostname", "address": "kwok-a"},
    ]


def test_build_directory_without_a_binary_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no Karpenter binary at .*bin/karpenter"):
        karpenter.KarpenterFiles(tmp_path, tmp_path / "lab")
