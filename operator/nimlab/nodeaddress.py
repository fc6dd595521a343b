"""Loopback InternalIPs for the nodes Karpenter launches: the lab's stand-in for a cloud's IPAM.

Karpenter's kwok provider creates Node objects without addresses, and the lab's kwok can only give
every such node the same `--node-ip`. This process (`python -m nimlab node-addresses`) watches
Nodes and gives each Karpenter node (providerID `kwok://...`) the lowest free address of
127.0.10.0/23, after the lab's static nodes, recorded in the `nimlab.dev/node-ip` annotation.

The lab's NodePools carry the startup taint `nimlab.dev/node-ip-pending:NoSchedule`; it is removed
here once the node has its address, so no pod is bound (and given a hostIP) before that. Karpenter
counts a node Initialized only after its startup taints are gone, as it does on a cloud where a
CNI agent removes its own taint.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nimlab.informer import Informer
from nimlab.kubeapi import ApiError, Credentials, KubeAPI, Obj
from nimlab.nodes import NODE_IP_BASE

log = logging.getLogger(__name__)

ANNOTATION = "nimlab.dev/node-ip"
STARTUP_TAINT_KEY = "nimlab.dev/node-ip-pending"
KARPENTER_PROVIDER_PREFIX = "kwok://"  # karpenter kwok/cloudprovider/const.go
ADDRESS_RANGE = ipaddress.IPv4Network("127.0.10.0/23")


def startup_taint() -> dict[str, str]:
    return {"key": STARTUP_TAINT_KEY, "effect": "NoSchedule"}


def is_karpenter_node(node: Obj) -> bool:
    return str(node.get("spec", {}).get("providerID", "")).startswith(KARPENTER_PROVIDER_PREFIX)


def internal_ip(node: Obj) -> str | None:
    for address in node.get("status", {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return None


def used_addresses(nodes: Iterable[Obj]) -> set[ipaddress.IPv4Address]:
    """Addresses taken: a Karpenter node's by its annotation, a static node's by its InternalIP.

    A Karpenter node's InternalIP is not proof of ownership: until it is assigned, kwok may have
    written its single default `--node-ip` there, which a static node really owns.
    """
    used: set[ipaddress.IPv4Address] = set()
    for node in nodes:
        text = (
            node["metadata"].get("annotations", {}).get(ANNOTATION)
            if is_karpenter_node(node)
            else internal_ip(node)
        )
        if not text:
            continue
        try:
            used.add(ipaddress.IPv4Address(text))
        except ValueError:
            continue
    return used


def next_free(used: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    """The lowest address of the range at or above the first static node's that nobody uses."""
    candidate = NODE_IP_BASE
    while candidate in ADDRESS_RANGE:
        if candidate not in used:
            return candidate
        candidate += 1
    raise RuntimeError(f"no free node address left in {ADDRESS_RANGE}")


def address_patch(node: Obj, ip: str) -> Obj:
    """A merge patch for nodes/status: replaces the whole list, as lists in merge patches do."""
    name = node["metadata"]["name"]
    return {
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ]
        }
    }


def metadata_patch(node: Obj, ip: str) -> Obj | None:
    """Record the address, and drop the startup taint once the address is in place; None when
    nothing is left to do.

    Carries the node's resourceVersion, so a concurrent change (Karpenter syncing taints at
    registration) makes this a 409 instead of being overwritten; the next event retries.
    """
    meta = node["metadata"]
    taints: list[dict[str, Any]] = node.get("spec", {}).get("taints") or []
    patch: Obj = {"metadata": {"resourceVersion": meta["resourceVersion"]}}
    changed = False
    if meta.get("annotations", {}).get(ANNOTATION) != ip:
        patch["metadata"]["annotations"] = {ANNOTATION: ip}
        changed = True
    has_startup = any(t.get("key") == STARTUP_TAINT_KEY for t in taints)
    if has_startup and internal_ip(node) == ip:
        patch["spec"] = {"taints": [t for t in taints if t.get("key") != STARTUP_TAINT_KEY]}
        changed = True
    return patch if changed else None


class Assigner:
    """Keeps every Karpenter node's address and startup taint as described above."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.informer = Informer(api, "/api/v1/nodes", self._on_event, "nodes")
        self.pending: asyncio.Queue[str] = asyncio.Queue()
        # Addresses handed out, by node: counted as used even while the informer's copy of a
        # node still predates its annotation.
        self.assigned: dict[str, str] = {}

    def _on_event(self, kind: str, node: Obj) -> None:
        name = node["metadata"]["name"]
        if kind == "DELETED":
            self.assigned.pop(name, None)
        elif is_karpenter_node(node):
            self.pending.put_nowait(name)

    async def run(self) -> None:
        watcher = asyncio.create_task(self.informer.run())
        try:
            while True:
                name = await self.pending.get()
                try:
                    await self.reconcile(name)
                except ApiError as err:
                    if err.status != 409:  # a conflict is followed by the event that caused it
                        log.warning("node %s: %s; retrying", name, err)
                        await asyncio.sleep(0.5)
                        self.pending.put_nowait(name)
        finally:
            watcher.cancel()

    async def reconcile(self, name: str) -> None:
        node = self.informer.store.get(name)
        if node is None:
            return
        ip = node["metadata"].get("annotations", {}).get(ANNOTATION) or self.assigned.get(name)
        if not ip:
            others = [n for key, n in self.informer.store.items() if key != name]
            used = used_addresses(others) | {
                ipaddress.IPv4Address(a) for n, a in self.assigned.items() if n != name
            }
            ip = str(next_free(used))
        self.assigned[name] = ip
        if node["metadata"].get("annotations", {}).get(ANNOTATION) != ip:
            node = await self.api.patch(f"/api/v1/nodes/{name}", metadata_patch(node, ip) or {})
        if internal_ip(node) != ip:
            node = await self.api.patch(f"/api/v1/nodes/{name}/status", address_patch(node, ip))
            log.info("node %s: InternalIP %s", name, ip)
        patch = metadata_patch(node, ip)
        if patch is not None:
            node = await self.api.patch(f"/api/v1/nodes/{name}", patch)
            log.info("node %s: removed startup taint %s", name, STARTUP_TAINT_KEY)


async def _main(kubeconfig: Path) -> None:
    api = KubeAPI(Credentials.from_kubeconfig(kubeconfig))
    try:
        await Assigner(api).run()
    finally:
        await api.aclose()


def main(kubeconfig: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT from a terminal: just stop
        asyncio.run(_main(kubeconfig))
    return 0
