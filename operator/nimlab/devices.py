"""The NVIDIA device plugin's part of a container's environment, for the simulated GPU nodes.

On a GPU node the device plugin answers the kubelet's Allocate call with the GPUs a container
gets, and the NVIDIA container toolkit exposes them through `NVIDIA_VISIBLE_DEVICES`
(https://github.com/NVIDIA/k8s-device-plugin, "envvar" device list strategy, the default).
A NIM picks its model profile from the GPUs it sees, so the simulator needs the same facts:
how many GPUs (from the container's `nvidia.com/gpu` limit) and which product (from the node's
GPU Feature Discovery label `nvidia.com/gpu.product`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
_MODEL_WORD = re.compile(r"^[A-Z]+\d+[A-Z]*$")


def gpu_count(container: Mapping[str, Any]) -> int:
    resources = container.get("resources") or {}
    value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (
        resources.get("requests") or {}
    ).get(GPU_RESOURCE)
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def gpu_product(node_labels: Mapping[str, str]) -> str | None:
    """`NVIDIA-H100-80GB-HBM3` -> `H100`: the model word of a GFD product label."""
    label = node_labels.get(PRODUCT_LABEL, "")
    words = [w.upper() for w in re.split(r"[-_ ]", label) if w and w.upper() != "NVIDIA"]
    return next((w for w in words if _MODEL_WORD.match(w)), None)


def _uuid(seed: str) -> str:
    """A stable GPU UUID in nvidia-smi's form, GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx."""
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def device_env(
    container: Mapping[str, Any], node_labels: Mapping[str, str], pod_uid: str
) -> dict[str, str]:
    """What the device plugin adds: the allocated GPUs' ids and, for the simulator, the product."""
    count = gpu_count(container)
    if count <= 0:
        return {}
    seed = f"{pod_uid}/{container.get('name', '')}"
    ids = [_uuid(f"{seed}/{i}") for i in range(count)]
    env = {"NVIDIA_VISIBLE_DEVICES": ",".join(ids)}
    product = gpu_product(node_labels)
    if product:
        env["NIMSIM_GPU_PRODUCT"] = product
    return env
