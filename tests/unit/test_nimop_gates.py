"""The readiness gate is patched once per verdict, also while the watch lags behind our patch."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from nimop.core import pods
from nimop.core.probes import ProbeResult
from nimop.runtime import kube
from nimop.runtime.gates import Gates

from . import factories

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Recorder:
    """Stands in for kube.Kube.request: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.sent.append((method, path))
        return {}


def pod(version: str, gate: str | None = None) -> pods.PodFacts:
    return factories.pod_facts(gate=gate, uid="u", resource_version=version)


SERVING = {"p": ProbeResult("p", "Serving", ("m",))}


async def test_a_pass_before_the_watch_brings_our_patch_back_does_not_patch_again() -> None:
    api = Recorder()
    writer = Gates(cast(kube.Kube, api))
    assert await writer.sync("ns", "o", [pod("1")], SERVING, NOW) == 1
    assert await writer.sync("ns", "o", [pod("1")], SERVING, NOW) == 0, "cache still at v1"
    assert await writer.sync("ns", "o", [pod("2", gate="True")], SERVING, NOW) == 0
    assert len(api.sent) == 1


async def test_a_newer_pod_without_the_gate_is_patched_again() -> None:
    api = Recorder()
    writer = Gates(cast(kube.Kube, api))
    await writer.sync("ns", "o", [pod("1")], SERVING, NOW)
    # Another version of the pod that lacks the gate (it was recreated, or the gate reset).
    assert await writer.sync("ns", "o", [pod("3")], SERVING, NOW) == 1


async def test_a_new_verdict_is_written_at_once() -> None:
    api = Recorder()
    writer = Gates(cast(kube.Kube, api))
    await writer.sync("ns", "o", [pod("1")], SERVING, NOW)
    mismatch = {"p": ProbeResult("p", "Mismatch", ("x",), detail="serves x, not m")}
    assert await writer.sync("ns", "o", [pod("1")], mismatch, NOW) == 1
    writer.forget("ns", "o")
    assert await writer.sync("ns", "o", [replace(pod("1"), gate="False")], mismatch, NOW) == 0
