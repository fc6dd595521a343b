"""The prober against real simulator servers on loopback: each verdict from a real HTTP answer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from nimop.core import pods
from nimop.core.probes import served_models
from nimop.runtime import kube
from nimop.runtime.probe import DirectTransport, Prober, ProxyTransport
from nimsim import SimConfig, Simulator
from nimsim.app import STATE

from . import factories

MODEL = "meta/llama-3.1-8b-instruct"


def target(port_owner: str = "p", restarts: int = 0) -> pods.PodFacts:
    return factories.pod_facts(
        port_owner, uid=f"uid-{port_owner}", ip="127.0.0.1", model=MODEL, restarts=restarts
    )


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    p = Prober(DirectTransport(timeout=1.0), concurrency=4)
    yield p
    await p.aclose()


async def start(**env: str) -> Simulator:
    config = SimConfig.from_env({"NIMSIM_HOST": "127.0.0.1", "NIM_SERVER_PORT": "0", **env})
    sim = Simulator(config)
    await sim.start()
    await asyncio.wait_for(sim.listening.wait(), 5)
    return sim


async def test_loading_then_serving(prober: Prober) -> None:
    sim = await start(NIMSIM_LOAD_DELAY="0.3", NIM_SERVED_MODEL_NAME=MODEL)
    try:
        first = await prober.probe_pod("ns", target(), sim.port, MODEL)
        assert first.verdict == "Loading"
        await asyncio.sleep(0.4)
        second = await prober.probe_pod("ns", target(), sim.port, MODEL)
        assert second.verdict == "Serving"
        assert second.models == (MODEL,)
    finally:
        await sim.stop()


async def test_wrong_model_is_a_mismatch(prober: Prober) -> None:
    sim = await start(NIMSIM_LOAD_DELAY="0", NIM_SERVED_MODEL_NAME="meta/llama-3.1-70b-instruct")
    try:
        result = await prober.probe_pod("ns", target(), sim.port, MODEL)
        assert result.verdict == "Mismatch"
        assert "meta/llama-3.1-70b-instruct" in result.detail
    finally:
        await sim.stop()


async def test_a_closed_port_is_refused_not_answered(prober: Prober) -> None:
    """What a real NIM looks like while it downloads its model: nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await prober.probe_pod("ns", target(), port, MODEL)
    assert result.verdict == "Refused"
    assert not result.answered


async def test_observe_keys_by_pod_and_reuses_fresh_results(prober: Prober) -> None:
    sims = [await start(NIMSIM_LOAD_DELAY="0", NIM_SERVED_MODEL_NAME=MODEL) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(
                prober.observe("ns", f"o{i}", [(target(f"p{i}"), MODEL)], s.port, max_age=60)
                for i, s in enumerate(sims)
            )
        )
        assert all(r[f"p{i}"].serving for i, r in enumerate(results))
        before = served(sims)
        again = await prober.observe("ns", "o0", [(target("p0"), MODEL)], sims[0].port, 60)
        assert again["p0"].serving
        assert served(sims) == before  # fresh: no request was sent
        restarted = await prober.observe(
            "ns", "o0", [(target("p0", restarts=1), MODEL)], sims[0].port, 60
        )
        assert restarted["p0"].serving
        assert served(sims) > before  # the pod changed: probed again at once
    finally:
        for s in sims:
            await s.stop()


async def test_a_stale_result_is_probed_again(prober: Prober) -> None:
    sim = await start(NIMSIM_LOAD_DELAY="0", NIM_SERVED_MODEL_NAME=MODEL)
    try:
        await prober.observe("ns", "o", [(target(), MODEL)], sim.port, max_age=60)
        before = served([sim])
        await prober.observe("ns", "o", [(target(), MODEL)], sim.port, max_age=0)
        assert served([sim]) == before + 1  # a replica that served is asked /v1/models only
    finally:
        await sim.stop()


async def test_a_replica_the_kubelet_calls_unready_keeps_its_result_longer(
    prober: Prober,
) -> None:
    """While the kubelet does not call the container ready, the waiting age applies: the pod
    itself changes (and the result goes stale) when the NIM turns ready."""
    sim = await start(NIMSIM_LOAD_DELAY="30", NIM_SERVED_MODEL_NAME=MODEL)
    try:
        unready = target()
        await prober.observe("ns", "o", [(unready, MODEL)], sim.port, 0, waiting_max_age=60)
        before = served([sim])
        await prober.observe("ns", "o", [(unready, MODEL)], sim.port, 0, waiting_max_age=60)
        assert served([sim]) == before
        ready = replace(unready, container_ready=True)
        await prober.observe("ns", "o", [(ready, MODEL)], sim.port, 0, waiting_max_age=60)
        assert served([sim]) > before
    finally:
        await sim.stop()


def served(sims: list[Simulator]) -> int:
    """Requests the simulators answered so far, from their own request counter."""
    total = 0
    for sim in sims:
        text = sim.app[STATE].metrics.render().decode()
        total += sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("nimsim_http_requests_total{")
        )
    return total


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"object":"list","data":[{"id":"a"},{"id":"b"}]}', ("a", "b")),
        ('{"data": "nope"}', ()),
        ("not json", ()),
        ('{"data":[{"no_id":1}]}', ()),
    ],
)
def test_served_models_is_lenient(body: str, expected: tuple[str, ...]) -> None:
    assert served_models(body) == expected


class StubKube:
    """Stands in for kube.Kube.request only: records the path, answers like the API server."""

    def __init__(self, answer: dict[str, object] | kube.ApiError) -> None:
        self.answer = answer
        self.paths: list[str] = []

    async def request(self, method: str, path: str, **_: object) -> dict[str, object]:
        self.paths.append(path)
        if isinstance(self.answer, kube.ApiError):
            raise self.answer
        return self.answer


async def test_proxy_transport_goes_through_the_pod_proxy() -> None:
    stub = StubKube({"object": "list", "data": [{"id": MODEL}]})
    transport = ProxyTransport(stub, timeout=1.0)  # type: ignore[arg-type]
    status, body = await transport.get("ai", target("llama-0"), 8000, "/v1/models")
    assert stub.paths == ["/api/v1/namespaces/ai/pods/llama-0:8000/proxy/v1/models"]
    assert status == 200
    assert served_models(body) == (MODEL,)


async def test_proxy_transport_maps_statuses_and_unreachable_pods() -> None:
    loading = ProxyTransport(StubKube(kube.ApiError(503, "model is loading")), 1.0)  # type: ignore[arg-type]
    assert (await loading.get("ai", target(), 8000, "/v1/health/ready"))[0] == 503
    refused = kube.ApiError(503, "error trying to reach service: dial tcp: connection refused")
    prober = Prober(ProxyTransport(StubKube(refused), 1.0))  # type: ignore[arg-type]
    result = await prober.probe_pod("ai", target(), 8000, MODEL)
    assert result.verdict == "Refused"


async def test_a_replica_keeps_its_connection_and_a_gone_one_is_closed() -> None:
    sims = [await start(NIMSIM_LOAD_DELAY="0", NIM_SERVED_MODEL_NAME=MODEL) for _ in range(2)]
    transport = DirectTransport(timeout=1.0, idle_seconds=0.2)
    try:
        first = await transport.get("ns", target(), sims[0].port, "/v1/models")
        second = await transport.get("ns", target(), sims[0].port, "/v1/models")
        assert first == second
        assert first[0] == 200
        assert MODEL in served_models(first[1])
        assert len(transport) == 1, "the second probe reused the first connection"
        await asyncio.sleep(0.3)
        await transport.get("ns", target(), sims[1].port, "/v1/models")
        assert len(transport) == 1, "the idle replica's connection closed"
    finally:
        await transport.aclose()
        for s in sims:
            await s.stop()
