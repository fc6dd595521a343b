"""Loading, fault modes, server lifecycle and metrics of running simulators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nimsim import Faults, SimConfig, Simulator

MODEL = "meta/llama-3.1-8b-instruct"
CHAT = "/v1/chat/completions"
HI = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    settings.setdefault("port", 0)
    settings.setdefault("load_delay", 0.0)
    async with (
        Simulator(SimConfig(**settings)) as sim,
        httpx.AsyncClient(base_url=sim.url, timeout=5.0, trust_env=False) as client,
    ):
        yield sim, client


async def test_not_ready_until_loaded() -> None:
    async with running(load_delay=0.5) as (sim, client):
        ready = await client.get("/v1/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {
            "object": "health.response",
            "message": "Service is not ready: model is loading.",
            "status": "not ready",
        }
        ready_while_loading = sim.ready
        assert not ready_while_loading
        assert (await client.get("/v1/health/live")).json()["status"] == "alive"
        models = await client.get("/v1/models")
        assert models.status_code == 200
        assert models.json()["data"][0]["id"] == MODEL

        chat = await client.post(CHAT, json=HI)
        assert chat.status_code == 503
        assert chat.headers["retry-after"] == "1"
        error = chat.json()["error"]
        assert error["code"] == "model_not_ready"
        assert "loading" in error["message"]

        await asyncio.sleep(0.55)
        assert sim.ready
        ready = await client.get("/v1/health/ready")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        assert (await client.post(CHAT, json=HI)).status_code == 200


async def test_never_ready() -> None:
    async with running(load_delay=0.05, faults=Faults(never_ready=True)) as (sim, client):
        await asyncio.sleep(0.2)
        assert (await client.get("/v1/health/ready")).status_code == 503
        assert (await client.post(CHAT, json=HI)).status_code == 503
        assert (await client.get("/v1/health/live")).status_code == 200
        assert not sim.ready


async def test_flapping_alternates_readiness() -> None:
    period = 0.3
    async with running(flap_period=period, faults=Faults(flapping=True)) as (_, client):
        seen: list[int] = []
        deadline = time.monotonic() + 5 * period
        while time.monotonic() < deadline:
            ready = await client.get("/v1/health/ready")
            chat = await client.post(CHAT, json=HI)
            # Sampled back to back, so they agree except right at a flip.
            if chat.status_code == ready.status_code:
                seen.append(ready.status_code)
            await asyncio.sleep(period / 5)
    transitions = [status for i, status in enumerate(seen) if i == 0 or seen[i - 1] != status]
    assert transitions[:3] == [200, 503, 200]


async def test_slow_delays_every_response() -> None:
    async with running(slow_seconds=0.25, faults=Faults(slow=True)) as (_, client):
        for method, path in [("GET", "/v1/health/live"), ("POST", CHAT), ("GET", "/nope")]:
            started = time.monotonic()
            await client.request(method, path, json=HI if method == "POST" else None)
            assert time.monotonic() - started >= 0.25


async def test_wrong_model() -> None:
    faults = Faults(wrong_model=True)
    async with running(faults=faults, wrong_model_name="acme/other") as (_, client):
        [model] = (await client.get("/v1/models")).json()["data"]
        assert (model["id"], model["owned_by"]) == ("acme/other", "acme")
        response = await client.post(CHAT, json=HI)
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"Model '{MODEL}' not found"
        assert (await client.get(f"/v1/models/{MODEL}")).status_code == 404
        wrong = await client.post(CHAT, json={**HI, "model": "acme/other"})
        assert wrong.status_code == 200
        assert wrong.json()["model"] == "acme/other"


async def test_crash_after_stops_server_and_sets_event() -> None:
    async with running(faults=Faults(crash_after=0.2)) as (sim, client):
        assert (await client.get("/v1/health/live")).status_code == 200
        assert not sim.exited.is_set()
        await asyncio.wait_for(sim.exited.wait(), timeout=3)
        assert (sim.phase, sim.exit_code) == ("exited", 1)
        assert not sim.ready
        with pytest.raises(httpx.ConnectError):
            await client.get("/v1/health/live")


async def test_stop_before_crash_cancels_it() -> None:
    sim = Simulator(SimConfig(port=0, faults=Faults(crash_after=0.1)))
    await sim.start()
    await sim.stop()
    await asyncio.sleep(0.2)
    assert not sim.exited.is_set()
    assert sim.exit_code is None


async def test_stop_is_idempotent_and_concurrent_safe() -> None:
    sim = Simulator(SimConfig(port=0, load_delay=0.0))
    await sim.start()
    url = sim.url
    await asyncio.gather(sim.stop(), sim.stop())
    await sim.stop()
    assert not sim.ready
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/v1/health/live")
    with pytest.raises(RuntimeError):
        await sim.start()


async def test_stop_is_prompt_with_request_in_flight() -> None:
    async with running(slow_seconds=30, faults=Faults(slow=True)) as (sim, client):
        pending = asyncio.create_task(client.get("/v1/health/live"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await sim.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(httpx.HTTPError):
            await pending


async def test_address_in_use_retries_then_exits() -> None:
    # Was: start() raised OSError. A real process retries nothing and dies; the lab's
    # runner used to retry for it, so the simulator now retries (bind_seconds) and exits.
    async with running() as (first, _):
        second = Simulator(SimConfig(host="127.0.0.1", port=first.port), bind_seconds=0.2)
        await second.start()
        await asyncio.wait_for(second.exited.wait(), timeout=5)
        assert second.exit_code == 1
        assert second.exit_message is not None
        assert "address already in use" in second.exit_message
        await second.stop()
        with pytest.raises(RuntimeError):
            await second.start()


async def test_same_port_on_distinct_loopback_addresses() -> None:
    async with running(host="127.0.0.2") as (first, first_client):
        assert first.url == f"http://127.0.0.2:{first.port}"
        config = SimConfig(host="127.0.0.3", port=first.port, load_delay=0.0, model="acme/b")
        async with (
            Simulator(config) as second,
            httpx.AsyncClient(base_url=second.url, trust_env=False) as second_client,
        ):
            a = (await first_client.get("/v1/models")).json()["data"][0]["id"]
            b = (await second_client.get("/v1/models")).json()["data"][0]["id"]
            assert (a, b) == (MODEL, "acme/b")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics() -> None:
    async with running() as (_, client):
        for _ in range(3):
            await client.get("/v1/health/ready")
        for _ in range(2):
            chat = {
                **HI,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
            }
            await client.post(CHAT, json=chat)
        await client.post(CHAT, json={**HI, "model": "nope"})
        await client.get(f"/v1/models/{MODEL}")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)

        def requests(path: str, method: str, status: str) -> float:
            labels = (("method", method), ("path", path), ("status", status))
            return samples[("nimsim_http_requests_total", labels)]

        assert requests("/v1/health/ready", "GET", "200") == 3
        assert requests(CHAT, "POST", "200") == 2
        assert requests(CHAT, "POST", "404") == 1
        assert requests("/v1/models/{model_id}", "GET", "200") == 1
        model = (("model_name", MODEL),)
        assert samples[("prompt_tokens_total", model)] == 30
        assert samples[("generation_tokens_total", model)] == 16
        assert samples[("num_requests_running", model)] == 0
        assert samples[("e2e_request_latency_seconds_count", model)] == 2
        assert samples[("nimsim_ready", ())] == 1
        duration = ("nimsim_http_request_duration_seconds_count", (("path", CHAT),))
        assert samples[duration] == 3

        alias = _samples((await client.get("/v1/metrics")).text)
        assert (
            alias[
                (
                    "nimsim_http_requests_total",
                    (("method", "GET"), ("path", "/metrics"), ("status", "200")),
                )
            ]
            == 1
        )


async def test_metrics_are_per_server_and_track_readiness() -> None:
    async with running() as (_, busy), running(load_delay=30) as (_, loading):
        await busy.post(CHAT, json=HI)
        loading_samples = _samples((await loading.get("/metrics")).text)
        assert loading_samples[("nimsim_ready", ())] == 0
        assert ("prompt_tokens_total", (("model_name", MODEL),)) in loading_samples
        assert loading_samples[("prompt_tokens_total", (("model_name", MODEL),))] == 0
        busy_samples = _samples((await busy.get("/metrics")).text)
        assert busy_samples[("prompt_tokens_total", (("model_name", MODEL),))] == 9


async def test_token_delay_shows_requests_running() -> None:
    async with running(token_delay=0.05) as (_, client):
        request = {**HI, "max_tokens": 6, "messages": [{"role": "user", "content": "Tell me"}]}
        pending = asyncio.create_task(client.post(CHAT, json=request))
        await asyncio.sleep(0.1)
        samples = _samples((await client.get("/metrics")).text)
        assert samples[("num_requests_running", (("model_name", MODEL),))] == 1
        response = await pending
        assert response.json()["usage"]["completion_tokens"] == 6
